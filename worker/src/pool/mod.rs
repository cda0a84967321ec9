//! The warm pool: keeps `size` workers ready, hands each to exactly one
//! request through a queue fair between callers ([`queue`]), and replaces
//! it at once.
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
//! worker; nothing ever returns a used worker to the pool. An idle worker
//! that died while it waited (its zygote ended, say) is discarded, at
//! checkout or by the once-a-second sweep, and replaced. With `size == 0`
//! no worker is kept warm: each waiting request triggers one spawn (the way a
//! jail-per-request service works), which is the benchmark's baseline.
//!
//! At most `max_jobs` leases are out at once: a request waits in the queue
//! while that many jobs run, even with warm workers idle, so the memory the
//! jobs may take (each up to its cgroup's limit) stays bounded however fast
//! workers are replaced.
//!
//! Every spawn in flight holds a [`SpawnSlot`], which gives its place back
//! however the spawn ends (a panic included), so the pool never waits for a
//! spawn that no longer exists. Shutdown cancels the spawns in flight: a
//! sandbox's spawn is cancel-safe, so whatever it had started is killed.

mod lease;
mod queue;

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use lease::Lease;
pub use queue::Caller;
use queue::{Admission, FairQueue};

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
    /// The longest wall-clock limit a job may have; a job's own (shorter)
    /// timeout is its deadline.
    pub job_timeout: Duration,
    /// Spawns running at once, so warm-up can't starve running jobs of CPU.
    pub max_parallel_spawns: usize,
    /// Jobs running at once (leases out); more requests wait in the queue.
    pub max_jobs: usize,
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
    next_id: AtomicU64,
    spawn_slots: Semaphore,
    /// Spawns and reaps in flight, so shutdown can wait for every jail to go.
    tasks: TaskTracker,
    /// Cancelled at shutdown: spawns in flight give up.
    closing: CancellationToken,
    runtime: tokio::runtime::Handle,
}

/// How often idle workers are checked for life.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// A request waiting for a worker.
struct Waiter<S: Sandbox> {
    caller: Caller,
    reply: oneshot::Sender<Result<Lease<S>, CheckoutError>>,
}

impl<S: Sandbox> Waiter<S> {
    fn is_waiting(&self) -> bool {
        !self.reply.is_closed()
    }
}

struct State<S: Sandbox> {
    idle: VecDeque<S::Worker>,
    waiters: FairQueue<Waiter<S>>,
    spawning: usize,
    /// Leases out. Changed only under the lock, by `lease`, `unlease` and a
    /// lease's drop, which never runs while the lock is held.
    busy: usize,
    spawn_failures_in_a_row: u32,
    closed: bool,
}

impl<S: Sandbox> State<S> {
    fn lease(&mut self, worker: S::Worker, pool: &Arc<Inner<S>>) -> Lease<S> {
        self.busy += 1;
        Lease::new(worker, pool.clone())
    }

    /// Takes back a lease no request received.
    fn unlease(&mut self, lease: Lease<S>) -> S::Worker {
        self.busy -= 1;
        lease.into_worker()
    }

    fn waiting(&self) -> usize {
        self.waiters.iter().filter(|w| w.is_waiting()).count()
    }

