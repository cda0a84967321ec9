//! The Prometheus metrics: an explicit registry owned by the server (no global
//! statics, so every test server has its own), rendered in the text format.
//!
//! Counters and histograms are fed by the request handlers and by the pool's
//! events ([`crate::pool_events`]); the pool gauges are read from
//! `Pool::status()` at scrape time, so they can never drift from the truth.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use prometheus::{
    CounterVec, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use pyexec_worker::PoolStatus;

/// The values of `pyexec_build_info`'s labels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildInfo {
    pub version: String,
    /// fork or spawn.
    pub isolation: String,
    pub nsjail_version: String,
    pub python_version: String,
    pub numpy_version: String,
    pub pandas_version: String,
}

/// The `reason` values of `pyexec_zygote_starts_total`.
pub const ZYGOTE_START_REASONS: [&str; 4] = ["start", "died", "failing", "recycled"];

pub struct Metrics {
    registry: Registry,
    pub jobs: IntCounterVec,
    pub job_duration: HistogramVec,
    /// What jobs used, from their cgroups.
    pub job_cpu: Histogram,
    pub job_peak_memory: Histogram,
    /// The limits jobs ran under (the server's, or lower ones they asked for).
    pub job_timeout_limit: Histogram,
    pub job_memory_limit: Histogram,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub queue_wait: Histogram,
    queue_depth: IntGauge,
    workers: IntGaugeVec,
    pool_target: IntGauge,
    pub spawn_duration: Histogram,
    /// Each phase of a worker's life (`pyexec_worker::Phase`).
    pub worker_phase: HistogramVec,
    pub spawn_failures: IntCounter,
    pub rejected: IntCounterVec,
    /// Fork mode: zygotes that became current, by reason (start, died, failing, recycled).
    pub zygote_starts: IntCounterVec,
    pub zygote_start_duration: Histogram,
    pub zygote_failures: IntCounter,
    /// The current zygote's generation (1, 2, …); 0 while none is live.
    pub zygote_generation: IntGauge,
    build_info: IntGaugeVec,
    build: Mutex<BuildInfo>,
    /// Jobs and CPU-seconds per API key (`key` = its public id).
    pub keys: KeyMetrics,
    /// 1 while the store (keys, usage, snippets) answers, 0 while it doesn't.
    pub store_up: IntGauge,
    /// Jobs whose usage is metered and not yet written to the store.
    pub usage_unwritten: IntGauge,
    /// Jobs whose usage was lost: the table of unwritten usage was full.
    pub usage_dropped: IntCounter,
}

/// Per-key series with a bounded set of `key` labels: the first
/// `max_keys` keys seen get their own, the rest share `other`, so a scrape
/// never grows with the number of keys.
pub struct KeyMetrics {
    jobs: IntCounterVec,
    cpu: CounterVec,
    labelled: Mutex<HashSet<String>>,
    max_keys: usize,
}

/// The `key` label of keys beyond `PYEXEC_METRICS_MAX_KEYS`.
pub const OTHER_KEYS: &str = "other";

impl KeyMetrics {
    /// A job of key `id` ended, having used `cpu_seconds`.
    pub fn job(&self, id: &str, cpu_seconds: f64) {
        let label = self.label(id);
        self.jobs.with_label_values(&[&label]).inc();
        self.cpu.with_label_values(&[&label]).inc_by(cpu_seconds);
    }

    fn label(&self, id: &str) -> String {
        let mut labelled = self.labelled.lock().unwrap_or_else(|p| p.into_inner());
        if labelled.contains(id) {
            return id.to_string();
        }
        if labelled.len() < self.max_keys {
            labelled.insert(id.to_string());
            return id.to_string();
        }
        OTHER_KEYS.to_string()
    }
}

/// Bucket bounds on a 1-2.5-5 ladder from 1 ms up to the first bound past
/// `longest`, so a job killed at its deadline still lands in a finite bucket.
/// [`buckets`] with three finer ones below a millisecond, where most of a
/// worker's phases end.
fn phase_buckets(longest: Duration) -> Vec<f64> {
    let mut bounds = vec![0.0001, 0.00025, 0.0005];
    bounds.extend(buckets(longest));
    bounds
}

pub fn buckets(longest: Duration) -> Vec<f64> {
    let longest = longest.as_secs_f64();
    let mut bounds = Vec::new();
    let mut decade: f64 = 0.001;
    loop {
        for step in [1.0, 2.5, 5.0] {
            let bound = decade * step;
            bounds.push((bound * 1e6).round() / 1e6);
            if bound > longest {
                return bounds;
            }
        }
        decade *= 10.0;
    }
}

