//! The seam between the pool and whatever runs the jailed interpreters: the
//! real nsjail launcher in production, fakes in the pool's tests.

use std::future::Future;

use serde_json::value::RawValue;

use crate::job::{Captured, Job, JobFailure};
use crate::protocol::Versions;

/// Why a worker could not be started.
#[derive(Debug, Clone)]
pub struct SpawnError {
    pub message: String,
}

impl std::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SpawnError {}

/// Starts workers.
pub trait Sandbox: Send + Sync + 'static {
    type Worker: Worker;

    /// Launches one jailed interpreter and waits until it reports ready.
    fn spawn(&self, id: u64) -> impl Future<Output = Result<Self::Worker, SpawnError>> + Send;
}

/// A shared sandbox is a sandbox: the server keeps a handle to it beside the
/// pool (to remove its cgroups once the pool has shut down).
impl<S: Sandbox> Sandbox for std::sync::Arc<S> {
    type Worker = S::Worker;

    fn spawn(&self, id: u64) -> impl Future<Output = Result<Self::Worker, SpawnError>> + Send {
        S::spawn(self, id)
    }
}

/// One warm interpreter that will run exactly one job.
pub trait Worker: Send + 'static {
    fn id(&self) -> u64;

    fn versions(&self) -> &Versions;

    /// Sends the job and waits for the runner's answer. No deadline here: the
    /// pool imposes it. Cancel safety: may be dropped at any point; the worker
    /// is then only fit to be stopped.
    fn run(&mut self, job: &Job) -> impl Future<Output = Result<Box<RawValue>, JobFailure>> + Send;

    /// Kills the jail and everything in it, at once and without waiting.
    fn stop(&mut self);

    /// What the job wrote to stdout and stderr up to now; called after `stop`.
    fn output(&mut self) -> impl Future<Output = (Captured, Captured)> + Send;

    /// Waits for the jail to be gone and removes what was made for it
    /// (cgroups). Runs after the answer has gone to the client.
    fn reap(self) -> impl Future<Output = ()> + Send;
}
