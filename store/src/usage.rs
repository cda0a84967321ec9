//! Metered usage: per key, per hour, per outcome, added in idempotent batches.
//!
//! All figures are integers (microseconds, bytes, counts) so that sums are
//! exact; the databases keep them as signed 64-bit integers, which is why
//! every figure must stay at or below `i64::MAX`.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::error::StoreError;
use crate::token::KeyId;

/// The most deltas one batch may carry.
pub const MAX_BATCH_DELTAS: usize = 10_000;
/// The longest batch id, in bytes.
pub const MAX_BATCH_ID_LEN: usize = 64;
/// The longest outcome name, in bytes.
pub const MAX_OUTCOME_LEN: usize = 32;
/// How long an applied batch id is remembered ([`Store::purge`](crate::Store::purge)
/// forgets older ones): a batch must not be retried after this.
pub const BATCH_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Usage to add to one key's totals for one hour and outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageDelta {
    pub key_id: KeyId,
    /// Unix seconds, a multiple of 3600.
    pub hour_start: i64,
    /// How the jobs ended, e.g. `ok`, `timeout`, `script_exception`:
    /// 1 to 32 characters of `[a-z0-9_]`.
    pub outcome: String,
    pub jobs: u64,
    pub cpu_us: u64,
    pub wall_us: u64,
    /// The largest peak of the jobs (a maximum, not a sum).
    pub peak_memory_bytes: u64,
}

/// One row of totals: the sum of every delta recorded for this key, hour and
/// outcome (`peak_memory_bytes`: their maximum).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageTotal {
    pub key_id: KeyId,
    pub hour_start: i64,
    pub outcome: String,
    pub jobs: u64,
    pub cpu_us: u64,
    pub wall_us: u64,
    pub peak_memory_bytes: u64,
}

/// Which totals [`Store::usage`](crate::Store::usage) returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageFilter {
    /// One key, or every key.
    pub key_id: Option<KeyId>,
    /// Hours starting at or after this (unix seconds).
    pub since_hour: i64,
    /// Hours starting before this, or no end.
    pub until_hour: Option<i64>,
}

/// What [`Store::record_usage`](crate::Store::record_usage) did with a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// Its deltas were added, in one transaction.
    Applied,
    /// A batch with this id was applied before: nothing was added again.
    AlreadyApplied,
}

/// A batch id: 1 to [`MAX_BATCH_ID_LEN`] bytes of printable ASCII.
pub(crate) fn validate_batch_id(batch_id: &str) -> Result<(), StoreError> {
    let ok = !batch_id.is_empty()
        && batch_id.len() <= MAX_BATCH_ID_LEN
        && batch_id.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "a batch id has 1 to {MAX_BATCH_ID_LEN} printable ASCII characters"
        )))
    }
}

/// The deltas of one batch, checked and merged per (key, hour, outcome), in
/// a fixed order (so that concurrent batches lock rows in the same order).
pub(crate) fn merge(deltas: &[UsageDelta]) -> Result<Vec<UsageTotal>, StoreError> {
    if deltas.len() > MAX_BATCH_DELTAS {
        return Err(StoreError::Invalid(format!(
            "a batch holds at most {MAX_BATCH_DELTAS} deltas, not {}",
            deltas.len()
        )));
    }
    let mut merged: BTreeMap<(KeyId, i64, String), UsageTotal> = BTreeMap::new();
    for delta in deltas {
        validate_delta(delta)?;
        let key = (
            delta.key_id.clone(),
            delta.hour_start,
            delta.outcome.clone(),
        );
        match merged.get_mut(&key) {
            None => {
                merged.insert(
                    key,
                    UsageTotal {
                        key_id: delta.key_id.clone(),
                        hour_start: delta.hour_start,
                        outcome: delta.outcome.clone(),
                        jobs: delta.jobs,
                        cpu_us: delta.cpu_us,
                        wall_us: delta.wall_us,
                        peak_memory_bytes: delta.peak_memory_bytes,
                    },
                );
            }
            Some(total) => {
                total.jobs = add(total.jobs, delta.jobs)?;
                total.cpu_us = add(total.cpu_us, delta.cpu_us)?;
                total.wall_us = add(total.wall_us, delta.wall_us)?;
                total.peak_memory_bytes = total.peak_memory_bytes.max(delta.peak_memory_bytes);
            }
        }
    }
    Ok(merged.into_values().collect())
}

