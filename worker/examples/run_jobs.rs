//! Runs job scripts on real workers of either isolation mode, through the
//! server's own launcher (`SpawnSandbox`, `ForkSandbox`) and the `Worker`
//! interface, and leaves what each job did in its directory: the jail
//! scripts' driver (scripts/trace-syscalls.sh, scripts/bench-syscall-filter.sh).
//!
//! ```text
//! run_jobs spawn|fork TIMEOUT_SECONDS DIR...
//! ```
//!
//! Each DIR holds `job.py`, run at the script's top level (a `main` returning
//! `{}` is appended), one fresh worker per job, under the server's
//! configuration (`tests/common`) with these overrides from the environment:
//! NSJAIL (the nsjail binary, or a wrapper that execs it), RUNNER_DIR, CFG
//! (the nsjail config) and VENV (its `bin/python3`). Afterwards DIR holds
//! `out` and `err` (the job's stdout and stderr), `log` (nsjail's log, spawn
//! mode) and `answer`: one JSON line, `{"type":"result","result":…}` if the
//! job answered, `{"type":"failure","failure":"…"}` if it failed,
//! `{"type":"timeout"}` if it did not answer within TIMEOUT_SECONDS, each
//! with `"end"`, how its job process ended. Run as root (namespaces,
//! cgroups); waits are stretched by `PYEXEC_TEST_TIME_SCALE`. Exits 1 if a
//! sandbox or a worker could not start, or a directory could not be read or
//! written; a job's own failure is only recorded.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pyexec_worker::testing::Observe;
use pyexec_worker::{
    ForkSandbox, JobLimits, NoZygoteObserver, NsjailConfig, Sandbox, SpawnSandbox, Worker,
    ZygotePages,
};
use serde_json::json;

/// How long a job process that answered gets to end by itself (writing its
/// output files, exiting) before it is stopped: a trace should see its end.
const END_GRACE: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() {
    if let Err(why) = run(std::env::args().skip(1).collect()).await {
        eprintln!("run_jobs: {why}");
        std::process::exit(1);
    }
}

async fn run(args: Vec<String>) -> Result<(), String> {
    let usage = "usage: run_jobs spawn|fork TIMEOUT_SECONDS DIR...";
    let [mode, timeout, dirs @ ..] = args.as_slice() else {
        return Err(usage.into());
    };
    let timeout = timeout
        .parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|_| format!("{timeout:?} is not a number of seconds; {usage}"))?;
    let dirs: Vec<PathBuf> = dirs.iter().map(PathBuf::from).collect();
    if dirs.is_empty() {
        return Err(usage.into());
    }
    let config = config(mode)?;
    match mode.as_str() {
        "spawn" => {
            let sandbox = SpawnSandbox::new(config.clone()).map_err(|e| e.to_string())?;
            run_all(sandbox, &config, &dirs, timeout).await
        }
        "fork" => {
            let sandbox = ForkSandbox::start(
                config.clone(),
                common::zygote_recycling(),
                common::zygote_load(),
                ZygotePages::Huge,
                Arc::new(NoZygoteObserver),
            )
            .await
            .map_err(|e| e.to_string())?;
            run_all(sandbox, &config, &dirs, timeout).await
        }
        _ => Err(format!("unknown mode {mode:?}; {usage}")),
    }
}

/// The tests' configuration, with the binaries and files the environment names.
fn config(mode: &str) -> Result<NsjailConfig, String> {
    let var = |name: &str| std::env::var_os(name).ok_or_else(|| format!("{name} is not set"));
    let mut config = common::config(&format!("run-jobs-{mode}"));
    config.nsjail = var("NSJAIL")?.into();
    config.runner_dir = var("RUNNER_DIR")?.into();
    config.config_file = var("CFG")?.into();
    config.python = PathBuf::from(var("VENV")?).join("bin/python3");
    Ok(config)
}

/// Each directory's job on a fresh worker, in turn; then the sandbox closed.
async fn run_all<S>(
    sandbox: S,
    config: &NsjailConfig,
    dirs: &[PathBuf],
    timeout: Duration,
) -> Result<(), String>
where
    S: Sandbox,
    S::Worker: Observe,
{
    let mut outcome = Ok(());
    for dir in dirs {
        outcome = run_one(&sandbox, config, dir, timeout).await;
        if outcome.is_err() {
            break;
        }
    }
    sandbox.close().await;
    common::assert_no_cgroups_left(config);
    outcome
}

async fn run_one<S>(
    sandbox: &S,
    config: &NsjailConfig,
    dir: &Path,
    timeout: Duration,
) -> Result<(), String>
where
    S: Sandbox,
    S::Worker: Observe,
{
    let path = dir.join("job.py");
    let script =
        std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let mut job = common::job(&format!("{script}\n\ndef main():\n    return {{}}\n"));
    job.limits = JobLimits {
        timeout,
        ..job.limits
    };
    job.file_caps = config.file_caps;

    let mut worker = sandbox
        .spawn(common::next_id())
        .await
        .map_err(|e| format!("a worker for {} did not start: {e}", dir.display()))?;
    let ran = tokio::time::timeout(timeout, worker.run(&job)).await;
    let mut answer = match &ran {
        Ok(Ok(result)) => json!({"type": "result", "result": result.result}),
        Ok(Err(failure)) => json!({"type": "failure", "failure": format!("{failure:?}")}),
        Err(_) => json!({"type": "timeout"}),
    };
    let end_grace = common::scaled(END_GRACE);
    answer["end"] = match tokio::time::timeout(end_grace, worker.ended()).await {
        Ok(status) => status.into(),
        Err(_) => format!("still running {end_grace:?} after its run: stopped").into(),
    };
    worker.stop();
    let (stdout, stderr) = worker.output().await;
    let log = worker.launcher_log();
    worker.reap().await;

    let write = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(|e| format!("writing {}: {e}", path.display()))
    };
    write("out", &stdout.bytes)?;
    write("err", &stderr.bytes)?;
    write("log", log.as_bytes())?;
    write("answer", format!("{answer}\n").as_bytes())
}