/// Powers of two from 1 MiB to 16 GiB: memory figures span orders of
/// magnitude, and a few buckets keep the series cheap.
pub fn memory_buckets() -> Vec<f64> {
    (20..=34).map(|shift| (1u64 << shift) as f64).collect()
}

impl Metrics {
    /// `job_timeout` and `wait_timeout` (queue wait) bound the job and request
    /// histograms; `spawn_timeout` the spawn histogram.
    pub fn new(
        job_timeout: Duration,
        wait_timeout: Duration,
        spawn_timeout: Duration,
        max_keys: usize,
    ) -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        let job_buckets = buckets(job_timeout);
        let request_buckets = buckets(job_timeout + wait_timeout);
        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            HistogramOpts::new(name, help).buckets(buckets.to_vec())
        };

        let metrics = Metrics {
            jobs: IntCounterVec::new(
                Opts::new("pyexec_jobs_total", "Jobs run by a worker, by outcome: ok or the error kind."),
                &["outcome"],
            )?,
            job_duration: HistogramVec::new(
                histogram(
                    "pyexec_job_duration_seconds",
                    "Time a job spent inside its worker, from sending the script to the answer or the deadline.",
                    &job_buckets,
                ),
                &["outcome"],
            )?,
            job_cpu: Histogram::with_opts(histogram(
                "pyexec_job_cpu_seconds",
                "CPU time of a job's processes, read from its cgroup when it ended.",
                &job_buckets,
            ))?,
            job_peak_memory: Histogram::with_opts(histogram(
                "pyexec_job_peak_memory_bytes",
                "Highest memory charge of a job's cgroup while it ran (spawn mode: the warm interpreter included).",
                &memory_buckets(),
            ))?,
            job_timeout_limit: Histogram::with_opts(histogram(
                "pyexec_job_limit_timeout_seconds",
                "The wall-clock limit each job ran under: PYEXEC_TIMEOUT, or less if the request asked.",
                &job_buckets,
            ))?,
            job_memory_limit: Histogram::with_opts(histogram(
                "pyexec_job_limit_memory_bytes",
                "The memory limit each job ran under: PYEXEC_MEMORY_MB, or less if the request asked.",
                &memory_buckets(),
            ))?,
            http_requests: IntCounterVec::new(
                Opts::new("pyexec_http_requests_total", "HTTP requests answered, by route and status code."),
                &["route", "status"],
            )?,
            http_duration: HistogramVec::new(
                histogram(
                    "pyexec_http_request_duration_seconds",
                    "End-to-end time from receiving a request's head to its response, by route.",
                    &request_buckets,
                ),
                &["route"],
            )?,
            queue_wait: Histogram::with_opts(histogram(
                "pyexec_queue_wait_seconds",
                "Time a request waited for a ready worker (successful checkouts).",
                &buckets(wait_timeout),
            ))?,
            queue_depth: IntGauge::new("pyexec_queue_depth", "Requests waiting for a worker now.")?,
            workers: IntGaugeVec::new(
                Opts::new("pyexec_workers", "Workers by state: spawning, ready (idle and warm) or busy (running a job)."),
                &["state"],
            )?,
            pool_target: IntGauge::new(
                "pyexec_pool_target_size",
                "Warm workers the pool tries to keep ready (PYEXEC_POOL_SIZE; 0 = one jail per request).",
            )?,
            spawn_duration: Histogram::with_opts(histogram(
                "pyexec_worker_spawn_duration_seconds",
                "Time from starting a worker (spawn mode: launching its jail; fork mode: asking the zygote for a child) to the worker reporting ready.",
                &buckets(spawn_timeout),
            ))?,
            worker_phase: HistogramVec::new(
                histogram(
                    "pyexec_worker_phase_seconds",
                    "Time each phase of a worker's life took: cgroup_make, fork, setup, cgroup_move, cgroup_limits, job, cgroup_usage, exit, cgroup_remove.",
                    &phase_buckets(spawn_timeout),
                ),
                &["phase"],
            )?,
            spawn_failures: IntCounter::new(
                "pyexec_worker_spawn_failures_total",
                "Workers that failed to start.",
            )?,
            rejected: IntCounterVec::new(
                Opts::new(
                    "pyexec_rejected_total",
                    "Requests to /execute refused before a job ran, by reason (the error kind).",
                ),
                &["reason"],
            )?,
            zygote_starts: IntCounterVec::new(
                Opts::new(
                    "pyexec_zygote_starts_total",
                    "Fork mode: zygotes that became current, by reason: start, died (replaced a dead one), failing (replaced one whose children kept failing) or recycled.",
                ),
                &["reason"],
            )?,
            zygote_start_duration: Histogram::with_opts(histogram(
                "pyexec_zygote_start_duration_seconds",
                "Fork mode: time from launching a zygote's jail to the zygote reporting ready (numpy and pandas imported).",
                &buckets(spawn_timeout),
            ))?,
            zygote_failures: IntCounter::new(
                "pyexec_zygote_start_failures_total",
                "Fork mode: zygotes that failed to start.",
            )?,
            zygote_generation: IntGauge::new(
                "pyexec_zygote_generation",
                "Fork mode: the generation of the zygote new workers are forked from; 0 while none is live.",
            )?,
            build_info: IntGaugeVec::new(
                Opts::new("pyexec_build_info", "Always 1; the labels carry the versions and the isolation mode in use."),
                &["version", "isolation", "nsjail_version", "python_version", "numpy_version", "pandas_version"],
            )?,
            build: Mutex::new(BuildInfo::default()),
            keys: KeyMetrics {
                jobs: IntCounterVec::new(
                    Opts::new(
                        "pyexec_key_jobs_total",
                        "Jobs run per API key (its public id; keys beyond PYEXEC_METRICS_MAX_KEYS count as \"other\").",
                    ),
                    &["key"],
                )?,
                cpu: CounterVec::new(
                    Opts::new(
                        "pyexec_key_cpu_seconds_total",
                        "CPU-seconds of jobs per API key, from their cgroups (keys beyond PYEXEC_METRICS_MAX_KEYS count as \"other\").",
                    ),
                    &["key"],
                )?,
                labelled: Mutex::new(HashSet::new()),
                max_keys,
            },
            store_up: IntGauge::new(
                "pyexec_store_up",
                "1 while the store (keys, usage, snippets) answers, 0 while it is unreachable.",
            )?,
            usage_unwritten: IntGauge::new(
                "pyexec_usage_unwritten_jobs",
                "Jobs whose usage is metered in memory and not yet written to the store.",
            )?,
            usage_dropped: IntCounter::new(
                "pyexec_usage_dropped_jobs_total",
                "Jobs whose usage was lost because the table of unwritten usage was full (the store unreachable for long).",
            )?,
            registry,
        };
        let r = &metrics.registry;
        r.register(Box::new(metrics.jobs.clone()))?;
        r.register(Box::new(metrics.job_duration.clone()))?;
        r.register(Box::new(metrics.job_cpu.clone()))?;
        r.register(Box::new(metrics.job_peak_memory.clone()))?;
        r.register(Box::new(metrics.job_timeout_limit.clone()))?;
        r.register(Box::new(metrics.job_memory_limit.clone()))?;
        r.register(Box::new(metrics.http_requests.clone()))?;
        r.register(Box::new(metrics.http_duration.clone()))?;
        r.register(Box::new(metrics.queue_wait.clone()))?;
        r.register(Box::new(metrics.queue_depth.clone()))?;
        r.register(Box::new(metrics.workers.clone()))?;
        r.register(Box::new(metrics.pool_target.clone()))?;
        r.register(Box::new(metrics.spawn_duration.clone()))?;
        r.register(Box::new(metrics.worker_phase.clone()))?;
        r.register(Box::new(metrics.spawn_failures.clone()))?;
        r.register(Box::new(metrics.rejected.clone()))?;
        r.register(Box::new(metrics.zygote_starts.clone()))?;
        r.register(Box::new(metrics.zygote_start_duration.clone()))?;
        r.register(Box::new(metrics.zygote_failures.clone()))?;
        r.register(Box::new(metrics.zygote_generation.clone()))?;
        r.register(Box::new(metrics.build_info.clone()))?;
        r.register(Box::new(metrics.keys.jobs.clone()))?;
        r.register(Box::new(metrics.keys.cpu.clone()))?;
        r.register(Box::new(metrics.store_up.clone()))?;
        r.register(Box::new(metrics.usage_unwritten.clone()))?;
        r.register(Box::new(metrics.usage_dropped.clone()))?;
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        metrics.set_build_info(BuildInfo {
            version: env!("CARGO_PKG_VERSION").into(),
            ..BuildInfo::default()
        });
        Ok(metrics)
    }

    /// Creates the labelled counters at zero, so that a series exists (and
    /// `rate()` works) from the first scrape, not only after its first event.
    pub fn declare_labels(&self, job_outcomes: &[&str], rejection_reasons: &[&str]) {
        for outcome in job_outcomes {
            self.jobs.with_label_values(&[outcome]);
        }
        for reason in rejection_reasons {
            self.rejected.with_label_values(&[reason]);
        }
        for reason in ZYGOTE_START_REASONS {
            self.zygote_starts.with_label_values(&[reason]);
        }
        for phase in pyexec_worker::Phase::ALL {
            self.worker_phase.with_label_values(&[phase.name()]);
        }
    }

    /// Replaces the `pyexec_build_info` series.
    pub fn set_build_info(&self, info: BuildInfo) {
        let mut current = self.build.lock().unwrap_or_else(|p| p.into_inner());
        self.build_info.reset();
        self.build_info
            .with_label_values(&[
                &info.version,
                &info.isolation,
                &info.nsjail_version,
                &info.python_version,
                &info.numpy_version,
                &info.pandas_version,
            ])
            .set(1);
        *current = info;
    }

    /// Updates the interpreter versions from a worker that just became ready,
    /// if they differ from what the build info says (cheap when they don't).
    pub fn note_versions(&self, python: &str, numpy: &str, pandas: &str) {
        let info = {
            let current = self.build.lock().unwrap_or_else(|p| p.into_inner());
            if current.python_version == python
                && current.numpy_version == numpy
                && current.pandas_version == pandas
            {
                return;
            }
            BuildInfo {
                python_version: python.into(),
                numpy_version: numpy.into(),
                pandas_version: pandas.into(),
                ..current.clone()
            }
        };
        self.set_build_info(info);
    }

    /// Sets the pool gauges from a status snapshot.
    pub fn observe_pool(&self, status: &PoolStatus) {
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.queue_depth.set(gauge(status.waiting));
        self.pool_target.set(gauge(status.target));
        self.workers
            .with_label_values(&["spawning"])
            .set(gauge(status.spawning));
        self.workers
            .with_label_values(&["ready"])
            .set(gauge(status.ready));
        self.workers
            .with_label_values(&["busy"])
            .set(gauge(status.busy));
    }

    /// The exposition in the text format, and its content type.
    pub fn render(&self) -> prometheus::Result<(Vec<u8>, String)> {
        let encoder = TextEncoder::new();
        let mut out = Vec::with_capacity(16 * 1024);
        encoder.encode(&self.registry.gather(), &mut out)?;
        Ok((out, encoder.format_type().to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_run_from_a_millisecond_past_the_longest_wait() {
        let b = buckets(Duration::from_secs(10));
        assert_eq!(b.first(), Some(&0.001));
        assert_eq!(b.last(), Some(&25.0));
        assert!(b.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(buckets(Duration::from_millis(2500)).last(), Some(&5.0));
        let memory = memory_buckets();
        assert_eq!(
            (memory[0], memory[memory.len() - 1]),
            (1048576.0, 17179869184.0)
        );
    }

    #[test]
    fn renders_every_metric_with_help() {
        let m = Metrics::new(
            Duration::from_secs(10),
            Duration::from_secs(5),
            Duration::from_secs(30),
            10,
        )
        .unwrap();
        m.jobs.with_label_values(&["ok"]).inc();
        m.job_duration.with_label_values(&["ok"]).observe(0.002);
        m.http_requests
            .with_label_values(&["/execute", "200"])
            .inc();
        m.http_duration
            .with_label_values(&["/execute"])
            .observe(0.003);
        m.rejected.with_label_values(&["overloaded"]).inc();
        m.note_versions("3.11.2", "2.3.5", "2.3.3");
        m.observe_pool(&PoolStatus {
            target: 4,
            ready: 3,
            spawning: 1,
            busy: 0,
            waiting: 0,
            spawn_failures_in_a_row: 0,
            closed: false,
        });
        let (body, content_type) = m.render().unwrap();
        let text = String::from_utf8(body).unwrap();
        assert!(content_type.starts_with("text/plain"));
        for name in [
            "pyexec_jobs_total",
            "pyexec_job_duration_seconds",
            "pyexec_job_cpu_seconds",
            "pyexec_job_peak_memory_bytes",
            "pyexec_job_limit_timeout_seconds",
            "pyexec_job_limit_memory_bytes",
            "pyexec_http_requests_total",
            "pyexec_http_request_duration_seconds",
            "pyexec_queue_wait_seconds",
            "pyexec_queue_depth",
            "pyexec_workers",
            "pyexec_pool_target_size",
            "pyexec_worker_spawn_duration_seconds",
            "pyexec_worker_spawn_failures_total",
            "pyexec_rejected_total",
            "pyexec_build_info",
        ] {
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "{name} missing:\n{text}"
            );
        }
        assert!(text.contains("pyexec_workers{state=\"ready\"} 3"));
        assert!(text.contains("python_version=\"3.11.2\""));
        assert!(text.contains("process_resident_memory_bytes"));
    }
}
