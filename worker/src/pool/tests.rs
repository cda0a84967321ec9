//! The pool against fake sandboxes (`crate::testing`): every worker's fate
//! is counted, so a test can tell a worker that was stopped and reaped from
//! one that leaked.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::error::SpawnError;
use crate::job::protocol::Versions;
use crate::job::{Job, JobFailure, JobLimits};
use crate::observer::{NoObserver, PoolObserver};
use crate::testing::{FakeSandbox, Ledger, Spawns};

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

fn sandbox() -> (FakeSandbox, Arc<Ledger>) {
    let sandbox = FakeSandbox {
        spawn_delay: Duration::from_millis(300),
        ..FakeSandbox::default()
    };
    let ledger = sandbox.ledger.clone();
    (sandbox, ledger)
}

/// A job that answers (the fake echoes its worker's id).
fn job() -> Job {
    job_with("def main(): return {}", Duration::from_secs(10))
}

/// A job that never answers.
fn hanging_job() -> Job {
    job_with("sleep", Duration::from_secs(10))
}

fn job_with(script: &str, timeout: Duration) -> Job {
    let limits = JobLimits {
        timeout,
        memory_bytes: 256 << 20,
    };
    Job::new(script, limits, 1024)
}

fn count(counter: &std::sync::atomic::AtomicU64) -> u64 {
    Ledger::count(counter)
}

/// Lets spawned tasks run until the pool settles (time is paused, so sleeps
/// inside fakes complete as soon as nothing else can run).
async fn settle() {
    tokio::time::sleep(Duration::from_secs(30)).await;
}

#[tokio::test(start_paused = true)]
async fn each_worker_runs_one_job_and_is_replaced() {
    let (sandbox, ledger) = sandbox();
    let pool = Pool::start(sandbox, config(2), Arc::new(NoObserver));
    settle().await;
    assert_eq!(pool.status().ready, 2);

    // The fake panics if one of its workers is given a second job.
    for _ in 0..5 {
        let report = pool
            .checkout(Caller::ANONYMOUS)
            .await
            .unwrap()
            .run(&job())
            .await;
        let result: serde_json::Value =
            serde_json::from_str(report.outcome.unwrap().result.get()).unwrap();
        assert_eq!(result["worker"], report.worker_id);
        assert_eq!(report.stdout.text(), "out\n");
    }
    assert_eq!(count(&ledger.jobs), 5);
    settle().await;
    assert_eq!(
        ledger.alive(),
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
            self.0.lock().unwrap().push(error.to_string());
        }
    }
    let (mut sandbox, ledger) = sandbox();
    sandbox.spawns = Spawns::FailNumber(2);
    let failures = Arc::new(Failures(Mutex::new(Vec::new())));
    let pool = Pool::start(sandbox, config(2), failures.clone());
    settle().await;
    assert_eq!(pool.status().ready, 2);
    assert_eq!(pool.status().spawn_failures_in_a_row, 0);
    assert_eq!(count(&ledger.spawned), 3);
    assert_eq!(
        *failures.0.lock().unwrap(),
        vec!["worker 2: cannot start nsjail: fake spawn 2 fails on purpose".to_string()]
    );
}

#[tokio::test(start_paused = true)]
async fn a_hanging_job_times_out_and_its_worker_is_reaped() {
    let (sandbox, ledger) = sandbox();
    let mut config = config(1);
    config.job_timeout = Duration::from_secs(2);
    let pool = Pool::start(sandbox, config, Arc::new(NoObserver));
    let lease = pool.checkout(Caller::ANONYMOUS).await.unwrap();
    let started = tokio::time::Instant::now();
    let report = lease.run(&hanging_job()).await;
    assert!(matches!(report.outcome, Err(JobFailure::Timeout)));
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    assert_eq!(
        report.stdout.text(),
        "out\n",
        "output up to the deadline is kept"
    );
    settle().await;
    assert_eq!(ledger.alive(), 1);
    assert_eq!(ledger.stops().len(), 1);
}

/// A job's own timeout is its deadline, however much longer the pool's is;
/// one longer than the pool's is cut to it. The report says which applied.
#[tokio::test(start_paused = true)]
async fn a_job_runs_under_its_own_timeout_capped_by_the_pools() {
    let (sandbox, _) = sandbox();
    let pool = Pool::start(sandbox, config(2), Arc::new(NoObserver));
    for (asked, applied) in [(500, 500), (60_000, 10_000)] {
        let lease = pool.checkout(Caller::ANONYMOUS).await.unwrap();
        let started = tokio::time::Instant::now();
        let report = lease
            .run(&job_with("sleep", Duration::from_millis(asked)))
            .await;
        assert!(matches!(report.outcome, Err(JobFailure::Timeout)));
        assert_eq!(started.elapsed(), Duration::from_millis(applied));
        assert_eq!(report.limits.timeout, Duration::from_millis(applied));
        assert_eq!(report.limits.memory_bytes, 256 << 20);
    }
}

