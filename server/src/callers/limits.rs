//! A key's limits and where it stands against them: requests per second
//! with a burst (GCRA, by `governor`), jobs at once, CPU-seconds per UTC
//! day, and ceilings on a request's own `limits`. The refusals say when to
//! come back, and every answer can carry where the key stands as the IETF
//! `RateLimit-Policy` / `RateLimit` fields (draft-ietf-httpapi-ratelimit-headers-11).

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use pyexec_store::KeyLimits;

/// The limits every key has unless it sets its own (`PYEXEC_KEY_*`).
#[derive(Debug, Clone, PartialEq)]
pub struct KeyDefaults {
    /// Requests per second; `None`: no rate limit.
    pub rate_per_s: Option<f64>,
    pub burst: u32,
    /// Jobs at once; `None`: only the server's own cap.
    pub max_concurrent: Option<u32>,
    /// CPU-seconds per UTC day; `None`: no quota.
    pub cpu_s_per_day: Option<f64>,
    pub weight: u32,
}

/// The limits of one key, resolved: its own where it set them, else the
/// defaults; its ceilings never above the server's.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub rate_per_s: Option<f64>,
    pub burst: u32,
    pub max_concurrent: Option<u32>,
    pub cpu_s_per_day: Option<f64>,
    /// The longest `limits.timeout_s` a request of this key may ask for, and
    /// its jobs' limit when it asks for none.
    pub max_timeout: Duration,
    pub max_memory_mb: u64,
    pub weight: u32,
}

impl Policy {
    /// `own` over `defaults`, with the ceilings capped at the server's.
    pub fn resolve(
        own: &KeyLimits,
        defaults: &KeyDefaults,
        server_timeout: Duration,
        server_memory_mb: u64,
    ) -> Policy {
        let positive = |v: f64| (v > 0.0 && v.is_finite()).then_some(v);
        Policy {
            rate_per_s: own.rate_per_s.map_or(defaults.rate_per_s, positive),
            burst: own.burst.unwrap_or(defaults.burst).max(1),
            max_concurrent: own
                .max_concurrent
                .map_or(defaults.max_concurrent, |c| Some(c.max(1))),
            cpu_s_per_day: own.cpu_s_per_day.map_or(defaults.cpu_s_per_day, positive),
            max_timeout: own
                .max_timeout_s
                .and_then(positive)
                .map_or(server_timeout, |s| {
                    Duration::from_secs_f64(s).min(server_timeout)
                }),
            max_memory_mb: own
                .max_memory_mb
                .map_or(server_memory_mb, |m| m.min(server_memory_mb)),
            weight: own.weight.unwrap_or(defaults.weight).max(1),
        }
    }
}

type Limiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

/// Where a key stands against its rate and its CPU quota.
pub struct KeyGate {
    rate: Mutex<Option<Limiter>>,
    cpu: Mutex<CpuDay>,
}

/// CPU used by a key in one UTC day: what the store counted (every instance's
/// flushed usage) plus what this instance metered and has not written yet.
#[derive(Debug, Default)]
struct CpuDay {
    day: i64,
    stored_us: u64,
    unflushed_us: u64,
}

/// Where the rate limit stood after an admitted request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateStanding {
    pub remaining: u32,
    /// Seconds until the burst is whole again.
    pub reset_s: u64,
}

impl KeyGate {
    pub fn new(policy: &Policy) -> KeyGate {
        KeyGate {
            rate: Mutex::new(limiter(policy)),
            cpu: Mutex::new(CpuDay {
                day: utc_day(),
                ..CpuDay::default()
            }),
        }
    }

    /// Follows changed limits: a new rate starts with a full burst.
    pub fn follow(&self, policy: &Policy) {
        *lock(&self.rate) = limiter(policy);
    }

