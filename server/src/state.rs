//! What every request handler shares: the pool, the request limits, the
//! metrics and the readiness facts.

use std::sync::Arc;
use std::time::Duration;

use pyexec_worker::{FileCaps, Pool, Sandbox};

use crate::callers::Callers;
use crate::config::{Config, Isolation};
use crate::kind::Kind;
use crate::metrics::Metrics;
use crate::pool_events::PoolEvents;
use crate::readiness::Readiness;
use crate::request_id::RequestIds;
use crate::shutdown::Drain;

/// The limits a request is checked against, and the figures its error
/// messages quote.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_script_chars: usize,
    /// The cap on an input's JSON, as sent.
    pub max_input_bytes: usize,
    pub max_body_bytes: usize,
    /// How long reading a whole request body may take.
    pub body_timeout: Duration,
    pub max_result_bytes: u64,
    /// A job's wall-clock limit, and the most a request may ask for.
    pub timeout: Duration,
    /// A job's memory limit, and the most a request may ask for.
    pub memory_mb: u64,
    pub file_caps: FileCaps,
}

impl Limits {
    pub fn from_config(config: &Config) -> Limits {
        Limits {
            max_script_chars: config.max_script_chars,
            max_input_bytes: config.max_input_bytes,
            max_body_bytes: config.max_body_bytes(),
            body_timeout: config.body_timeout,
            max_result_bytes: config.max_result_bytes,
            timeout: config.timeout,
            memory_mb: config.memory_mb,
            file_caps: config.file_caps(),
        }
    }
}

pub struct AppState<S: Sandbox> {
    pub pool: Pool<S>,
    /// Who calls: keys, their limits, their usage; the store behind them.
    pub callers: Arc<Callers>,
    pub isolation: Isolation,
    pub limits: Limits,
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
    pub request_ids: RequestIds,
    /// With it, trace headers become the log's trace field.
    pub gcp_project: Option<String>,
    /// Where a shutdown is; the handlers answer by it.
    pub drain: Drain,
    /// How long in-flight requests get after a shutdown signal.
    pub shutdown_grace: Duration,
    /// Client connections open at once, at most.
    pub max_connections: usize,
}

impl<S: Sandbox> AppState<S> {
    /// Starts the pool on `sandbox`, which must already have passed its
    /// self-check: the server never serves on an unchecked sandbox. Must be
    /// called inside a tokio runtime.
    pub fn start(
        config: &Config,
        sandbox: S,
        metrics: Arc<Metrics>,
        callers: Arc<Callers>,
    ) -> Arc<AppState<S>> {
        metrics.declare_labels(&Kind::job_outcomes(), &Kind::rejection_reasons());
        let readiness = Arc::new(Readiness::new());
        let events = Arc::new(PoolEvents::new(metrics.clone(), readiness.clone()));
        let pool = Pool::start(sandbox, config.pool_config(), events);
        Arc::new(AppState {
            pool,
            callers,
            isolation: config.isolation,
            limits: Limits::from_config(config),
            metrics,
            readiness,
            request_ids: RequestIds::new(),
            gcp_project: config.gcp_project.clone(),
            drain: Drain::new(),
            shutdown_grace: config.shutdown_grace,
            max_connections: config.max_connections,
        })
    }
}
