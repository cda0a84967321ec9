//! Who is calling: API keys, their limits and their metered usage, between
//! the router and the handlers. A handler receives an authenticated
//! [`Caller`], never a raw header.
//!
//! ```text
//!  request ─▶ authenticate (Authorization: Bearer pyx_<id>_<secret>)
//!             ├─ PYEXEC_AUTH=none: everyone is the one anonymous caller
//!             └─ keys: the key cache (refreshed from the store every 2 s;
//!                an id it lacks is looked up at once) → 401 unless known,
//!                not revoked and its secret's hash matches (constant time)
//!          ─▶ rate (GCRA) → 429 rate_limited
//!          ─▶ POST /execute: CPU today → 429 quota_exceeded,
//!             jobs at once → 429 concurrency_limited, ceilings → 400
//!          ─▶ the pool's fair queue, as the key's line and weight
//!          ─▶ the job's usage metered into the store, off the request path
//! ```
//!
//! - [`keys`]: the key cache.
//! - [`limits`]: a key's resolved limits, its rate limiter and CPU day, the
//!   `RateLimit` fields.
//! - [`meter`]: usage batched into the store.
//!
//! If the store fails while the server runs, known keys keep working from
//! the cache, an unknown key gets 503 `store_unavailable`, and usage waits
//! in memory (bounded) until the store is back.

pub mod fleet;
pub mod keys;
pub mod limits;
pub mod meter;
mod permit;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::header::AUTHORIZATION;
use hyper::HeaderMap;
use pyexec_store::{parse_token, KeyId, KeyRecord, Store, StoreError, UsageFilter};
use tokio_util::sync::CancellationToken;

use keys::{KeyCache, KeyEntry, Lookup};
pub use limits::KeyDefaults;
use limits::{Policy, RateStanding};
pub use meter::JobUsage;
use meter::Meter;
use permit::JobPermit;

/// How callers are told apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Anyone who reaches the port can run code: one anonymous caller.
    None,
    /// Every API route but the probes, the document and the playground's
    /// own files needs a key.
    Keys,
}

impl AuthMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::None => "none",
            AuthMode::Keys => "keys",
        }
    }
}

/// What the callers module is configured with.
#[derive(Debug, Clone)]
pub struct CallersConfig {
    pub auth: AuthMode,
    pub defaults: KeyDefaults,
    /// The server's own job limits: every key's ceilings stay under them.
    pub server_timeout: Duration,
    pub server_memory_mb: u64,
    /// How often the key cache is refreshed from the store.
    pub refresh_every: Duration,
    /// How often metered usage is written.
    pub meter_every: Duration,
    /// The most (key, hour, outcome) rows of usage held while the store is
    /// unreachable.
    pub meter_max_rows: usize,
    /// The store is shared by a fleet (Postgres): the keys' limits hold for
    /// the fleet as a whole ([`fleet`]).
    pub shared_store: bool,
}

/// Why a request was refused before it ran.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// No key, a malformed one, an unknown or revoked one, a wrong secret:
    /// all the same to the client.
    Unauthorized,
    RateLimited {
        retry_after: Duration,
        /// Where the key stands (`RateLimit-Policy`, `RateLimit`).
        fields: Option<(String, String)>,
    },
    ConcurrencyLimited {
        max: u32,
    },
    QuotaExceeded {
        quota_s: f64,
        retry_after: Duration,
    },
    /// A key the cache lacks, while the store can't be asked.
    StoreUnavailable,
}

/// An authenticated caller.
#[derive(Clone)]
pub struct Caller {
    key: Option<Arc<KeyEntry>>,
    /// Where its rate limit stood after this request.
    rate: Option<RateStanding>,
}

impl Caller {
    fn anonymous() -> Caller {
        Caller {
            key: None,
            rate: None,
        }
    }

    /// The key's id; `None` without keys.
    pub fn key_id(&self) -> Option<KeyId> {
        self.key.as_ref().map(|k| k.id())
    }

    pub fn key(&self) -> Option<&Arc<KeyEntry>> {
        self.key.as_ref()
    }

