//! The fleet backend: Postgres through a pool of tokio-postgres connections
//! (deadpool), shared by every instance of the fleet.
//!
//! Deadlines, from the inside out: each connection runs with
//! `statement_timeout`, `lock_timeout` and `idle_in_transaction_session_timeout`
//! set to `op_timeout`, so the server gives up on work nobody waits for; the
//! pool waits at most `op_timeout` for a connection; and each operation as a
//! whole is cut at `op_timeout` from its call. A connection whose operation
//! was cut is discarded, not returned to the pool (it may be stuck on a dead
//! peer); connections closed by a restarted server are replaced on checkout.

pub(crate) mod conninfo;
mod error;
mod ops;
mod tls;

use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{
    HookError, Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime,
};
use tokio::time::Instant;
use tokio_postgres::NoTls;

use self::error::{classify, OpError};
use crate::budgets::{CounterGrant, InstanceId, Purged, SlotHold, Window};
use crate::config::StoreConfig;
use crate::error::StoreError;
use crate::keys::{KeyLimits, KeyRecord, LimitsPatch};
use crate::snippets::{NewSnippet, Snippet, SnippetDeletion, SnippetId};
use crate::store::Store;
use crate::token::{KeyId, Token};
use crate::usage::{Recorded, UsageDelta, UsageFilter, UsageTotal};

/// TCP keepalive idle time when the URL sets none: a peer that vanished
/// without closing is noticed in about a minute, not hours.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);

/// The store in a Postgres database.
pub struct PostgresStore {
    pool: Pool,
    op_timeout: Duration,
    location: String,
    password: Option<String>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("location", &self.location)
            .finish()
    }
}

/// Runs `$body` (an expression using `$client`, a pooled connection) within
/// the operation's deadline; a connection whose operation timed out is
/// taken out of the pool and closed.
macro_rules! within_deadline {
    ($store:expr, $deadline:expr, |$client:ident| $body:expr) => {{
        let store: &PostgresStore = $store;
        let deadline: Instant = $deadline;
        match tokio::time::timeout_at(deadline, store.pool.get()).await {
            Err(_) => Err(store.timed_out()),
            Ok(Err(e)) => Err(store.error(e.into())),
            Ok(Ok(mut $client)) => {
                let outcome = tokio::time::timeout_at(deadline, async { $body }).await;
                match outcome {
                    Ok(result) => result.map_err(|e| store.error(e)),
                    Err(_) => {
                        drop(Object::take($client));
                        Err(store.timed_out())
                    }
                }
            }
        }
    }};
}

macro_rules! run {
    ($store:expr, |$client:ident| $body:expr) => {{
        let store: &PostgresStore = $store;
        within_deadline!(store, Instant::now() + store.op_timeout, |$client| $body)
    }};
}

impl PostgresStore {
    /// Connects to `config.database_url` and migrates the database, within
    /// `config.open_timeout`. `Invalid` for a malformed URL or CA file;
    /// `SchemaTooNew`; `Unavailable` (unreachable, refused, TLS or
    /// authentication failure, deadline passed). Cancel-safe: the migration
    /// is one transaction.
    pub async fn open(config: &StoreConfig) -> Result<PostgresStore, StoreError> {
        config.validate()?;
        let url = config
            .database_url
            .as_deref()
            .ok_or_else(|| StoreError::Invalid("no database URL".into()))?;
        let info = conninfo::parse(url)?;
        let mut pg = info.config;
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(config.op_timeout);
        }
        if pg.get_application_name().is_none() {
            pg.application_name("pyexec");
        }
        if pg.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
            pg.keepalives_idle(KEEPALIVE_IDLE);
        }
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match tls::connector(info.tls, info.root_cert.as_deref())? {
            Some(tls) => Manager::from_config(pg, tls, manager_config),
            None => Manager::from_config(pg, NoTls, manager_config),
        };
        let ms = config.op_timeout.as_millis();
        let session = format!(
            "SET statement_timeout = {ms}; SET lock_timeout = {ms}; \
             SET idle_in_transaction_session_timeout = {ms}"
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size as usize)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(config.op_timeout))
            .create_timeout(Some(config.op_timeout))
            .recycle_timeout(Some(config.op_timeout))
            .post_create(deadpool_postgres::Hook::async_fn(move |client, _| {
                let session = session.clone();
                Box::pin(async move {
                    client
                        .batch_execute(&session)
                        .await
                        .map_err(HookError::Backend)
                })
            }))
            .build()
            .map_err(|e| StoreError::Internal(format!("database pool: {e}")))?;
        let store = PostgresStore {
            pool,
            op_timeout: config.op_timeout,
            location: info.location,
            password: info.password,
        };
        let wait = config.open_timeout;
        within_deadline!(&store, Instant::now() + wait, |client| ops::migrate(
            &mut client,
            wait
        )
        .await)?;
        Ok(store)
    }

    fn error(&self, e: OpError) -> StoreError {
        classify(e, &self.location, self.password.as_deref())
    }

    fn timed_out(&self) -> StoreError {
        StoreError::Unavailable(format!(
            "{} did not answer within {:?}",
            self.location, self.op_timeout
        ))
    }
}

