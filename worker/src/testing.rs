//! A fake sandbox, for the tests of the pool and of the server (feature
//! `test-support`): no jail and no process. A job's script says what its
//! "worker" does, and every worker's fate is counted in a [`Ledger`], so a
//! test can tell a worker that was stopped and reaped from one that leaked,
//! and a job cut off by its lease's drop from an idle worker stopped at
//! shutdown.
//!
//! Scripts:
//! - `ok:<json>`: succeeds with that result
//! - `slow:<ms>`: succeeds after that many milliseconds
//! - `sleep`: never answers (the pool's deadline turns it into a timeout)
//! - `error:<runner kind>`: the runner reports that kind (`syntax_error`, …)
//! - `memory`, `exited`, `protocol`, `sandbox`: those [`JobFailure`]s
//! - `noisy`: prints more than any test's cap (stdout truncated)
//! - anything else: succeeds with `{"worker": <id>, "echo": <script length>}`
//!
//! Every job prints `out\n` first. A worker given a second job panics: a
//! real one runs exactly one.
//!
//! For tests of the real sandboxes, [`Observe`] shows a worker from outside
//! as the host sees it: its job process, the sandbox's own processes in its
//! cgroup, its cgroup's directories, how its job process ended and what the
//! sandbox's launcher logged about it.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::value::RawValue;

use crate::error::{ProtocolViolation, SandboxFault, SetupError, SpawnError, SpawnFailure};
use crate::job::protocol::{ScriptError, ScriptErrorKind, Versions};
use crate::job::{Captured, Job, JobFailure, JobResult};
use crate::modes::sandboxed::{Ended, ExitSource, SandboxedWorker};
use crate::sandbox::{Sandbox, SelfCheckReport, Worker};
use crate::selfcheck::Inspect;

/// A real worker (of `SpawnSandbox` or `ForkSandbox`), seen from outside.
pub trait Observe {
    /// The job's first process (PID 1 of its namespace), as the host sees
    /// it; `None` until the worker is ready.
    fn job_pid(&self) -> Option<i32>;
    /// The sandbox's own processes in the worker's cgroup (spawn: nsjail).
    fn helper_pids(&self) -> Vec<i32>;
    /// The worker's cgroup directories (v1: one per controller; v2: one);
    /// empty once reaped.
    fn cgroup_dirs(&self) -> Vec<PathBuf>;
    /// Waits for the job process to end by itself, or by whatever ended it,
    /// without killing it: how it ended, in the words of
    /// [`JobFailure::Exited`] (spawn mode: nsjail's exit status; fork mode:
    /// the zygote's report, "unknown status" if none came within its grace).
    /// Not bounded in spawn mode: the caller bounds it.
    fn ended(&mut self) -> impl Future<Output = String> + Send;
    /// What the sandbox's launcher logged about this worker so far (spawn
    /// mode: nsjail's last lines; fork mode: nothing).
    fn launcher_log(&self) -> String;
}

impl<E: ExitSource> Observe for SandboxedWorker<E> {
    fn job_pid(&self) -> Option<i32> {
        Inspect::job_pid(self)
    }

    fn helper_pids(&self) -> Vec<i32> {
        Inspect::helper_pids(self)
    }

    fn cgroup_dirs(&self) -> Vec<PathBuf> {
        Inspect::cgroup(self).map_or_else(Vec::new, |c| c.dirs().to_vec())
    }

    async fn ended(&mut self) -> String {
        match SandboxedWorker::ended(self).await {
            Ended::Status(status) => status,
            Ended::Lost { zygote } => format!("lost with zygote {zygote}"),
        }
    }

    fn launcher_log(&self) -> String {
        SandboxedWorker::launcher_log(self)
    }
}

/// What a fake spawn does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Spawns {
    #[default]
    Succeed,
    /// Every spawn fails.
    Fail,
    /// The spawn with this 1-based number fails.
    FailNumber(u64),
    /// The spawn with this 1-based number panics.
    PanicNumber(u64),
    /// Spawns of this worker id and above never finish (until cancelled).
    HangFrom(u64),
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

/// A worker's first stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stop {
    pub worker: u64,
    pub job: JobState,
}

/// What became of every worker of one fake sandbox.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Spawns begun.
    pub spawned: AtomicU64,
    /// Workers spawned and not yet reaped.
    pub alive: AtomicI64,
    pub jobs: AtomicU64,
    /// Spawns dropped before they finished (cancelled).
    pub spawns_cancelled: AtomicU64,
    /// Workers with a smaller id report themselves dead.
    pub dead_below: AtomicU64,
    stops: Mutex<Vec<Stop>>,
}

