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

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pyexec_worker::{
    Captured, Job, JobFailure, Sandbox, ScriptError, ScriptErrorKind, SpawnError, Versions, Worker,
};
use serde_json::value::RawValue;

#[derive(Default, Clone)]
pub struct FakeSandbox {
    /// Workers stopped so far (a lease's drop or a finished job).
    pub stopped: Arc<AtomicUsize>,
    /// Make every spawn fail.
    pub broken: bool,
    /// How long a spawn takes.
    pub spawn_delay: Duration,
}

pub struct FakeWorker {
    id: u64,
    versions: Versions,
    stdout: Vec<u8>,
    stopped: Arc<AtomicUsize>,
    was_stopped: bool,
}

impl Sandbox for FakeSandbox {
    type Worker = FakeWorker;

    async fn spawn(&self, id: u64) -> Result<FakeWorker, SpawnError> {
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
            stopped: self.stopped.clone(),
            was_stopped: false,
        })
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

impl Worker for FakeWorker {
    fn id(&self) -> u64 {
        self.id
    }

    fn versions(&self) -> &Versions {
        &self.versions
    }

    async fn run(&mut self, job: &Job) -> Result<Box<RawValue>, JobFailure> {
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

    fn stop(&mut self) {
        if !self.was_stopped {
            self.was_stopped = true;
            self.stopped.fetch_add(1, Ordering::SeqCst);
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
