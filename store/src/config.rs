//! Where the store lives and how long its calls may take.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::StoreError;
use crate::postgres::conninfo;

/// The embedded database's file name, under [`StoreConfig::data_dir`].
pub const SQLITE_FILE_NAME: &str = "pyexec.sqlite3";

/// How to open the store. `Debug` never shows the database password.
#[derive(Clone)]
pub struct StoreConfig {
    /// The embedded database's directory (created, mode 0700, if missing).
    /// Unused when `database_url` is set.
    pub data_dir: PathBuf,
    /// A Postgres URL (`postgres://…`) or libpq key/value string
    /// (`host=… dbname=…`): selects the Postgres backend. `sslmode` is
    /// `disable`, `prefer` (the default), `require`, `verify-ca` or
    /// `verify-full`, with libpq's meanings; `sslrootcert=PATH` names the CA
    /// to trust (else the system's). A `host` starting with `/` is a Unix
    /// socket directory (e.g. Cloud SQL's `/cloudsql/PROJECT:REGION:INSTANCE`).
    pub database_url: Option<String>,
    /// The deadline of every operation, from the call to its answer
    /// (waiting for a connection or a lock included).
    pub op_timeout: Duration,
    /// The deadline of [`open`](crate::open): connecting, checking and
    /// migrating (waiting for another instance's migration included).
    pub open_timeout: Duration,
    /// Postgres connections per store (per server instance).
    pub pool_size: u32,
}

impl StoreConfig {
    /// The embedded store in `data_dir`, with the default deadlines (5 s per
    /// operation, 30 s to open) and 4 Postgres connections if a URL is set.
    pub fn new(data_dir: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig {
            data_dir: data_dir.into(),
            database_url: None,
            op_timeout: Duration::from_secs(5),
            open_timeout: Duration::from_secs(30),
            pool_size: 4,
        }
    }

    /// The embedded database's path.
    pub fn sqlite_path(&self) -> PathBuf {
        self.data_dir.join(SQLITE_FILE_NAME)
    }

    pub(crate) fn validate(&self) -> Result<(), StoreError> {
        if self.op_timeout.is_zero() || self.open_timeout.is_zero() {
            return Err(StoreError::Invalid(
                "store deadlines must be positive".into(),
            ));
        }
        if self.pool_size == 0 {
            return Err(StoreError::Invalid(
                "the store's pool size must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreConfig")
            .field("data_dir", &Path::new(&self.data_dir))
            .field(
                "database_url",
                &self.database_url.as_deref().map(conninfo::redacted),
            )
            .field("op_timeout", &self.op_timeout)
            .field("open_timeout", &self.open_timeout)
            .field("pool_size", &self.pool_size)
            .finish()
    }
}
