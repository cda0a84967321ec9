//! What can go wrong in the store, said by whose fault it is.

use std::fmt;

/// An error of a store operation. No variant ever carries a token, a secret
/// or a database password: messages name key ids, file paths and redacted
/// database locations only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// The database can't be reached or written right now: connection
    /// refused or lost, deadline passed, file gone or replaced, read-only
    /// filesystem, disk full, lock contention. Retry later; nothing about
    /// the request is wrong.
    Unavailable(String),
    /// The database was migrated by a newer pyexec: its schema version
    /// `found` is beyond the `known` one of this build.
    SchemaTooNew { found: i64, known: i64 },
    /// The database answered something this store never writes: a damaged
    /// file, a foreign schema, a value out of its column's range.
    Corrupt(String),
    /// The key (or other record) the operation names does not exist.
    NotFound,
    /// The caller's input was refused (a bad name, limit, id or batch).
    Invalid(String),
    /// A bug on our side: the database refused a statement we built.
    Internal(String),
}

impl StoreError {
    /// Whether the same call may succeed later without any change: only
    /// [`StoreError::Unavailable`].
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Unavailable(why) => write!(f, "store unavailable: {why}"),
            StoreError::SchemaTooNew { found, known } => write!(
                f,
                "the database's schema is version {found}, newer than version {known} that \
                 this build of pyexec knows; run a pyexec at least as new as the one that \
                 migrated it"
            ),
            StoreError::Corrupt(why) => write!(f, "store corrupt: {why}"),
            StoreError::NotFound => f.write_str("not found"),
            StoreError::Invalid(why) => write!(f, "invalid: {why}"),
            StoreError::Internal(why) => write!(f, "store internal error: {why}"),
        }
    }
}

impl std::error::Error for StoreError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unavailable_is_retryable() {
        assert!(StoreError::Unavailable("x".into()).is_retryable());
        for e in [
            StoreError::SchemaTooNew { found: 2, known: 1 },
            StoreError::Corrupt("x".into()),
            StoreError::NotFound,
            StoreError::Invalid("x".into()),
            StoreError::Internal("x".into()),
        ] {
            assert!(!e.is_retryable(), "{e:?}");
        }
    }

    #[test]
    fn schema_too_new_names_both_versions() {
        let text = StoreError::SchemaTooNew { found: 7, known: 3 }.to_string();
        assert!(
            text.contains("version 7") && text.contains("version 3"),
            "{text}"
        );
    }
}