fn validate_delta(delta: &UsageDelta) -> Result<(), StoreError> {
    if delta.hour_start < 0 || delta.hour_start % 3600 != 0 {
        return Err(StoreError::Invalid(format!(
            "hour_start must be a non-negative multiple of 3600, not {}",
            delta.hour_start
        )));
    }
    validate_outcome(&delta.outcome)?;
    for (name, value) in [
        ("jobs", delta.jobs),
        ("cpu_us", delta.cpu_us),
        ("wall_us", delta.wall_us),
        ("peak_memory_bytes", delta.peak_memory_bytes),
    ] {
        if value > i64::MAX as u64 {
            return Err(StoreError::Invalid(format!("{name} {value} is too large")));
        }
    }
    Ok(())
}

/// An outcome name: 1 to [`MAX_OUTCOME_LEN`] bytes of `[a-z0-9_]`.
fn validate_outcome(outcome: &str) -> Result<(), StoreError> {
    let ok = !outcome.is_empty()
        && outcome.len() <= MAX_OUTCOME_LEN
        && outcome
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "an outcome has 1 to {MAX_OUTCOME_LEN} characters of [a-z0-9_]"
        )))
    }
}

fn add(a: u64, b: u64) -> Result<u64, StoreError> {
    a.checked_add(b)
        .filter(|sum| *sum <= i64::MAX as u64)
        .ok_or_else(|| StoreError::Invalid("a usage sum overflows 64 bits".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delta(key: &str, hour: i64, outcome: &str, jobs: u64, peak: u64) -> UsageDelta {
        UsageDelta {
            key_id: KeyId::parse(key).unwrap(),
            hour_start: hour,
            outcome: outcome.into(),
            jobs,
            cpu_us: 10,
            wall_us: 20,
            peak_memory_bytes: peak,
        }
    }

    #[test]
    fn merge_sums_and_takes_the_largest_peak_in_a_fixed_order() {
        let merged = merge(&[
            delta("bbbbbbbbbbbb", 3600, "ok", 1, 50),
            delta("aaaaaaaaaaaa", 7200, "ok", 2, 10),
            delta("bbbbbbbbbbbb", 3600, "ok", 3, 40),
            delta("aaaaaaaaaaaa", 7200, "timeout", 1, 99),
        ])
        .unwrap();
        let keys: Vec<_> = merged
            .iter()
            .map(|t| (t.key_id.as_str(), t.hour_start, t.outcome.as_str(), t.jobs))
            .collect();
        assert_eq!(
            keys,
            [
                ("aaaaaaaaaaaa", 7200, "ok", 2),
                ("aaaaaaaaaaaa", 7200, "timeout", 1),
                ("bbbbbbbbbbbb", 3600, "ok", 4)
            ]
        );
        assert_eq!(merged[2].cpu_us, 20);
        assert_eq!(merged[2].peak_memory_bytes, 50);
    }

    #[test]
    fn bad_deltas_are_refused() {
        let key = "aaaaaaaaaaaa";
        for bad in [
            delta(key, 3601, "ok", 1, 0),
            delta(key, -3600, "ok", 1, 0),
            delta(key, 3600, "", 1, 0),
            delta(key, 3600, "Not-OK", 1, 0),
            delta(key, 3600, &"x".repeat(MAX_OUTCOME_LEN + 1), 1, 0),
            delta(key, 3600, "ok", i64::MAX as u64 + 1, 0),
        ] {
            assert!(
                matches!(
                    merge(std::slice::from_ref(&bad)),
                    Err(StoreError::Invalid(_))
                ),
                "{bad:?}"
            );
        }
        let big = delta(key, 3600, "ok", i64::MAX as u64, 0);
        assert!(merge(&[big.clone(), big]).is_err());
        let many = vec![delta(key, 3600, "ok", 1, 0); MAX_BATCH_DELTAS + 1];
        assert!(merge(&many).is_err());
    }

    #[test]
    fn batch_ids_are_bounded_printable_ascii() {
        assert!(validate_batch_id("inst-1:42").is_ok());
        for bad in [
            "",
            "with space",
            "tab\t",
            "é",
            &"x".repeat(MAX_BATCH_ID_LEN + 1),
        ] {
            assert!(validate_batch_id(bad).is_err(), "{bad:?}");
        }
    }
}
