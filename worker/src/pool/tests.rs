//! The pool against fake sandboxes: every worker's fate is counted, so a test
//! can tell a worker that was stopped and reaped from one that leaked.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::value::RawValue;

use super::*;
use crate::job::{Captured, Job, JobFailure, JobLimits, JobResult};
use crate::nsjail::SetupError;
use crate::observer::{NoObserver, PoolObserver};
use crate::protocol::Versions;
use crate::sandbox::{Sandbox, SpawnError, Worker};
use crate::selfcheck::SelfCheckReport;

#[derive(Clone, Copy, PartialEq)]
enum Behaviour {
    Answer,
    Hang,
    Crash,
}

/// What a fake spawn does.
#[derive(Clone, Copy, PartialEq)]
enum SpawnBehaviour {
    Succeed,
    /// The spawn with this 1-based number fails.
    FailNumber(u64),
    /// The spawn with this 1-based number panics.
    PanicNumber(u64),
    /// Every spawn hangs forever (until cancelled).
    Hang,
}

#[derive(Default)]
struct Counters {
    spawned: AtomicU64,
    /// Workers alive: spawned and not yet reaped.
    alive: AtomicI64,
    jobs: AtomicU64,
    stops: AtomicU64,
    /// Spawns that were dropped before they finished (cancelled).
    spawns_cancelled: AtomicU64,
    /// Workers with a smaller id report themselves dead.
    dead_below: AtomicU64,
}

struct FakeSandbox {
    behaviour: Behaviour,
    spawn_time: Duration,
    spawning: SpawnBehaviour,
    counters: Arc<Counters>,
}

struct FakeWorker {
    id: u64,
    behaviour: Behaviour,
    versions: Versions,
    counters: Arc<Counters>,
    /// A real worker runs one job in its life; this one refuses a second.
    ran_a_job: bool,
}

/// Counts a spawn that never reached its end.
struct CancelWitness<'a>(&'a Counters, bool);

