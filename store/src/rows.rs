//! Rows as both databases hand them back (plain integers, floats and text),
//! checked into the public types. A value this store never writes is
//! `StoreError::Corrupt`, never a panic.

use crate::error::StoreError;
use crate::keys::{KeyLimits, KeyRecord};
use crate::snippets::{Snippet, SnippetId};
use crate::token::{KeyId, SecretHash};
use crate::usage::UsageTotal;

/// The columns of `api_keys`, in this order, for both dialects.
pub(crate) const KEY_COLUMNS: &str = "id, name, secret_hash, created_at, revoked_at, rate_per_s, \
     burst, max_concurrent, cpu_s_per_day, max_timeout_s, max_memory_mb, weight";

/// The columns of `usage_hourly`, in this order.
pub(crate) const USAGE_COLUMNS: &str =
    "key_id, hour_start, outcome, jobs, cpu_us, wall_us, peak_memory_bytes";

/// The columns of `snippets`, in this order.
pub(crate) const SNIPPET_COLUMNS: &str = "id, key_id, script, input, limits, created_at";

pub(crate) struct KeyRow {
    pub id: String,
    pub name: String,
    pub secret_hash: Vec<u8>,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    pub limits: LimitColumns,
}

/// A key's limits as database columns.
#[derive(Clone, Copy)]
pub(crate) struct LimitColumns {
    pub rate_per_s: Option<f64>,
    pub burst: Option<i64>,
    pub max_concurrent: Option<i64>,
    pub cpu_s_per_day: Option<f64>,
    pub max_timeout_s: Option<f64>,
    pub max_memory_mb: Option<i64>,
    pub weight: Option<i64>,
}

impl LimitColumns {
    /// Columns for limits that passed [`KeyLimits::validate`] (so every
    /// integer fits; one that doesn't is clamped rather than wrapped).
    pub fn of(limits: &KeyLimits) -> LimitColumns {
        let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        LimitColumns {
            rate_per_s: limits.rate_per_s,
            burst: limits.burst.map(i64::from),
            max_concurrent: limits.max_concurrent.map(i64::from),
            cpu_s_per_day: limits.cpu_s_per_day,
            max_timeout_s: limits.max_timeout_s,
            max_memory_mb: limits.max_memory_mb.map(int),
            weight: limits.weight.map(i64::from),
        }
    }

    fn into_limits(self, id: &str) -> Result<KeyLimits, StoreError> {
        let small = |name: &str, v: Option<i64>| {
            v.map(|v| u32::try_from(v).map_err(|_| corrupt(format!("key {id}: {name} = {v}"))))
                .transpose()
        };
        let large = |name: &str, v: Option<i64>| {
            v.map(|v| u64::try_from(v).map_err(|_| corrupt(format!("key {id}: {name} = {v}"))))
                .transpose()
        };
        let limits = KeyLimits {
            rate_per_s: self.rate_per_s,
            burst: small("burst", self.burst)?,
            max_concurrent: small("max_concurrent", self.max_concurrent)?,
            cpu_s_per_day: self.cpu_s_per_day,
            max_timeout_s: self.max_timeout_s,
            max_memory_mb: large("max_memory_mb", self.max_memory_mb)?,
            weight: small("weight", self.weight)?,
        };
        limits
            .validate()
            .map_err(|e| corrupt(format!("key {id}: stored limits are refused: {e}")))?;
        Ok(limits)
    }
}

impl KeyRow {
    pub fn into_record(self) -> Result<KeyRecord, StoreError> {
        let id = key_id(&self.id)?;
        let secret_hash = SecretHash::from_bytes(&self.secret_hash)
            .ok_or_else(|| corrupt(format!("key {id}: the secret hash is not 32 bytes")))?;
        Ok(KeyRecord {
            limits: self.limits.into_limits(id.as_str())?,
            id,
            name: self.name,
            secret_hash,
            created_at: self.created_at,
            revoked_at: self.revoked_at,
        })
    }
}

pub(crate) struct UsageRow {
    pub key_id: String,
    pub hour_start: i64,
    pub outcome: String,
    pub jobs: i64,
    pub cpu_us: i64,
    pub wall_us: i64,
    pub peak_memory_bytes: i64,
}

impl UsageRow {
    pub fn into_total(self) -> Result<UsageTotal, StoreError> {
        let key_id = key_id(&self.key_id)?;
        let count = |name: &str, v: i64| {
            u64::try_from(v).map_err(|_| corrupt(format!("usage of key {key_id}: {name} = {v}")))
        };
        Ok(UsageTotal {
            jobs: count("jobs", self.jobs)?,
            cpu_us: count("cpu_us", self.cpu_us)?,
            wall_us: count("wall_us", self.wall_us)?,
            peak_memory_bytes: count("peak_memory_bytes", self.peak_memory_bytes)?,
            key_id,
            hour_start: self.hour_start,
            outcome: self.outcome,
        })
    }
}

pub(crate) struct SnippetRow {
    pub id: String,
    pub key_id: Option<String>,
    pub script: String,
    pub input: Option<String>,
    pub limits: Option<String>,
    pub created_at: i64,
}

impl SnippetRow {
    pub fn into_snippet(self) -> Result<Snippet, StoreError> {
        Ok(Snippet {
            id: SnippetId::parse(&self.id)
                .ok_or_else(|| corrupt("a malformed snippet id".to_string()))?,
            key_id: self.key_id.as_deref().map(key_id).transpose()?,
            script: self.script,
            input: self.input,
            limits: self.limits,
            created_at: self.created_at,
        })
    }
}

pub(crate) fn key_id(text: &str) -> Result<KeyId, StoreError> {
    KeyId::parse(text).ok_or_else(|| corrupt("a malformed key id".to_string()))
}

/// A stored count that must fit a `u32` (slots held).
pub(crate) fn count_u32(what: &str, v: i64) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| corrupt(format!("{what} = {v}")))
}

fn corrupt(why: String) -> StoreError {
    StoreError::Corrupt(why)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> KeyRow {
        KeyRow {
            id: "abcdefghij12".into(),
            name: "n".into(),
            secret_hash: vec![7; 32],
            created_at: 1,
            revoked_at: None,
            limits: LimitColumns::of(&KeyLimits {
                burst: Some(3),
                max_memory_mb: Some(512),
                ..KeyLimits::default()
            }),
        }
    }

    #[test]
    fn a_good_row_round_trips_its_limits() {
        let record = row().into_record().unwrap();
        assert_eq!(record.limits.burst, Some(3));
        assert_eq!(record.limits.max_memory_mb, Some(512));
    }

    #[test]
    fn values_this_store_never_writes_are_corrupt() {
        let mut bad_id = row();
        bad_id.id = "NOT-AN-ID".into();
        let mut bad_hash = row();
        bad_hash.secret_hash = vec![1; 31];
        let mut bad_burst = row();
        bad_burst.limits.burst = Some(-1);
        let mut huge_weight = row();
        huge_weight.limits.weight = Some(i64::MAX);
        let mut bad_rate = row();
        bad_rate.limits.rate_per_s = Some(f64::NAN);
        for bad in [bad_id, bad_hash, bad_burst, huge_weight, bad_rate] {
            assert!(matches!(bad.into_record(), Err(StoreError::Corrupt(_))));
        }
        let usage = UsageRow {
            key_id: "abcdefghij12".into(),
            hour_start: 0,
            outcome: "ok".into(),
            jobs: -1,
            cpu_us: 0,
            wall_us: 0,
            peak_memory_bytes: 0,
        };
        assert!(matches!(usage.into_total(), Err(StoreError::Corrupt(_))));
    }
}
