//! The real nsjail sandbox with the real runner and cgroups, without the pool
//! or HTTP: one worker per test, driven through the `Worker` trait.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use pyexec_worker::nsjail::{NsjailConfig, NsjailSandbox, SandboxLimits};
use pyexec_worker::selfcheck::self_check;
use pyexec_worker::{Job, JobFailure, Sandbox, ScriptErrorKind, Worker};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `duration` stretched by `PYEXEC_TEST_TIME_SCALE` (default 1), as the
/// server's tests do (server/tests/common): the cgroup v2 VM emulates its CPU
/// at a tenth of the host's speed or less.
fn scaled(duration: Duration) -> Duration {
    let scale = match std::env::var("PYEXEC_TEST_TIME_SCALE") {
        Err(_) => 1.0,
        Ok(value) => value
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s >= 1.0)
            .unwrap_or_else(|| panic!("PYEXEC_TEST_TIME_SCALE={value:?}: want a number >= 1")),
    };
    duration.mul_f64(scale)
}

fn config() -> NsjailConfig {
    NsjailConfig {
        nsjail: "/opt/pyexec/bin/nsjail".into(),
        config_file: repo().join("nsjail.cfg"),
        python: "/opt/pyexec/sandbox-venv/bin/python3".into(),
        runner_dir: repo().join("python"),
        limits: SandboxLimits {
            memory_bytes: 256 << 20,
            max_processes: 128,
            cpus: 1.0,
            max_file_mb: 10,
            max_open_files: 128,
            cpu_seconds: scaled(Duration::from_secs(11)).as_secs(),
        },
        max_output_bytes: 1 << 20,
        max_result_bytes: 10 << 20,
        spawn_timeout: scaled(Duration::from_secs(30)),
        cgroup_parent: "pyexec-test".into(),
        cgroup_mount: "/sys/fs/cgroup".into(),
    }
}

fn job(script: &str) -> Job {
    Job {
        script: script.into(),
        max_result_bytes: 10 << 20,
    }
}

/// Worker ids name cgroups: tests running at once in this process need their own.
static NEXT_ID: AtomicU64 = AtomicU64::new(100);

async fn run(sandbox: &NsjailSandbox, script: &str) -> (Result<String, JobFailure>, String) {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let mut worker = sandbox.spawn(id).await.expect("a worker starts");
    let outcome = tokio::time::timeout(scaled(Duration::from_secs(20)), worker.run(&job(script)))
        .await
        .expect("the job answers");
    worker.stop();
    let (stdout, _stderr) = worker.output().await;
    worker.reap().await;
    (outcome.map(|r| r.get().to_string()), stdout.text())
}

#[tokio::test]
async fn a_script_runs_and_its_output_is_captured() {
    let sandbox = NsjailSandbox::new(config()).unwrap();
    let (result, stdout) = run(
        &sandbox,
        "import os\nimport numpy as np\nprint('hi')\ndef main():\n    os.write(1, b'raw\\n')\n    return {'sum': int(np.arange(4).sum())}\n",
    )
    .await;
    assert_eq!(result.unwrap(), r#"{"sum":6}"#);
    assert_eq!(stdout, "hi\nraw\n");
}

#[tokio::test]
async fn growing_past_the_memory_cgroup_is_a_memory_limit() {
    let sandbox = NsjailSandbox::new(config()).unwrap();
    let script =
        "def main():\n    chunks = []\n    while True:\n        chunks.append(b'x' * (8 << 20))\n";
    let (result, _) = run(&sandbox, script).await;
    assert_eq!(result.unwrap_err(), JobFailure::MemoryLimit);
}

#[tokio::test]
async fn one_huge_allocation_is_a_memory_limit_too() {
    let sandbox = NsjailSandbox::new(config()).unwrap();
    let (result, _) = run(
        &sandbox,
        "def main():\n    x = bytearray(1 << 34)\n    return {}\n",
    )
    .await;
    match result.unwrap_err() {
        JobFailure::Script(e) => assert_eq!(e.kind, ScriptErrorKind::MemoryLimit),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn os_exit_is_an_exit_without_result() {
    let sandbox = NsjailSandbox::new(config()).unwrap();
    let (result, stdout) = run(
        &sandbox,
        "import os\ndef main():\n    print('bye', flush=True)\n    os._exit(3)\n",
    )
    .await;
    assert_eq!(
        result.unwrap_err(),
        JobFailure::Exited {
            status: "exit status 3".into()
        }
    );
    assert_eq!(stdout, "bye\n");
}

#[tokio::test]
async fn a_script_error_comes_back_from_the_runner() {
    let sandbox = NsjailSandbox::new(config()).unwrap();
    let (result, _) = run(&sandbox, "def main():\n    return 1/0\n").await;
    match result.unwrap_err() {
        JobFailure::Script(e) => assert_eq!(e.kind, ScriptErrorKind::ScriptException),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_self_check_passes_on_this_machine() {
    let sandbox = NsjailSandbox::new(config()).unwrap();
    let report = self_check(&sandbox).await.unwrap();
    assert!(!report.versions.numpy.is_empty());
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.contains("network refused")),
        "{:?}",
        report.findings
    );
}
