//! How the pool tells the outside world what it does, without knowing about
//! metrics or logs: the server implements [`PoolObserver`] and turns the
//! events into Prometheus series and log lines.

use std::time::Duration;

use crate::error::SpawnError;
use crate::job::protocol::Versions;
use crate::job::JobReport;

/// Pool events. Every method has an empty default so an observer implements
/// only what it needs. Called on the pool's tasks: keep them quick.
pub trait PoolObserver: Send + Sync + 'static {
    /// A worker reported ready `spawn_time` after its launch began.
    fn worker_ready(&self, _worker_id: u64, _spawn_time: Duration, _versions: &Versions) {}

    /// A worker could not be started; the pool retries with a back-off.
    fn spawn_failed(&self, _worker_id: u64, _error: &SpawnError) {}

    /// A request got a worker after waiting `wait` in the queue.
    fn checked_out(&self, _wait: Duration) {}

    /// A job finished, whatever its outcome.
    fn job_finished(&self, _report: &JobReport) {}
}

/// An observer that ignores everything.
pub struct NoObserver;

impl PoolObserver for NoObserver {}