#[tokio::test(start_paused = true)]
async fn a_crash_mid_job_is_reported_and_the_worker_replaced() {
    let (sandbox, ledger) = sandbox();
    let pool = Pool::start(sandbox, config(1), Arc::new(NoObserver));
    let crash = job_with("exited", Duration::from_secs(10));
    let report = pool
        .checkout(Caller::ANONYMOUS)
        .await
        .unwrap()
        .run(&crash)
        .await;
    assert!(matches!(report.outcome, Err(JobFailure::Exited { .. })));
    settle().await;
    assert_eq!(ledger.alive(), 1);
    assert_eq!(pool.status().ready, 1);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_request_stops_and_reaps_its_worker() {
    let (sandbox, ledger) = sandbox();
    let pool = Pool::start(sandbox, config(1), Arc::new(NoObserver));
    let lease = pool.checkout(Caller::ANONYMOUS).await.unwrap();
    let request = tokio::spawn(async move { lease.run(&hanging_job()).await });
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(pool.status().busy, 1);
    request.abort();
    let _ = request.await;
    settle().await;
    assert_eq!(ledger.stops().len(), 1);
    assert_eq!(
        ledger.alive(),
        1,
        "the abandoned worker is reaped, a new one ready"
    );
    assert_eq!(pool.status().busy, 0);
}

#[tokio::test(start_paused = true)]
async fn waiters_are_served_in_order_and_the_queue_is_bounded() {
    let (sandbox, _ledger) = sandbox();
    let mut config = config(1);
    config.queue_max = 2;
    let pool = Pool::start(sandbox, config, Arc::new(NoObserver));
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut waiters = Vec::new();
    for n in 0..2 {
        let (pool, order) = (pool.clone(), order.clone());
        waiters.push(tokio::spawn(async move {
            let lease = pool.checkout(Caller::ANONYMOUS).await.unwrap();
            order.lock().unwrap().push(n);
            lease.run(&job()).await
        }));
        // Queue them in a known order.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(pool.status().waiting, 2);
    assert_eq!(
        pool.checkout(Caller::ANONYMOUS).await.err(),
        Some(CheckoutError::QueueFull)
    );
    for w in waiters {
        w.await.unwrap().outcome.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), vec![0, 1]);
}

#[tokio::test(start_paused = true)]
async fn a_wait_longer_than_the_queue_timeout_is_refused() {
    let (mut sandbox, ledger) = sandbox();
    sandbox.spawn_delay = Duration::from_secs(60);
    let mut config = config(1);
    config.queue_timeout = Duration::from_secs(1);
    let pool = Pool::start(sandbox, config, Arc::new(NoObserver));
    assert_eq!(
        pool.checkout(Caller::ANONYMOUS).await.err(),
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
    assert_eq!(ledger.alive(), 1);
}

#[tokio::test(start_paused = true)]
async fn size_zero_spawns_one_worker_per_request() {
    let (sandbox, ledger) = sandbox();
    let pool = Pool::start(sandbox, config(0), Arc::new(NoObserver));
    settle().await;
    assert_eq!(count(&ledger.spawned), 0, "nothing is kept warm");
    for _ in 0..3 {
        pool.checkout(Caller::ANONYMOUS)
            .await
            .unwrap()
            .run(&job())
            .await
            .outcome
            .unwrap();
    }
    settle().await;
    assert_eq!(count(&ledger.spawned), 3);
    assert_eq!(ledger.alive(), 0);
}

#[tokio::test(start_paused = true)]
async fn shutdown_fails_waiters_and_reaps_every_worker() {
    let (mut sandbox, ledger) = sandbox();
    sandbox.spawn_delay = Duration::from_secs(1);
    let pool = Pool::start(sandbox, config(2), Arc::new(NoObserver));
    settle().await;
    let lease = pool.checkout(Caller::ANONYMOUS).await.unwrap();
    let _other = pool.checkout(Caller::ANONYMOUS).await.unwrap();
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.checkout(Caller::ANONYMOUS).await.err() })
    };
    tokio::time::sleep(Duration::from_millis(1)).await;
    drop(lease);
    drop(_other);
    pool.shutdown().await;
    assert_eq!(waiter.await.unwrap(), Some(CheckoutError::ShuttingDown));
    assert_eq!(
        pool.checkout(Caller::ANONYMOUS).await.err(),
        Some(CheckoutError::ShuttingDown)
    );
    assert_eq!(
        ledger.alive(),
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
    let (mut sandbox, ledger) = sandbox();
    sandbox.spawns = Spawns::PanicNumber(1);
    let pool = Pool::start(sandbox, config(2), Arc::new(PanickingObserver));
    settle().await;
    let status = pool.status();
    assert_eq!(
        (status.ready, status.spawning),
        (2, 0),
        "the pool refills to its target"
    );
    assert_eq!(count(&ledger.spawned), 3);
    // Checkout's observer panics too; the lease still works.
    let report = pool
        .checkout(Caller::ANONYMOUS)
        .await
        .unwrap()
        .run(&job())
        .await;
    assert!(report.outcome.is_ok());
    settle().await;
    assert_eq!(pool.status().ready, 2);
}

