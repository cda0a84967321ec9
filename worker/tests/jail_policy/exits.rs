//! Exits: how a job process's end reaches the server, through the real
//! launcher: a job's normal end, a SIGKILL from outside, and (spawn mode) a
//! jail that can't be set up. Spawn mode learns each from nsjail's exit
//! status and log; fork mode from the zygote's report.

use std::time::Duration;

use pyexec_worker::{JobFailure, SetupError, SpawnFailure};

use crate::common::{job, next_id, scaled};
use crate::harness::{
    answer_bound, is_fork, job_file, nsjail_logged, wait_until, with_main, Checks, Jail, Kind,
    Pidfd, Scratch, SIGKILLED,
};
use pyexec_worker::{Sandbox, Worker};

const KILLED: &str = include_str!("../probes/killed.py");

pub async fn exits<K: Kind>(jail: &Jail<K>, checks: &mut Checks) {
    checks.section("exits");
    killed_from_outside(jail, checks).await;
    setup_failure::<K>(checks).await;
}

/// SIGKILL to the job's PID 1 from outside (by pidfd, as the server stops a
/// job) while the script runs: `run` reports the job exited, killed.
async fn killed_from_outside<K: Kind>(jail: &Jail<K>, checks: &mut Checks) {
    let mut probe = jail.worker().await;
    let process = Pidfd::open(probe.pid);
    let running = job_file(probe.pid, "/tmp/probe-running");
    let script = job(&with_main(KILLED));
    let killer = async {
        let seen = wait_until(answer_bound(), || running.exists()).await;
        process.kill();
        seen
    };
    let (outcome, seen) = tokio::join!(
        tokio::time::timeout(answer_bound(), probe.worker.run(&script)),
        killer
    );
    let status = match &outcome {
        Ok(Err(JobFailure::Exited { status })) => status.clone(),
        other => format!("{other:?}"),
    };
    let event = "terminated with signal: SIGKILL (9), (PIDs left: 0)";
    let log = probe
        .launcher_log(answer_bound(), |log| nsjail_logged(log, event))
        .await;
    let done = probe.finish().await;
    checks.context(done.ran.describe("killed"));
    let ran_first = seen.is_some() && done.ran.has("ready");
    if is_fork::<K>() {
        checks.check(
            format!(
                "the zygote reports the job child killed from outside: signal 9 (got {status})"
            ),
            ran_first && status == SIGKILLED,
        );
    } else {
        checks.context(format!("  killed, nsjail's log:\n{log}"));
        checks.check(
            format!(
                "SIGKILL of the job from outside: {status} (rc 137) and 'terminated with \
                 signal: SIGKILL (9)'"
            ),
            ran_first && status == SIGKILLED && nsjail_logged(&log, event),
        );
    }
}

/// A policy with a mount whose source doesn't exist: nsjail exits 255 before
/// the child runs, and the error the sandbox gives says so with its log.
async fn setup_failure<K: Kind>(checks: &mut Checks) {
    let scratch = Scratch::new(&format!("setup-{}", K::NAME));
    let policy = scratch.policy(|cfg| {
        format!(
            "{cfg}\nmount {{ src: \"/nonexistent-pyexec-probe-path\" dst: \"/nowhere\" is_bind: \
             true }}\n"
        )
    });
    let mut config = crate::common::config(&format!("jp-setup-{}", K::NAME));
    config.config_file = policy;
    let couldnt = "Couldn't launch the child process";
    let bound = scaled(Duration::from_secs(60));
    if is_fork::<K>() {
        // The zygote's jail is the one that can't be set up: the sandbox
        // refuses to start, naming nsjail's status and log.
        let started = tokio::time::timeout(bound, K::start(config.clone())).await;
        let cause = match &started {
            Ok(Err(SetupError::CannotStart { cause, .. })) => cause.clone(),
            Ok(Err(other)) => format!("{other}"),
            Ok(Ok(_)) => "it started".into(),
            Err(_) => format!("no answer within {bound:?}"),
        };
        if let Ok(Ok(sandbox)) = started {
            sandbox.close().await;
        }
        checks.context(format!("  setup failure: {cause}"));
        checks.check(
            "a zygote whose jail can't be set up: the sandbox refuses to start, with exit \
             status 255 and \"Couldn't launch the child process\"",
            cause.contains("(exit status 255)") && cause.contains(couldnt),
        );
    } else {
        let sandbox = K::start(config.clone()).await.expect("the sandbox starts");
        let spawned = tokio::time::timeout(bound, sandbox.spawn(next_id())).await;
        let (status, log) = match spawned {
            Ok(Err(e)) => match e.failure {
                SpawnFailure::JailEnded { status, log } => (status, log),
                other => (format!("{other}"), String::new()),
            },
            Ok(Ok(worker)) => {
                worker.reap().await;
                ("it started".into(), String::new())
            }
            Err(_) => (format!("no answer within {bound:?}"), String::new()),
        };
        sandbox.close().await;
        let errors: Vec<&str> = log
            .lines()
            .filter(|l| l.starts_with("[E]") || l.starts_with("[F]"))
            .collect();
        checks.info(format!(
            "setup failure: {status}; log: {}",
            errors.join(" | ")
        ));
        checks.context(format!("  setup failure, nsjail's log:\n{log}"));
        checks.check(
            format!("a setup failure: rc 255 and \"{couldnt}\" ({status})"),
            status == "nsjail could not set up the jail (exit status 255)" && log.contains(couldnt),
        );
    }
    crate::common::assert_no_cgroups_left(&config);
}
