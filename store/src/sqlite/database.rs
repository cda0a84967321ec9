//! The embedded database's file and the one connection to it: created and
//! migrated at open, checked before every operation, reopened after I/O
//! errors, never recreated while running.
//!
//! Before each operation the path's (device, inode) is compared with the
//! file opened at start. If the path is gone (deleted or moved away) or holds
//! another file, the operation fails with `Unavailable` and the connection
//! is left alone: writing would go to a file nobody will read again, and
//! pairing a new file with our write-ahead log would corrupt it. When the
//! same file is back at the path (moved back), operations resume; a
//! different file is only taken up by a restart.

use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::unistd::{access, AccessFlags};
use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::error::{classify, poisons_connection, OpError};
use crate::error::StoreError;
use crate::migrations;

#[derive(Clone, Copy, PartialEq, Eq)]
struct FileIdentity {
    dev: u64,
    ino: u64,
}

pub(super) struct Database {
    path: PathBuf,
    identity: FileIdentity,
    conn: Option<Connection>,
    busy_timeout: Duration,
}

impl Database {
    /// Opens the database at `path` in `data_dir`, creating both if missing
    /// (directory mode 0700, file 0600), checks the file's integrity and
    /// migrates it. `Corrupt` for a damaged or foreign file, `SchemaTooNew`,
    /// `Unavailable` if it can't be created, opened or written.
    pub(super) fn open(
        data_dir: &Path,
        path: PathBuf,
        busy_timeout: Duration,
    ) -> Result<Database, StoreError> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data_dir)
            .map_err(|e| {
                StoreError::Unavailable(format!(
                    "can't create the data directory {}: {e}",
                    data_dir.display()
                ))
            })?;
        create_file(&path)?;
        // SQLite would only say "unable to open database file".
        for (what, at) in [("the data directory", data_dir), ("the database", &path)] {
            access(at, AccessFlags::R_OK | AccessFlags::W_OK).map_err(|e| {
                StoreError::Unavailable(format!("{what} {} is not writable: {e}", at.display()))
            })?;
        }
        let identity = identity_of(&path)?;
        let sqlite = |e: rusqlite::Error| classify(&e, &path);
        let mut conn = connect(&path, busy_timeout).map_err(sqlite)?;
        quick_check(&conn, &path)?;
        migrate(&mut conn).map_err(|e| match e {
            OpError::Sqlite(e) => sqlite(e),
            OpError::Store(e) => e,
        })?;
        if identity_of(&path)? != identity {
            return Err(StoreError::Unavailable(format!(
                "{} was replaced while being opened",
                path.display()
            )));
        }
        Ok(Database {
            path,
            identity,
            conn: Some(conn),
            busy_timeout,
        })
    }

    /// Runs `op` on the connection, after checking that the file at the path
    /// is still the one opened (reconnecting first if an earlier error
    /// closed the connection).
    pub(super) fn run<T>(
        &mut self,
        op: impl FnOnce(&mut Connection) -> Result<T, OpError>,
    ) -> Result<T, StoreError> {
        self.check_file()?;
        let mut conn = match self.conn.take() {
            Some(conn) => conn,
            None => self.reconnect()?,
        };
        let result = op(&mut conn);
        if let Err(OpError::Sqlite(e)) = &result {
            if poisons_connection(e) {
                return Err(classify(e, &self.path));
            }
        }
        self.conn = Some(conn);
        result.map_err(|e| match e {
            OpError::Store(e) => e,
            OpError::Sqlite(e) => classify(&e, &self.path),
        })
    }

    fn check_file(&self) -> Result<(), StoreError> {
        let found = match std::fs::metadata(&self.path) {
            Ok(meta) => FileIdentity {
                dev: meta.dev(),
                ino: meta.ino(),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::Unavailable(format!(
                    "{} is gone (deleted or moved while in use); it is not recreated \
                     while running: put it back, or restart to start a new one",
                    self.path.display()
                )))
            }
            Err(e) => {
                return Err(StoreError::Unavailable(format!(
                    "can't check {}: {e}",
                    self.path.display()
                )))
            }
        };
        if found != self.identity {
            return Err(StoreError::Unavailable(format!(
                "{} was replaced by another file while in use; restart to use the new file",
                self.path.display()
            )));
        }
        Ok(())
    }

    fn reconnect(&self) -> Result<Connection, StoreError> {
        let conn = connect(&self.path, self.busy_timeout).map_err(|e| classify(&e, &self.path))?;
        let found: Result<i64, rusqlite::Error> = conn.query_row(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            [],
            |row| row.get(0),
        );
        let found = found.map_err(|e| match super::error::code(&e) {
            None | Some(rusqlite::ErrorCode::Unknown) => StoreError::Corrupt(format!(
                "{} no longer holds pyexec's schema: {e}",
                self.path.display()
            )),
            Some(_) => classify(&e, &self.path),
        })?;
        migrations::pending(found, migrations::SQLITE)?;
        Ok(conn)
    }
}

/// Creates the database file if it is missing, private (0600) from the
/// start; SQLite gives its -wal and -shm files the same mode. (A -wal left
/// beside a missing database, by one deleted while in use, is discarded by
/// SQLite itself when it opens the new, empty file.)
fn create_file(path: &Path) -> Result<(), StoreError> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::Unavailable(format!(
            "can't create {}: {e}",
            path.display()
        ))),
    }
}

fn identity_of(path: &Path) -> Result<FileIdentity, StoreError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| StoreError::Unavailable(format!("can't check {}: {e}", path.display())))?;
    Ok(FileIdentity {
        dev: meta.dev(),
        ino: meta.ino(),
    })
}

/// A connection to an existing file (never creating one), in WAL mode, with
/// every commit synced and lock waits bounded by `busy_timeout`.
fn connect(path: &Path, busy_timeout: Duration) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(busy_timeout)?;
    // Room for every statement of the store (ops.rs has about 30).
    conn.set_prepared_statement_cache_capacity(64);
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
            Some(format!("journal mode is {mode}, not wal")),
        ));
    }
    // FULL: a usage batch acknowledged as applied survives a power cut.
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

fn quick_check(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let problems: Result<Vec<String>, rusqlite::Error> = conn
        .prepare("PRAGMA quick_check(5)")
        .and_then(|mut stmt| stmt.query_map([], |row| row.get(0))?.collect());
    let problems = problems.map_err(|e| classify(&e, path))?;
    if problems != ["ok"] {
        return Err(StoreError::Corrupt(format!(
            "{} failed SQLite's integrity check: {}",
            path.display(),
            problems.join("; ")
        )));
    }
    Ok(())
}

/// Applies the pending migrations in one IMMEDIATE transaction (which is
/// also the proof that the file is writable): several processes opening one
/// file at once migrate it once.
fn migrate(conn: &mut Connection) -> Result<(), OpError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(migrations::CREATE_SCHEMA_MIGRATIONS)?;
    let found: i64 = tx.query_row(
        "SELECT coalesce(max(version), 0) FROM schema_migrations",
        [],
        |row| row.get(0),
    )?;
    for migration in migrations::pending(found, migrations::SQLITE)? {
        tx.execute_batch(migration.sql)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
            rusqlite::params![
                migration.version,
                migration.name,
                unix_now().as_secs() as i64
            ],
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// The machine's clock, as time since the epoch (zero if it is before it).
pub(super) fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}
