//! The embedded backend: one SQLite file under the data directory, used by
//! one dedicated thread.
//!
//! ```text
//!  async callers ──try_send(job, deadline)──▶ bounded queue ──▶ store thread
//!        ▲                                                        │ skips jobs whose
//!        └──── oneshot answer, awaited until the deadline ◀───────┘ deadline passed
//! ```
//!
//! SQLite calls block, so they run on the thread, never on the runtime. A
//! caller waits at most `op_timeout` for its answer; a job still queued when
//! its deadline passes is dropped unrun, so a slow disk delays only the
//! operation in progress. SQLite's busy timeout (the wait for another
//! process's write lock) is `op_timeout` too.

mod database;
mod error;
mod ops;

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rusqlite::Connection;
use tokio::sync::oneshot;

use self::database::Database;
use self::error::OpError;
use crate::budgets::{CounterGrant, InstanceId, Purged, SlotHold, Window};
use crate::config::StoreConfig;
use crate::error::StoreError;
use crate::keys::{KeyLimits, KeyRecord, LimitsPatch};
use crate::snippets::{NewSnippet, Snippet, SnippetDeletion, SnippetId};
use crate::store::Store;
use crate::token::{KeyId, Token};
use crate::usage::{Recorded, UsageDelta, UsageFilter, UsageTotal};

/// Operations waiting for the thread beyond which new ones are refused.
const QUEUE_LEN: usize = 1024;

type Job = Box<dyn FnOnce(&mut Database) + Send>;

struct Queued {
    deadline: Instant,
    job: Job,
}

