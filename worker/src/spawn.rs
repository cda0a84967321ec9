//! Spawn mode: one nsjail per worker, running the runner, inside a
//! per-worker cgroup that the server made. Nothing is shared between jobs but
//! the kernel; every worker pays a full interpreter start and the numpy and
//! pandas imports (about a quarter of a CPU-second).
//!
//! ```text
//! spawn: cgroup w<id> ─▶ nsjail (joins it before exec) ─▶ python runner.py
//!        ◀── ready frame + credentials (the runner's host pid) ── warm
//! run:   job ─▶ answer;  stop: SIGKILL the runner (PID 1 of the jail),
//!        nsjail reaps it and exits;  reap: wait for nsjail, remove cgroup
//! ```

use std::sync::Arc;
use std::time::Duration;

use crate::cgroup::{CgroupLimits, CgroupMode, Cgroups, CpuPriority, JobCgroup, JobMeter};
use crate::channel::{max_answer_frame, JobChannel, RunError};
use crate::job::{Captured, Job, JobFailure, JobResult, Usage};
use crate::launcher::Launcher;
use crate::nsjail::{Jail, Nsjail, NsjailConfig, Role, SetupError};
use crate::process::JobProcess;
use crate::protocol::Versions;
use crate::sandbox::{Sandbox, SpawnError, Worker};
use crate::selfcheck::{self, Inspect, SelfCheckReport};

/// How long nsjail may take to exit once its jailed process is dead.
const JAIL_EXIT_GRACE: Duration = Duration::from_secs(2);

pub struct SpawnSandbox {
    nsjail: Nsjail,
    cgroups: Arc<Cgroups>,
    launcher: Launcher,
}

impl SpawnSandbox {
    /// Checks nsjail's files, prepares the cgroup root and starts the
    /// launcher thread. Must be called inside a tokio runtime.
    pub fn new(config: NsjailConfig) -> Result<SpawnSandbox, SetupError> {
        let cgroups = Cgroups::prepare(&config.cgroup_mount, &config.cgroup_parent)
            .map_err(SetupError::new)?;
        let nsjail = Nsjail::new(config)?;
        let launcher = Launcher::start()
            .map_err(|e| SetupError::new(format!("cannot start the launcher thread: {e}")))?;
        Ok(SpawnSandbox {
            nsjail,
            cgroups: Arc::new(cgroups),
            launcher,
        })
    }

    pub fn config(&self) -> &NsjailConfig {
        self.nsjail.config()
    }

    pub fn cgroup_mode(&self) -> CgroupMode {
        self.cgroups.mode()
    }
}

pub(crate) fn job_cgroup_limits(config: &NsjailConfig, extra_tasks: u32) -> CgroupLimits {
    let limits = &config.limits;
    CgroupLimits {
        memory_bytes: limits.memory_bytes,
        max_tasks: limits.max_processes + extra_tasks,
        cpus: limits.cpus,
    }
}

/// One jailed runner.
pub struct SpawnWorker {
    id: u64,
    versions: Versions,
    jail: Jail,
    channel: JobChannel,
    /// The runner, PID 1 of the jail; known once it reported ready.
    process: Option<JobProcess>,
    /// `None` once reaped.
    cgroup: Option<JobCgroup>,
    /// What the running job's usage is measured from.
    meter: Option<JobMeter>,
}

impl Sandbox for SpawnSandbox {
    type Worker = SpawnWorker;

    async fn spawn(&self, id: u64) -> Result<SpawnWorker, SpawnError> {
        let fail = |what: &str, e: &dyn std::fmt::Display| SpawnError {
            message: format!("worker {id}: {what}: {e}"),
        };
        let config = self.nsjail.config();
        // nsjail itself sits in the cgroup too: one task more than the script's cap.
        let limits = job_cgroup_limits(config, 1);
        let cgroup = self
            .cgroups
            .create_blocking(format!("w{id}"), limits)
            .await
            .map_err(|e| fail("cannot create its cgroup", &e))?;
        cgroup.set_cpu_priority_blocking(CpuPriority::Warmup).await;
        let (channel, ends) = match JobChannel::new(
            max_answer_frame(config.max_result_bytes, config.file_caps),
            config.max_output_bytes,
        ) {
            Ok(parts) => parts,
            Err(e) => {
                cgroup.destroy().await;
                return Err(fail("cannot make its job channel", &e));
            }
        };
        let passed = vec![ends.socket, ends.stdout, ends.stderr];
        let jail = match self
            .nsjail
            .launch(&self.launcher, id, Role::Job, passed, cgroup.join_fds())
            .await
        {
            Ok(jail) => jail,
            Err(e) => {
                cgroup.destroy().await;
                return Err(fail("cannot start nsjail", &e));
            }
        };
        // From here on, dropping `worker` (a cancelled spawn included) kills
        // the jail and removes its cgroup.
        let mut worker = SpawnWorker {
            id,
            versions: Versions::default(),
            jail,
            channel,
            process: None,
            cgroup: Some(cgroup),
            meter: None,
        };
        let waited = tokio::time::timeout(config.spawn_timeout, async {
            tokio::select! {
                ready = worker.channel.wait_ready() => ready,
                status = worker.jail.wait() => Err(format!("the jail ended before the runner was ready ({status})")),
            }
        })
        .await;
        let ready = match waited {
            Ok(Ok(ready)) => ready,
            Ok(Err(why)) => {
                let log = worker.jail.last_words().await;
                worker.reap().await;
                return Err(fail(&why, &log));
            }
            Err(_) => {
                let log = worker.jail.last_words().await;
                worker.reap().await;
                let timeout = config.spawn_timeout;
                return Err(fail(&format!("not ready within {timeout:?}"), &log));
            }
        };
        match JobProcess::open(ready.host_pid) {
            Ok(process) => worker.process = Some(process),
            Err(e) => {
                worker.reap().await;
                return Err(fail("cannot hold its process", &e));
            }
        }
        worker.versions = ready.versions;
        // Warm now: it uses no CPU until its job, which gets a full share.
        if let Some(cgroup) = &worker.cgroup {
            cgroup.set_cpu_priority_blocking(CpuPriority::Job).await;
        }
        Ok(worker)
    }

