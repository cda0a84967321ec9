//! Metering: each job's usage added to its key's totals per hour and outcome
//! in the store, off the request path. A job's answer never waits on the
//! database: [`Meter::record`] folds the job into a bounded table in memory,
//! and a task writes the table as one batch every second. A batch that fails
//! (the store unreachable) is retried under the same id, so it is counted
//! once even if a commit went through whose answer was lost. At shutdown
//! what is pending is written within the grace period. When the table is
//! full (the store gone for long), further jobs' usage is dropped, counted
//! and logged: the table's bound is memory's, not the outage's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyexec_store::{KeyId, Store, UsageDelta, MAX_BATCH_DELTAS};

use super::keys::KeyCache;

/// What one job used, as it is metered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobUsage {
    pub key: KeyId,
    /// Unix seconds when it ended.
    pub at: i64,
    /// `ok` or the answer's error kind.
    pub outcome: &'static str,
    pub cpu_us: u64,
    pub wall_us: u64,
    pub peak_memory_bytes: u64,
}

/// (key, hour, outcome): one row of the hourly totals.
type Row = (KeyId, i64, &'static str);

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Totals {
    jobs: u64,
    cpu_us: u64,
    wall_us: u64,
    peak_memory_bytes: u64,
}

/// A batch on its way to the store: the same id on every retry.
struct Batch {
    id: String,
    deltas: Vec<UsageDelta>,
}

/// How the meter is doing, for metrics and tests.
#[derive(Debug, Default)]
pub struct MeterCounters {
    /// Jobs whose usage could not be kept (the table was full).
    pub dropped_jobs: AtomicU64,
    /// Jobs whose usage is written.
    pub written_jobs: AtomicU64,
    /// Batches the store refused or could not take (retried).
    pub failed_writes: AtomicU64,
}

pub struct Meter {
    store: Arc<dyn Store>,
    keys: Arc<KeyCache>,
    pending: Mutex<HashMap<Row, Totals>>,
    /// Batches taken from `pending` and not yet written, oldest first.
    unwritten: tokio::sync::Mutex<Vec<Batch>>,
    /// Rows and jobs in `unwritten`, readable while a write holds it.
    unwritten_rows: AtomicUsize,
    unwritten_jobs: AtomicU64,
    /// The most rows `pending` and `unwritten` hold together.
    max_rows: usize,
    instance: String,
    next_batch: AtomicU64,
    pub counters: MeterCounters,
}

impl Meter {
    /// `instance`: this server's id in batch ids (unique per process).
    pub fn new(
        store: Arc<dyn Store>,
        keys: Arc<KeyCache>,
        max_rows: usize,
        instance: String,
    ) -> Meter {
        Meter {
            store,
            keys,
            pending: Mutex::new(HashMap::new()),
            unwritten: tokio::sync::Mutex::new(Vec::new()),
            unwritten_rows: AtomicUsize::new(0),
            unwritten_jobs: AtomicU64::new(0),
            max_rows,
            instance,
            next_batch: AtomicU64::new(1),
            counters: MeterCounters::default(),
        }
    }

    /// Folds one job into the pending totals, at once (no I/O). Its CPU
    /// counts against its key's quota from now on.
    pub fn record(&self, job: JobUsage) {
        let hour = job.at - job.at.rem_euclid(3600);
        let row = (job.key.clone(), hour, job.outcome);
        let mut pending = lock(&self.pending);
        let unwritten_rows = self.unwritten_rows.load(Ordering::Relaxed);
        if !pending.contains_key(&row) && pending.len() + unwritten_rows >= self.max_rows {
            drop(pending);
            let dropped = self.counters.dropped_jobs.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(
                    dropped_jobs = dropped,
                    max_rows = self.max_rows,
                    "usage table full (the store has been unreachable): dropping jobs' usage"
                );
            }
            return;
        }
        let totals = pending.entry(row).or_default();
        totals.jobs += 1;
        totals.cpu_us += job.cpu_us;
        totals.wall_us += job.wall_us;
        totals.peak_memory_bytes = totals.peak_memory_bytes.max(job.peak_memory_bytes);
        drop(pending);
        if let Some(entry) = self.keys.get(&job.key) {
            entry.gate.add_cpu(job.cpu_us);
        }
    }

    /// Jobs metered and not yet written.
    pub fn pending_jobs(&self) -> u64 {
        let pending: u64 = lock(&self.pending).values().map(|t| t.jobs).sum();
        pending + self.unwritten_jobs.load(Ordering::Relaxed)
    }

    /// Writes what is pending every `interval` until `stop` fires, then once
    /// more (the shutdown's flush is [`Meter::flush`], bounded by its caller).
    pub async fn run(
        self: Arc<Self>,
        interval: Duration,
        stop: tokio_util::sync::CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.cancelled() => return,
            }
            self.write_once().await;
        }
    }

    /// Writes everything pending, retrying until it is all written or the
    /// caller stops waiting. Returns the jobs still unwritten.
    ///
    /// Cancel safety: safe to drop; what was not written stays pending.
    pub async fn flush(&self) -> u64 {
        loop {
            if self.write_once().await {
                return 0;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// One round: pending totals become batches, and the batches are
    /// written oldest first until one fails. True when nothing is left.
    async fn write_once(&self) -> bool {
        let mut unwritten = self.unwritten.lock().await;
        let taken: Vec<(Row, Totals)> = lock(&self.pending).drain().collect();
        for chunk in taken.chunks(MAX_BATCH_DELTAS) {
            let seq = self.next_batch.fetch_add(1, Ordering::Relaxed);
            self.unwritten_rows
                .fetch_add(chunk.len(), Ordering::Relaxed);
            let jobs: u64 = chunk.iter().map(|(_, t)| t.jobs).sum();
            self.unwritten_jobs.fetch_add(jobs, Ordering::Relaxed);
            unwritten.push(Batch {
                id: format!("{}-{seq}", self.instance),
                deltas: chunk
                    .iter()
                    .map(|((key, hour, outcome), totals)| UsageDelta {
                        key_id: key.clone(),
                        hour_start: *hour,
                        outcome: (*outcome).to_string(),
                        jobs: totals.jobs,
                        cpu_us: totals.cpu_us,
                        wall_us: totals.wall_us,
                        peak_memory_bytes: totals.peak_memory_bytes,
                    })
                    .collect(),
            });
        }
        while let Some(batch) = unwritten.first() {
            match self.store.record_usage(&batch.id, &batch.deltas).await {
                Ok(_) => {
                    let batch = unwritten.remove(0);
                    self.unwritten_rows
                        .fetch_sub(batch.deltas.len(), Ordering::Relaxed);
                    let jobs: u64 = batch.deltas.iter().map(|d| d.jobs).sum();
                    self.unwritten_jobs.fetch_sub(jobs, Ordering::Relaxed);
                    self.written(&batch);
                }
                Err(error) => {
                    self.counters.failed_writes.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        batch = %batch.id,
                        error = %error,
                        unwritten_batches = unwritten.len(),
                        "usage not written yet; retrying"
                    );
                    return false;
                }
            }
        }
        true
    }

    fn written(&self, batch: &Batch) {
        for delta in &batch.deltas {
            self.counters
                .written_jobs
                .fetch_add(delta.jobs, Ordering::Relaxed);
            if let Some(entry) = self.keys.get(&delta.key_id) {
                entry
                    .gate
                    .cpu_written(delta.hour_start.div_euclid(86_400), delta.cpu_us);
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