/// The store in a SQLite file (WAL mode, synchronous commits).
pub struct SqliteStore {
    jobs: SyncSender<Queued>,
    op_timeout: Duration,
    path: PathBuf,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

impl SqliteStore {
    /// Opens (creating if missing) `config.sqlite_path()`, checks its
    /// integrity and migrates it, within `config.open_timeout`.
    /// `Corrupt`, `SchemaTooNew`, or `Unavailable` (can't create, open or
    /// write it; deadline passed). Cancel-safe: if dropped, the thread
    /// finishes opening and closes the file.
    pub async fn open(config: &StoreConfig) -> Result<SqliteStore, StoreError> {
        config.validate()?;
        let path = config.sqlite_path();
        let data_dir = config.data_dir.clone();
        let busy_timeout = config.op_timeout;
        let (jobs, queue) = mpsc::sync_channel::<Queued>(QUEUE_LEN);
        let (ready_tx, ready_rx) = oneshot::channel();
        let thread_path = path.clone();
        std::thread::Builder::new()
            .name("pyexec-store".into())
            .spawn(move || {
                let mut db = match Database::open(&data_dir, thread_path, busy_timeout) {
                    Ok(db) => db,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                if ready_tx.send(Ok(())).is_err() {
                    return;
                }
                while let Ok(queued) = queue.recv() {
                    if Instant::now() < queued.deadline {
                        // A bug in one operation fails that call (its answer
                        // is dropped), not the store: the connection it held
                        // was dropped while unwinding and is reopened.
                        let job = AssertUnwindSafe(|| (queued.job)(&mut db));
                        let _ = std::panic::catch_unwind(job);
                    }
                }
            })
            .map_err(|e| StoreError::Unavailable(format!("can't start the store thread: {e}")))?;
        match tokio::time::timeout(config.open_timeout, ready_rx).await {
            Ok(Ok(Ok(()))) => Ok(SqliteStore {
                jobs,
                op_timeout: config.op_timeout,
                path,
            }),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(StoreError::Internal(
                "the store thread stopped while opening".into(),
            )),
            Err(_) => Err(StoreError::Unavailable(format!(
                "{} was not opened within {:?}",
                path.display(),
                config.open_timeout
            ))),
        }
    }

    /// Runs `op` on the store thread and waits for its answer until the
    /// deadline.
    async fn call<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, OpError> + Send + 'static,
    {
        let deadline = Instant::now() + self.op_timeout;
        let (answer_tx, answer_rx) = oneshot::channel();
        let job: Job = Box::new(move |db: &mut Database| {
            let _ = answer_tx.send(db.run(op));
        });
        match self.jobs.try_send(Queued { deadline, job }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(StoreError::Unavailable(format!(
                    "{} operations are already waiting for {}",
                    QUEUE_LEN,
                    self.path.display()
                )))
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(StoreError::Internal("the store thread has stopped".into()))
            }
        }
        match tokio::time::timeout_at(deadline.into(), answer_rx).await {
            Ok(Ok(answer)) => answer,
            // Dropped unrun: the deadline passed while it was queued.
            Ok(Err(_)) | Err(_) => Err(StoreError::Unavailable(format!(
                "{} did not answer within {:?}",
                self.path.display(),
                self.op_timeout
            ))),
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn describe(&self) -> String {
        format!("sqlite {}", self.path.display())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.call(ops::ping).await
    }

    async fn create_key(
        &self,
        name: &str,
        limits: &KeyLimits,
    ) -> Result<(KeyRecord, Token), StoreError> {
        let (name, limits) = (name.to_owned(), *limits);
        self.call(move |c| ops::create_key(c, &name, &limits)).await
    }

    async fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        self.call(ops::list_keys).await
    }

    async fn get_key(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        let id = id.clone();
        self.call(move |c| ops::get_key(c, &id)).await
    }

    async fn set_limits(&self, id: &KeyId, patch: &LimitsPatch) -> Result<KeyRecord, StoreError> {
        let (id, patch) = (id.clone(), *patch);
        self.call(move |c| ops::set_limits(c, &id, &patch)).await
    }

    async fn revoke(&self, id: &KeyId) -> Result<KeyRecord, StoreError> {
        let id = id.clone();
        self.call(move |c| ops::revoke(c, &id)).await
    }

    async fn record_usage(
        &self,
        batch_id: &str,
        deltas: &[UsageDelta],
    ) -> Result<Recorded, StoreError> {
        let (batch_id, deltas) = (batch_id.to_owned(), deltas.to_vec());
        self.call(move |c| ops::record_usage(c, &batch_id, &deltas))
            .await
    }

    async fn usage(&self, filter: &UsageFilter) -> Result<Vec<UsageTotal>, StoreError> {
        let filter = filter.clone();
        self.call(move |c| ops::usage(c, &filter)).await
    }

    async fn create_snippet(&self, snippet: &NewSnippet) -> Result<Snippet, StoreError> {
        let snippet = snippet.clone();
        self.call(move |c| ops::create_snippet(c, &snippet)).await
    }

    async fn get_snippet(&self, id: &SnippetId) -> Result<Option<Snippet>, StoreError> {
        let id = id.clone();
        self.call(move |c| ops::get_snippet(c, &id)).await
    }

    async fn delete_snippet(
        &self,
        id: &SnippetId,
        by: Option<&KeyId>,
    ) -> Result<SnippetDeletion, StoreError> {
        let (id, by) = (id.clone(), by.cloned());
        self.call(move |c| ops::delete_snippet(c, &id, by.as_ref()))
            .await
    }

    async fn lease_counter(
        &self,
        key_id: &KeyId,
        counter: &str,
        window: Window,
        want: i64,
        cap: i64,
    ) -> Result<CounterGrant, StoreError> {
        let (key_id, counter) = (key_id.clone(), counter.to_owned());
        self.call(move |c| ops::lease_counter(c, &key_id, &counter, window, want, cap))
            .await
    }

    async fn return_counter(
        &self,
        key_id: &KeyId,
        counter: &str,
        window: Window,
        amount: i64,
    ) -> Result<(), StoreError> {
        let (key_id, counter) = (key_id.clone(), counter.to_owned());
        self.call(move |c| ops::return_counter(c, &key_id, &counter, window, amount))
            .await
    }

    async fn acquire_slots(
        &self,
        key_id: &KeyId,
        instance: &InstanceId,
        want: u32,
        max: u32,
        ttl: Duration,
    ) -> Result<u32, StoreError> {
        let (key_id, instance) = (key_id.clone(), instance.clone());
        self.call(move |c| ops::acquire_slots(c, &key_id, &instance, want, max, ttl))
            .await
    }

    async fn release_slots(
        &self,
        key_id: &KeyId,
        instance: &InstanceId,
        n: u32,
    ) -> Result<(), StoreError> {
        let (key_id, instance) = (key_id.clone(), instance.clone());
        self.call(move |c| ops::release_slots(c, &key_id, &instance, n))
            .await
    }

    async fn heartbeat(
        &self,
        instance: &InstanceId,
        ttl: Duration,
    ) -> Result<Vec<SlotHold>, StoreError> {
        let instance = instance.clone();
        self.call(move |c| ops::heartbeat(c, &instance, ttl)).await
    }

    async fn purge(&self) -> Result<Purged, StoreError> {
        self.call(ops::purge).await
    }
}
