//! The seam between the pool and whatever makes the jailed interpreters:
//! the spawn and fork modes in production, fakes in the tests. The pool and
//! the HTTP server are written against these traits, the errors of
//! [`crate::error`] and the [`SelfCheckReport`], and never learn which
//! sandbox it is.

use std::future::Future;

use crate::error::{SetupError, SpawnError, Unready};
use crate::job::protocol::Versions;
use crate::job::{Captured, Job, JobFailure, JobResult, Usage};

/// What a sandbox's self-check established, for the start-up log.
#[derive(Debug, Clone, Default)]
pub struct SelfCheckReport {
    pub versions: Versions,
    pub isolation: String,
    pub cgroup_mode: String,
    pub nsjail_version: String,
    /// One line per wall proven.
    pub findings: Vec<String>,
}

/// Makes workers.
pub trait Sandbox: Send + Sync + 'static {
    type Worker: Worker;

    /// Starts one worker and waits until it is ready for its job.
    ///
    /// Cancel safety: safe to drop; whatever it started is killed and its
    /// cgroup removed.
    fn spawn(&self, id: u64) -> impl Future<Output = Result<Self::Worker, SpawnError>> + Send;

    /// Proves, with a canary job from inside and the cgroup from outside,
    /// that a worker confines a script as docs/security.md says. The server
    /// never serves on a sandbox whose check failed.
    fn self_check(&self) -> impl Future<Output = Result<SelfCheckReport, SetupError>> + Send;

    /// Whether new workers can be made right now, else why not (fork mode:
    /// no live zygote). Read by `/readyz`.
    fn health(&self) -> Result<(), Unready> {
        Ok(())
    }

    /// Releases what the sandbox itself holds (its cgroup root, its zygotes).
    /// Call once the pool has shut down and every worker is reaped.
    fn close(&self) -> impl Future<Output = ()> + Send;
}

/// A shared sandbox is a sandbox: the server keeps a handle to it beside the
/// pool (to close it once the pool has shut down).
impl<S: Sandbox> Sandbox for std::sync::Arc<S> {
    type Worker = S::Worker;

    fn spawn(&self, id: u64) -> impl Future<Output = Result<Self::Worker, SpawnError>> + Send {
        S::spawn(self, id)
    }

    fn self_check(&self) -> impl Future<Output = Result<SelfCheckReport, SetupError>> + Send {
        S::self_check(self)
    }

    fn health(&self) -> Result<(), Unready> {
        S::health(self)
    }

    fn close(&self) -> impl Future<Output = ()> + Send {
        S::close(self)
    }
}

/// One warm interpreter that will run exactly one job.
pub trait Worker: Send + 'static {
    fn id(&self) -> u64;

    fn versions(&self) -> &Versions;

    /// False once the worker died while it waited for a job (its zygote
    /// ended, the OOM killer, an operator's kill): the pool discards it.
    fn is_alive(&self) -> bool {
        true
    }

    /// Applies the job's limits to the worker (its memory limit), starts
    /// measuring what it uses, sends the job and waits for the runner's
    /// answer. No deadline here: the pool imposes it. Cancel safety: may be
    /// dropped at any point; the worker is then only fit to be stopped.
    fn run(&mut self, job: &Job) -> impl Future<Output = Result<JobResult, JobFailure>> + Send;

    /// Kills the job's processes, at once and without waiting.
    fn stop(&mut self);

    /// What the job wrote to stdout and stderr up to now; called after `stop`.
    fn output(&mut self) -> impl Future<Output = (Captured, Captured)> + Send;

    /// What the job used from the start of `run` up to now (CPU time, peak
    /// memory); called once `run` has returned, before `stop`. A sandbox
    /// that can't tell says nothing.
    fn usage(&mut self) -> impl Future<Output = Usage> + Send {
        async { Usage::default() }
    }

    /// Waits for the job's processes to be gone and removes what was made
    /// for them (cgroups). Runs after the answer has gone to the client.
    fn reap(self) -> impl Future<Output = ()> + Send;
}