    /// Pops idle workers until a live one; the dead ones go to `dead`.
    fn pop_alive(&mut self, dead: &mut Vec<S::Worker>) -> Option<S::Worker> {
        while let Some(worker) = self.idle.pop_front() {
            if worker.is_alive() {
                return Some(worker);
            }
            dead.push(worker);
        }
        None
    }
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
                    waiters: FairQueue::default(),
                    spawning: 0,
                    busy: 0,
                    spawn_failures_in_a_row: 0,
                    closed: false,
                }),
                next_id: AtomicU64::new(1),
                spawn_slots,
                tasks: TaskTracker::new(),
                closing: CancellationToken::new(),
                runtime: tokio::runtime::Handle::current(),
            }),
        };
        replenish(&pool.inner);
        tokio::spawn(sweep(Arc::downgrade(&pool.inner)));
        pool
    }

    pub fn config(&self) -> &PoolConfig {
        &self.inner.config
    }

    /// The sandbox the pool makes its workers with.
    pub fn sandbox(&self) -> &S {
        &self.inner.sandbox
    }

    /// Takes a ready worker for `caller`, waiting behind earlier requests:
    /// in turn with other callers' requests, in order with its own.
    ///
    /// Errors: [`CheckoutError::QueueFull`] when `queue_max` requests already
    /// wait and `caller` holds the most of them (at once), or when a lighter
    /// caller's request needed this one's place (later);
    /// [`CheckoutError::QueueTimeout`] after `queue_timeout`;
    /// [`CheckoutError::ShuttingDown`].
    ///
    /// Cancel safety: safe to drop. A worker that was handed to a dropped
    /// request is stopped, never lost.
    pub async fn checkout(&self, caller: Caller) -> Result<Lease<S>, CheckoutError> {
        let asked = Instant::now();
        let mut dead = Vec::new();
        let queued = {
            let mut state = self.inner.lock();
            if state.closed {
                return Err(CheckoutError::ShuttingDown);
            }
            // Only when nobody waits ahead: whoever waits is served first.
            let may_run = state.busy < self.inner.config.max_jobs && state.waiting() == 0;
            match may_run.then(|| state.pop_alive(&mut dead)).flatten() {
                Some(worker) => Err(state.lease(worker, &self.inner)),
                None => {
                    state.waiters.retain(Waiter::is_waiting);
                    let (reply, receiver) = oneshot::channel();
                    let waiter = Waiter { caller, reply };
                    match state
                        .waiters
                        .admit(caller, waiter, self.inner.config.queue_max)
                    {
                        Admission::Queued => {}
                        Admission::Displaced(shed) => {
                            let _ = shed.reply.send(Err(CheckoutError::QueueFull));
                        }
                        Admission::Refused(_) => {
                            drop(state);
                            discard_all(&self.inner, dead);
                            return Err(CheckoutError::QueueFull);
                        }
                    }
                    Ok(receiver)
                }
            }
        };
        discard_all(&self.inner, dead);
        replenish(&self.inner);
        let mut receiver = match queued {
            Ok(receiver) => receiver,
            Err(lease) => {
                self.inner.observe(|o| o.checked_out(asked.elapsed()));
                return Ok(lease);
            }
        };

        let lease = match tokio::time::timeout(self.inner.config.queue_timeout, &mut receiver).await
        {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(CheckoutError::ShuttingDown),
            Err(_) => {
                // A worker may have been handed over just as the wait ran out.
                receiver.close();
                receiver
                    .try_recv()
                    .unwrap_or(Err(CheckoutError::QueueTimeout))
            }
        };
        if lease.is_ok() {
            self.inner.observe(|o| o.checked_out(asked.elapsed()));
        } else {
            self.inner.lock().waiters.retain(Waiter::is_waiting);
        }
        lease
    }

    pub fn status(&self) -> PoolStatus {
        let state = self.inner.lock();
        PoolStatus {
            target: self.inner.config.size,
            ready: state.idle.len(),
            spawning: state.spawning,
            busy: state.busy,
            waiting: state.waiting(),
            spawn_failures_in_a_row: state.spawn_failures_in_a_row,
            closed: state.closed,
        }
    }

    /// Refuses new checkouts, fails the waiting requests, cancels the spawns
    /// in flight, stops idle workers and waits until every spawn and every
    /// reap has finished. Leases still out are stopped when they are
    /// dropped; call this after the requests holding them have finished or
    /// been aborted.
    pub async fn shutdown(&self) {
        let idle = {
            let mut state = self.inner.lock();
            state.closed = true;
            // Dropping the senders wakes every waiter with ShuttingDown.
            state.waiters.clear();
            std::mem::take(&mut state.idle)
        };
        self.inner.closing.cancel();
        discard_all(&self.inner, idle.into());
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

    /// Tells the observer; a panic in it is logged, never the pool's problem.
    fn observe(&self, event: impl FnOnce(&dyn PoolObserver)) {
        let observer = &*self.observer;
        if std::panic::catch_unwind(AssertUnwindSafe(|| event(observer))).is_err() {
            tracing::error!("a pool observer panicked; the pool carries on");
        }
    }
}

/// A spawn's place in `State::spawning`, given back when dropped: after the
/// spawn's outcome was recorded, when the spawn task unwinds from a panic
/// (which then counts as a failed spawn, so a sandbox that panics on every
/// spawn backs off instead of spinning), or when the task is dropped unrun.
/// It never starts another spawn itself: a runtime that is shutting down
/// drops new tasks at once, and that must not recurse.
struct SpawnSlot<S: Sandbox> {
    inner: Arc<Inner<S>>,
    failed: bool,
}

impl<S: Sandbox> SpawnSlot<S> {
    fn new(inner: Arc<Inner<S>>) -> Self {
        SpawnSlot {
            inner,
            failed: true,
        }
    }
}

impl<S: Sandbox> Drop for SpawnSlot<S> {
    fn drop(&mut self) {
        let mut state = self.inner.lock();
        state.spawning -= 1;
        if self.failed {
            state.spawn_failures_in_a_row = state.spawn_failures_in_a_row.saturating_add(1);
        }
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
        state.waiting()
    };
    let missing = wanted.saturating_sub(state.idle.len() + state.spawning);
    state.spawning += missing;
    let failures = state.spawn_failures_in_a_row;
    // Outside the lock: a task the runtime refuses is dropped at once, and
    // its slot's drop takes the lock.
    drop(state);
    for _ in 0..missing {
        let slot = SpawnSlot::new(inner.clone());
        inner
            .tasks
            .spawn_on(spawn_one(slot, failures), &inner.runtime);
    }
}