    /// Who the pool's fair queue sees.
    pub fn pool_caller(&self) -> pyexec_worker::Caller {
        match &self.key {
            Some(key) => pyexec_worker::Caller {
                id: key.queue_id,
                weight: key.policy().weight,
            },
            None => pyexec_worker::Caller::ANONYMOUS,
        }
    }

    /// The ceilings on the request's own `limits`: `None` without keys (the
    /// server's own apply).
    pub fn ceilings(&self) -> Option<(Duration, u64)> {
        self.key.as_ref().map(|k| {
            let policy = k.policy();
            (policy.max_timeout, policy.max_memory_mb)
        })
    }

    /// The `RateLimit-Policy` and `RateLimit` field values for its answer.
    pub fn ratelimit_fields(&self) -> Option<(String, String)> {
        let key = self.key.as_ref()?;
        let policy = key.policy();
        let cpu = policy.cpu_s_per_day.map(|q| key.gate.cpu_left(q));
        limits::ratelimit_fields(&policy, self.rate, key.jobs_in_flight(), cpu)
    }
}

pub struct Callers {
    config: CallersConfig,
    store: Option<Arc<dyn Store>>,
    keys: Arc<KeyCache>,
    meter: Option<Arc<Meter>>,
    fleet: Option<Arc<fleet::Fleet>>,
    store_up: AtomicBool,
    stop: CancellationToken,
    tasks: tokio_util::task::TaskTracker,
}

/// The scheme's challenge on every 401 (RFC 6750); one for every cause.
pub const CHALLENGE: &str = "Bearer realm=\"pyexec\"";

impl Callers {
    /// With keys, `store` must be open; the key cache is filled from it now
    /// and refreshed in the background; usage is metered into it. Must be
    /// called inside a tokio runtime.
    pub async fn start(
        config: CallersConfig,
        store: Option<Arc<dyn Store>>,
        instance: String,
    ) -> Result<Arc<Callers>, StoreError> {
        let (defaults, timeout, memory) = (
            config.defaults.clone(),
            config.server_timeout,
            config.server_memory_mb,
        );
        let keys = Arc::new(KeyCache::new(move |record: &KeyRecord| {
            Policy::resolve(&record.limits, &defaults, timeout, memory)
        }));
        let (meter, fleet) = match (&store, config.auth) {
            (Some(store), AuthMode::Keys) => {
                keys.replace_all(store.list_keys().await?);
                let fleet = config
                    .shared_store
                    .then(|| fleet::Fleet::new(store.clone(), &instance).map(Arc::new))
                    .flatten();
                let meter =
                    Meter::new(store.clone(), keys.clone(), config.meter_max_rows, instance);
                (Some(Arc::new(meter)), fleet)
            }
            _ => (None, None),
        };
        let callers = Arc::new(Callers {
            config,
            store,
            keys,
            meter,
            fleet,
            store_up: AtomicBool::new(true),
            stop: CancellationToken::new(),
            tasks: tokio_util::task::TaskTracker::new(),
        });
        if let Some(meter) = &callers.meter {
            callers.tasks.spawn(
                meter
                    .clone()
                    .run(callers.config.meter_every, callers.stop.clone()),
            );
            callers.tasks.spawn(refresh(callers.clone()));
        }
        if callers.fleet.is_some() {
            callers.tasks.spawn(tend_fleet(callers.clone()));
        }
        Ok(callers)
    }

    pub fn auth(&self) -> AuthMode {
        self.config.auth
    }

    pub fn store(&self) -> Option<&Arc<dyn Store>> {
        self.store.as_ref()
    }

    /// Whether the store answered last time it was asked.
    pub fn store_up(&self) -> bool {
        self.store_up.load(Ordering::Relaxed)
    }

    pub fn meter(&self) -> Option<&Arc<Meter>> {
        self.meter.as_ref()
    }

    pub fn key_count(&self) -> usize {
        self.keys.count()
    }

