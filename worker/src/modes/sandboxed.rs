//! A worker of either isolation mode once it exists: its job channel, its
//! job process (by pidfd), its cgroup and the running job's usage meter,
//! run, stopped, measured and reaped the same way in both. What differs is
//! where the job process's end is learned, and what of the mode must go
//! with it: an [`ExitSource`] (spawn mode: the job's nsjail, whose exit
//! status tells; fork mode: the zygote's report on its child).

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use crate::error::SpawnFailure;
use crate::jail::cgroup::{CgroupLimits, Cgroups, JobCgroup, JobMeter};
use crate::jail::nsjail::NsjailConfig;
use crate::jail::process::JobProcess;
use crate::job::channel::{max_answer_frame, JobChannel, JobEnds, RunError};
use crate::job::protocol::Versions;
use crate::job::{Captured, Job, JobFailure, JobResult, Usage};
use crate::phases::{Phase, PhaseClock};
use crate::sandbox::Worker;
use crate::selfcheck::Inspect;

/// What every worker starts from, in both modes: its cgroup `w<id>` with the
/// job limits (plus `extra_tasks` for the mode's own processes in it), and
/// its job channel, whose other ends the job process gets. On an error
/// nothing is left behind.
pub(crate) async fn prepare(
    cgroups: &Arc<Cgroups>,
    config: &NsjailConfig,
    id: u64,
    extra_tasks: u32,
    clock: &PhaseClock,
) -> Result<(JobCgroup, JobChannel, JobEnds), SpawnFailure> {
    let started = Instant::now();
    let limits = &config.limits;
    let cgroup_limits = CgroupLimits {
        memory_bytes: limits.memory_bytes,
        max_tasks: limits.max_processes + extra_tasks,
        cpus: limits.cpus,
    };
    let cgroup = cgroups
        .create(format!("w{id}"), cgroup_limits)
        .await
        .map_err(SpawnFailure::Cgroup)?;
    clock.since(Phase::CgroupMake, started);
    match JobChannel::new(
        max_answer_frame(config.max_result_bytes, config.file_caps),
        config.max_output_bytes,
    ) {
        Ok((channel, ends)) => Ok((cgroup, channel, ends)),
        Err(e) => {
            cgroup.destroy().await;
            Err(SpawnFailure::Channel(e))
        }
    }
}

/// How a job process ended, as its mode learned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// "exit status 3", "killed by signal 9 (SIGKILL)".
    Status(String),
    /// Something outside the job ended it: zygote `zygote` died (fork mode).
    Lost { zygote: u64 },
}

/// Where a job process's end is learned, and what else of the mode goes
/// with the job.
pub trait ExitSource: Send + 'static {
    /// Waits (bounded) for the job's process to have ended; how it did.
    fn ended(&mut self) -> impl Future<Output = Ended> + Send;

    /// Kills what the mode itself started, for when the job's own process
    /// is not known yet (a spawn cancelled before the ready frame).
    fn kill(&mut self);

    /// Waits (bounded) until nothing of the job is left, before its cgroup
    /// is removed.
    fn settle(&mut self) -> impl Future<Output = ()> + Send;

    /// False once the job process can no longer serve for a reason of the
    /// mode's (fork mode: its zygote died).
    fn is_alive(&self) -> bool {
        true
    }

    /// Processes of the mode's own in the job's cgroup (spawn mode: nsjail).
    fn helper_pids(&self) -> Vec<i32> {
        Vec::new()
    }

    /// What the mode's own launcher logged for this job so far (spawn mode:
    /// nsjail's last lines), for the tests of the real sandboxes.
    #[cfg(any(test, feature = "test-support"))]
    fn log(&self) -> String {
        String::new()
    }
}

pub struct SandboxedWorker<E: ExitSource> {
    id: u64,
    versions: Versions,
    channel: JobChannel,
    /// The job's first process, PID 1 of its namespace: known once ready.
    process: Option<JobProcess>,
    /// `None` once reaped.
    cgroup: Option<JobCgroup>,
    /// What the running job's usage is measured from.
    meter: Option<JobMeter>,
    exit: E,
    clock: PhaseClock,
}

impl<E: ExitSource> SandboxedWorker<E> {
    /// A worker being made. From here on, dropping it (a cancelled spawn
    /// included) kills what it holds and removes its cgroup.
    pub(crate) fn new(
        id: u64,
        channel: JobChannel,
        cgroup: JobCgroup,
        exit: E,
        clock: PhaseClock,
    ) -> Self {
        SandboxedWorker {
            id,
            versions: Versions::default(),
            channel,
            process: None,
            cgroup: Some(cgroup),
            meter: None,
            exit,
            clock,
        }
    }

