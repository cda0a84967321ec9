//! Postgres's and the pool's errors, said by whose fault they are. Messages
//! carry the SQLSTATE and the server's message (never its DETAIL, which may
//! quote row values), and are scrubbed of the connection's password.

use deadpool_postgres::PoolError;
use tokio_postgres::error::SqlState;

use super::conninfo::MIN_SCRUBBED_LEN;
use crate::error::StoreError;

/// An operation's failure before it is classified.
pub(super) enum OpError {
    Db(tokio_postgres::Error),
    Pool(PoolError),
    Store(StoreError),
}

impl From<tokio_postgres::Error> for OpError {
    fn from(e: tokio_postgres::Error) -> OpError {
        OpError::Db(e)
    }
}

impl From<PoolError> for OpError {
    fn from(e: PoolError) -> OpError {
        OpError::Pool(e)
    }
}

impl From<StoreError> for OpError {
    fn from(e: StoreError) -> OpError {
        OpError::Store(e)
    }
}

pub(super) fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

/// `e` as a store error, with `password` (if any) scrubbed from its text.
pub(super) fn classify(e: OpError, location: &str, password: Option<&str>) -> StoreError {
    let scrub = |text: String| match password {
        Some(p) if p.len() >= MIN_SCRUBBED_LEN => text.replace(p, "<redacted>"),
        _ => text,
    };
    match e {
        OpError::Store(e) => e,
        OpError::Db(e) => classify_db(&e, location, scrub),
        OpError::Pool(PoolError::Backend(e)) => classify_db(&e, location, scrub),
        OpError::Pool(PoolError::PostCreateHook(deadpool_postgres::HookError::Backend(e))) => {
            classify_db(&e, location, scrub)
        }
        OpError::Pool(e) => StoreError::Unavailable(scrub(format!("{location}: {e}"))),
    }
}

fn classify_db(
    e: &tokio_postgres::Error,
    location: &str,
    scrub: impl Fn(String) -> String,
) -> StoreError {
    let Some(db) = e.as_db_error() else {
        // No answer from the server: refused, reset, closed, TLS, timeout.
        return StoreError::Unavailable(scrub(format!("{location}: {}", with_causes(e))));
    };
    let code = db.code().code();
    let text = scrub(format!("{location}: {code} {}", db.message()));
    match &code[..2] {
        // Connection, resources, operator intervention, system errors,
        // transaction rollbacks (serialization, deadlock), locks not
        // available, timeouts, invalid transaction state (idle timeout),
        // authentication (a password being rotated).
        "08" | "53" | "57" | "58" | "40" | "55" | "25" | "28" | "3D" => {
            StoreError::Unavailable(text)
        }
        "22" | "23" => StoreError::Invalid(text),
        // Missing or mismatched tables, columns, types: a schema we didn't
        // make. XX: data corrupted on the server.
        "42" if matches!(code, "42P01" | "42703" | "42804" | "42883") => StoreError::Corrupt(text),
        "XX" => StoreError::Corrupt(text),
        _ => StoreError::Internal(text),
    }
}

/// `e` and its causes, `outer: inner: innermost` (tokio-postgres's own
/// message leaves out why, e.g. which certificate check failed).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}
