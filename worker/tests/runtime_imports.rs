//! The runtime proven inside the jail: every public module of numpy, pandas
//! and matplotlib (with mpl_toolkits) that imports outside the jail imports
//! inside it too, and the smoke calls of python/runtime_exercise.py (numpy's
//! linalg, fft and random; pandas' read_csv, groupby, merge, to_datetime,
//! rolling; matplotlib's savefig to PNG, SVG and PDF; files, processes,
//! threads, signals…) all work, as jobs of the real sandbox under the job's
//! own syscall filter and limits, in spawn mode and in fork mode.
//!
//! The walk and the calls are python/runtime_exercise.py's (shared with
//! scripts/trace-syscalls.sh). Outside the jail it runs once as the
//! baseline: a module that fails there is excluded, with its error as the
//! reason (printed by the test: optional dependencies such as pyarrow,
//! Jinja2, GUI toolkits). Inside, one job per package keeps each well
//! under the 256 MiB memory limit.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use pyexec_worker::{
    FileCaps, ForkSandbox, Job, JobLimits, NoZygoteObserver, Recycling, Sandbox, SpawnSandbox,
    Worker, ZygoteLoad, ZygotePages,
};
use serde_json::Value;

mod common;
use common::{assert_no_cgroups_left, config, next_id, repo, scaled};

/// {name: None if it worked, else the error line}, as runtime_exercise.py reports.
type Report = BTreeMap<String, Option<String>>;

const PACKAGES: [&str; 4] = ["numpy", "pandas", "matplotlib", "mpl_toolkits"];

fn exercise_source() -> String {
    std::fs::read_to_string(repo().join("python/runtime_exercise.py")).unwrap()
}

/// The walk outside the jail, in the sandbox's own venv and environment.
fn baseline() -> Report {
    let outputs = std::env::temp_dir().join(format!("pyexec-runtime-{}", std::process::id()));
    std::fs::create_dir_all(&outputs).unwrap();
    let out = Command::new("/opt/pyexec/sandbox-venv/bin/python3")
        .arg(repo().join("python/runtime_exercise.py"))
        .arg("--no-smoke")
        .env_clear()
        .envs([
            ("LANG", "C.UTF-8"),
            ("TZ", "UTC"),
            ("OPENBLAS_NUM_THREADS", "1"),
            ("OMP_NUM_THREADS", "1"),
        ])
        .env("MPLCONFIGDIR", &outputs)
        .env("PYEXEC_OUTPUTS_DIR", &outputs)
        .current_dir(&outputs)
        .output()
        .expect("the sandbox venv's python runs");
    let _ = std::fs::remove_dir_all(&outputs);
    assert!(
        out.status.success(),
        "the walk outside the jail failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    serde_json::from_value(report["imports"].clone()).unwrap()
}

/// A job running runtime_exercise.py's `body` (a Python expression giving
/// the report) under the server's default limits, with time to walk.
fn exercise_job(body: &str) -> Job {
    let script = format!("{}\n\ndef main():\n    return {body}\n", exercise_source());
    let limits = JobLimits {
        timeout: scaled(Duration::from_secs(120)),
        memory_bytes: 256 << 20,
    };
    let mut job = Job::new(script, limits, 10 << 20);
    job.file_caps = FileCaps {
        max_files: 32,
        max_bytes: 4 << 20,
    };
    job
}

/// Runs the job on a fresh worker: its report, or why it gave none (with
/// the tail of its stderr, where the walk says what it was doing).
async fn run_report<S: Sandbox>(sandbox: &S, job: &Job) -> Result<Report, String> {
    let mut worker = sandbox.spawn(next_id()).await.expect("a worker starts");
    let outcome = tokio::time::timeout(
        job.limits.timeout + Duration::from_secs(30),
        worker.run(job),
    )
    .await
    .expect("the job answers");
    worker.stop();
    let (_stdout, stderr) = worker.output().await;
    worker.reap().await;
    match outcome {
        Ok(done) => serde_json::from_str(done.result.get()).map_err(|e| e.to_string()),
        Err(failure) => {
            let stderr = stderr.text();
            let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
            Err(format!("{failure:?}; stderr ends with {tail:?}"))
        }
    }
}

async fn check_runtime<S: Sandbox>(sandbox: &S, mode: &str) {
    let outside = baseline();
    let excluded: Vec<(&String, &String)> = outside
        .iter()
        .filter_map(|(name, error)| error.as_ref().map(|e| (name, e)))
        .collect();
    eprintln!(
        "{mode}: {} modules, {} excluded (they fail outside the jail too):",
        outside.len(),
        excluded.len()
    );
    for (name, reason) in &excluded {
        eprintln!("  {name}: {reason}");
    }

    let mut failures = Vec::new();
    for package in PACKAGES {
        let names: Vec<&String> = outside
            .iter()
            .filter(|(name, error)| {
                error.is_none()
                    && (name.as_str() == package || name.starts_with(&format!("{package}.")))
            })
            .map(|(name, _)| name)
            .collect();
        assert!(!names.is_empty(), "no module of {package} imports outside");
        let list = serde_json::to_string(&names).unwrap();
        let job = exercise_job(&format!("import_all({list}, trail=True)"));
        match run_report(sandbox, &job).await {
            Ok(inside) => {
                for name in &names {
                    match inside.get(name.as_str()) {
                        Some(None) => {}
                        Some(Some(error)) => failures.push(format!(
                            "{name} imports outside the jail but not inside: {error}"
                        )),
                        None => failures.push(format!("{name}: not in the report")),
                    }
                }
                eprintln!("{mode}: {package}: {} modules imported inside", names.len());
            }
            Err(why) => failures.push(format!("the {package} walk gave no report: {why}")),
        }
    }

    match run_report(sandbox, &exercise_job("run_smoke()")).await {
        Ok(smoke) => {
            for call in [
                "numpy_linalg",
                "numpy_fft",
                "numpy_random",
                "pandas_basics",
                "matplotlib_figures",
            ] {
                assert!(smoke.contains_key(call), "no smoke call {call}: {smoke:?}");
            }
            for (call, error) in &smoke {
                if let Some(error) = error {
                    failures.push(format!("smoke call {call} fails inside the jail: {error}"));
                }
            }
            eprintln!("{mode}: {} smoke calls passed inside", smoke.len());
        }
        Err(why) => failures.push(format!("the smoke calls gave no report: {why}")),
    }
    assert!(failures.is_empty(), "{mode}:\n{}", failures.join("\n"));
}

#[tokio::test]
async fn the_runtime_imports_and_works_in_spawn_mode() {
    let config = config("runtime-spawn");
    let sandbox = SpawnSandbox::new(config.clone()).unwrap();
    check_runtime(&sandbox, "spawn").await;
    sandbox.close().await;
    assert_no_cgroups_left(&config);
}

#[tokio::test]
async fn the_runtime_imports_and_works_in_fork_mode() {
    let config = config("runtime-fork");
    let sandbox = ForkSandbox::start(
        config.clone(),
        Recycling {
            max_forks: 1000,
            max_age: Duration::from_secs(600),
        },
        ZygoteLoad {
            pool_size: 2,
            max_jobs: 2,
            parallel_spawns: 1,
        },
        ZygotePages::Huge,
        Arc::new(NoZygoteObserver),
    )
    .await
    .unwrap();
    check_runtime(&sandbox, "fork").await;
    sandbox.close().await;
    assert_no_cgroups_left(&config);
}