#[tokio::test(start_paused = true)]
async fn shutdown_cancels_a_spawn_that_never_finishes() {
    let (mut sandbox, ledger) = sandbox();
    sandbox.spawns = Spawns::HangFrom(1);
    let pool = Pool::start(sandbox, config(2), Arc::new(NoObserver));
    settle().await;
    assert_eq!(pool.status().spawning, 2);
    tokio::time::timeout(Duration::from_secs(1), pool.shutdown())
        .await
        .expect("shutdown does not wait for hung spawns");
    assert_eq!(count(&ledger.spawns_cancelled), 2);
    assert_eq!(pool.status().spawning, 0);
}

#[tokio::test(start_paused = true)]
async fn idle_workers_that_died_are_swept_and_replaced() {
    let (sandbox, ledger) = sandbox();
    let pool = Pool::start(sandbox, config(2), Arc::new(NoObserver));
    settle().await;
    assert_eq!(count(&ledger.spawned), 2);
    ledger.dead_below.store(3, Ordering::SeqCst);
    settle().await;
    assert_eq!(count(&ledger.spawned), 4, "both replaced");
    assert_eq!(ledger.alive(), 2, "the dead ones reaped");
    assert_eq!(pool.status().ready, 2);
}

#[tokio::test(start_paused = true)]
async fn checkout_skips_an_idle_worker_that_died() {
    let (sandbox, ledger) = sandbox();
    let mut config = config(1);
    config.queue_timeout = Duration::from_secs(60);
    let pool = Pool::start(sandbox, config, Arc::new(NoObserver));
    settle().await;
    ledger.dead_below.store(2, Ordering::SeqCst);
    let id = pool.checkout(Caller::ANONYMOUS).await.unwrap().worker_id();
    assert_eq!(id, 2, "the dead worker 1 was not handed out");
}

#[tokio::test(start_paused = true)]
async fn no_more_than_max_jobs_run_at_once_even_with_idle_workers() {
    let (sandbox, ledger) = sandbox();
    let mut config = config(3);
    config.max_jobs = 2;
    config.job_timeout = Duration::from_secs(5);
    let pool = Pool::start(sandbox, config, Arc::new(NoObserver));
    settle().await;
    let running: Vec<_> = (0..3)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                pool.checkout(Caller::ANONYMOUS)
                    .await
                    .unwrap()
                    .run(&hanging_job())
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1)).await;
    let status = pool.status();
    assert_eq!((status.busy, status.waiting), (2, 1), "{status:?}");
    assert_eq!(count(&ledger.jobs), 2);
    // When the first two time out, the third runs.
    for task in running {
        assert!(matches!(
            task.await.unwrap().outcome,
            Err(JobFailure::Timeout)
        ));
    }
    assert_eq!(count(&ledger.jobs), 3);
}

/// With one worker at a time, a caller with many requests queued and a
/// caller with one: the lone request is served after at most one of the
/// other's, not after all of them; and when the queue is full, the heavy
/// caller's newest request makes room for the light caller's.
#[tokio::test(start_paused = true)]
async fn callers_are_served_in_turn_and_the_heaviest_is_shed_first() {
    let (sandbox, _ledger) = sandbox();
    let mut config = config(1);
    config.max_jobs = 1;
    config.queue_max = 6;
    config.queue_timeout = Duration::from_secs(600);
    let pool = Pool::start(sandbox, config, Arc::new(NoObserver));
    settle().await;
    let heavy = Caller { id: 1, weight: 1 };
    let light = Caller { id: 2, weight: 1 };
    // Holds the only job slot until released, so everything else queues.
    let holder = pool.checkout(heavy).await.unwrap();
    let served = Arc::new(Mutex::new(Vec::new()));
    let mut requests = Vec::new();
    let mut queue = |caller: Caller, name: String| {
        let (pool, served) = (pool.clone(), served.clone());
        requests.push(tokio::spawn(async move {
            let lease = pool.checkout(caller).await;
            if let Ok(lease) = lease {
                served.lock().unwrap().push(name.clone());
                lease.run(&job()).await;
                Ok(name)
            } else {
                Err((name, lease.err().unwrap()))
            }
        }));
    };
    for n in 0..5 {
        queue(heavy, format!("heavy {n}"));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    queue(light, "light 0".into());
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(pool.status().waiting, 6);
    // Full: the light caller's second request displaces heavy's newest.
    queue(light, "light 1".into());
    tokio::time::sleep(Duration::from_millis(1)).await;
    drop(holder);
    let mut refused = Vec::new();
    for request in requests {
        if let Err((name, error)) = request.await.unwrap() {
            assert_eq!(error, CheckoutError::QueueFull);
            refused.push(name);
        }
    }
    assert_eq!(refused, ["heavy 4"]);
    assert_eq!(
        *served.lock().unwrap(),
        ["heavy 0", "light 0", "heavy 1", "light 1", "heavy 2", "heavy 3"]
    );
}