    /// Takes one request from the rate limit: its standing, `Ok(None)` when
    /// there is no rate limit, or how long until the next is allowed.
    pub fn take_request(&self, policy: &Policy) -> Result<Option<RateStanding>, Duration> {
        let rate = lock(&self.rate);
        let Some(limiter) = rate.as_ref() else {
            return Ok(None);
        };
        match limiter.check() {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                let used = policy.burst.saturating_sub(remaining);
                let per_request = 1.0 / policy.rate_per_s.unwrap_or(1.0);
                Ok(Some(RateStanding {
                    remaining,
                    reset_s: (f64::from(used) * per_request).ceil() as u64,
                }))
            }
            Err(not_until) => Err(not_until.wait_time_from(limiter.clock().now())),
        }
    }

    /// CPU-seconds left today under `quota`, and seconds until the day ends.
    pub fn cpu_left(&self, quota_s: f64) -> (f64, u64) {
        let mut cpu = lock(&self.cpu);
        cpu.roll_over();
        let used_s = (cpu.stored_us + cpu.unflushed_us) as f64 / 1e6;
        ((quota_s - used_s).max(0.0), seconds_to_midnight())
    }

    /// A job of this key used `cpu_us`: counted until the meter writes it.
    pub fn add_cpu(&self, cpu_us: u64) {
        let mut cpu = lock(&self.cpu);
        cpu.roll_over();
        cpu.unflushed_us += cpu_us;
    }

    /// The meter wrote `cpu_us` of this key's usage of `day` to the store.
    pub fn cpu_written(&self, day: i64, cpu_us: u64) {
        let mut cpu = lock(&self.cpu);
        cpu.roll_over();
        if cpu.day == day {
            cpu.unflushed_us = cpu.unflushed_us.saturating_sub(cpu_us);
            cpu.stored_us += cpu_us;
        }
    }

    /// What the store counts for this key today, every instance's usage
    /// flushed so far (the periodic refresh).
    pub fn cpu_stored(&self, day: i64, cpu_us: u64) {
        let mut cpu = lock(&self.cpu);
        cpu.roll_over();
        if cpu.day == day {
            cpu.stored_us = cpu_us;
        }
    }
}

impl CpuDay {
    fn roll_over(&mut self) {
        let today = utc_day();
        if today != self.day {
            *self = CpuDay {
                day: today,
                ..CpuDay::default()
            };
        }
    }
}

fn limiter(policy: &Policy) -> Option<Limiter> {
    let rate = policy.rate_per_s?;
    let period = Duration::from_secs_f64(1.0 / rate);
    let burst = NonZeroU32::new(policy.burst.max(1))?;
    let quota = Quota::with_period(period)?.allow_burst(burst);
    Some(RateLimiter::direct(quota).with_middleware::<StateInformationMiddleware>())
}

/// The UTC day number (days since 1970-01-01).
pub fn utc_day() -> i64 {
    unix_seconds() / 86_400
}

