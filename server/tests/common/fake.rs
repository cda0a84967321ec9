//! A fake sandbox for in-process tests: the script's text says what the
//! "worker" does, so each row of the status table can be produced without a
//! jail.
//!
//! - `ok:<json>`: succeeds with that result (printing `out\n`)
//! - `sleep`: never answers (the pool's deadline turns it into a timeout)
//! - `slow:<ms>`: succeeds after that many milliseconds
//! - `error:<runner kind>`: the runner reports that kind (`syntax_error`, …)
//! - `memory`, `exited`, `protocol`, `sandbox`: those `JobFailure`s
//! - `noisy`: prints more than any test cap (stdout truncated)
//! - anything else: succeeds with `{"echo": <script length>}`
//!
//! Every `stop` is recorded with where that worker's job was at that moment,
//! so a test can tell a job cut off by its lease's drop from an idle worker
//! stopped by the pool's shutdown.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyexec_worker::nsjail::SetupError;
use pyexec_worker::selfcheck::SelfCheckReport;
use pyexec_worker::{
    Captured, Job, JobFailure, JobResult, Sandbox, ScriptError, ScriptErrorKind, SpawnError,
    Versions, Worker,
};
use serde_json::value::RawValue;

#[derive(Default, Clone)]
pub struct FakeSandbox {
    /// Every worker's first stop, in order.
    pub stops: Arc<Mutex<Vec<Stop>>>,
    /// Make every spawn fail.
    pub broken: bool,
    /// How long a spawn takes.
    pub spawn_delay: Duration,
    /// Spawns from this worker id on never finish (ids count from 1).
    pub hang_from_spawn: Option<u64>,
}

/// Where a worker's job was when the worker was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// It never got one: stopped idle (the pool shutting down).
    NoJob,
    /// Its job was still running: cut off (its lease dropped mid-job).
    Running,
    /// Its job had answered (the lease stops the worker after every job).
    Answered,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stop {
    pub worker: u64,
    pub job: JobState,
}

impl FakeSandbox {
    /// The workers stopped while their job was in `state`.
    pub fn stopped(&self, state: JobState) -> Vec<u64> {
        let stops = self.stops.lock().unwrap();
        stops
            .iter()
            .filter(|s| s.job == state)
            .map(|s| s.worker)
            .collect()
    }
}

pub struct FakeWorker {
    id: u64,
    versions: Versions,
    stdout: Vec<u8>,
    stops: Arc<Mutex<Vec<Stop>>>,
    job: JobState,
    was_stopped: bool,
}

impl Sandbox for FakeSandbox {
    type Worker = FakeWorker;

    async fn spawn(&self, id: u64) -> Result<FakeWorker, SpawnError> {
        if self.hang_from_spawn.is_some_and(|from| id >= from) {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(self.spawn_delay).await;
        if self.broken {
            return Err(SpawnError {
                message: "fake sandbox is broken".into(),
            });
        }
        Ok(FakeWorker {
            id,
            versions: Versions {
                python: "3.11.2".into(),
                numpy: "2.3.5".into(),
                pandas: "2.3.3".into(),
            },
            stdout: Vec::new(),
            stops: self.stops.clone(),
            job: JobState::NoJob,
            was_stopped: false,
        })
    }

    async fn self_check(&self) -> Result<SelfCheckReport, SetupError> {
        Ok(SelfCheckReport {
            isolation: "fake".into(),
            ..SelfCheckReport::default()
        })
    }

    async fn close(&self) {}
}

fn script_error(kind: ScriptErrorKind) -> JobFailure {
    JobFailure::Script(ScriptError {
        kind,
        message: format!("fake {}", kind.as_str()),
        line: Some(3),
        traceback: Some(
            "Traceback (most recent call last):\n  File \"<script>\", line 3, in main\n".into(),
        ),
    })
}

fn raw(json: &str) -> Box<RawValue> {
    RawValue::from_string(json.to_string()).expect("fake result is JSON")
}

impl Worker for FakeWorker {
    fn id(&self) -> u64 {
        self.id
    }

    fn versions(&self) -> &Versions {
        &self.versions
    }

    async fn run(&mut self, job: &Job) -> Result<JobResult, JobFailure> {
        // Stays Running if this future is dropped before it answers.
        self.job = JobState::Running;
        let outcome = self.answer(job).await;
        self.job = JobState::Answered;
        outcome.map(JobResult::of)
    }

    fn stop(&mut self) {
        if !self.was_stopped {
            self.was_stopped = true;
            self.stops.lock().unwrap().push(Stop {
                worker: self.id,
                job: self.job,
            });
        }
    }

    async fn output(&mut self) -> (Captured, Captured) {
        let cap = 1000;
        let stdout = Captured {
            bytes: self.stdout.iter().copied().take(cap).collect(),
            truncated: self.stdout.len() > cap,
        };
        (stdout, Captured::default())
    }

    async fn reap(self) {}
}

impl FakeWorker {
    /// What the script's text says the job does.
    async fn answer(&mut self, job: &Job) -> Result<Box<RawValue>, JobFailure> {
        let script = job.script.as_str();
        self.stdout = b"out\n".to_vec();
        if let Some(result) = script.strip_prefix("ok:") {
            return Ok(raw(result));
        }
        if let Some(ms) = script.strip_prefix("slow:") {
            tokio::time::sleep(Duration::from_millis(ms.trim().parse().unwrap_or(100))).await;
            return Ok(raw(r#"{"slow": true}"#));
        }
        if let Some(kind) = script.strip_prefix("error:") {
            let kind: ScriptErrorKind =
                serde_json::from_value(serde_json::Value::from(kind.trim()))
                    .expect("a runner error kind");
            return Err(script_error(kind));
        }
        match script {
            "sleep" => std::future::pending().await,
            "memory" => Err(JobFailure::MemoryLimit),
            "exited" => Err(JobFailure::Exited {
                status: "killed by signal 9".into(),
            }),
            "protocol" => Err(JobFailure::Protocol("frame of 4294967295 bytes".into())),
            "sandbox" => Err(JobFailure::Sandbox("secret detail: socket closed".into())),
            "noisy" => {
                self.stdout = vec![b'x'; 10_000];
                Ok(raw("{}"))
            }
            other => Ok(raw(&format!(r#"{{"echo": {}}}"#, other.len()))),
        }
    }
}
