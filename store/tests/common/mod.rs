//! What the store's tests share: a store of each backend on a fresh
//! database, and the time scale of the machine.

#![allow(dead_code, unused_imports)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use pyexec_store::testing::TempPostgres;
use pyexec_store::{open, Store, StoreConfig};

#[path = "../../../server/tests/common/time_scale.rs"]
mod time_scale;
pub use time_scale::{scaled, time_scale};

/// A store and what keeps its database alive.
pub struct Fixture {
    pub store: Arc<dyn Store>,
    pub config: StoreConfig,
    pub dir: tempfile::TempDir,
    pub pg: Option<TempPostgres>,
}

impl Fixture {
    pub fn backend(&self) -> &'static str {
        if self.pg.is_some() {
            "postgres"
        } else {
            "sqlite"
        }
    }

    /// Another store on the same database (another process, or another
    /// instance of the fleet).
    pub async fn reopen(&self) -> Arc<dyn Store> {
        open(self.config.clone()).await.expect("reopen")
    }
}

/// A config with the deadlines the tests use.
pub fn config(dir: &std::path::Path, url: Option<String>) -> StoreConfig {
    let mut config = StoreConfig::new(dir.join("data"));
    config.database_url = url;
    config.op_timeout = scaled(Duration::from_secs(5));
    config.open_timeout = scaled(Duration::from_secs(30));
    config.pool_size = 8;
    config
}

pub async fn sqlite() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), None);
    let store = open(config.clone()).await.expect("open sqlite");
    Fixture {
        store,
        config,
        dir,
        pg: None,
    }
}

pub async fn postgres() -> Fixture {
    let pg = tokio::task::spawn_blocking(TempPostgres::start)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), Some(pg.url()));
    let store = open(config.clone()).await.expect("open postgres");
    Fixture {
        store,
        config,
        dir,
        pg: Some(pg),
    }
}

/// Runs `body` against a fresh store of each backend, SQLite then Postgres.
/// The fixture lives until `body` is done, whatever parts of it `body`'s
/// future captures.
pub async fn on_each_backend<F, Fut>(body: F)
where
    F: Fn(Arc<Fixture>) -> Fut,
    Fut: Future<Output = ()>,
{
    eprintln!("--- sqlite");
    let fixture = Arc::new(sqlite().await);
    body(fixture.clone()).await;
    drop(fixture);
    eprintln!("--- postgres");
    let fixture = Arc::new(postgres().await);
    body(fixture.clone()).await;
}
