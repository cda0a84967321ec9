//! API keys as stored: a name, the secret's hash, when the key was made and
//! revoked, and its own limits.

use crate::error::StoreError;
use crate::token::{KeyId, SecretHash};

/// The longest key name, in characters.
pub const MAX_NAME_CHARS: usize = 64;

/// One key's own limits. `None` means "the server's default"; what each
/// figure means is the server's business, the store only keeps them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct KeyLimits {
    /// Requests per second (sustained).
    pub rate_per_s: Option<f64>,
    /// Requests allowed at once above the sustained rate.
    pub burst: Option<u32>,
    /// Jobs running at once.
    pub max_concurrent: Option<u32>,
    /// CPU-seconds of jobs per day.
    pub cpu_s_per_day: Option<f64>,
    /// The highest `timeout_s` a request may ask for.
    pub max_timeout_s: Option<f64>,
    /// The highest `memory_mb` a request may ask for.
    pub max_memory_mb: Option<u64>,
    /// The key's share when the pool is contended.
    pub weight: Option<u32>,
}

/// What [`LimitsPatch`] does to one limit.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Change<T> {
    /// Leave it as it is.
    #[default]
    Keep,
    /// Back to the server's default (`None`).
    Clear,
    Set(T),
}

impl<T: Copy> Change<T> {
    fn apply(self, to: &mut Option<T>) {
        match self {
            Change::Keep => {}
            Change::Clear => *to = None,
            Change::Set(value) => *to = Some(value),
        }
    }

    fn from_option(value: Option<T>) -> Change<T> {
        value.map_or(Change::Clear, Change::Set)
    }
}

/// A change to some of a key's limits, applied atomically by
/// [`Store::set_limits`](crate::Store::set_limits). `Default` keeps every limit.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LimitsPatch {
    pub rate_per_s: Change<f64>,
    pub burst: Change<u32>,
    pub max_concurrent: Change<u32>,
    pub cpu_s_per_day: Change<f64>,
    pub max_timeout_s: Change<f64>,
    pub max_memory_mb: Change<u64>,
    pub weight: Change<u32>,
}

impl LimitsPatch {
    /// The patch that replaces every limit with those of `limits` (clearing
    /// those that are `None`).
    pub fn replace_with(limits: &KeyLimits) -> LimitsPatch {
        LimitsPatch {
            rate_per_s: Change::from_option(limits.rate_per_s),
            burst: Change::from_option(limits.burst),
            max_concurrent: Change::from_option(limits.max_concurrent),
            cpu_s_per_day: Change::from_option(limits.cpu_s_per_day),
            max_timeout_s: Change::from_option(limits.max_timeout_s),
            max_memory_mb: Change::from_option(limits.max_memory_mb),
            weight: Change::from_option(limits.weight),
        }
    }
}

impl KeyLimits {
    /// These limits with `patch` applied.
    pub fn patched(mut self, patch: &LimitsPatch) -> KeyLimits {
        patch.rate_per_s.apply(&mut self.rate_per_s);
        patch.burst.apply(&mut self.burst);
        patch.max_concurrent.apply(&mut self.max_concurrent);
        patch.cpu_s_per_day.apply(&mut self.cpu_s_per_day);
        patch.max_timeout_s.apply(&mut self.max_timeout_s);
        patch.max_memory_mb.apply(&mut self.max_memory_mb);
        patch.weight.apply(&mut self.weight);
        self
    }

    /// Every limit that is set must be positive (and finite); integers must
    /// fit the databases' signed 64-bit columns.
    pub fn validate(&self) -> Result<(), StoreError> {
        let positive_real = |name: &str, value: Option<f64>| match value {
            Some(v) if !(v.is_finite() && v > 0.0) => Err(StoreError::Invalid(format!(
                "{name} must be a positive number, not {v}"
            ))),
            _ => Ok(()),
        };
        let positive_int = |name: &str, value: Option<u64>| match value {
            Some(v) if v == 0 || v > i64::MAX as u64 => Err(StoreError::Invalid(format!(
                "{name} must be between 1 and {}, not {v}",
                i64::MAX
            ))),
            _ => Ok(()),
        };
        positive_real("rate_per_s", self.rate_per_s)?;
        positive_int("burst", self.burst.map(u64::from))?;
        positive_int("max_concurrent", self.max_concurrent.map(u64::from))?;
        positive_real("cpu_s_per_day", self.cpu_s_per_day)?;
        positive_real("max_timeout_s", self.max_timeout_s)?;
        positive_int("max_memory_mb", self.max_memory_mb)?;
        positive_int("weight", self.weight.map(u64::from))
    }
}

