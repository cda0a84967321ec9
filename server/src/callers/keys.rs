//! The keys a running server knows: a copy of the store's, refreshed every
//! few seconds (so a key created, changed or revoked by `pyexec keys`, by
//! another instance or straight in the database takes effect without a
//! restart), and looked up in the store at once when a request brings an id
//! the copy lacks. Each key carries what the server tracks for it while it
//! runs: its rate limiter, its jobs in flight and its CPU used today.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use pyexec_store::{KeyId, KeyRecord, Store, StoreError};

use super::limits::{KeyGate, Policy};

/// A key as the server holds it.
pub struct KeyEntry {
    record: RwLock<Arc<KeyRecord>>,
    /// What limits apply, resolved against the server's defaults.
    policy: RwLock<Arc<Policy>>,
    pub(super) gate: KeyGate,
    /// The pool's opaque id for this key's line of the fair queue.
    pub(super) queue_id: u64,
    pub(super) jobs_in_flight: AtomicU32,
}

impl KeyEntry {
    pub fn record(&self) -> Arc<KeyRecord> {
        read(&self.record).clone()
    }

    pub fn policy(&self) -> Arc<Policy> {
        read(&self.policy).clone()
    }

    pub fn id(&self) -> KeyId {
        read(&self.record).id.clone()
    }
}

/// Why a key could not be found.
#[derive(Debug)]
pub enum Lookup {
    /// No such key (or its secret does not match: the caller can't tell).
    Unknown,
    /// The store could not be asked.
    StoreUnavailable(StoreError),
}

/// Lookups in the store of ids the copy lacks, per second at most: a client
/// sending random ids must not turn every request into a database query.
const MISSES_PER_SECOND: u32 = 20;
/// How long an id the store did not know stays unknown without asking again.
const UNKNOWN_FOR: Duration = Duration::from_secs(2);

pub struct KeyCache {
    entries: RwLock<HashMap<KeyId, Arc<KeyEntry>>>,
    make_policy: Box<dyn Fn(&KeyRecord) -> Policy + Send + Sync>,
    next_queue_id: Mutex<u64>,
    misses: Mutex<MissBudget>,
}

struct MissBudget {
    second: Instant,
    spent: u32,
    unknown: HashMap<KeyId, Instant>,
}

impl KeyCache {
    /// An empty copy; `make_policy` resolves a key's limits against the
    /// server's defaults.
    pub fn new(make_policy: impl Fn(&KeyRecord) -> Policy + Send + Sync + 'static) -> KeyCache {
        KeyCache {
            entries: RwLock::new(HashMap::new()),
            make_policy: Box::new(make_policy),
            next_queue_id: Mutex::new(1),
            misses: Mutex::new(MissBudget {
                second: Instant::now(),
                spent: 0,
                unknown: HashMap::new(),
            }),
        }
    }

    pub fn get(&self, id: &KeyId) -> Option<Arc<KeyEntry>> {
        read(&self.entries).get(id).cloned()
    }

    /// How many keys the copy holds.
    pub fn count(&self) -> usize {
        read(&self.entries).len()
    }

    /// The key `id`: from the copy, else from the store (bounded, see
    /// [`MISSES_PER_SECOND`]). Revoked keys are returned too; the caller
    /// refuses them.
    ///
    /// Cancel safety: safe to drop.
    pub async fn find(&self, store: &dyn Store, id: &KeyId) -> Result<Arc<KeyEntry>, Lookup> {
        if let Some(entry) = self.get(id) {
            return Ok(entry);
        }
        if !self.may_ask_for(id) {
            return Err(Lookup::Unknown);
        }
        match store.get_key(id).await {
            Ok(Some(record)) => Ok(self.upsert(record)),
            Ok(None) => {
                lock(&self.misses)
                    .unknown
                    .insert(id.clone(), Instant::now());
                Err(Lookup::Unknown)
            }
            Err(error) => Err(Lookup::StoreUnavailable(error)),
        }
    }

    fn may_ask_for(&self, id: &KeyId) -> bool {
        let mut misses = lock(&self.misses);
        let now = Instant::now();
        if misses
            .unknown
            .get(id)
            .is_some_and(|at| now.duration_since(*at) < UNKNOWN_FOR)
        {
            return false;
        }
        if now.duration_since(misses.second) >= Duration::from_secs(1) {
            misses.second = now;
            misses.spent = 0;
            misses
                .unknown
                .retain(|_, at| now.duration_since(*at) < UNKNOWN_FOR);
        }
        if misses.spent >= MISSES_PER_SECOND {
            return false;
        }
        misses.spent += 1;
        true
    }

    /// Takes the store's whole list as the truth: new keys added, changed
    /// ones updated (their limiters follow their new limits), revoked ones
    /// kept as revoked, vanished ones dropped.
    pub fn replace_all(&self, records: Vec<KeyRecord>) {
        let mut seen = std::collections::HashSet::new();
        for record in records {
            seen.insert(record.id.clone());
            self.upsert(record);
        }
        write(&self.entries).retain(|id, _| seen.contains(id));
    }

    /// Adds `record`, or updates the entry it names.
    pub fn upsert(&self, record: KeyRecord) -> Arc<KeyEntry> {
        let policy = Arc::new((self.make_policy)(&record));
        if let Some(entry) = self.get(&record.id) {
            let changed = *read(&entry.policy) != policy;
            if changed {
                entry.gate.follow(&policy);
                *write(&entry.policy) = policy;
            }
            if *read(&entry.record).as_ref() != record {
                *write(&entry.record) = Arc::new(record);
            }
            return entry;
        }
        let queue_id = {
            let mut next = lock(&self.next_queue_id);
            *next += 1;
            *next
        };
        let entry = Arc::new(KeyEntry {
            gate: KeyGate::new(&policy),
            policy: RwLock::new(policy),
            record: RwLock::new(Arc::new(record.clone())),
            queue_id,
            jobs_in_flight: AtomicU32::new(0),
        });
        write(&self.entries)
            .entry(record.id)
            .or_insert(entry)
            .clone()
    }

    /// Every entry, for the usage meter's CPU-today refresh.
    pub fn all(&self) -> Vec<Arc<KeyEntry>> {
        read(&self.entries).values().cloned().collect()
    }
}

impl KeyEntry {
    /// CPU-seconds left today under `quota_s`, and seconds until the day ends.
    pub fn cpu_left(&self, quota_s: f64) -> (f64, u64) {
        self.gate.cpu_left(quota_s)
    }

    /// Jobs of this key running now.
    pub fn jobs_in_flight(&self) -> u32 {
        self.jobs_in_flight.load(Ordering::SeqCst)
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

fn lock<T>(lock: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    lock.lock().unwrap_or_else(|p| p.into_inner())
}