/// Launches one worker and hands it to the first live waiter, or parks it.
async fn spawn_one<S: Sandbox>(mut slot: SpawnSlot<S>, failures_before: u32) {
    let inner = slot.inner.clone();
    let spawned = tokio::select! {
        spawned = backed_off_spawn(&inner, failures_before) => spawned,
        // The spawn future is dropped here; spawns are cancel-safe.
        _ = inner.closing.cancelled() => None,
    };
    match spawned {
        None => slot.failed = false,
        Some((id, started, Ok(worker))) => {
            slot.failed = false;
            inner.observe(|o| o.worker_ready(id, started.elapsed(), worker.versions()));
            hand_over(&inner, worker);
        }
        Some((id, _, Err(error))) => {
            inner.observe(|o| o.spawn_failed(id, &error));
        }
    }
    drop(slot);
    replenish(&inner);
}

type Spawned<S> = (
    u64,
    Instant,
    Result<<S as Sandbox>::Worker, crate::error::SpawnError>,
);

async fn backed_off_spawn<S: Sandbox>(
    inner: &Arc<Inner<S>>,
    failures_before: u32,
) -> Option<Spawned<S>> {
    if failures_before > 0 {
        // Back off so a broken sandbox doesn't spin the CPU: 100 ms doubling to 5 s.
        let delay =
            Duration::from_millis(100u64 << failures_before.min(6)).min(Duration::from_secs(5));
        tokio::time::sleep(delay).await;
    }
    let _permit = inner.spawn_slots.acquire().await;
    let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    if inner.lock().closed {
        return None;
    }
    Some((id, started, inner.sandbox.spawn(id).await))
}

/// Parks a fresh worker and hands out what may be handed out.
fn hand_over<S: Sandbox>(inner: &Arc<Inner<S>>, worker: S::Worker) {
    let mut state = inner.lock();
    state.spawn_failures_in_a_row = 0;
    if state.closed {
        drop(state);
        discard(inner, worker);
        return;
    }
    state.idle.push_back(worker);
    let dead = dispatch(inner, &mut state);
    drop(state);
    discard_all(inner, dead);
}

/// Gives idle workers to waiting requests (the oldest worker to the request
/// whose turn it is), while fewer than `max_jobs` leases are out. Called with
/// the lock held, whenever a worker becomes ready or a lease ends. Returns
/// the idle workers found dead, to be discarded once the lock is released.
fn dispatch<S: Sandbox>(inner: &Arc<Inner<S>>, state: &mut State<S>) -> Vec<S::Worker> {
    let mut dead = Vec::new();
    while state.busy < inner.config.max_jobs {
        let Some(waiter) = state.waiters.pop() else {
            break;
        };
        if !waiter.is_waiting() {
            continue;
        }
        let Some(worker) = state.pop_alive(&mut dead) else {
            state.waiters.unpop(waiter.caller, waiter);
            break;
        };
        let lease = state.lease(worker, inner);
        if let Err(Ok(returned)) = waiter.reply.send(Ok(lease)) {
            // That request gave up just now; the worker waits for the next.
            let worker = state.unlease(returned);
            state.idle.push_front(worker);
        }
    }
    dead
}

/// Stops a worker that will never run a job and reaps it in the background.
fn discard<S: Sandbox>(inner: &Arc<Inner<S>>, mut worker: S::Worker) {
    worker.stop();
    inner.tasks.spawn_on(worker.reap(), &inner.runtime);
}

fn discard_all<S: Sandbox>(inner: &Arc<Inner<S>>, workers: Vec<S::Worker>) {
    for worker in workers {
        discard(inner, worker);
    }
}

/// Once a second: drop idle workers that died while they waited, and refill
/// (also after a spawn that panicked, which could not refill by itself).
async fn sweep<S: Sandbox>(pool: Weak<Inner<S>>) {
    loop {
        tokio::time::sleep(SWEEP_INTERVAL).await;
        let Some(inner) = pool.upgrade() else {
            return;
        };
        let dead = {
            let mut state = inner.lock();
            if state.closed {
                return;
            }
            let (alive, dead): (VecDeque<_>, VecDeque<_>) =
                state.idle.drain(..).partition(|w| w.is_alive());
            state.idle = alive;
            Vec::from(dead)
        };
        if !dead.is_empty() {
            tracing::warn!(
                workers = dead.len(),
                "idle workers died while waiting; replacing them"
            );
            discard_all(&inner, dead);
        }
        replenish(&inner);
    }
}

#[cfg(test)]
mod tests;
