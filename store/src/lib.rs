//! pyexec's storage: API keys, metered usage, saved snippets and fleet
//! budgets, behind one trait with two backends. It knows nothing of HTTP,
//! metrics or the worker pool; the server builds authentication, rate
//! limiting, metering and the `pyexec keys` commands on it.
//!
//! ```text
//!             open(StoreConfig) ──▶ Arc<dyn Store>
//!                                      │
//!            ┌─────────────────────────┴──────────────────────────┐
//!   SqliteStore (default)                                 PostgresStore (database_url set)
//!   one file <data_dir>/pyexec.sqlite3, WAL,              deadpool of tokio-postgres connections,
//!   one thread owns the connection; the file's            TLS by rustls as libpq's sslmode says,
//!   identity checked before each operation                Unix-socket hosts (Cloud SQL connector)
//! ```
//!
//! **The trait** ([`Store`]): every operation is one transaction with a
//! deadline (`op_timeout`) and fails with [`StoreError`], which says whose
//! fault it is (`Unavailable`: retry later). Nothing panics on a database's
//! answer; no secret reaches an error, a `Debug` output or the database.
//!
//! **Tables** (`store/migrations/<dialect>/NNNN_*.sql`, applied at open and
//! recorded in `schema_migrations`; migrations only add, and a database
//! newer than [`SCHEMA_VERSION`] is refused):
//! - `api_keys`: id, name, SHA-256 of the secret, created/revoked times,
//!   the per-key limits ([`KeyLimits`]). Tokens ([`new_token`],
//!   [`parse_token`]) are `pyx_<id>_<secret>` and exist only in the
//!   caller's hands.
//! - `usage_hourly`: integer totals per key, hour and outcome, exact sums;
//!   `usage_batches`: the batch ids already applied, which make
//!   [`Store::record_usage`] idempotent (a batch retried after a lost commit
//!   acknowledgement is not counted twice).
//! - `snippets`: scripts saved under 128-bit random ids, owned by a key.
//! - `budget_counters`, `slot_holds`: the fleet's leases, below.
//!
//! **Leasing** (how a fleet shares a key's limits without a database round
//! trip per request; the server decides slice sizes and windows):
//! - A *counter* (requests in a rate window, CPU-ms in a day) is leased in
//!   slices: [`Store::lease_counter`] grants `min(want, cap - granted)`,
//!   atomically across instances, so the fleet is never granted more than
//!   `cap` in a window. What an instance leased and did not use is idle
//!   until [`Store::return_counter`]: the fleet may admit *less* than `cap`
//!   (at most the unused slices of the other instances), never more. A grant
//!   whose answer was lost (a deadline) is lost for its window; a return
//!   retried after a lost answer is the one way to admit more than `cap`,
//!   by that amount, so returns are not retried.
//! - *Concurrency slots* are held per (key, instance) until an expiry that
//!   [`Store::heartbeat`] pushes back: [`Store::acquire_slots`] deletes the
//!   key's expired holds and grants only what keeps the live holds at or
//!   below `max`, so the ledger never exceeds `max`. A lapsed hold is
//!   deleted, never revived, so an instance that misses its heartbeats for
//!   longer than the ttl may run jobs the ledger no longer counts (the fleet
//!   can exceed `max` by that instance's lapsed holds until its next
//!   heartbeat tells it); a crashed instance's slots come back after at most
//!   the ttl. Expiries use the database's clock (Postgres) or the host's
//!   (SQLite, one host).
//!
//! Test support (feature `test-support`): `testing::TempPostgres`, a
//! throwaway Postgres cluster.

mod budgets;
mod config;
mod error;
mod keys;
mod migrations;
mod postgres;
mod random;
mod rows;
mod snippets;
mod sqlite;
mod store;
#[cfg(feature = "test-support")]
pub mod testing;
mod token;
mod usage;

use std::sync::Arc;

pub use budgets::{
    CounterGrant, InstanceId, Purged, SlotHold, Window, COUNTER_GRACE, MAX_COUNTER_LEN,
    MAX_HOLD_TTL, MAX_INSTANCE_ID_LEN,
};
pub use config::{StoreConfig, SQLITE_FILE_NAME};
pub use error::StoreError;
pub use keys::{Change, KeyLimits, KeyRecord, LimitsPatch, MAX_NAME_CHARS};
pub use migrations::SCHEMA_VERSION;
pub use postgres::PostgresStore;
pub use snippets::{NewSnippet, Snippet, SnippetDeletion, SnippetId};
pub use sqlite::SqliteStore;
pub use store::Store;
pub use token::{new_token, parse_token, KeyId, Secret, SecretHash, Token, TOKEN_LEN};
pub use usage::{
    Recorded, UsageDelta, UsageFilter, UsageTotal, BATCH_RETENTION, MAX_BATCH_DELTAS,
    MAX_BATCH_ID_LEN, MAX_OUTCOME_LEN,
};

/// Opens the store `config` names: Postgres if `database_url` is set, else
/// the SQLite file in `data_dir` (created if missing). Checks it and applies
/// pending migrations, within `config.open_timeout`.
///
/// Errors: `Invalid` (a bad config or URL), `SchemaTooNew`, `Corrupt` (a
/// damaged or foreign database), `Unavailable` (can't create, reach, open or
/// write it). The server refuses to start on any of them. Cancel-safe.
pub async fn open(config: StoreConfig) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match config.database_url {
        Some(_) => Arc::new(PostgresStore::open(&config).await?),
        None => Arc::new(SqliteStore::open(&config).await?),
    })
}
