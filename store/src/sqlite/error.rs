//! SQLite's errors, said by whose fault they are, and which of them leave
//! the connection suspect.

use std::path::Path;

use rusqlite::ErrorCode;

use crate::error::StoreError;

/// An operation's failure before it is classified: SQLite's own error (the
/// connection may need reopening) or one of ours.
pub(super) enum OpError {
    Sqlite(rusqlite::Error),
    Store(StoreError),
}

impl From<rusqlite::Error> for OpError {
    fn from(e: rusqlite::Error) -> OpError {
        OpError::Sqlite(e)
    }
}

impl From<StoreError> for OpError {
    fn from(e: StoreError) -> OpError {
        OpError::Store(e)
    }
}

pub(super) fn code(e: &rusqlite::Error) -> Option<ErrorCode> {
    match e {
        rusqlite::Error::SqliteFailure(failure, _) => Some(failure.code),
        _ => None,
    }
}

pub(super) fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
    )
}

/// Errors after which the connection is closed and reopened by the next
/// operation: the file or its filesystem misbehaved, and a fresh connection
/// is how SQLite recovers once it is back (writable, mounted, with space).
pub(super) fn poisons_connection(e: &rusqlite::Error) -> bool {
    matches!(
        code(e),
        Some(
            ErrorCode::ReadOnly
                | ErrorCode::SystemIoFailure
                | ErrorCode::DiskFull
                | ErrorCode::CannotOpen
                | ErrorCode::NotADatabase
                | ErrorCode::DatabaseCorrupt
                | ErrorCode::PermissionDenied
                | ErrorCode::FileLockingProtocolFailed
        )
    )
}

pub(super) fn classify(e: &rusqlite::Error, path: &Path) -> StoreError {
    let at = path.display();
    let Some(code) = code(e) else {
        // Not SQLite's failure but a value that did not convert: a column
        // holding what this store never writes.
        return match e {
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::Utf8Error(..) => {
                StoreError::Corrupt(format!("{at}: unexpected value: {e}"))
            }
            _ => StoreError::Internal(format!("{at}: {e}")),
        };
    };
    match code {
        ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => {
            StoreError::Unavailable(format!("{at} is busy (locked by another process): {e}"))
        }
        ErrorCode::ReadOnly => StoreError::Unavailable(format!("{at} is read-only: {e}")),
        ErrorCode::DiskFull => StoreError::Unavailable(format!("{at}: disk full: {e}")),
        ErrorCode::CannotOpen | ErrorCode::PermissionDenied => {
            StoreError::Unavailable(format!("{at} can't be opened: {e}"))
        }
        ErrorCode::SystemIoFailure | ErrorCode::FileLockingProtocolFailed => {
            StoreError::Unavailable(format!("{at}: I/O error: {e}"))
        }
        ErrorCode::OutOfMemory | ErrorCode::OperationInterrupted => {
            StoreError::Unavailable(format!("{at}: {e}"))
        }
        ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt => {
            StoreError::Corrupt(format!("{at} is not a sound SQLite database: {e}"))
        }
        ErrorCode::ConstraintViolation | ErrorCode::TooBig | ErrorCode::TypeMismatch => {
            StoreError::Invalid(format!("{at} refused the values: {e}"))
        }
        _ => StoreError::Internal(format!("{at}: {e}")),
    }
}
