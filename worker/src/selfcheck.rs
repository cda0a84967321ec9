//! The start-up proof that the sandbox really confines a script: a canary job
//! through the real nsjail.cfg and the real cgroups. If any property fails the
//! server must not serve, and the error says what is missing and how to fix it.

use std::time::Duration;

use serde::Deserialize;

use crate::job::Job;
use crate::nsjail::{NsjailSandbox, NsjailWorker, SetupError};
use crate::protocol::Versions;
use crate::sandbox::{Sandbox, Worker};

/// What the canary established, for the start-up log.
#[derive(Debug, Clone)]
pub struct SelfCheckReport {
    pub versions: Versions,
    pub cgroup_mode: String,
    pub nsjail_version: String,
    /// One line per property proven.
    pub findings: Vec<String>,
}

/// The canary: it reports what a script can see and do from inside.
const CANARY: &str = r#"
import os, socket

def _try_write(path):
    try:
        with open(path, "w") as f:
            f.write("x")
        return True
    except OSError:
        return False

def main():
    try:
        socket.create_connection(("1.1.1.1", 53), timeout=1).close()
        network = "connected"
    except OSError as e:
        network = type(e).__name__
    return {
        "uid": os.getuid(),
        "gid": os.getgid(),
        "pid": os.getpid(),
        "network": network,
        "wrote_outside_tmp": [p for p in ("/canary", "/usr/canary", "/pyexec/canary") if _try_write(p)],
        "tmp_writable": _try_write("/tmp/canary"),
    }
"#;

#[derive(Debug, Deserialize)]
struct CanaryReport {
    uid: u32,
    gid: u32,
    pid: u32,
    network: String,
    wrote_outside_tmp: Vec<String>,
    tmp_writable: bool,
}

/// Runs the canary. Errors say what is missing and how to fix it.
pub async fn self_check(sandbox: &NsjailSandbox) -> Result<SelfCheckReport, SetupError> {
    let mut worker = sandbox
        .spawn(0)
        .await
        .map_err(|e| SetupError::new(explain_spawn_failure(&e.message)))?;
    let checked = check_worker(sandbox, &mut worker).await;
    worker.stop();
    let _ = worker.output().await;
    let versions = worker.versions().clone();
    worker.reap().await;
    let findings = checked?;
    Ok(SelfCheckReport {
        versions,
        cgroup_mode: sandbox.cgroup_mode().as_str().to_string(),
        nsjail_version: sandbox.nsjail_version(),
        findings,
    })
}

async fn check_worker(
    sandbox: &NsjailSandbox,
    worker: &mut NsjailWorker,
) -> Result<Vec<String>, SetupError> {
    let limits = &sandbox.config().limits;
    let fail = |what: String| SetupError::new(format!("sandbox self-check failed: {what}"));
    let mut findings = Vec::new();

    // From outside: the jail sits in its cgroup, under the configured limits,
    // and none of its processes is root on the host.
    let cgroup = worker.cgroup();
    let members = cgroup.processes();
    if members.is_empty() {
        return Err(fail(
            "the worker's cgroup holds no process: it did not join it".into(),
        ));
    }
    let memory = cgroup.memory_limit().unwrap_or(u64::MAX);
    if memory > limits.memory_bytes {
        return Err(fail(format!(
            "memory limit is {memory} bytes, wanted {}",
            limits.memory_bytes
        )));
    }
    let tasks = cgroup.tasks_limit().unwrap_or(u64::MAX);
    if tasks > u64::from(limits.max_processes) + 1 {
        return Err(fail(format!(
            "pids limit is {tasks}, wanted {}",
            limits.max_processes + 1
        )));
    }
    findings.push(format!(
        "cgroup {}: memory {memory} bytes, pids {tasks}",
        sandbox.cgroup_mode().as_str()
    ));
    let nsjail_pid = worker.pid().unwrap_or(0) as i32;
    for pid in members.iter().filter(|&&p| p != nsjail_pid) {
        match host_uid(*pid) {
            Some(0) => {
                return Err(fail(format!(
                    "jailed process {pid} runs as root on the host"
                )))
            }
            Some(uid) => findings.push(format!("jailed process {pid} runs as host uid {uid}")),
            None => {}
        }
    }

    // From inside: what a script can do.
    let job = Job {
        script: CANARY.to_string(),
        max_result_bytes: 1 << 16,
    };
    let result = tokio::time::timeout(Duration::from_secs(10), worker.run(&job))
        .await
        .map_err(|_| fail("the canary job did not answer within 10 s".into()))?
        .map_err(|e| fail(format!("the canary job failed: {e:?}")))?;
    let report: CanaryReport = serde_json::from_str(result.get())
        .map_err(|e| fail(format!("the canary's report is unreadable: {e}")))?;
    if report.uid == 0 || report.gid == 0 {
        return Err(fail(format!(
            "scripts run as uid {} gid {} inside the jail",
            report.uid, report.gid
        )));
    }
    if report.network == "connected" {
        return Err(fail("a script can reach the network".into()));
    }
    if !report.wrote_outside_tmp.is_empty() {
        return Err(fail(format!(
            "a script can write to {:?}",
            report.wrote_outside_tmp
        )));
    }
    if !report.tmp_writable {
        return Err(fail("a script cannot write to /tmp".into()));
    }
    findings.push(format!(
        "script uid {} gid {} pid {} inside; network refused ({}); only /tmp writable",
        report.uid, report.gid, report.pid, report.network
    ));
    Ok(findings)
}

fn host_uid(pid: i32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Adds the likely cause and its fix to a spawn failure seen at start-up.
fn explain_spawn_failure(message: &str) -> String {
    let gvisor = std::fs::read_to_string("/proc/version").is_ok_and(|v| v.contains("gVisor"));
    let hint = if gvisor || message.contains("PR_SET_SECUREBITS") {
        "this looks like gVisor (Cloud Run's first generation), where nsjail cannot work: \
         deploy with --execution-environment=gen2"
    } else if message.contains("Operation not permitted") || message.contains("EPERM") {
        "the kernel refused to create namespaces or mounts: run as root with user \
         namespaces enabled; in Docker add --cap-add SYS_ADMIN --security-opt seccomp=unconfined \
         --cgroupns private (on AppArmor hosts also --security-opt apparmor=unconfined)"
    } else if message.contains("No such file") {
        "a path in nsjail.cfg or the sandbox Python is missing: run `make setup`"
    } else {
        "see nsjail's messages above"
    };
    format!("the sandbox cannot start a worker, so pyexec will not serve.\n{message}\nLikely fix: {hint}")
}
