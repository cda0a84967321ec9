//! Both real sandboxes with the real runner, nsjail and cgroups, without the
//! pool or HTTP: workers driven through the `Worker` trait. Every test runs
//! in spawn mode and in fork mode.

use std::sync::Arc;
use std::time::Duration;

use pyexec_worker::{
    ForkSandbox, Job, JobFailure, JobResult, NoZygoteObserver, Recycling, Sandbox, ScriptErrorKind,
    SpawnSandbox, Usage, Worker, ZygoteLoad, ZygotePages,
};

mod common;
use common::{assert_no_cgroups_left, config, job, next_id, scaled, time_scale};

/// Runs `job` on a fresh worker: its outcome and what it used.
async fn run_job<S: Sandbox>(sandbox: &S, job: &Job) -> (Result<JobResult, JobFailure>, Usage) {
    let id = next_id();
    let mut worker = sandbox.spawn(id).await.expect("a worker starts");
    let outcome = tokio::time::timeout(scaled(Duration::from_secs(20)), worker.run(job))
        .await
        .expect("the job answers");
    worker.stop();
    let _ = worker.output().await;
    let usage = worker.usage().await;
    worker.reap().await;
    (outcome, usage)
}

async fn run<S: Sandbox>(sandbox: &S, script: &str) -> (Result<String, JobFailure>, String) {
    let id = next_id();
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
                    ZygotePages::Huge,
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

// A request's lower memory limit is the cgroup's while its job runs: 170
// MiB fit under the server's 256 (in spawn mode beside the warm interpreter
// with numpy, pandas and matplotlib) but not under the job's 160.
both_modes!(a_job_runs_under_its_own_memory_limit, |sandbox| {
    let script = "def main():\n    b = bytearray(b'x') * (170 << 20)\n    return {'n': len(b)}\n";
    let mut tight = job(script);
    tight.limits.memory_bytes = 160 << 20;
    let (outcome, usage) = run_job(&sandbox, &tight).await;
    assert!(
        matches!(outcome, Err(JobFailure::MemoryLimit)),
        "{outcome:?}"
    );
    assert!(usage.peak_memory_bytes.unwrap() <= 160 << 20, "{usage:?}");
    let (outcome, _) = run_job(&sandbox, &job(script)).await;
    assert_eq!(outcome.unwrap().result.get(), r#"{"n":178257920}"#);
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
            "socket families",
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
    let mut worker = sandbox.spawn(next_id()).await.unwrap();
    assert!(worker.is_alive());
    worker.stop();
    let deadline = std::time::Instant::now() + scaled(Duration::from_secs(5));
    while worker.is_alive() {
        assert!(
            std::time::Instant::now() < deadline,
            "still alive after a kill"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    worker.reap().await;
});
