//! The warm pool: keeps `size` workers ready, hands each to exactly one
//! request through a FIFO queue, and replaces it at once.
//!
//! ```text
//!  replenish ──spawn (≤ max_parallel_spawns at once)──▶ ready ──▶ idle queue
//!                                                          │          │
//!                                     waiting request ◀────┴──────────┘
//!                                            │ Lease
//!                                            ▼
//!                                 run (deadline) → stop → output → reap (background)
//! ```
//!
//! Liveness: a worker leaves the pool the moment it is leased, and the
//! replacement starts then, so the pool refills while the job runs. A lease
//! that is dropped for any reason (answer sent, error, client gone) stops its
//! worker; nothing ever returns a used worker to the pool. With `size == 0`
//! no worker is kept warm: each waiting request triggers one spawn (the way a
//! jail-per-request service works), which is the benchmark's baseline.

mod lease;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, Semaphore};
use tokio_util::task::TaskTracker;

pub use lease::Lease;

use crate::observer::PoolObserver;
use crate::sandbox::{Sandbox, Worker};

/// How the pool behaves. Built by the server from its configuration.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Workers kept warm; 0 spawns one per request.
    pub size: usize,
    /// Requests allowed to wait for a worker; one more is refused at once.
    pub queue_max: usize,
    /// How long a request may wait for a worker.
    pub queue_timeout: Duration,
    /// The wall-clock limit of one job.
    pub job_timeout: Duration,
    /// Spawns running at once, so warm-up can't starve running jobs of CPU.
    pub max_parallel_spawns: usize,
}

/// Why no worker was handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckoutError {
    /// `queue_max` requests are already waiting.
    QueueFull,
    /// No worker came within `queue_timeout`.
    QueueTimeout,
    /// The pool is shutting down.
    ShuttingDown,
}

impl CheckoutError {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckoutError::QueueFull => "queue_full",
            CheckoutError::QueueTimeout => "queue_timeout",
            CheckoutError::ShuttingDown => "shutting_down",
        }
    }
}

/// A snapshot of the pool, for readiness and gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStatus {
    pub target: usize,
    pub ready: usize,
    pub spawning: usize,
    pub busy: usize,
    pub waiting: usize,
    /// Spawns that failed in a row; 0 once one succeeds.
    pub spawn_failures_in_a_row: u32,
    pub closed: bool,
}

/// The pool. Cheap to clone; all clones share one set of workers.
pub struct Pool<S: Sandbox> {
    inner: Arc<Inner<S>>,
}

