//! The worker crate's events turned into metrics, log lines and readiness
//! facts: the server's [`PoolObserver`], and in fork mode its
//! [`ZygoteObserver`].

use std::sync::Arc;
use std::time::Duration;

use pyexec_worker::{JobReport, Phase, PhaseObserver, PoolObserver, SpawnError, Versions};
use pyexec_worker::{ZygoteError, ZygoteObserver};

use crate::kind::Kind;
use crate::metrics::Metrics;
use crate::readiness::Readiness;

pub struct PoolEvents {
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
}

impl PoolEvents {
    pub fn new(metrics: Arc<Metrics>, readiness: Arc<Readiness>) -> PoolEvents {
        PoolEvents { metrics, readiness }
    }
}

/// The sandbox's phase timings, as `pyexec_worker_phase_seconds`.
pub struct PhaseEvents {
    metrics: Arc<Metrics>,
}

impl PhaseEvents {
    pub fn new(metrics: Arc<Metrics>) -> PhaseEvents {
        PhaseEvents { metrics }
    }
}

impl PhaseObserver for PhaseEvents {
    fn phase(&self, phase: Phase, took: Duration) {
        self.metrics
            .worker_phase
            .with_label_values(&[phase.name()])
            .observe(took.as_secs_f64());
    }
}

impl PoolObserver for PoolEvents {
    fn worker_ready(&self, worker_id: u64, spawn_time: Duration, versions: &Versions) {
        self.metrics
            .spawn_duration
            .observe(spawn_time.as_secs_f64());
        self.metrics
            .note_versions(&versions.python, &versions.numpy, &versions.pandas);
        self.readiness.worker_ready();
        tracing::debug!(
            worker_id,
            spawn_ms = spawn_time.as_secs_f64() * 1e3,
            "worker ready"
        );
    }

    fn spawn_failed(&self, worker_id: u64, error: &SpawnError) {
        self.metrics.spawn_failures.inc();
        self.readiness.spawn_failed(&error.to_string());
        tracing::warn!(worker_id, error = %error, "worker failed to start");
    }

    fn checked_out(&self, wait: Duration) {
        self.metrics.queue_wait.observe(wait.as_secs_f64());
    }

    fn job_finished(&self, report: &JobReport) {
        let outcome = Kind::outcome_of(&report.outcome);
        self.metrics.jobs.with_label_values(&[outcome]).inc();
        self.metrics
            .job_duration
            .with_label_values(&[outcome])
            .observe(report.run_time.as_secs_f64());
        if let Some(cpu) = report.usage.cpu {
            self.metrics.job_cpu.observe(cpu.as_secs_f64());
        }
        if let Some(peak) = report.usage.peak_memory_bytes {
            self.metrics.job_peak_memory.observe(peak as f64);
        }
        self.metrics
            .job_timeout_limit
            .observe(report.limits.timeout.as_secs_f64());
        self.metrics
            .job_memory_limit
            .observe(report.limits.memory_bytes as f64);
    }
}

/// Fork mode's zygote events, into metrics (the supervisor logs them).
pub struct ZygoteEvents {
    metrics: Arc<Metrics>,
}

impl ZygoteEvents {
    pub fn new(metrics: Arc<Metrics>) -> ZygoteEvents {
        ZygoteEvents { metrics }
    }
}

impl ZygoteObserver for ZygoteEvents {
    fn zygote_started(&self, generation: u64, reason: &str, start_time: Duration) {
        self.metrics
            .zygote_starts
            .with_label_values(&[reason])
            .inc();
        self.metrics
            .zygote_start_duration
            .observe(start_time.as_secs_f64());
        self.metrics
            .zygote_generation
            .set(i64::try_from(generation).unwrap_or(i64::MAX));
    }

    fn zygote_failed(&self, _generation: u64, _error: &ZygoteError) {
        self.metrics.zygote_failures.inc();
    }

    fn zygote_died(&self, _generation: u64) {
        self.metrics.zygote_generation.set(0);
    }
}
