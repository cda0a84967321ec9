//! Both real sandboxes with the real runner, nsjail and cgroups, without the
//! pool or HTTP: workers driven through the `Worker` trait. Every test runs
//! in spawn mode and in fork mode.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pyexec_worker::{
    FileCaps, ForkSandbox, Job, JobFailure, JobLimits, JobResult, NoZygoteObserver, NsjailConfig,
    Recycling, Sandbox, SandboxLimits, ScriptErrorKind, SpawnSandbox, Usage, Worker, ZygoteLoad,
};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

// The server's tests' reading of PYEXEC_TEST_TIME_SCALE: the cgroup v2 VM
// emulates its CPU at a tenth of the host's speed or less.
#[path = "../../server/tests/common/time_scale.rs"]
mod time_scale;
use time_scale::{scaled, time_scale};

/// Each test gets a cgroup parent of its own, removed when the sandbox closes.
fn config(test: &str) -> NsjailConfig {
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
            // Spawn mode's counter covers the warm-up too (see the server's
            // Config::cpu_seconds).
            cpu_seconds: scaled(Duration::from_secs(41)).as_secs(),
        },
        max_output_bytes: 1 << 20,
        max_result_bytes: 10 << 20,
        file_caps: FileCaps {
            max_files: 32,
            max_bytes: 4 << 20,
        },
        spawn_timeout: scaled(Duration::from_secs(30)),
        cgroup_parent: format!("pyexec-test-{test}"),
        cgroup_mount: "/sys/fs/cgroup".into(),
    }
}

fn job(script: &str) -> Job {
    let limits = JobLimits {
        timeout: Duration::from_secs(20),
        memory_bytes: 256 << 20,
    };
    Job::new(script, limits, 10 << 20)
}

static NEXT_ID: AtomicU64 = AtomicU64::new(100);

/// Runs `job` on a fresh worker: its outcome and what it used.
async fn run_job<S: Sandbox>(sandbox: &S, job: &Job) -> (Result<JobResult, JobFailure>, Usage) {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let mut worker = sandbox.spawn(id).await.expect("a worker starts");
    let outcome = tokio::time::timeout(Duration::from_secs(20), worker.run(job))
        .await
        .expect("the job answers");
    worker.stop();
    let _ = worker.output().await;
    let usage = worker.usage().await;
    worker.reap().await;
    (outcome, usage)
}

async fn run<S: Sandbox>(sandbox: &S, script: &str) -> (Result<String, JobFailure>, String) {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let mut worker = sandbox.spawn(id).await.expect("a worker starts");
    let outcome = tokio::time::timeout(scaled(Duration::from_secs(20)), worker.run(&job(script)))
        .await
        .expect("the job answers");
    worker.stop();
    let (stdout, _stderr) = worker.output().await;
    worker.reap().await;
    (outcome.map(|r| r.result.get().to_string()), stdout.text())
}

/// Runs `check` against a spawn-mode and a fork-mode sandbox, each closed
/// afterwards; then the test's cgroup parent must be empty of instances.
macro_rules! both_modes {
    ($name:ident, |$sandbox:ident| $body:expr) => {
        mod $name {
            use super::*;

            #[tokio::test]
            async fn spawn_mode() {
                let config = config(concat!(stringify!($name), "-spawn"));
                let $sandbox = SpawnSandbox::new(config.clone()).unwrap();
                $body;
                $sandbox.close().await;
                assert_no_cgroups_left(&config);
            }

            #[tokio::test]
            async fn fork_mode() {
                let config = config(concat!(stringify!($name), "-fork"));
                let $sandbox = ForkSandbox::start(
                    config.clone(),
                    Recycling {
                        max_forks: 1000,
                        max_age: Duration::from_secs(600),
                    },
                    ZygoteLoad {
                        pool_size: 4,
                        max_jobs: 4,
                        parallel_spawns: 2,
                    },
                    Arc::new(NoZygoteObserver),
                )
                .await
                .unwrap();
                $body;
                $sandbox.close().await;
                assert_no_cgroups_left(&config);
            }
        }
    };
}

/// This process's cgroup root is gone from every hierarchy once the
/// sandbox is closed; then the test's own parent is removed too.
fn assert_no_cgroups_left(config: &NsjailConfig) {
    let instance = std::process::id().to_string();
    for hierarchy in ["memory", "pids", "cpu", "cpuacct", ""] {
        let parent = config
            .cgroup_mount
            .join(hierarchy)
            .join(&config.cgroup_parent);
        let root = parent.join(&instance);
        assert!(!root.exists(), "{} was left behind", root.display());
        if parent.exists() {
            std::fs::remove_dir(&parent)
                .unwrap_or_else(|e| panic!("{} is not empty: {e}", parent.display()));
        }
    }
}

