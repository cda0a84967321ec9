//! A job and everything that can come of it: the result, the captured output,
//! or the reason it failed, named by who is at fault.

use std::time::Duration;

use serde_json::value::RawValue;

use crate::protocol::ScriptError;

/// One script to run, with the limits that apply to its answer.
#[derive(Debug, Clone)]
pub struct Job {
    pub script: String,
    pub max_result_bytes: u64,
}

/// What a job wrote to one of its output streams, capped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captured {
    /// The first bytes written, up to the cap.
    pub bytes: Vec<u8>,
    /// True when the job wrote more than the cap; the rest was discarded.
    pub truncated: bool,
}

impl Captured {
    /// The captured bytes as text; invalid UTF-8 (or a character cut at the
    /// cap) becomes U+FFFD rather than an error.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// Why a job did not produce a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobFailure {
    /// The runner diagnosed it: syntax error, exception, invalid result, …
    Script(ScriptError),
    /// Over the wall-clock deadline, or killed by the CPU-time limit.
    Timeout,
    /// The memory cgroup killed the jail.
    MemoryLimit,
    /// The jail ended without an answer (os._exit, a signal, a crash).
    Exited { status: String },
    /// The jail sent something that is not a valid frame: the script
    /// interfered with the runner's channel.
    Protocol(String),
    /// The worker was lost to something outside the job: its zygote ended
    /// while the job ran, taking the job with it. Not the script's fault; a
    /// retry runs on a fresh worker.
    Lost(String),
    /// The sandbox failed us (the worker was gone before the job, an I/O error
    /// on our side): our fault, not the script's.
    Sandbox(String),
}

/// Everything a finished job gives back.
#[derive(Debug)]
pub struct JobReport {
    pub outcome: Result<Box<RawValue>, JobFailure>,
    pub stdout: Captured,
    pub stderr: Captured,
    /// Time from sending the job to its answer (or its deadline).
    pub run_time: Duration,
    pub worker_id: u64,
}
