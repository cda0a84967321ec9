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
use std::time::{Duration, Instant};

use super::sandboxed::{self, Ended, ExitSource, SandboxedWorker};
use crate::error::{HandshakeError, SetupError, SpawnError, SpawnFailure};
use crate::jail::cgroup::{CgroupMode, Cgroups, CpuPriority};
use crate::jail::launcher::Launcher;
use crate::jail::nsjail::{Jail, Nsjail, NsjailConfig, Role};
use crate::jail::process::JobProcess;
use crate::phases::{Phase, PhaseClock, PhaseObserver};
use crate::sandbox::{Sandbox, SelfCheckReport, Worker};
use crate::selfcheck;

/// How long nsjail may take to exit once its jailed process is dead.
const JAIL_EXIT_GRACE: Duration = Duration::from_secs(2);

pub struct SpawnSandbox {
    nsjail: Nsjail,
    cgroups: Arc<Cgroups>,
    launcher: Launcher,
    clock: PhaseClock,
}

impl SpawnSandbox {
    /// Checks nsjail's files, prepares the cgroup root and starts the
    /// launcher thread. Must be called inside a tokio runtime.
    pub fn new(config: NsjailConfig) -> Result<SpawnSandbox, SetupError> {
        let cgroups = Cgroups::prepare(&config.cgroup_mount, &config.cgroup_parent)
            .map_err(SetupError::Cgroup)?;
        let nsjail = Nsjail::new(config)?;
        let launcher = Launcher::start().map_err(SetupError::Launcher)?;
        Ok(SpawnSandbox {
            nsjail,
            cgroups: Arc::new(cgroups),
            launcher,
            clock: PhaseClock::default(),
        })
    }

    /// Reports how long each phase of every worker made from now on takes.
    pub fn observe_phases(&self, observer: Arc<dyn PhaseObserver>) {
        self.clock.observe(observer);
    }

    pub fn config(&self) -> &NsjailConfig {
        self.nsjail.config()
    }

    pub fn cgroup_mode(&self) -> CgroupMode {
        self.cgroups.mode()
    }
}

/// One jailed runner; its nsjail says how it ended.
pub type SpawnWorker = SandboxedWorker<Jail>;

impl ExitSource for Jail {
    async fn ended(&mut self) -> Ended {
        // The jailed runner is nsjail's only child: nsjail exits as it does,
        // with its status.
        Ended::Status(self.wait().await)
    }

    fn kill(&mut self) {
        Jail::kill(self);
    }

    async fn settle(&mut self) {
        // nsjail exits once it has reaped the runner; if it somehow doesn't, kill it.
        self.end(JAIL_EXIT_GRACE).await;
    }

    fn helper_pids(&self) -> Vec<i32> {
        self.pid().map(|p| p as i32).into_iter().collect()
    }

    #[cfg(any(test, feature = "test-support"))]
    fn log(&self) -> String {
        self.log_text()
    }
}

impl Sandbox for SpawnSandbox {
    type Worker = SpawnWorker;

    async fn spawn(&self, id: u64) -> Result<SpawnWorker, SpawnError> {
        let fail = |failure| SpawnError::new(id, failure);
        let config = self.nsjail.config();
        // nsjail itself sits in the cgroup too: one task more than the script's cap.
        let (cgroup, channel, ends) = sandboxed::prepare(&self.cgroups, config, id, 1, &self.clock)
            .await
            .map_err(fail)?;
        cgroup.set_cpu_priority(CpuPriority::Warmup).await;
        let launched = Instant::now();
        let passed = vec![ends.socket, ends.stdout, ends.stderr];
        let jail = match self
            .nsjail
            .launch(&self.launcher, id, Role::Job, passed, cgroup.join_fds())
            .await
        {
            Ok(jail) => jail,
            Err(e) => {
                cgroup.destroy().await;
                return Err(fail(SpawnFailure::Launch(e)));
            }
        };
        let mut worker = SpawnWorker::new(id, channel, cgroup, jail, self.clock.clone());
        /// How the wait for the ready frame ended, short of a ready worker.
        enum NotReady {
            Handshake(HandshakeError),
            JailEnded(String),
        }
        let waited = tokio::time::timeout(config.spawn_timeout, async {
            let (channel, jail) = worker.channel_and_exit();
            let ready = tokio::select! {
                ready = channel.wait_ready() => ready.map_err(NotReady::Handshake),
                status = jail.wait() => Err(NotReady::JailEnded(status)),
            };
            match ready {
                // nsjail holds the job socket until it exits, so a socket
                // closed before the ready frame is nsjail's exit, perhaps not
                // yet reaped: its status says why (255: a setup failure).
                Err(NotReady::Handshake(HandshakeError::Closed)) => {
                    match tokio::time::timeout(JAIL_EXIT_GRACE, jail.wait()).await {
                        Ok(status) => Err(NotReady::JailEnded(status)),
                        Err(_) => Err(NotReady::Handshake(HandshakeError::Closed)),
                    }
                }
                other => other,
            }
        })
        .await;
        let ready = match waited {
            Ok(Ok(ready)) => ready,
            failed => {
                let log = worker.exit().last_words().await;
                worker.reap().await;
                return Err(fail(match failed {
                    Ok(Err(NotReady::Handshake(error))) => SpawnFailure::Handshake { error, log },
                    Ok(Err(NotReady::JailEnded(status))) => SpawnFailure::JailEnded { status, log },
                    _ => SpawnFailure::NotReady {
                        after: config.spawn_timeout,
                        log,
                    },
                }));
            }
        };
        self.clock.since(Phase::Setup, launched);
        match JobProcess::open(ready.host_pid) {
            Ok(process) => worker.ready(process, ready.versions),
            Err(e) => {
                worker.reap().await;
                return Err(fail(SpawnFailure::Hold(e)));
            }
        }
        // Warm now: it uses no CPU until its job, which gets a full share.
        if let Some(cgroup) = worker.job_cgroup() {
            cgroup.set_cpu_priority(CpuPriority::Job).await;
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
        let _ = tokio::task::spawn_blocking(move || cgroups.blocking_close()).await;
    }
}