both_modes!(a_script_runs_and_its_output_is_captured, |sandbox| {
    let (result, stdout) = run(
        &sandbox,
        "import os\nimport numpy as np\nprint('hi')\ndef main():\n    os.write(1, b'raw\\n')\n    return {'sum': int(np.arange(4).sum())}\n",
    )
    .await;
    assert_eq!(result.unwrap(), r#"{"sum":6}"#);
    assert_eq!(stdout, "hi\nraw\n");
});

both_modes!(
    growing_past_the_memory_cgroup_is_a_memory_limit,
    |sandbox| {
        let script =
        "def main():\n    chunks = []\n    while True:\n        chunks.append(b'x' * (8 << 20))\n";
        let (result, _) = run(&sandbox, script).await;
        assert!(matches!(result, Err(JobFailure::MemoryLimit)), "{result:?}");
    }
);

// About 100 MiB touched and half a CPU-second spun: the job's own cgroup
// says so, measured from the job's start (spawn mode: the interpreter's
// start and imports are not counted as the job's CPU; its resident pages
// are in the peak, as they count against the limit).
both_modes!(what_a_job_used_comes_from_its_cgroup, |sandbox| {
    // main() measures its own CPU time, so the comparison holds on a busy or
    // slow machine: the cgroup adds only the runner's milliseconds around it.
    let script = "import time\ndef main():\n    t = time.process_time()\n    b = bytearray(b'x') * (100 << 20)\n    while time.process_time() - t < 0.5:\n        pass\n    return {'main_cpu': time.process_time() - t}\n";
    let (outcome, usage) = run_job(&sandbox, &job(script)).await;
    let result: serde_json::Value = serde_json::from_str(outcome.unwrap().result.get()).unwrap();
    let main_cpu = result["main_cpu"].as_f64().unwrap();
    let cpu = usage.cpu.expect("CPU usage").as_secs_f64();
    let around_main = 0.05 * time_scale();
    assert!(
        main_cpu >= 0.5 && (main_cpu - 0.001..main_cpu + around_main).contains(&cpu),
        "cgroup cpu {cpu} s, main() measured {main_cpu} s"
    );
    let peak = usage.peak_memory_bytes.expect("peak memory") >> 20;
    assert!((100..200).contains(&peak), "peak {peak} MiB");
});

// A request's lower memory limit is the cgroup's while its job runs: 200
// MiB fit under the server's 256 but not under the job's 160.
both_modes!(a_job_runs_under_its_own_memory_limit, |sandbox| {
    let script = "def main():\n    b = bytearray(b'x') * (200 << 20)\n    return {'n': len(b)}\n";
    let mut tight = job(script);
    tight.limits.memory_bytes = 160 << 20;
    let (outcome, usage) = run_job(&sandbox, &tight).await;
    assert!(
        matches!(outcome, Err(JobFailure::MemoryLimit)),
        "{outcome:?}"
    );
    assert!(usage.peak_memory_bytes.unwrap() <= 160 << 20, "{usage:?}");
    let (outcome, _) = run_job(&sandbox, &job(script)).await;
    assert_eq!(outcome.unwrap().result.get(), r#"{"n":209715200}"#);
});

both_modes!(one_huge_allocation_is_a_memory_limit_too, |sandbox| {
    let (result, _) = run(
        &sandbox,
        "def main():\n    x = bytearray(1 << 34)\n    return {}\n",
    )
    .await;
    match result.unwrap_err() {
        JobFailure::Script(e) => assert_eq!(e.kind, ScriptErrorKind::MemoryLimit),
        other => panic!("{other:?}"),
    }
});

both_modes!(os_exit_is_an_exit_without_result, |sandbox| {
    let (result, stdout) = run(
        &sandbox,
        "import os\ndef main():\n    print('bye', flush=True)\n    os._exit(3)\n",
    )
    .await;
    assert!(
        matches!(&result, Err(JobFailure::Exited { status }) if status == "exit status 3"),
        "{result:?}"
    );
    assert_eq!(stdout, "bye\n");
});

both_modes!(a_script_error_comes_back_from_the_runner, |sandbox| {
    let (result, _) = run(&sandbox, "def main():\n    return 1/0\n").await;
    match result.unwrap_err() {
        JobFailure::Script(e) => assert_eq!(e.kind, ScriptErrorKind::ScriptException),
        other => panic!("{other:?}"),
    }
});

both_modes!(
    the_self_check_proves_every_wall_on_this_machine,
    |sandbox| {
        let report = sandbox.self_check().await.unwrap();
        assert!(!report.versions.numpy.is_empty());
        for wall in [
            "network namespace",
            "job seccomp filter",
            "jail seccomp policy",
            "isolation between jobs",
            "CPU quota",
            "rlimits",
        ] {
            assert!(
                report.findings.iter().any(|f| f.starts_with(wall)),
                "{wall} not proven: {:?}",
                report.findings
            );
        }
    }
);

both_modes!(a_worker_killed_while_idle_is_seen_dead, |sandbox| {
    let mut worker = sandbox
        .spawn(NEXT_ID.fetch_add(1, Ordering::Relaxed))
        .await
        .unwrap();
    assert!(worker.is_alive());
    worker.stop();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while worker.is_alive() {
        assert!(
            std::time::Instant::now() < deadline,
            "still alive after a kill"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    worker.reap().await;
});