/// A key as the store keeps it. The secret itself is nowhere: only its hash.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyRecord {
    pub id: KeyId,
    pub name: String,
    pub secret_hash: SecretHash,
    /// Unix seconds, by the database's clock.
    pub created_at: i64,
    /// Unix seconds; `None` while the key is valid.
    pub revoked_at: Option<i64>,
    pub limits: KeyLimits,
}

impl KeyRecord {
    pub fn is_revoked(&self) -> bool {
        self.revoked_at.is_some()
    }
}

/// A key name: 1 to [`MAX_NAME_CHARS`] characters, not only spaces, no
/// control characters (it is printed in tables and logs).
pub(crate) fn validate_name(name: &str) -> Result<(), StoreError> {
    let count = name.chars().count();
    if count == 0 || count > MAX_NAME_CHARS {
        return Err(StoreError::Invalid(format!(
            "a key name has 1 to {MAX_NAME_CHARS} characters, not {count}"
        )));
    }
    if name.trim().is_empty() {
        return Err(StoreError::Invalid(
            "a key name can't be only spaces".into(),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(StoreError::Invalid(
            "a key name can't hold control characters".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_keeps_clears_and_sets() {
        let before = KeyLimits {
            rate_per_s: Some(5.0),
            burst: Some(10),
            weight: Some(2),
            ..KeyLimits::default()
        };
        let patch = LimitsPatch {
            rate_per_s: Change::Set(7.5),
            burst: Change::Clear,
            max_memory_mb: Change::Set(512),
            ..LimitsPatch::default()
        };
        let after = before.patched(&patch);
        assert_eq!(after.rate_per_s, Some(7.5));
        assert_eq!(after.burst, None);
        assert_eq!(after.weight, Some(2));
        assert_eq!(after.max_memory_mb, Some(512));
    }

    #[test]
    fn replace_with_gives_exactly_the_new_limits() {
        let before = KeyLimits {
            rate_per_s: Some(5.0),
            max_concurrent: Some(3),
            ..KeyLimits::default()
        };
        let new = KeyLimits {
            burst: Some(4),
            ..KeyLimits::default()
        };
        assert_eq!(before.patched(&LimitsPatch::replace_with(&new)), new);
    }

    #[test]
    fn limits_must_be_positive_and_finite() {
        assert!(KeyLimits::default().validate().is_ok());
        let bad = [
            KeyLimits {
                rate_per_s: Some(0.0),
                ..Default::default()
            },
            KeyLimits {
                rate_per_s: Some(f64::NAN),
                ..Default::default()
            },
            KeyLimits {
                cpu_s_per_day: Some(-1.0),
                ..Default::default()
            },
            KeyLimits {
                max_timeout_s: Some(f64::INFINITY),
                ..Default::default()
            },
            KeyLimits {
                burst: Some(0),
                ..Default::default()
            },
            KeyLimits {
                max_concurrent: Some(0),
                ..Default::default()
            },
            KeyLimits {
                weight: Some(0),
                ..Default::default()
            },
            KeyLimits {
                max_memory_mb: Some(u64::MAX),
                ..Default::default()
            },
        ];
        for limits in bad {
            assert!(
                matches!(limits.validate(), Err(StoreError::Invalid(_))),
                "{limits:?}"
            );
        }
    }

    #[test]
    fn names_are_bounded_and_printable() {
        assert!(validate_name("ci runner (prod) ✓").is_ok());
        assert!(validate_name(&"é".repeat(MAX_NAME_CHARS)).is_ok());
        for bad in [
            String::new(),
            "   ".to_string(),
            "a".repeat(MAX_NAME_CHARS + 1),
            "tab\there".to_string(),
            "nul\0".to_string(),
            "line\nbreak".to_string(),
        ] {
            assert!(validate_name(&bad).is_err(), "{bad:?}");
        }
    }
}
