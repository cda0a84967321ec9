//! What every answer of a job that ran carries, successful or not: what the
//! script printed, how long it ran, the limits it ran under and what it used.

use std::time::Duration;

use pyexec_worker::{JobLimits, JobReport, Usage};
use serde::Serialize;

/// What a script printed, how long it ran, under which limits and what it
/// used: part of every answer from a job that ran, successful or not.
#[derive(Debug, Clone, Serialize)]
pub struct ScriptOutput {
    pub stdout: String,
    pub stderr: String,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub duration_ms: f64,
    pub limits: AppliedLimits,
    pub usage: UsageFigures,
}

/// The limits a job ran under: the server's, or lower ones the request asked for.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AppliedLimits {
    pub timeout_s: f64,
    pub memory_mb: u64,
}

impl AppliedLimits {
    pub fn of(limits: &JobLimits) -> AppliedLimits {
        AppliedLimits {
            timeout_s: limits.timeout.as_secs_f64(),
            memory_mb: limits.memory_bytes >> 20,
        }
    }
}

/// What a job used, from its own cgroup; `null` where the kernel did not say.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct UsageFigures {
    pub cpu_ms: Option<f64>,
    pub peak_memory_mb: Option<f64>,
    pub wall_ms: f64,
}

impl UsageFigures {
    pub fn of(usage: &Usage, wall: Duration) -> UsageFigures {
        UsageFigures {
            cpu_ms: usage.cpu.map(millis),
            // To a hundredth of a MiB: finer than that is page-counting noise.
            peak_memory_mb: usage
                .peak_memory_bytes
                .map(|b| (b as f64 / f64::from(1 << 20) * 100.0).round() / 100.0),
            wall_ms: millis(wall),
        }
    }
}

impl ScriptOutput {
    pub fn of(report: &JobReport) -> ScriptOutput {
        ScriptOutput {
            stdout: report.stdout.text(),
            stderr: report.stderr.text(),
            stdout_truncated: report.stdout.truncated,
            stderr_truncated: report.stderr.truncated,
            duration_ms: millis(report.run_time),
            limits: AppliedLimits::of(&report.limits),
            usage: UsageFigures::of(&report.usage, report.run_time),
        }
    }
}

/// Milliseconds with microsecond precision: sub-millisecond jobs are common.
/// From the whole microseconds of [`micros`], so that what the answers say
/// adds up to what is metered.
pub fn millis(d: Duration) -> f64 {
    micros(d) as f64 / 1e3
}

/// Whole microseconds, rounded to the nearest.
pub fn micros(d: Duration) -> u64 {
    u64::try_from((d.as_nanos() + 500) / 1000).unwrap_or(u64::MAX)
}