    /// Who sent `headers`, and its rate standing after this request.
    ///
    /// Cancel safety: safe to drop.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, Refusal> {
        if self.config.auth == AuthMode::None {
            return Ok(Caller::anonymous());
        }
        let store = self.store.as_deref().ok_or(Refusal::StoreUnavailable)?;
        let (id, secret) = bearer(headers).ok_or(Refusal::Unauthorized)?;
        let entry = match self.keys.find(store, &id).await {
            Ok(entry) => entry,
            Err(Lookup::Unknown) => return Err(Refusal::Unauthorized),
            Err(Lookup::StoreUnavailable(error)) => {
                self.note_store(Err(&error));
                return Err(Refusal::StoreUnavailable);
            }
        };
        let record = entry.record();
        if record.is_revoked() || !record.secret_hash.matches(&secret) {
            return Err(Refusal::Unauthorized);
        }
        let policy = entry.policy();
        let rate = self
            .take_request(&entry, &policy)
            .await
            .map_err(|retry_after| {
                let standing = RateStanding {
                    remaining: 0,
                    reset_s: retry_after.as_secs_f64().ceil() as u64,
                };
                let cpu = policy.cpu_s_per_day.map(|q| entry.gate.cpu_left(q));
                Refusal::RateLimited {
                    retry_after,
                    fields: limits::ratelimit_fields(
                        &policy,
                        Some(standing),
                        entry.jobs_in_flight(),
                        cpu,
                    ),
                }
            })?;
        Ok(Caller {
            key: Some(entry),
            rate,
        })
    }

    /// One request off the key's rate: the fleet's (a leased slice, or the
    /// store when the slice is spent), else this instance's own limiter.
    async fn take_request(
        &self,
        entry: &Arc<KeyEntry>,
        policy: &Policy,
    ) -> Result<Option<RateStanding>, Duration> {
        if let Some(fleet) = &self.fleet {
            match fleet.take_request(&entry.id(), policy).await {
                fleet::Verdict::Decided(decision) => return decision,
                fleet::Verdict::StoreUnavailable(error) => self.note_store(Err(&error)),
            }
        }
        entry.gate.take_request(policy)
    }

    /// Admits one job of `caller`: its CPU quota and its jobs at once (the
    /// fleet's, with a shared store). The permit holds its slot until
    /// dropped.
    ///
    /// Cancel safety: safe to drop.
    pub async fn admit_job(&self, caller: &Caller) -> Result<Option<JobPermit>, Refusal> {
        let Some(entry) = caller.key.as_ref() else {
            return Ok(None);
        };
        let policy = entry.policy();
        if let Some(quota_s) = policy.cpu_s_per_day {
            let (left, reset) = entry.gate.cpu_left(quota_s);
            if left <= 0.0 {
                return Err(Refusal::QuotaExceeded {
                    quota_s,
                    retry_after: Duration::from_secs(reset),
                });
            }
        }
        let refused = Refusal::ConcurrencyLimited {
            max: policy.max_concurrent.unwrap_or(0),
        };
        if let (Some(fleet), Some(max)) = (&self.fleet, policy.max_concurrent) {
            match fleet.take_slot(&entry.id(), max).await {
                fleet::Verdict::Decided(true) => {
                    return Ok(JobPermit::take(entry, None, Some(fleet.clone())))
                }
                fleet::Verdict::Decided(false) => return Err(refused),
                fleet::Verdict::StoreUnavailable(error) => self.note_store(Err(&error)),
            }
        }
        JobPermit::take(entry, policy.max_concurrent, None)
            .map(Some)
            .ok_or(refused)
    }

    /// Meters a job that ran for `caller`; nothing without a key.
    pub fn meter_job(&self, caller: &Caller, usage: JobUsage) {
        if let (Some(meter), Some(_)) = (&self.meter, &caller.key) {
            meter.record(usage);
        }
    }

    /// The key's usage since `since_hour`, from the store.
    pub async fn usage_of(
        &self,
        key: &KeyId,
        since_hour: i64,
    ) -> Result<Vec<pyexec_store::UsageTotal>, StoreError> {
        let store = self
            .store
            .as_ref()
            .ok_or_else(|| StoreError::Unavailable("no store".into()))?;
        let filter = UsageFilter {
            key_id: Some(key.clone()),
            since_hour,
            until_hour: None,
        };
        let result = store.usage(&filter).await;
        self.note_store(result.as_ref().map(|_| ()));
        result
    }

    /// Stops the background tasks and writes the pending usage, for at
    /// most `within`. Returns the jobs whose usage is still unwritten.
    pub async fn close(&self, within: Duration) -> u64 {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        let Some(meter) = &self.meter else {
            return 0;
        };
        match tokio::time::timeout(within, meter.flush()).await {
            Ok(left) => left,
            Err(_) => {
                let left = meter.pending_jobs();
                tracing::error!(
                    unwritten_jobs = left,
                    "usage not written within the shutdown's time: lost"
                );
                left
            }
        }
    }

    fn note_store(&self, result: Result<(), &StoreError>) {
        let up = result.is_ok();
        if self.store_up.swap(up, Ordering::Relaxed) != up {
            match result {
                Ok(()) => tracing::info!("the store answers again"),
                Err(error) => tracing::warn!(error = %error, "the store is unreachable"),
            }
        }
    }
}