pub fn unix_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn seconds_to_midnight() -> u64 {
    let now = unix_seconds();
    (86_400 - now.rem_euclid(86_400)) as u64
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// The `RateLimit-Policy` and `RateLimit` field values for a key's answer
/// (draft-ietf-httpapi-ratelimit-headers-11): one item per limit the key
/// has, `rate` (requests; the burst over the time it takes to refill),
/// `concurrency` (`qu="concurrent-requests"`) and `cpu` (CPU-seconds per
/// UTC day, a unit of pyexec's own named in `pyexec-unit`).
pub fn ratelimit_fields(
    policy: &Policy,
    rate: Option<RateStanding>,
    jobs_in_flight: u32,
    cpu: Option<(f64, u64)>,
) -> Option<(String, String)> {
    let mut policies = Vec::new();
    let mut standings = Vec::new();
    if let Some(per_s) = policy.rate_per_s {
        let window = (f64::from(policy.burst) / per_s).ceil().max(1.0) as u64;
        policies.push(format!("\"rate\";q={};w={window}", policy.burst));
        let standing = rate.unwrap_or(RateStanding {
            remaining: 0,
            reset_s: window,
        });
        standings.push(format!(
            "\"rate\";r={};t={}",
            standing.remaining, standing.reset_s
        ));
    }
    if let Some(max) = policy.max_concurrent {
        policies.push(format!(
            "\"concurrency\";q={max};qu=\"concurrent-requests\""
        ));
        standings.push(format!(
            "\"concurrency\";r={}",
            max.saturating_sub(jobs_in_flight)
        ));
    }
    if let (Some(quota), Some((left, reset))) = (policy.cpu_s_per_day, cpu) {
        policies.push(format!(
            "\"cpu\";q={};w=86400;pyexec-unit=\"cpu-seconds\"",
            quota.floor() as u64
        ));
        standings.push(format!("\"cpu\";r={};t={reset}", left.floor() as u64));
    }
    (!policies.is_empty()).then(|| (policies.join(", "), standings.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> KeyDefaults {
        KeyDefaults {
            rate_per_s: Some(10.0),
            burst: 20,
            max_concurrent: Some(4),
            cpu_s_per_day: None,
            weight: 1,
        }
    }

    #[test]
    fn a_keys_own_limits_override_the_defaults_and_ceilings_stay_under_the_servers() {
        let own = KeyLimits {
            rate_per_s: Some(2.0),
            cpu_s_per_day: Some(60.0),
            max_timeout_s: Some(30.0),
            max_memory_mb: Some(64),
            weight: Some(3),
            ..KeyLimits::default()
        };
        let policy = Policy::resolve(&own, &defaults(), Duration::from_secs(10), 256);
        assert_eq!(policy.rate_per_s, Some(2.0));
        assert_eq!(policy.burst, 20);
        assert_eq!(policy.max_concurrent, Some(4));
        assert_eq!(policy.cpu_s_per_day, Some(60.0));
        assert_eq!(policy.max_timeout, Duration::from_secs(10), "capped");
        assert_eq!(policy.max_memory_mb, 64);
        assert_eq!(policy.weight, 3);
        let plain = Policy::resolve(
            &KeyLimits::default(),
            &defaults(),
            Duration::from_secs(10),
            256,
        );
        assert_eq!(plain.rate_per_s, Some(10.0));
        assert_eq!(plain.max_memory_mb, 256);
    }

    #[test]
    fn the_rate_limit_lets_a_burst_through_then_says_when_to_come_back() {
        let policy = Policy::resolve(
            &KeyLimits {
                rate_per_s: Some(1.0),
                burst: Some(3),
                ..KeyLimits::default()
            },
            &defaults(),
            Duration::from_secs(10),
            256,
        );
        let gate = KeyGate::new(&policy);
        let remaining: Vec<u32> = (0..3)
            .map(|_| gate.take_request(&policy).unwrap().unwrap().remaining)
            .collect();
        assert_eq!(remaining, [2, 1, 0]);
        let wait = gate.take_request(&policy).unwrap_err();
        assert!(
            wait > Duration::from_millis(500) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
    }

    #[test]
    fn the_cpu_quota_counts_what_is_written_and_what_is_not_yet() {
        let gate = KeyGate::new(&Policy::resolve(
            &KeyLimits::default(),
            &defaults(),
            Duration::from_secs(10),
            256,
        ));
        gate.add_cpu(1_500_000);
        assert_eq!(gate.cpu_left(10.0).0, 8.5);
        let today = utc_day();
        gate.cpu_written(today, 1_000_000);
        assert_eq!(gate.cpu_left(10.0).0, 8.5, "moved, not doubled");
        // Another instance's usage, as the store reports it.
        gate.cpu_stored(today, 4_000_000);
        assert_eq!(gate.cpu_left(10.0).0, 5.5);
        assert_eq!(gate.cpu_left(1.0).0, 0.0, "never negative");
    }

    #[test]
    fn the_ratelimit_fields_name_each_limit_the_key_has() {
        let mut policy = Policy::resolve(
            &KeyLimits {
                rate_per_s: Some(5.0),
                burst: Some(10),
                cpu_s_per_day: Some(3600.0),
                ..KeyLimits::default()
            },
            &defaults(),
            Duration::from_secs(10),
            256,
        );
        let standing = RateStanding {
            remaining: 7,
            reset_s: 1,
        };
        let (policies, limits) =
            ratelimit_fields(&policy, Some(standing), 1, Some((3000.4, 600))).unwrap();
        assert_eq!(
            policies,
            "\"rate\";q=10;w=2, \"concurrency\";q=4;qu=\"concurrent-requests\", \
             \"cpu\";q=3600;w=86400;pyexec-unit=\"cpu-seconds\""
        );
        assert_eq!(
            limits,
            "\"rate\";r=7;t=1, \"concurrency\";r=3, \"cpu\";r=3000;t=600"
        );
        policy.rate_per_s = None;
        policy.max_concurrent = None;
        policy.cpu_s_per_day = None;
        assert_eq!(ratelimit_fields(&policy, None, 0, None), None);
    }
}
