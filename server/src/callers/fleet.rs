//! A key's limits held for a fleet of instances that share one store
//! (Postgres), without a database round trip per request: each instance
//! leases slices of a key's budget and spends them locally, the way global
//! rate limiters batch a shared limit.
//!
//! - **Rate**: the key's policy read as `burst` requests per window of
//!   `ceil(burst / rate)` seconds (what its `RateLimit-Policy` says). An
//!   instance leases a slice of the current window (a quarter of it, at
//!   least one request) when it has none left, and spends it locally. The
//!   store never grants more than `burst` in a window to the whole fleet, so
//!   the fleet admits at most the limit; it may admit less, by the slices
//!   other instances leased and did not spend (at most `(instances - 1) ×
//!   slice` per window).
//! - **Jobs at once**: an instance holds some of the key's slots in the
//!   store (never more than the key's maximum for the fleet) and acquires one
//!   more only when a job finds none free; slots it no longer needs go back
//!   after a second idle, off the request path. A heartbeat keeps its holds
//!   alive; a crashed instance's holds lapse after [`HOLD_TTL`].
//! - **CPU per day**: every instance meters its usage into the store within
//!   a second, and re-reads each key's fleet total every refresh (2 s); the
//!   fleet may overshoot a quota by what its running jobs use plus about
//!   three seconds of the key's usage.
//!
//! Every store call on a request's path has a short deadline
//! ([`LEASE_DEADLINE`]); when the store can't answer in time, the instance
//! decides alone with the key's local limiter (each instance then admits up
//! to the whole limit: a store outage loosens limits, it never blocks a
//! caller).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pyexec_store::{InstanceId, KeyId, Store, StoreError, Window};

use super::limits::{unix_seconds, Policy, RateStanding};

/// The longest a request waits for the store before deciding alone.
pub const LEASE_DEADLINE: Duration = Duration::from_millis(250);
/// How long a slot hold lives without a heartbeat.
pub const HOLD_TTL: Duration = Duration::from_secs(30);
/// How often holds are renewed.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(10);
/// A slot idle this long goes back to the fleet.
const SPARE_SLOT_FOR: Duration = Duration::from_secs(1);
/// A slice of a rate window is this share of it.
const SLICES_PER_WINDOW: i64 = 4;

/// The counter name of the request rate in the store.
const RATE_COUNTER: &str = "rate";

/// What the fleet's store said, or that it could not be asked.
pub enum Verdict<T> {
    Decided(T),
    /// The store did not answer in time: decide locally.
    StoreUnavailable(StoreError),
}

/// One instance's share of the fleet's budgets.
pub struct Fleet {
    store: Arc<dyn Store>,
    instance: InstanceId,
    rates: Mutex<HashMap<KeyId, RateSlice>>,
    slots: Mutex<HashMap<KeyId, SlotShare>>,
    /// When the holds were last renewed.
    renewed: Mutex<Instant>,
}

/// What is left of the slice of a key's current rate window.
struct RateSlice {
    window: Window,
    left: i64,
}

/// A key's slots this instance holds in the store, and uses.
#[derive(Default)]
struct SlotShare {
    held: u32,
    in_use: u32,
    /// When the last job ended, for giving spare slots back.
    idle_since: Option<Instant>,
}

impl Fleet {
    pub fn new(store: Arc<dyn Store>, instance: &str) -> Option<Fleet> {
        Some(Fleet {
            store,
            instance: InstanceId::parse(instance)?,
            rates: Mutex::new(HashMap::new()),
            slots: Mutex::new(HashMap::new()),
            renewed: Mutex::new(Instant::now()),
        })
    }

    /// The window and cap the fleet's rate counter uses for `policy`.
    pub fn rate_window(policy: &Policy) -> Option<(Window, i64)> {
        let rate = policy.rate_per_s?;
        let cap = i64::from(policy.burst.max(1));
        let len_s = (cap as f64 / rate).ceil().max(1.0) as i64;
        let now = unix_seconds();
        Some((
            Window {
                start: now - now.rem_euclid(len_s),
                len_s,
            },
            cap,
        ))
    }

