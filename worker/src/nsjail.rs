//! The real sandbox: one nsjail process per worker, running the Python runner
//! with the job socket and the output pipes passed in, inside a per-worker
//! cgroup that the server made.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::value::RawValue;

use crate::job::{Captured, Job, JobFailure};
use crate::protocol::Versions;
use crate::sandbox::{Sandbox, SpawnError, Worker};

/// The limits each job runs under.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxLimits {
    /// Memory cgroup limit for the whole jail.
    pub memory_bytes: u64,
    /// pids cgroup limit: processes and threads the script may have at once.
    pub max_processes: u32,
    /// CPU quota in cores (cgroup CFS quota).
    pub cpus: f64,
    /// RLIMIT_FSIZE.
    pub max_file_bytes: u64,
    /// RLIMIT_NOFILE.
    pub max_open_files: u32,
    /// RLIMIT_CPU in seconds: a backstop to the wall-clock deadline.
    pub cpu_seconds: u64,
}

/// Everything needed to launch a worker.
#[derive(Debug, Clone)]
pub struct NsjailConfig {
    pub nsjail: PathBuf,
    pub config_file: PathBuf,
    pub python: PathBuf,
    /// The directory holding `runner.py`, mounted read-only at /pyexec.
    pub runner_dir: PathBuf,
    pub limits: SandboxLimits,
    /// Cap on each of stdout and stderr.
    pub max_output_bytes: usize,
    /// Cap on the result's JSON.
    pub max_result_bytes: u64,
    /// How long a worker may take to report ready.
    pub spawn_timeout: Duration,
    /// Name of the cgroup under which worker cgroups are made.
    pub cgroup_parent: String,
}

/// What cannot be set up; each message says what is missing and how to fix it.
#[derive(Debug, Clone)]
pub struct SetupError {
    pub message: String,
}

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SetupError {}

pub struct NsjailSandbox {
    config: NsjailConfig,
}

impl NsjailSandbox {
    /// Checks the binaries and files exist and prepares the cgroup parents.
    pub fn new(config: NsjailConfig) -> Result<Self, SetupError> {
        Ok(NsjailSandbox { config })
    }

    pub fn config(&self) -> &NsjailConfig {
        &self.config
    }
}

pub struct NsjailWorker {
    id: u64,
    versions: Versions,
}

impl Sandbox for NsjailSandbox {
    type Worker = NsjailWorker;

    async fn spawn(&self, _id: u64) -> Result<NsjailWorker, SpawnError> {
        Err(SpawnError {
            message: "not implemented yet".into(),
        })
    }
}

impl Worker for NsjailWorker {
    fn id(&self) -> u64 {
        self.id
    }

    fn versions(&self) -> &Versions {
        &self.versions
    }

    async fn run(&mut self, _job: &Job) -> Result<Box<RawValue>, JobFailure> {
        Err(JobFailure::Sandbox("not implemented yet".into()))
    }

    fn stop(&mut self) {}

    async fn output(&mut self) -> (Captured, Captured) {
        (Captured::default(), Captured::default())
    }

    async fn reap(self) {}
}