impl<S: Sandbox> Clone for Pool<S> {
    fn clone(&self) -> Self {
        Pool {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<S: Sandbox> {
    sandbox: S,
    config: PoolConfig,
    observer: Arc<dyn PoolObserver>,
    state: Mutex<State<S>>,
    /// Leases alive. Outside the mutex: a lease's drop must never need the lock.
    busy: AtomicUsize,
    next_id: AtomicU64,
    spawn_slots: Semaphore,
    /// Spawns and reaps in flight, so shutdown can wait for every jail to go.
    tasks: TaskTracker,
    runtime: tokio::runtime::Handle,
}

struct State<S: Sandbox> {
    idle: VecDeque<S::Worker>,
    waiters: VecDeque<oneshot::Sender<Lease<S>>>,
    spawning: usize,
    spawn_failures_in_a_row: u32,
    closed: bool,
}

impl<S: Sandbox> Pool<S> {
    /// Starts filling the pool in the background. Must be called inside a
    /// tokio runtime.
    pub fn start(sandbox: S, config: PoolConfig, observer: Arc<dyn PoolObserver>) -> Self {
        let spawn_slots = Semaphore::new(config.max_parallel_spawns.max(1));
        let pool = Pool {
            inner: Arc::new(Inner {
                sandbox,
                config,
                observer,
                state: Mutex::new(State {
                    idle: VecDeque::new(),
                    waiters: VecDeque::new(),
                    spawning: 0,
                    spawn_failures_in_a_row: 0,
                    closed: false,
                }),
                busy: AtomicUsize::new(0),
                next_id: AtomicU64::new(1),
                spawn_slots,
                tasks: TaskTracker::new(),
                runtime: tokio::runtime::Handle::current(),
            }),
        };
        replenish(&pool.inner);
        pool
    }

    pub fn config(&self) -> &PoolConfig {
        &self.inner.config
    }

    /// Takes a ready worker, waiting in FIFO order behind earlier requests.
    ///
    /// Errors: [`CheckoutError::QueueFull`] at once when `queue_max` requests
    /// already wait; [`CheckoutError::QueueTimeout`] after `queue_timeout`;
    /// [`CheckoutError::ShuttingDown`].
    ///
    /// Cancel safety: safe to drop. A worker that was handed to a dropped
    /// request is stopped, never lost.
    pub async fn checkout(&self) -> Result<Lease<S>, CheckoutError> {
        let asked = Instant::now();
        let mut receiver = {
            let mut state = self.inner.lock();
            if state.closed {
                return Err(CheckoutError::ShuttingDown);
            }
            if let Some(worker) = state.idle.pop_front() {
                drop(state);
                replenish(&self.inner);
                self.inner.observer.checked_out(asked.elapsed());
                return Ok(Lease::new(worker, self.inner.clone()));
            }
            state.waiters.retain(|w| !w.is_closed());
            if state.waiters.len() >= self.inner.config.queue_max {
                return Err(CheckoutError::QueueFull);
            }
            let (sender, receiver) = oneshot::channel();
            state.waiters.push_back(sender);
            receiver
        };
        replenish(&self.inner);

        let lease = match tokio::time::timeout(self.inner.config.queue_timeout, &mut receiver).await
        {
            Ok(Ok(lease)) => Ok(lease),
            Ok(Err(_)) => Err(CheckoutError::ShuttingDown),
            Err(_) => {
                // A worker may have been handed over just as the wait ran out.
                receiver.close();
                receiver.try_recv().map_err(|_| CheckoutError::QueueTimeout)
            }
        };
        if lease.is_ok() {
            self.inner.observer.checked_out(asked.elapsed());
        } else {
            self.inner.lock().waiters.retain(|w| !w.is_closed());
        }
        lease
    }

    pub fn status(&self) -> PoolStatus {
        let state = self.inner.lock();
        PoolStatus {
            target: self.inner.config.size,
            ready: state.idle.len(),
            spawning: state.spawning,
            busy: self.inner.busy.load(Ordering::Relaxed),
            waiting: state.waiters.iter().filter(|w| !w.is_closed()).count(),
            spawn_failures_in_a_row: state.spawn_failures_in_a_row,
            closed: state.closed,
        }
    }

    /// Refuses new checkouts, fails the waiting requests, stops idle workers
    /// and waits until every spawn and every reap has finished. Leases still
    /// out are stopped when they are dropped; call this after the requests
    /// holding them have finished or been aborted.
    pub async fn shutdown(&self) {
        let idle = {
            let mut state = self.inner.lock();
            state.closed = true;
            // Dropping the senders wakes every waiter with ShuttingDown.
            state.waiters.clear();
            std::mem::take(&mut state.idle)
        };
        for worker in idle {
            discard(&self.inner, worker);
        }
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }
}

impl<S: Sandbox> Inner<S> {
    fn lock(&self) -> MutexGuard<'_, State<S>> {
        // A panic while holding this lock would be a bug in this module; the
        // state stays consistent enough to keep serving, so don't cascade it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Starts spawns until ready + spawning workers reach what is wanted: the pool
/// size, or with size 0 one per waiting request.
fn replenish<S: Sandbox>(inner: &Arc<Inner<S>>) {
    let mut state = inner.lock();
    if state.closed {
        return;
    }
    let wanted = if inner.config.size > 0 {
        inner.config.size
    } else {
        state.waiters.iter().filter(|w| !w.is_closed()).count()
    };
    while state.idle.len() + state.spawning < wanted {
        state.spawning += 1;
        let failures = state.spawn_failures_in_a_row;
        inner
            .tasks
            .spawn_on(spawn_one(inner.clone(), failures), &inner.runtime);
    }
}

/// Launches one worker and hands it to the first live waiter, or parks it.
async fn spawn_one<S: Sandbox>(inner: Arc<Inner<S>>, failures_before: u32) {
    if failures_before > 0 {
        // Back off so a broken sandbox doesn't spin the CPU: 100 ms doubling to 5 s.
        let delay =
            Duration::from_millis(100u64 << failures_before.min(6)).min(Duration::from_secs(5));
        tokio::time::sleep(delay).await;
    }
    let permit = inner.spawn_slots.acquire().await;
    let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    let spawned = if inner.lock().closed {
        None
    } else {
        Some(inner.sandbox.spawn(id).await)
    };
    drop(permit);

    match spawned {
        None => inner.lock().spawning -= 1,
        Some(Ok(worker)) => {
            inner
                .observer
                .worker_ready(id, started.elapsed(), worker.versions());
            hand_over(&inner, worker);
        }
        Some(Err(error)) => {
            inner.observer.spawn_failed(id, &error);
            let mut state = inner.lock();
            state.spawning -= 1;
            state.spawn_failures_in_a_row = state.spawn_failures_in_a_row.saturating_add(1);
        }
    }
    replenish(&inner);
}

fn hand_over<S: Sandbox>(inner: &Arc<Inner<S>>, worker: S::Worker) {
    let mut state = inner.lock();
    state.spawning -= 1;
    state.spawn_failures_in_a_row = 0;
    if state.closed {
        drop(state);
        discard(inner, worker);
        return;
    }
    let mut lease = Lease::new(worker, inner.clone());
    while let Some(waiter) = state.waiters.pop_front() {
        match waiter.send(lease) {
            Ok(()) => return,
            // That request gave up; offer the worker to the next one.
            Err(returned) => lease = returned,
        }
    }
    state.idle.push_back(lease.into_worker());
}

/// Stops a worker that will never run a job and reaps it in the background.
fn discard<S: Sandbox>(inner: &Arc<Inner<S>>, mut worker: S::Worker) {
    worker.stop();
    inner.tasks.spawn_on(worker.reap(), &inner.runtime);
}

#[cfg(test)]
mod tests;
