//! Fleet budgets: shares of a key's limits that server instances lease from
//! the store, so that a limit holds for the fleet without a database round
//! trip per request.
//!
//! Two kinds:
//! - **Counters** (requests in a rate window, CPU milliseconds in a day): the
//!   store grants slices of a window's cap and never grants more than the cap
//!   in total; an instance gives back what it did not use.
//! - **Concurrency slots**: each instance holds some of a key's slots; the
//!   holds of all instances never add up to more than the key's maximum. A
//!   hold lives until its expiry, which the instance's heartbeat pushes back;
//!   the holds of an instance that stops heart-beating lapse and count no
//!   more (and a lapsed hold is deleted, never revived).

use std::fmt;
use std::time::Duration;

use crate::error::StoreError;
use crate::token::KeyId;

/// The longest counter name, in bytes.
pub const MAX_COUNTER_LEN: usize = 32;
/// The longest instance id, in bytes.
pub const MAX_INSTANCE_ID_LEN: usize = 64;
/// The longest hold a heartbeat or an acquisition may ask for.
pub const MAX_HOLD_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long after its end a counter window is kept (returns may still
/// arrive), before [`Store::purge`](crate::Store::purge) drops it.
pub const COUNTER_GRACE: Duration = Duration::from_secs(3600);

/// A counter's window: `[start, start + len_s)`, unix seconds. One counter
/// name should always use one window length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Unix seconds.
    pub start: i64,
    /// Seconds, at least 1.
    pub len_s: i64,
}

impl Window {
    pub(crate) fn end(&self) -> Result<i64, StoreError> {
        if self.start < 0 || self.len_s < 1 {
            return Err(StoreError::Invalid(format!(
                "a window starts at or after 0 and lasts at least 1 s, not {self:?}"
            )));
        }
        self.start
            .checked_add(self.len_s)
            .ok_or_else(|| StoreError::Invalid(format!("window {self:?} ends too late")))
    }
}

/// What [`Store::lease_counter`](crate::Store::lease_counter) granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CounterGrant {
    /// Granted by this call: `min(want, cap - already granted)`, at least 0.
    pub granted: i64,
    /// Granted so far in this window, to every instance, this call included
    /// (net of what was returned).
    pub window_total: i64,
}

/// The id of one running server instance: 1 to [`MAX_INSTANCE_ID_LEN`]
/// bytes of `[A-Za-z0-9._:-]`. Each process start should pick a new one (a
/// restarted instance must not inherit the holds of its previous life).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceId(String);

impl InstanceId {
    /// `text` if it is a well-formed instance id.
    pub fn parse(text: &str) -> Option<InstanceId> {
        let ok = !text.is_empty()
            && text.len() <= MAX_INSTANCE_ID_LEN
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        ok.then(|| InstanceId(text.to_owned()))
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InstanceId({})", self.0)
    }
}

/// Slots of one key that one instance holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotHold {
    pub key_id: KeyId,
    pub held: u32,
}

/// What [`Store::purge`](crate::Store::purge) deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Purged {
    /// Usage batch ids forgotten.
    pub usage_batches: u64,
    /// Counter windows dropped.
    pub counter_windows: u64,
    /// Expired slot holds deleted.
    pub slot_holds: u64,
}

/// A counter name: 1 to [`MAX_COUNTER_LEN`] bytes of `[a-z0-9_]`.
pub(crate) fn validate_counter(counter: &str) -> Result<(), StoreError> {
    let ok = !counter.is_empty()
        && counter.len() <= MAX_COUNTER_LEN
        && counter
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "a counter name has 1 to {MAX_COUNTER_LEN} characters of [a-z0-9_]"
        )))
    }
}

pub(crate) fn validate_amounts(want: i64, cap: i64) -> Result<(), StoreError> {
    if want < 0 || cap < 0 {
        return Err(StoreError::Invalid(format!(
            "want and cap are at least 0, not {want} and {cap}"
        )));
    }
    Ok(())
}

/// `ttl` in milliseconds, if it is between 1 ms and [`MAX_HOLD_TTL`].
pub(crate) fn ttl_ms(ttl: Duration) -> Result<i64, StoreError> {
    if ttl < Duration::from_millis(1) || ttl > MAX_HOLD_TTL {
        return Err(StoreError::Invalid(format!(
            "a hold lasts 1 ms to {} s, not {ttl:?}",
            MAX_HOLD_TTL.as_secs()
        )));
    }
    Ok(ttl.as_millis() as i64)
}

/// The grant of a lease: what is left under the cap, at most `want`.
pub(crate) fn grant(want: i64, cap: i64, already: i64) -> i64 {
    want.min(cap.saturating_sub(already)).max(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_never_exceeds_the_cap_nor_goes_negative() {
        assert_eq!(grant(5, 10, 0), 5);
        assert_eq!(grant(5, 10, 7), 3);
        assert_eq!(grant(5, 10, 10), 0);
        assert_eq!(grant(5, 10, 12), 0);
        assert_eq!(grant(0, 10, 0), 0);
    }

    #[test]
    fn windows_must_be_sane() {
        assert_eq!(
            Window {
                start: 60,
                len_s: 60
            }
            .end(),
            Ok(120)
        );
        for bad in [
            Window {
                start: -1,
                len_s: 60,
            },
            Window { start: 0, len_s: 0 },
            Window {
                start: i64::MAX,
                len_s: 1,
            },
        ] {
            assert!(bad.end().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_and_ttls_are_checked() {
        assert!(validate_counter("cpu_ms").is_ok());
        assert!(validate_counter("").is_err());
        assert!(validate_counter("CPU").is_err());
        assert!(InstanceId::parse("host-1:8080.a_b").is_some());
        assert!(InstanceId::parse("").is_none());
        assert!(InstanceId::parse("has space").is_none());
        assert!(InstanceId::parse(&"x".repeat(MAX_INSTANCE_ID_LEN + 1)).is_none());
        assert!(ttl_ms(Duration::ZERO).is_err());
        assert!(ttl_ms(MAX_HOLD_TTL + Duration::from_secs(1)).is_err());
        assert_eq!(ttl_ms(Duration::from_secs(2)), Ok(2000));
        assert!(validate_amounts(-1, 5).is_err());
        assert!(validate_amounts(1, -5).is_err());
    }
}