impl Drop for CancelWitness<'_> {
    fn drop(&mut self) {
        if !self.1 {
            self.0.spawns_cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Sandbox for FakeSandbox {
    type Worker = FakeWorker;

    async fn spawn(&self, id: u64) -> Result<FakeWorker, SpawnError> {
        let mut witness = CancelWitness(&self.counters, false);
        let n = self.counters.spawned.fetch_add(1, Ordering::SeqCst) + 1;
        if self.spawning == SpawnBehaviour::Hang {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(self.spawn_time).await;
        witness.1 = true;
        if self.spawning == SpawnBehaviour::FailNumber(n) {
            return Err(SpawnError {
                message: format!("spawn {n} fails on purpose"),
            });
        }
        if self.spawning == SpawnBehaviour::PanicNumber(n) {
            panic!("spawn {n} panics on purpose");
        }
        self.counters.alive.fetch_add(1, Ordering::SeqCst);
        Ok(FakeWorker {
            id,
            behaviour: self.behaviour,
            versions: Versions::default(),
            counters: self.counters.clone(),
            ran_a_job: false,
        })
    }

    async fn self_check(&self) -> Result<SelfCheckReport, SetupError> {
        Ok(SelfCheckReport::default())
    }

    async fn close(&self) {}
}

impl Worker for FakeWorker {
    fn id(&self) -> u64 {
        self.id
    }

    fn versions(&self) -> &Versions {
        &self.versions
    }

    fn is_alive(&self) -> bool {
        self.id >= self.counters.dead_below.load(Ordering::SeqCst)
    }

    async fn run(&mut self, _job: &Job) -> Result<JobResult, JobFailure> {
        assert!(!self.ran_a_job, "worker {} was given a second job", self.id);
        self.ran_a_job = true;
        self.counters.jobs.fetch_add(1, Ordering::SeqCst);
        match self.behaviour {
            Behaviour::Answer => {
                let raw = RawValue::from_string(format!("{{\"worker\":{}}}", self.id)).unwrap();
                Ok(JobResult::of(raw))
            }
            Behaviour::Hang => std::future::pending().await,
            Behaviour::Crash => Err(JobFailure::Exited {
                status: "killed by signal 11 (SIGSEGV)".into(),
            }),
        }
    }

    fn stop(&mut self) {
        self.counters.stops.fetch_add(1, Ordering::SeqCst);
    }

    async fn output(&mut self) -> (Captured, Captured) {
        let out = Captured {
            bytes: format!("out {}", self.id).into_bytes(),
            truncated: false,
        };
        (out, Captured::default())
    }

    async fn reap(self) {
        self.counters.alive.fetch_sub(1, Ordering::SeqCst);
    }
}

fn config(size: usize) -> PoolConfig {
    PoolConfig {
        size,
        queue_max: 8,
        queue_timeout: Duration::from_secs(5),
        job_timeout: Duration::from_secs(10),
        max_parallel_spawns: 2,
        max_jobs: 16,
    }
}

fn sandbox(behaviour: Behaviour) -> (FakeSandbox, Arc<Counters>) {
    let counters = Arc::new(Counters::default());
    let sandbox = FakeSandbox {
        behaviour,
        spawn_time: Duration::from_millis(300),
        spawning: SpawnBehaviour::Succeed,
        counters: counters.clone(),
    };
    (sandbox, counters)
}

fn job() -> Job {
    job_with_timeout(Duration::from_secs(10))
}

fn job_with_timeout(timeout: Duration) -> Job {
    let limits = JobLimits {
        timeout,
        memory_bytes: 256 << 20,
    };
    Job::new("def main(): return {}", limits, 1024)
}

/// Lets spawned tasks run until the pool settles (time is paused, so sleeps
/// inside fakes complete as soon as nothing else can run).
async fn settle() {
    tokio::time::sleep(Duration::from_secs(30)).await;
}

#[tokio::test(start_paused = true)]
async fn each_worker_runs_one_job_and_is_replaced() {
    let (sandbox, counters) = sandbox(Behaviour::Answer);
    let pool = Pool::start(sandbox, config(2), Arc::new(NoObserver));
    settle().await;
    assert_eq!(pool.status().ready, 2);

    // The fake panics if one of its workers is given a second job.
    for _ in 0..5 {
        let report = pool.checkout().await.unwrap().run(&job()).await;
        let result = report.outcome.unwrap();
        assert_eq!(
            result.result.get(),
            format!("{{\"worker\":{}}}", report.worker_id)
        );
        assert_eq!(report.stdout.text(), format!("out {}", report.worker_id));
    }
    assert_eq!(counters.jobs.load(Ordering::SeqCst), 5);
    settle().await;
    assert_eq!(
        counters.alive.load(Ordering::SeqCst),
        2,
        "used workers must be reaped, the pool refilled"
    );
    assert_eq!(pool.status().ready, 2);
    assert_eq!(pool.status().busy, 0);
}

#[tokio::test(start_paused = true)]
async fn a_failed_spawn_is_retried_and_reported() {
    struct Failures(Mutex<Vec<String>>);
    impl PoolObserver for Failures {
        fn spawn_failed(&self, _id: u64, error: &SpawnError) {
            self.0.lock().unwrap().push(error.message.clone());
        }
    }
    let (mut sandbox, counters) = sandbox(Behaviour::Answer);
    sandbox.spawning = SpawnBehaviour::FailNumber(2);
    let failures = Arc::new(Failures(Mutex::new(Vec::new())));
    let pool = Pool::start(sandbox, config(2), failures.clone());
    settle().await;
    assert_eq!(pool.status().ready, 2);
    assert_eq!(pool.status().spawn_failures_in_a_row, 0);
    assert_eq!(counters.spawned.load(Ordering::SeqCst), 3);
    assert_eq!(
        *failures.0.lock().unwrap(),
        vec!["spawn 2 fails on purpose".to_string()]
    );
}

#[tokio::test(start_paused = true)]
async fn a_hanging_job_times_out_and_its_worker_is_reaped() {
    let (sandbox, counters) = sandbox(Behaviour::Hang);
    let mut config = config(1);
    config.job_timeout = Duration::from_secs(2);
    let pool = Pool::start(sandbox, config, Arc::new(NoObserver));
    let lease = pool.checkout().await.unwrap();
    let started = tokio::time::Instant::now();
    let report = lease.run(&job()).await;
    assert_eq!(report.outcome.unwrap_err(), JobFailure::Timeout);
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    assert_eq!(
        report.stdout.text(),
        format!("out {}", report.worker_id),
        "output up to the deadline is kept"
    );
    settle().await;
    assert_eq!(counters.alive.load(Ordering::SeqCst), 1);
    assert_eq!(counters.stops.load(Ordering::SeqCst), 1);
}

/// A job's own timeout is its deadline, however much longer the pool's is;
/// one longer than the pool's is cut to it. The report says which applied.
#[tokio::test(start_paused = true)]
async fn a_job_runs_under_its_own_timeout_capped_by_the_pools() {
    let (sandbox, _) = sandbox(Behaviour::Hang);
    let pool = Pool::start(sandbox, config(2), Arc::new(NoObserver));
    for (asked, applied) in [(500, 500), (60_000, 10_000)] {
        let lease = pool.checkout().await.unwrap();
        let started = tokio::time::Instant::now();
        let report = lease
            .run(&job_with_timeout(Duration::from_millis(asked)))
            .await;
        assert_eq!(report.outcome.unwrap_err(), JobFailure::Timeout);
        assert_eq!(started.elapsed(), Duration::from_millis(applied));
        assert_eq!(report.limits.timeout, Duration::from_millis(applied));
        assert_eq!(report.limits.memory_bytes, 256 << 20);
    }
}

#[tokio::test(start_paused = true)]
async fn a_crash_mid_job_is_reported_and_the_worker_replaced() {
    let (sandbox, counters) = sandbox(Behaviour::Crash);
    let pool = Pool::start(sandbox, config(1), Arc::new(NoObserver));
    let report = pool.checkout().await.unwrap().run(&job()).await;
    assert!(matches!(report.outcome, Err(JobFailure::Exited { .. })));
    settle().await;
    assert_eq!(counters.alive.load(Ordering::SeqCst), 1);
    assert_eq!(pool.status().ready, 1);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_request_stops_and_reaps_its_worker() {
    let (sandbox, counters) = sandbox(Behaviour::Hang);
    let pool = Pool::start(sandbox, config(1), Arc::new(NoObserver));
    let lease = pool.checkout().await.unwrap();
    let request = tokio::spawn(async move { lease.run(&job()).await });
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(pool.status().busy, 1);
    request.abort();
    let _ = request.await;
    settle().await;
    assert_eq!(counters.stops.load(Ordering::SeqCst), 1);
    assert_eq!(
        counters.alive.load(Ordering::SeqCst),
        1,
        "the abandoned worker is reaped, a new one ready"
    );
    assert_eq!(pool.status().busy, 0);
}

#[tokio::test(start_paused = true)]
async fn waiters_are_served_in_order_and_the_queue_is_bounded() {
    let (sandbox, _counters) = sandbox(Behaviour::Answer);
    let mut config = config(1);
    config.queue_max = 2;
    let pool = Pool::start(sandbox, config, Arc::new(NoObserver));
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut waiters = Vec::new();
    for n in 0..2 {
        let (pool, order) = (pool.clone(), order.clone());
        waiters.push(tokio::spawn(async move {
            let lease = pool.checkout().await.unwrap();
            order.lock().unwrap().push(n);
            lease.run(&job()).await
        }));
        // Queue them in a known order.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(pool.status().waiting, 2);
    assert_eq!(pool.checkout().await.err(), Some(CheckoutError::QueueFull));
    for w in waiters {
        w.await.unwrap().outcome.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), vec![0, 1]);
}

#[tokio::test(start_paused = true)]
async fn a_wait_longer_than_the_queue_timeout_is_refused() {
    let (mut sandbox, counters) = sandbox(Behaviour::Answer);
    sandbox.spawn_time = Duration::from_secs(60);
    let mut config = config(1);
    config.queue_timeout = Duration::from_secs(1);
    let pool = Pool::start(sandbox, config, Arc::new(NoObserver));
    assert_eq!(
        pool.checkout().await.err(),
        Some(CheckoutError::QueueTimeout)
    );
    assert_eq!(pool.status().waiting, 0);
    settle().await;
    settle().await;
    assert_eq!(
        pool.status().ready,
        1,
        "the late worker is kept for the next request"
    );
    assert_eq!(counters.alive.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn size_zero_spawns_one_worker_per_request() {
    let (sandbox, counters) = sandbox(Behaviour::Answer);
    let pool = Pool::start(sandbox, config(0), Arc::new(NoObserver));
    settle().await;
    assert_eq!(
        counters.spawned.load(Ordering::SeqCst),
        0,
        "nothing is kept warm"
    );
    for _ in 0..3 {
        pool.checkout()
            .await
            .unwrap()
            .run(&job())
            .await
            .outcome
            .unwrap();
    }
    settle().await;
    assert_eq!(counters.spawned.load(Ordering::SeqCst), 3);
    assert_eq!(counters.alive.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn shutdown_fails_waiters_and_reaps_every_worker() {
    let (mut sandbox, counters) = sandbox(Behaviour::Answer);
    sandbox.spawn_time = Duration::from_secs(1);
    let pool = Pool::start(sandbox, config(2), Arc::new(NoObserver));
    settle().await;
    let lease = pool.checkout().await.unwrap();
    let _other = pool.checkout().await.unwrap();
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.checkout().await.err() })
    };
    tokio::time::sleep(Duration::from_millis(1)).await;
    drop(lease);
    drop(_other);
    pool.shutdown().await;
    assert_eq!(waiter.await.unwrap(), Some(CheckoutError::ShuttingDown));
    assert_eq!(
        pool.checkout().await.err(),
        Some(CheckoutError::ShuttingDown)
    );
    assert_eq!(
        counters.alive.load(Ordering::SeqCst),
        0,
        "every worker, idle, leased or spawning, is reaped"
    );
}

#[tokio::test(start_paused = true)]
async fn a_panicking_spawn_and_a_panicking_observer_leave_no_phantom_slot() {
    struct PanickingObserver;
    impl PoolObserver for PanickingObserver {
        fn worker_ready(&self, worker_id: u64, _: Duration, _: &Versions) {
            if worker_id == 2 {
                panic!("observer panics on purpose");
            }
        }
        fn checked_out(&self, _: Duration) {
            panic!("observer panics on purpose");
        }
    }
    let (mut sandbox, counters) = sandbox(Behaviour::Answer);
    sandbox.spawning = SpawnBehaviour::PanicNumber(1);
    let pool = Pool::start(sandbox, config(2), Arc::new(PanickingObserver));
    settle().await;
    let status = pool.status();
    assert_eq!(
        (status.ready, status.spawning),
        (2, 0),
        "the pool refills to its target"
    );
    assert_eq!(counters.spawned.load(Ordering::SeqCst), 3);
    // Checkout's observer panics too; the lease still works.
    let report = pool.checkout().await.unwrap().run(&job()).await;
    assert!(report.outcome.is_ok());
    settle().await;
    assert_eq!(pool.status().ready, 2);
}

#[tokio::test(start_paused = true)]
async fn shutdown_cancels_a_spawn_that_never_finishes() {
    let (mut sandbox, counters) = sandbox(Behaviour::Answer);
    sandbox.spawning = SpawnBehaviour::Hang;
    let pool = Pool::start(sandbox, config(2), Arc::new(NoObserver));
    settle().await;
    assert_eq!(pool.status().spawning, 2);
    tokio::time::timeout(Duration::from_secs(1), pool.shutdown())
        .await
        .expect("shutdown does not wait for hung spawns");
    assert_eq!(counters.spawns_cancelled.load(Ordering::SeqCst), 2);
    assert_eq!(pool.status().spawning, 0);
}

#[tokio::test(start_paused = true)]
async fn idle_workers_that_died_are_swept_and_replaced() {
    let (sandbox, counters) = sandbox(Behaviour::Answer);
    let pool = Pool::start(sandbox, config(2), Arc::new(NoObserver));
    settle().await;
    assert_eq!(counters.spawned.load(Ordering::SeqCst), 2);
    counters.dead_below.store(3, Ordering::SeqCst);
    settle().await;
    assert_eq!(counters.spawned.load(Ordering::SeqCst), 4, "both replaced");
    assert_eq!(
        counters.alive.load(Ordering::SeqCst),
        2,
        "the dead ones reaped"
    );
    assert_eq!(pool.status().ready, 2);
}

#[tokio::test(start_paused = true)]
async fn checkout_skips_an_idle_worker_that_died() {
    let (sandbox, counters) = sandbox(Behaviour::Answer);
    let mut config = config(1);
    config.queue_timeout = Duration::from_secs(60);
    let pool = Pool::start(sandbox, config, Arc::new(NoObserver));
    settle().await;
    counters.dead_below.store(2, Ordering::SeqCst);
    let id = pool.checkout().await.unwrap().worker_id();
    assert_eq!(id, 2, "the dead worker 1 was not handed out");
}

#[tokio::test(start_paused = true)]
async fn no_more_than_max_jobs_run_at_once_even_with_idle_workers() {
    let (sandbox, counters) = sandbox(Behaviour::Hang);
    let mut config = config(3);
    config.max_jobs = 2;
    config.job_timeout = Duration::from_secs(5);
    let pool = Pool::start(sandbox, config, Arc::new(NoObserver));
    settle().await;
    let running: Vec<_> = (0..3)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.checkout().await.unwrap().run(&job()).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1)).await;
    let status = pool.status();
    assert_eq!((status.busy, status.waiting), (2, 1), "{status:?}");
    assert_eq!(counters.jobs.load(Ordering::SeqCst), 2);
    // When the first two time out, the third runs.
    for task in running {
        assert_eq!(
            task.await.unwrap().outcome.unwrap_err(),
            JobFailure::Timeout
        );
    }
    assert_eq!(counters.jobs.load(Ordering::SeqCst), 3);
}