#[async_trait]
impl Store for PostgresStore {
    fn describe(&self) -> String {
        format!("postgres {}", self.location)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        run!(self, |client| ops::ping(&mut client).await)
    }

    async fn create_key(
        &self,
        name: &str,
        limits: &KeyLimits,
    ) -> Result<(KeyRecord, Token), StoreError> {
        run!(self, |client| ops::create_key(&mut client, name, limits)
            .await)
    }

    async fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        run!(self, |client| ops::list_keys(&mut client).await)
    }

    async fn get_key(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        run!(self, |client| ops::get_key(&mut client, id).await)
    }

    async fn set_limits(&self, id: &KeyId, patch: &LimitsPatch) -> Result<KeyRecord, StoreError> {
        run!(self, |client| ops::set_limits(&mut client, id, patch).await)
    }

    async fn revoke(&self, id: &KeyId) -> Result<KeyRecord, StoreError> {
        run!(self, |client| ops::revoke(&mut client, id).await)
    }

    async fn record_usage(
        &self,
        batch_id: &str,
        deltas: &[UsageDelta],
    ) -> Result<Recorded, StoreError> {
        run!(self, |client| ops::record_usage(
            &mut client,
            batch_id,
            deltas
        )
        .await)
    }

    async fn usage(&self, filter: &UsageFilter) -> Result<Vec<UsageTotal>, StoreError> {
        run!(self, |client| ops::usage(&mut client, filter).await)
    }

    async fn create_snippet(&self, snippet: &NewSnippet) -> Result<Snippet, StoreError> {
        run!(self, |client| ops::create_snippet(&mut client, snippet)
            .await)
    }

    async fn get_snippet(&self, id: &SnippetId) -> Result<Option<Snippet>, StoreError> {
        run!(self, |client| ops::get_snippet(&mut client, id).await)
    }

    async fn delete_snippet(
        &self,
        id: &SnippetId,
        by: Option<&KeyId>,
    ) -> Result<SnippetDeletion, StoreError> {
        run!(self, |client| ops::delete_snippet(&mut client, id, by)
            .await)
    }

    async fn lease_counter(
        &self,
        key_id: &KeyId,
        counter: &str,
        window: Window,
        want: i64,
        cap: i64,
    ) -> Result<CounterGrant, StoreError> {
        run!(self, |client| ops::lease_counter(
            &mut client,
            key_id,
            counter,
            window,
            want,
            cap
        )
        .await)
    }

    async fn return_counter(
        &self,
        key_id: &KeyId,
        counter: &str,
        window: Window,
        amount: i64,
    ) -> Result<(), StoreError> {
        run!(self, |client| ops::return_counter(
            &mut client,
            key_id,
            counter,
            window,
            amount
        )
        .await)
    }

    async fn acquire_slots(
        &self,
        key_id: &KeyId,
        instance: &InstanceId,
        want: u32,
        max: u32,
        ttl: Duration,
    ) -> Result<u32, StoreError> {
        run!(self, |client| ops::acquire_slots(
            &mut client,
            key_id,
            instance,
            want,
            max,
            ttl
        )
        .await)
    }

    async fn release_slots(
        &self,
        key_id: &KeyId,
        instance: &InstanceId,
        n: u32,
    ) -> Result<(), StoreError> {
        run!(self, |client| ops::release_slots(
            &mut client,
            key_id,
            instance,
            n
        )
        .await)
    }

    async fn heartbeat(
        &self,
        instance: &InstanceId,
        ttl: Duration,
    ) -> Result<Vec<SlotHold>, StoreError> {
        run!(self, |client| ops::heartbeat(&mut client, instance, ttl)
            .await)
    }

    async fn purge(&self) -> Result<Purged, StoreError> {
        run!(self, |client| ops::purge(&mut client).await)
    }
}
