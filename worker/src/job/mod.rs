//! A job and everything that can come of it: the result, the files it left,
//! the captured output, what it used, or the reason it failed, named by who
//! is at fault. Below it, how a job travels: the messages ([`protocol`]),
//! their framing ([`codec`]), the server's end of a job process
//! ([`channel`]) and the capture of its output ([`capture`]).

pub(crate) mod capture;
pub(crate) mod channel;
pub(crate) mod codec;
pub(crate) mod protocol;

use std::time::Duration;

use serde_json::value::RawValue;

use crate::error::{ProtocolViolation, SandboxFault};
use protocol::{OutputFiles, ScriptError, ToRunner};

/// One script to run, with the limits that apply to it and to its answer.
#[derive(Debug, Clone)]
pub struct Job {
    pub script: String,
    /// `main`'s one argument, as the client sent it (raw JSON, never parsed
    /// here); `None`: `main()` is called with none.
    pub input: Option<Box<RawValue>>,
    pub limits: JobLimits,
    pub max_result_bytes: u64,
    /// What the runner may send back of `/tmp/outputs`.
    pub file_caps: FileCaps,
}

impl Job {
    /// The length of the job's frame to the runner, as sent (the runner
    /// refuses frames over its own cap).
    pub fn frame_len(&self) -> usize {
        serde_json::to_vec(&ToRunner::of(self)).map_or(usize::MAX, |frame| frame.len())
    }

    /// A job without input, under `limits`, with room for a `max_result_bytes`
    /// result and no output files (the self-check's and the tests' jobs).
    pub fn new(script: impl Into<String>, limits: JobLimits, max_result_bytes: u64) -> Job {
        Job {
            script: script.into(),
            input: None,
            limits,
            max_result_bytes,
            file_caps: FileCaps {
                max_files: 0,
                max_bytes: 0,
            },
        }
    }
}

/// The limits one job runs under: the server's, or lower ones the request
/// asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobLimits {
    /// Wall clock, from sending the job to its answer.
    pub timeout: Duration,
    /// The memory cgroup's limit while the job runs.
    pub memory_bytes: u64,
}

/// How much of `/tmp/outputs` the runner sends back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileCaps {
    pub max_files: u32,
    /// The files' bytes, all together (before base64).
    pub max_bytes: u64,
}

/// What a job that succeeded gives back besides its output streams.
#[derive(Debug)]
pub struct JobResult {
    /// `main()`'s value as the runner wrote it: passed through, never parsed.
    pub result: Box<RawValue>,
    pub files: OutputFiles,
}

impl JobResult {
    /// A result with no files.
    pub fn of(result: Box<RawValue>) -> JobResult {
        JobResult {
            result,
            files: OutputFiles::default(),
        }
    }
}

/// What a job used, read from its own cgroup as it ended. `None` where the
/// kernel did not say.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// CPU time of every process of the job, from the job's start.
    pub cpu: Option<Duration>,
    /// The highest memory charge of the job's cgroup while the job ran (spawn
    /// mode: the warm interpreter's own pages included, as for the limit).
    pub peak_memory_bytes: Option<u64>,
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
#[derive(Debug)]
pub enum JobFailure {
    /// The runner diagnosed it: syntax error, exception, invalid result, …
    Script(ScriptError),
    /// Over the wall-clock deadline, or killed by the CPU-time limit.
    Timeout,
    /// The memory cgroup killed the jail.
    MemoryLimit,
    /// The job's memory limit could not be applied: the worker's cgroup
    /// already holds more than it (spawn mode: the warm interpreter with
    /// numpy and pandas). The script never ran.
    MemoryBelowBaseline { in_use_bytes: u64 },
    /// The jail ended without an answer (os._exit, a signal, a crash).
    Exited { status: String },
    /// The jail sent something that is not a valid frame: the script
    /// interfered with the runner's channel.
    Protocol(ProtocolViolation),
    /// The worker was lost to something outside the job: zygote `zygote`
    /// ended while the job ran, taking the job with it. Not the script's
    /// fault; a retry runs on a fresh worker.
    Lost { zygote: u64 },
    /// The sandbox failed us (the worker was gone before the job, an I/O error
    /// on our side): our fault, not the script's.
    Sandbox(SandboxFault),
}

/// Everything a finished job gives back.
#[derive(Debug)]
pub struct JobReport {
    pub outcome: Result<JobResult, JobFailure>,
    pub stdout: Captured,
    pub stderr: Captured,
    /// Time from sending the job to its answer (or its deadline).
    pub run_time: Duration,
    pub worker_id: u64,
    /// The limits the job ran under.
    pub limits: JobLimits,
    pub usage: Usage,
}