    async fn self_check(&self) -> Result<SelfCheckReport, SetupError> {
        let expected = selfcheck::Expected::of(self.nsjail.config(), 1);
        selfcheck::run(
            self,
            &expected,
            self.cgroups.mode(),
            self.nsjail.version(),
            "spawn",
        )
        .await
    }

    async fn close(&self) {
        let cgroups = self.cgroups.clone();
        let _ = tokio::task::spawn_blocking(move || cgroups.close()).await;
    }
}

impl SpawnWorker {
    /// Why the jail ended without an answer.
    async fn death(&mut self) -> JobFailure {
        let status = self.jail.wait().await;
        // The CPU rlimit needs no case here: nsjail sets it hard, and with the
        // cgroup's CPU quota no process can use more CPU-seconds than wall
        // seconds, so the wall-clock deadline always comes first.
        match &self.cgroup {
            Some(cgroup) if cgroup.oom_killed_blocking().await => JobFailure::MemoryLimit,
            _ => JobFailure::Exited { status },
        }
    }
}

impl Worker for SpawnWorker {
    fn id(&self) -> u64 {
        self.id
    }

    fn versions(&self) -> &Versions {
        &self.versions
    }

    fn is_alive(&self) -> bool {
        self.process.as_ref().is_some_and(|p| !p.has_exited())
    }

    async fn run(&mut self, job: &Job) -> Result<JobResult, JobFailure> {
        if let Some(cgroup) = &self.cgroup {
            self.meter = Some(cgroup.begin_job_blocking(job.limits.memory_bytes).await?);
        }
        match self.channel.run(job).await {
            Ok(result) => Ok(result),
            Err(RunError::Failed(failure)) => Err(failure),
            Err(RunError::Ended) => Err(self.death().await),
        }
    }

    fn stop(&mut self) {
        // Kill the runner, not nsjail: the runner is PID 1 of the jail's pid
        // namespace, so its death takes every other jailed process with it,
        // and nsjail reaps it and exits by itself. Killing nsjail first would
        // orphan the runner to the host's init (the server itself, as a
        // container's entrypoint), leaving a zombie charged to the cgroup.
        match &self.process {
            Some(process) => process.kill(),
            None => self.jail.kill(),
        }
    }

    async fn output(&mut self) -> (Captured, Captured) {
        self.channel.output().await
    }

    async fn usage(&mut self) -> Usage {
        match (&self.cgroup, self.meter.take()) {
            (Some(cgroup), Some(meter)) => cgroup.usage_blocking(meter).await,
            _ => Usage::default(),
        }
    }

    async fn reap(mut self) {
        self.stop();
        self.jail.end(JAIL_EXIT_GRACE).await;
        if let Some(cgroup) = self.cgroup.take() {
            cgroup.destroy().await;
        }
    }
}

impl Drop for SpawnWorker {
    /// A worker dropped without being reaped (a cancelled spawn, a panic):
    /// kill it and remove its cgroup in the background, at once.
    fn drop(&mut self) {
        if let Some(cgroup) = self.cgroup.take() {
            self.stop();
            cgroup.destroy_in_background();
        }
    }
}

impl Inspect for SpawnWorker {
    fn cgroup(&self) -> Option<&JobCgroup> {
        self.cgroup.as_ref()
    }

    fn job_pid(&self) -> Option<i32> {
        self.process.as_ref().map(JobProcess::host_pid)
    }

    fn helper_pids(&self) -> Vec<i32> {
        self.jail.pid().map(|p| p as i32).into_iter().collect()
    }
}