impl Ledger {
    pub fn count(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::SeqCst)
    }

    /// Every worker's first stop, in order.
    pub fn stops(&self) -> Vec<Stop> {
        lock(&self.stops).clone()
    }

    /// The workers stopped while their job was in `state`.
    pub fn stopped(&self, state: JobState) -> Vec<u64> {
        lock(&self.stops)
            .iter()
            .filter(|s| s.job == state)
            .map(|s| s.worker)
            .collect()
    }

    pub fn alive(&self) -> i64 {
        self.alive.load(Ordering::SeqCst)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// The fake sandbox. Clones share one ledger.
#[derive(Debug, Clone, Default)]
pub struct FakeSandbox {
    /// How long a spawn takes.
    pub spawn_delay: Duration,
    pub spawns: Spawns,
    pub ledger: Arc<Ledger>,
}

pub struct FakeWorker {
    id: u64,
    versions: Versions,
    stdout: Vec<u8>,
    ledger: Arc<Ledger>,
    job: JobState,
    was_stopped: bool,
}

/// Counts a spawn that never reached its end.
struct CancelWitness<'a>(&'a Ledger, bool);

impl Drop for CancelWitness<'_> {
    fn drop(&mut self) {
        if !self.1 {
            self.0.spawns_cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Sandbox for FakeSandbox {
    type Worker = FakeWorker;

    async fn spawn(&self, id: u64) -> Result<FakeWorker, SpawnError> {
        let mut witness = CancelWitness(&self.ledger, false);
        let n = self.ledger.spawned.fetch_add(1, Ordering::SeqCst) + 1;
        if matches!(self.spawns, Spawns::HangFrom(from) if id >= from) {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(self.spawn_delay).await;
        witness.1 = true;
        let fails = match self.spawns {
            Spawns::Fail => true,
            Spawns::FailNumber(number) => n == number,
            _ => false,
        };
        if fails {
            let cause = io::Error::other(format!("fake spawn {n} fails on purpose"));
            return Err(SpawnError::new(id, SpawnFailure::Launch(cause)));
        }
        if self.spawns == Spawns::PanicNumber(n) {
            panic!("fake spawn {n} panics on purpose");
        }
        self.ledger.alive.fetch_add(1, Ordering::SeqCst);
        Ok(FakeWorker {
            id,
            versions: Versions {
                python: "3.11.2".into(),
                numpy: "2.3.5".into(),
                pandas: "2.3.3".into(),
            },
            stdout: Vec::new(),
            ledger: self.ledger.clone(),
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

impl Worker for FakeWorker {
    fn id(&self) -> u64 {
        self.id
    }

    fn versions(&self) -> &Versions {
        &self.versions
    }

    fn is_alive(&self) -> bool {
        self.id >= self.ledger.dead_below.load(Ordering::SeqCst)
    }

    async fn run(&mut self, job: &Job) -> Result<JobResult, JobFailure> {
        assert_eq!(
            self.job,
            JobState::NoJob,
            "worker {} was given a second job",
            self.id
        );
        self.ledger.jobs.fetch_add(1, Ordering::SeqCst);
        // Stays Running if this future is dropped before it answers.
        self.job = JobState::Running;
        let outcome = self.answer(job).await;
        self.job = JobState::Answered;
        outcome.map(JobResult::of)
    }

    fn stop(&mut self) {
        if !self.was_stopped {
            self.was_stopped = true;
            lock(&self.ledger.stops).push(Stop {
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

    async fn reap(self) {
        self.ledger.alive.fetch_sub(1, Ordering::SeqCst);
    }
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
                status: "killed by signal 9 (SIGKILL)".into(),
            }),
            "protocol" => Err(JobFailure::Protocol(ProtocolViolation::FrameTooLarge {
                limit: 4096,
            })),
            "sandbox" => Err(JobFailure::Sandbox(SandboxFault::Runner(
                "secret detail: socket closed".into(),
            ))),
            "noisy" => {
                self.stdout = vec![b'x'; 10_000];
                Ok(raw("{}"))
            }
            other => Ok(raw(&format!(
                r#"{{"worker": {}, "echo": {}}}"#,
                self.id,
                other.len()
            ))),
        }
    }
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