    /// Takes one request from the key's fleet-wide rate: its standing, or
    /// how long until the next window; `None` inside when the key has no
    /// rate limit.
    ///
    /// Cancel safety: safe to drop (a slice leased and dropped is lost for
    /// its window: the fleet admits less, never more).
    pub async fn take_request(
        &self,
        key: &KeyId,
        policy: &Policy,
    ) -> Verdict<Result<Option<RateStanding>, Duration>> {
        let Some((window, cap)) = Self::rate_window(policy) else {
            return Verdict::Decided(Ok(None));
        };
        let until_next =
            Duration::from_secs((window.start + window.len_s - unix_seconds()).max(1) as u64);
        if let Some(standing) = self.spend(key, window, until_next) {
            return Verdict::Decided(Ok(Some(standing)));
        }
        let slice = (cap / SLICES_PER_WINDOW).max(1);
        let leased = tokio::time::timeout(
            LEASE_DEADLINE,
            self.store
                .lease_counter(key, RATE_COUNTER, window, slice, cap),
        )
        .await;
        let grant = match leased {
            Ok(Ok(grant)) => grant,
            Ok(Err(error)) => return Verdict::StoreUnavailable(error),
            Err(_) => {
                return Verdict::StoreUnavailable(StoreError::Unavailable(
                    "no answer within the lease deadline".into(),
                ))
            }
        };
        if grant.granted <= 0 {
            return Verdict::Decided(Err(until_next));
        }
        lock(&self.rates).insert(
            key.clone(),
            RateSlice {
                window,
                left: grant.granted - 1,
            },
        );
        Verdict::Decided(Ok(Some(RateStanding {
            remaining: u32::try_from((cap - grant.window_total).max(0) + grant.granted - 1)
                .unwrap_or(u32::MAX),
            reset_s: until_next.as_secs(),
        })))
    }

    /// Spends one request of the slice in hand, if there is one.
    fn spend(&self, key: &KeyId, window: Window, until_next: Duration) -> Option<RateStanding> {
        let mut rates = lock(&self.rates);
        let slice = rates.get_mut(key)?;
        if slice.window != window || slice.left <= 0 {
            return None;
        }
        slice.left -= 1;
        Some(RateStanding {
            remaining: u32::try_from(slice.left).unwrap_or(u32::MAX),
            reset_s: until_next.as_secs(),
        })
    }

    /// Takes one of the key's fleet-wide job slots: true if one is free.
    ///
    /// Cancel safety: safe to drop; a slot acquired and dropped is held
    /// until it is found spare, or its hold lapses.
    pub async fn take_slot(&self, key: &KeyId, max: u32) -> Verdict<bool> {
        {
            let mut slots = lock(&self.slots);
            let share = slots.entry(key.clone()).or_default();
            if share.in_use < share.held {
                share.in_use += 1;
                return Verdict::Decided(true);
            }
        }
        let acquired = tokio::time::timeout(
            LEASE_DEADLINE,
            self.store
                .acquire_slots(key, &self.instance, 1, max, HOLD_TTL),
        )
        .await;
        match acquired {
            Ok(Ok(0)) => Verdict::Decided(false),
            Ok(Ok(granted)) => {
                let mut slots = lock(&self.slots);
                let share = slots.entry(key.clone()).or_default();
                share.held += granted;
                share.in_use += 1;
                Verdict::Decided(true)
            }
            Ok(Err(error)) => Verdict::StoreUnavailable(error),
            Err(_) => Verdict::StoreUnavailable(StoreError::Unavailable(
                "no answer within the lease deadline".into(),
            )),
        }
    }

    /// A job that held one of the key's fleet slots ended.
    pub fn give_slot(&self, key: &KeyId) {
        let mut slots = lock(&self.slots);
        if let Some(share) = slots.get_mut(key) {
            share.in_use = share.in_use.saturating_sub(1);
            share.idle_since = Some(Instant::now());
        }
    }

    /// Gives back the slots idle for a while, and every [`HEARTBEAT_EVERY`]
    /// renews the holds kept (a hold the store no longer has, because it
    /// lapsed, is forgotten). Off the request path, about every second.
    pub async fn tend(&self) -> Result<(), StoreError> {
        let spare: Vec<(KeyId, u32)> = {
            let mut slots = lock(&self.slots);
            slots
                .iter_mut()
                .filter(|(_, s)| {
                    s.held > s.in_use
                        && s.idle_since
                            .is_some_and(|at| at.elapsed() >= SPARE_SLOT_FOR)
                })
                .map(|(key, s)| {
                    let n = s.held - s.in_use;
                    s.held = s.in_use;
                    (key.clone(), n)
                })
                .collect()
        };
        for (key, n) in spare {
            self.store.release_slots(&key, &self.instance, n).await?;
        }
        if lock(&self.renewed).elapsed() < HEARTBEAT_EVERY {
            return Ok(());
        }
        let live = self.store.heartbeat(&self.instance, HOLD_TTL).await?;
        *lock(&self.renewed) = Instant::now();
        let mut slots = lock(&self.slots);
        for (key, share) in slots.iter_mut() {
            let held = live.iter().find(|h| &h.key_id == key).map_or(0, |h| h.held);
            // A lapsed hold: the fleet no longer counts those slots for us.
            share.held = share.held.min(held.max(share.in_use));
        }
        Ok(())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
