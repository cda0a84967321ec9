//! What a script printed and how long it ran, as every answer of a job that
//! ran carries it (successful or not).

use std::time::Duration;

use pyexec_worker::JobReport;
use serde::Serialize;

/// What a script printed and how long it ran: part of every answer from a
/// job that ran, successful or not.
#[derive(Debug, Clone, Serialize)]
pub struct ScriptOutput {
    pub stdout: String,
    pub stderr: String,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub duration_ms: f64,
}

impl ScriptOutput {
    pub fn of(report: &JobReport) -> ScriptOutput {
        ScriptOutput {
            stdout: report.stdout.text(),
            stderr: report.stderr.text(),
            stdout_truncated: report.stdout.truncated,
            stderr_truncated: report.stderr.truncated,
            duration_ms: millis(report.run_time),
        }
    }
}

/// Milliseconds with microsecond precision: sub-millisecond jobs are common.
pub fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}
