//! The start-up proof that the sandbox really confines a script: canary jobs
//! through the real jail policy, the real cgroups and the real job filter,
//! in whichever isolation mode the server runs. If any wall is missing the
//! server must not serve, and the error names the wall and how to fix it.
//!
//! Two workers are made. From outside, the first one's cgroup limits, its
//! membership and its host uid are read. From inside, a canary reports what
//! a script can see and do, without ever sending a packet off the machine
//! even when the jail is broken (a UDP `connect` only looks up a route; TCP
//! goes to loopback only), then tries to kill every process it can reach.
//! The second worker must have survived that, and its canary must draw other
//! random numbers than the first.

mod canary;
mod walls;

use std::time::Duration;

use crate::error::SetupError;
use crate::jail::cgroup::{CgroupMode, JobCgroup};
use crate::jail::nsjail::NsjailConfig;
use crate::job::{Job, JobLimits};
use crate::sandbox::{Sandbox, SelfCheckReport, Worker};
use canary::{Inside, Outside, CANARY};
use walls::Facts;

/// Worker ids of the two canaries: far from the pool's, which count from 1.
const CANARY_IDS: [u64; 2] = [u64::MAX - 1, u64::MAX];
const CANARY_TIMEOUT: Duration = Duration::from_secs(20);

/// What a worker lets the self-check see from outside.
pub trait Inspect {
    fn cgroup(&self) -> Option<&JobCgroup>;
    /// The job's first process (PID 1 of its namespace), in the server's namespace.
    fn job_pid(&self) -> Option<i32>;
    /// Processes of the sandbox's own in the job's cgroup (spawn: nsjail).
    fn helper_pids(&self) -> Vec<i32>;
}

/// The limits a job must be under, as the configuration states them.
#[derive(Debug, Clone, PartialEq)]
pub struct Expected {
    pub memory_bytes: u64,
    /// pids.max of a job's cgroup.
    pub max_tasks: u64,
    pub cpus: f64,
    pub max_file_bytes: u64,
    pub max_open_files: u64,
    pub cpu_seconds: u64,
}

impl Expected {
    /// `extra_tasks`: the sandbox's own processes in a job's cgroup.
    pub fn of(config: &NsjailConfig, extra_tasks: u32) -> Expected {
        let limits = &config.limits;
        Expected {
            memory_bytes: limits.memory_bytes,
            max_tasks: u64::from(limits.max_processes + extra_tasks),
            cpus: limits.cpus,
            max_file_bytes: limits.max_file_mb << 20,
            max_open_files: u64::from(limits.max_open_files),
            cpu_seconds: limits.cpu_seconds,
        }
    }
}

/// Runs the self-check on `sandbox`. Errors say which wall is missing.
pub async fn run<S>(
    sandbox: &S,
    expected: &Expected,
    cgroup_mode: CgroupMode,
    nsjail_version: String,
    isolation: &str,
) -> Result<SelfCheckReport, SetupError>
where
    S: Sandbox,
    S::Worker: Inspect,
{
    let mut workers = Vec::new();
    for id in CANARY_IDS {
        let worker = sandbox.spawn(id).await.map_err(SetupError::cannot_start)?;
        workers.push(worker);
    }
    let mut second = workers.pop().expect("two canaries");
    let mut first = workers.pop().expect("two canaries");
    let versions = first.versions().clone();

    let outside = look_from_outside(&first).await;
    let memory = expected.memory_bytes;
    let first_inside = run_canary(&mut first, memory).await;
    let second_survived = second.is_alive();
    let second_inside = run_canary(&mut second, memory).await;
    for worker in [first, second] {
        worker.reap().await;
    }
    let findings = walls::evaluate(&Facts {
        expected,
        outside: &outside,
        first: &first_inside.map_err(SetupError::SelfCheck)?,
        second: &second_inside.map_err(SetupError::SelfCheck)?,
        second_survived,
    })
    .map_err(SetupError::SelfCheck)?;
    Ok(SelfCheckReport {
        versions,
        isolation: isolation.into(),
        cgroup_mode: cgroup_mode.as_str().into(),
        nsjail_version,
        findings,
    })
}

async fn look_from_outside<W: Inspect>(worker: &W) -> Outside {
    let cgroup = worker.cgroup().cloned();
    let job_pid = worker.job_pid();
    let helpers = worker.helper_pids();
    tokio::task::spawn_blocking(move || {
        let Some(cgroup) = cgroup else {
            return Outside {
                memory_limit: None,
                tasks_limit: None,
                cpu_limit: None,
                job_in_cgroup: false,
                host_uids: Vec::new(),
            };
        };
        let members = cgroup.processes();
        Outside {
            memory_limit: cgroup.memory_limit(),
            tasks_limit: cgroup.tasks_limit(),
            cpu_limit: cgroup.cpu_limit(),
            job_in_cgroup: job_pid.is_some_and(|p| members.contains(&p)),
            host_uids: members
                .iter()
                .filter(|p| !helpers.contains(p))
                .filter_map(|&p| host_uid(p))
                .collect(),
        }
    })
    .await
    .unwrap_or_else(|_| Outside {
        memory_limit: None,
        tasks_limit: None,
        cpu_limit: None,
        job_in_cgroup: false,
        host_uids: Vec::new(),
    })
}

async fn run_canary<W: Worker>(worker: &mut W, memory_bytes: u64) -> Result<Inside, String> {
    let limits = JobLimits {
        timeout: CANARY_TIMEOUT,
        memory_bytes,
    };
    let job = Job::new(CANARY, limits, 1 << 16);
    let result = tokio::time::timeout(CANARY_TIMEOUT, worker.run(&job))
        .await
        .map_err(|_| format!("the canary job did not answer within {CANARY_TIMEOUT:?}"))?
        .map_err(|e| format!("the canary job failed: {e:?}"));
    worker.stop();
    let _ = worker.output().await;
    let result = result?;
    serde_json::from_str(result.result.get())
        .map_err(|e| format!("the canary's report is unreadable: {e}"))
}

fn host_uid(pid: i32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