    pub(crate) fn exit(&mut self) -> &mut E {
        &mut self.exit
    }

    /// Waits for the job process's end, as `run` would learn it, without
    /// killing it (for the tests of the real sandboxes).
    #[cfg(any(test, feature = "test-support"))]
    pub(crate) async fn ended(&mut self) -> Ended {
        self.exit.ended().await
    }

    /// What the mode's launcher logged for this job so far (for the tests).
    #[cfg(any(test, feature = "test-support"))]
    pub(crate) fn launcher_log(&self) -> String {
        self.exit.log()
    }

    /// Both at once, to wait for whichever speaks first while it starts.
    pub(crate) fn channel_and_exit(&mut self) -> (&mut JobChannel, &mut E) {
        (&mut self.channel, &mut self.exit)
    }

    pub(crate) fn job_cgroup(&self) -> Option<&JobCgroup> {
        self.cgroup.as_ref()
    }

    /// The worker is ready: its job process, held, and what it reported.
    pub(crate) fn ready(&mut self, process: JobProcess, versions: Versions) {
        self.process = Some(process);
        self.versions = versions;
    }

    /// Why the job process ended without an answer.
    async fn death(&mut self) -> JobFailure {
        let ended = self.exit.ended().await;
        // The CPU rlimit needs no case here: it is set hard, and with the
        // cgroup's CPU quota no process can use more CPU-seconds than wall
        // seconds, so the wall-clock deadline always comes first.
        if let Some(cgroup) = &self.cgroup {
            if cgroup.oom_killed().await {
                return JobFailure::MemoryLimit;
            }
        }
        match ended {
            Ended::Status(status) => JobFailure::Exited { status },
            Ended::Lost { zygote } => JobFailure::Lost { zygote },
        }
    }
}

impl<E: ExitSource> Worker for SandboxedWorker<E> {
    fn id(&self) -> u64 {
        self.id
    }

    fn versions(&self) -> &Versions {
        &self.versions
    }

    fn is_alive(&self) -> bool {
        self.exit.is_alive() && self.process.as_ref().is_some_and(|p| !p.has_exited())
    }

    async fn run(&mut self, job: &Job) -> Result<JobResult, JobFailure> {
        if let Some(cgroup) = &self.cgroup {
            let started = Instant::now();
            self.meter = Some(cgroup.begin_job(job.limits.memory_bytes).await?);
            self.clock.since(Phase::CgroupLimits, started);
        }
        let started = Instant::now();
        let answer = self.channel.run(job).await;
        self.clock.since(Phase::Job, started);
        match answer {
            Ok(result) => Ok(result),
            Err(RunError::Failed(failure)) => Err(failure),
            Err(RunError::Ended) => Err(self.death().await),
        }
    }

    fn stop(&mut self) {
        // The job's process is PID 1 of its pid namespace: its death takes
        // every other process of the job with it. (In spawn mode, killing
        // nsjail first would orphan it to the host's init, the server itself
        // as a container's entrypoint, leaving a zombie charged to the
        // cgroup; nsjail reaps it and exits by itself instead.)
        match &self.process {
            Some(process) => process.kill(),
            None => self.exit.kill(),
        }
    }

    async fn output(&mut self) -> (Captured, Captured) {
        self.channel.output().await
    }

    async fn usage(&mut self) -> Usage {
        match (&self.cgroup, self.meter.take()) {
            (Some(cgroup), Some(meter)) => {
                let started = Instant::now();
                let usage = cgroup.usage(meter).await;
                self.clock.since(Phase::CgroupUsage, started);
                usage
            }
            _ => Usage::default(),
        }
    }

    async fn reap(mut self) {
        let started = Instant::now();
        self.stop();
        self.exit.settle().await;
        self.clock.since(Phase::Exit, started);
        if let Some(cgroup) = self.cgroup.take() {
            let started = Instant::now();
            cgroup.destroy().await;
            self.clock.since(Phase::CgroupRemove, started);
        }
    }
}

impl<E: ExitSource> Drop for SandboxedWorker<E> {
    /// A worker dropped without being reaped (a cancelled spawn, a panic):
    /// kill it and remove its cgroup in the background, at once.
    fn drop(&mut self) {
        if let Some(cgroup) = self.cgroup.take() {
            self.stop();
            cgroup.destroy_in_background();
        }
    }
}

impl<E: ExitSource> Inspect for SandboxedWorker<E> {
    fn cgroup(&self) -> Option<&JobCgroup> {
        self.cgroup.as_ref()
    }

    fn job_pid(&self) -> Option<i32> {
        self.process.as_ref().map(JobProcess::host_pid)
    }

    fn helper_pids(&self) -> Vec<i32> {
        self.exit.helper_pids()
    }
}
