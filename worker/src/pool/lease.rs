//! A worker on loan to one request. Whatever happens to the request, dropping
//! the lease stops the worker: a used or abandoned worker never goes back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{discard_all, dispatch, Inner};
use crate::job::{Captured, Job, JobFailure, JobLimits, JobReport};
use crate::sandbox::{Sandbox, Worker};

/// How long collecting the output of a stopped jail may take before we give
/// up on it; a stopped jail closes its pipes within milliseconds.
const OUTPUT_GRACE: Duration = Duration::from_secs(5);

pub struct Lease<S: Sandbox> {
    /// Always `Some` until the lease is dropped or taken back unused.
    worker: Option<S::Worker>,
    /// Whether `stop` was already called on the worker.
    stopped: bool,
    pool: Arc<Inner<S>>,
}

impl<S: Sandbox> Lease<S> {
    /// Only `State::lease` makes one, counting it as busy.
    pub(super) fn new(worker: S::Worker, pool: Arc<Inner<S>>) -> Self {
        Lease {
            worker: Some(worker),
            stopped: false,
            pool,
        }
    }

    /// Takes the worker back out unused (no request wanted it after all);
    /// `State::unlease` does the counting.
    pub(super) fn into_worker(mut self) -> S::Worker {
        self.worker
            .take()
            .expect("a lease holds its worker until dropped")
    }

    pub fn worker_id(&self) -> u64 {
        self.worker.as_ref().map_or(0, |w| w.id())
    }

    /// Runs the job under its deadline (the job's own timeout, never more
    /// than the pool's), stops the worker and returns the result with the
    /// captured output and what the job used. The worker is reaped in the
    /// background when the lease is dropped, here at the end.
    ///
    /// Cancel safety: safe to drop (a client that disconnects): the worker is
    /// stopped and reaped all the same.
    pub async fn run(mut self, job: &Job) -> JobReport {
        let deadline = job.limits.timeout.min(self.pool.config.job_timeout);
        let worker = self
            .worker
            .as_mut()
            .expect("a lease holds its worker until dropped");
        let started = Instant::now();
        let outcome = match tokio::time::timeout(deadline, worker.run(job)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(JobFailure::Timeout),
        };
        let run_time = started.elapsed();
        // Read while the job process still stands, idle after its answer:
        // read after the kill, the cgroup files waited on the kernel tearing
        // the process down (up to 3 ms of a 2 ms hello-world, measured).
        let usage = worker.usage().await;
        worker.stop();
        self.stopped = true;
        let (stdout, stderr) = tokio::time::timeout(OUTPUT_GRACE, worker.output())
            .await
            .unwrap_or_else(|_| {
                tracing::warn!(
                    worker = worker.id(),
                    "a stopped worker kept its output open"
                );
                (Captured::default(), Captured::default())
            });
        let report = JobReport {
            outcome,
            stdout,
            stderr,
            run_time,
            worker_id: worker.id(),
            limits: JobLimits {
                timeout: deadline,
                ..job.limits
            },
            usage,
        };
        self.pool.observe(|o| o.job_finished(&report));
        report
    }
}

impl<S: Sandbox> Drop for Lease<S> {
    /// Stops the worker, reaps it in the background, and lets the next
    /// waiting request run. Never called with the pool's lock held (a lease
    /// handed back unused is taken apart by `into_worker` instead).
    fn drop(&mut self) {
        if let Some(mut worker) = self.worker.take() {
            if !self.stopped {
                worker.stop();
            }
            self.pool.tasks.spawn_on(worker.reap(), &self.pool.runtime);
            let mut state = self.pool.lock();
            state.busy -= 1;
            let dead = dispatch(&self.pool, &mut state);
            drop(state);
            discard_all(&self.pool, dead);
        }
    }
}