/// `Authorization: Bearer pyx_<id>_<secret>`, well formed, or nothing. The
/// header is read with a bound: a token has a fixed length.
fn bearer(headers: &HeaderMap) -> Option<(KeyId, pyexec_store::Secret)> {
    let value = headers.get(AUTHORIZATION)?.as_bytes();
    if value.len() > 16 + pyexec_store::TOKEN_LEN {
        return None;
    }
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    parse_token(token.trim())
}

/// Gives the fleet back the slots this instance no longer needs and renews
/// its holds, about every second, until the callers close.
async fn tend_fleet(callers: Arc<Callers>) {
    let Some(fleet) = callers.fleet.clone() else {
        return;
    };
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = callers.stop.cancelled() => return,
        }
        if let Err(error) = fleet.tend().await {
            callers.note_store(Err(&error));
        }
    }
}

/// Refreshes the key cache and every key's CPU used today from the store,
/// every `refresh_every`, until the callers close.
async fn refresh(callers: Arc<Callers>) {
    let Some(store) = callers.store.clone() else {
        return;
    };
    loop {
        tokio::select! {
            _ = tokio::time::sleep(callers.config.refresh_every) => {}
            _ = callers.stop.cancelled() => return,
        }
        let listed = store.list_keys().await;
        callers.note_store(listed.as_ref().map(|_| ()));
        if let Ok(records) = listed {
            callers.keys.replace_all(records);
        }
        let today = limits::utc_day();
        let filter = UsageFilter {
            key_id: None,
            since_hour: today * 86_400,
            until_hour: None,
        };
        if let Ok(rows) = store.usage(&filter).await {
            let mut per_key: std::collections::HashMap<KeyId, u64> = Default::default();
            for row in rows {
                *per_key.entry(row.key_id).or_default() += row.cpu_us;
            }
            for entry in callers.keys.all() {
                let used = per_key.get(&entry.id()).copied().unwrap_or(0);
                entry.gate.cpu_stored(today, used);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use hyper::header::HeaderValue;

    use super::*;

    #[test]
    fn only_a_well_formed_bearer_token_is_read() {
        let (id, token, _) = pyexec_store::new_token();
        let mut headers = HeaderMap::new();
        assert!(bearer(&headers).is_none());
        for (value, ok) in [
            (format!("Bearer {token}"), true),
            (format!("bearer   {token}  "), true),
            (format!("Basic {token}"), false),
            (format!("Bearer {token}x"), false),
            ("Bearer pyx_short_secret".to_string(), false),
            (format!("Bearer {}", "a".repeat(10_000)), false),
        ] {
            headers.insert(AUTHORIZATION, HeaderValue::from_str(&value).unwrap());
            let read = bearer(&headers);
            assert_eq!(read.is_some(), ok, "{value:.40}");
            if ok {
                assert_eq!(read.unwrap().0, id);
            }
        }
    }
}
