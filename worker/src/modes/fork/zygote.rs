//! One zygote process: `python/zygote.py` in a jail and a cgroup of its own,
//! started and waited for until it is warm, counted (forks, age, children
//! that failed in a row), and ended. It is spoken to through its
//! [`Control`] socket.
//!
//! A zygote lives as long as someone holds it: the sandbox while it is the
//! current one, and each worker it forked. The last one to let go ends it:
//! the zygote process is killed, nsjail waited for, its cgroup removed.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::task::TaskTracker;

use super::control::{control_pair, Control, Forked};
use super::hugepages::{self, ZygotePages, RECOLLAPSE_EVERY};
use crate::error::{ForkError, ZygoteError, ZygoteNotReady};
use crate::jail::cgroup::{CgroupLimits, Cgroups, CpuPriority, JobCgroup};
use crate::jail::launcher::Launcher;
use crate::jail::nsjail::{Jail, Nsjail, Role};
use crate::jail::process::JobProcess;
use crate::job::channel::JobEnds;

/// How long nsjail may take to exit once the zygote is dead.
const JAIL_EXIT_GRACE: Duration = Duration::from_secs(2);

pub struct Zygote {
    generation: u64,
    started: Instant,
    forks: AtomicU64,
    /// Children asked for since the last one that became ready, that failed
    /// to (see [`Zygote::spawn_failed`]).
    failed_spawns_in_a_row: AtomicU32,
    control: Control,
    /// The zygote process, PID 1 of its jail. `None` only until it is ready.
    process: Option<JobProcess>,
    jail: Option<Jail>,
    cgroup: Option<JobCgroup>,
    pages: ZygotePages,
    /// Where this zygote's end runs, so that closing the sandbox can wait for it.
    endings: TaskTracker,
}

/// Everything a zygote is started from.
pub struct ZygoteStart<'a> {
    pub nsjail: &'a Nsjail,
    pub launcher: &'a Launcher,
    pub cgroups: &'a Arc<Cgroups>,
    pub cgroup_limits: CgroupLimits,
    pub timeout: Duration,
    pub pages: ZygotePages,
    pub endings: TaskTracker,
}

impl Zygote {
    /// Launches zygote number `generation` and waits until it has imported
    /// numpy and pandas and said ready.
    pub async fn start(generation: u64, from: ZygoteStart<'_>) -> Result<Arc<Zygote>, ZygoteError> {
        let cgroup = from
            .cgroups
            .create(format!("z{generation}"), from.cgroup_limits.clone())
            .await
            .map_err(ZygoteError::Cgroup)?;
        cgroup.set_cpu_priority(CpuPriority::Warmup).await;
        let made = control_pair().and_then(|(ours, theirs)| Ok((Control::new(ours)?, theirs)));
        let (control, theirs) = match made {
            Ok(pair) => pair,
            Err(e) => {
                cgroup.destroy().await;
                return Err(ZygoteError::ControlSocket(e));
            }
        };
        let jail = from
            .nsjail
            .launch(
                from.launcher,
                generation,
                Role::Zygote,
                vec![theirs],
                cgroup.join_fds(),
            )
            .await;
        let jail = match jail {
            Ok(jail) => jail,
            Err(e) => {
                cgroup.destroy().await;
                return Err(ZygoteError::Launch(e));
            }
        };
        // From here on, dropping `zygote` ends whatever was started.
        let mut zygote = Zygote {
            generation,
            started: Instant::now(),
            forks: AtomicU64::new(0),
            failed_spawns_in_a_row: AtomicU32::new(0),
            control,
            process: None,
            jail: Some(jail),
            cgroup: Some(cgroup),
            pages: from.pages,
            endings: from.endings,
        };
        let hello = tokio::time::timeout(from.timeout, zygote.wait_ready()).await;
        // The versions come again on each child's ready frame.
        let host_pid = match hello {
            Ok(Ok((_versions, host_pid))) => host_pid,
            Ok(Err(why)) => return Err(zygote.failure(why).await),
            Err(_) => return Err(zygote.failure(ZygoteNotReady::Timeout(from.timeout)).await),
        };
        zygote.process = Some(JobProcess::open(host_pid).map_err(ZygoteError::Hold)?);
        // Before the first fork: every child then starts from huge pages.
        if let Some(collapsing) = zygote.collapse_pages() {
            let _ = collapsing.await;
        }
        // The zygote's cgroup keeps the warm-up's low CPU weight for good:
        // forks and the children's sealing (charged here until each child
        // moves into its own cgroup) yield to jobs that are running. When
        // jobs wait for workers instead, nothing else competes.
        zygote.control.start();
        Ok(Arc::new(zygote))
    }

    /// Why the start failed, with nsjail's last words.
    async fn failure(&mut self, why: ZygoteNotReady) -> ZygoteError {
        let log = match self.jail.as_mut() {
            Some(jail) => jail.last_words().await,
            None => String::new(),
        };
        ZygoteError::NotReady { why, log }
    }

    async fn wait_ready(&mut self) -> Result<(crate::Versions, i32), ZygoteNotReady> {
        let ready = {
            let jail_ended = async {
                match self.jail.as_mut() {
                    Some(jail) => jail.wait().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                ready = self.control.wait_ready() => ready,
                status = jail_ended => Err(ZygoteNotReady::JailEnded(status)),
            }
        };
        match (ready, self.jail.as_mut()) {
            // nsjail holds the control socket until it exits, so a socket
            // closed before the ready message is nsjail's exit, perhaps not
            // yet reaped: its status says why (255: a setup failure).
            (Err(ZygoteNotReady::Closed), Some(jail)) => {
                match tokio::time::timeout(JAIL_EXIT_GRACE, jail.wait()).await {
                    Ok(status) => Err(ZygoteNotReady::JailEnded(status)),
                    Err(_) => Err(ZygoteNotReady::Closed),
                }
            }
            (ready, _) => ready,
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The zygote process in the server's pid namespace, once it is ready.
    pub fn host_pid(&self) -> Option<i32> {
        self.process.as_ref().map(JobProcess::host_pid)
    }

    /// The zygote process, once it is ready.
    pub fn process(&self) -> Option<&JobProcess> {
        self.process.as_ref()
    }

    pub fn is_alive(&self) -> bool {
        self.control.is_alive()
    }

    /// Completes when the zygote has died (at once if it already has).
    pub async fn died(&self) {
        self.control.died().await;
    }

    pub fn forks(&self) -> u64 {
        self.forks.load(Ordering::Relaxed)
    }

    pub fn age(&self) -> Duration {
        self.started.elapsed()
    }

    /// A child of this zygote failed to become a ready worker (no fork, a
    /// fork that took too long, a child that died first); returns how many
    /// did in a row.
    pub fn spawn_failed(&self) -> u32 {
        self.failed_spawns_in_a_row.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// A child of this zygote became a ready worker.
    pub fn spawn_succeeded(&self) {
        self.failed_spawns_in_a_row.store(0, Ordering::Relaxed);
    }

    pub fn failed_spawns_in_a_row(&self) -> u32 {
        self.failed_spawns_in_a_row.load(Ordering::Relaxed)
    }

    /// Asks for one job child holding `ends` (see [`Control::fork`]).
    ///
    /// Cancel safety: safe to drop.
    pub async fn fork(&self, id: u64, ends: JobEnds) -> Result<Forked, ForkError> {
        let forks = self.forks.fetch_add(1, Ordering::Relaxed) + 1;
        if forks % RECOLLAPSE_EVERY == 0 {
            // In the background: the fork waits only while the kernel holds
            // the zygote's memory map for a range it copies (~ms).
            drop(self.collapse_pages());
        }
        self.control.fork(id, ends).await
    }

    /// Collapses the zygote's anonymous memory into huge pages on a
    /// blocking thread (see `hugepages`); `None` when this zygote keeps
    /// small pages or is not ready. Never fails the zygote: a kernel that
    /// can't is logged and only slower.
    fn collapse_pages(&self) -> Option<tokio::task::JoinHandle<()>> {
        let process = self
            .process
            .as_ref()
            .filter(|_| self.pages == ZygotePages::Huge)?;
        let host_pid = process.host_pid();
        // A pidfd of its own: the zygote may end, and its pidfd be closed
        // and the number reused, while the collapse runs.
        let pidfd = process.pidfd().try_clone_to_owned().ok()?;
        let generation = self.generation;
        Some(tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            match hugepages::collapse(host_pid, &pidfd) {
                Ok(done) => tracing::debug!(
                    zygote = generation,
                    ranges = done.ranges,
                    mib = done.bytes >> 20,
                    refused = done.refused,
                    ms = started.elapsed().as_secs_f64() * 1e3,
                    "zygote memory collapsed into huge pages"
                ),
                Err(e) => tracing::debug!(
                    zygote = generation,
                    error = %e,
                    "zygote memory left in small pages: the kernel refused MADV_COLLAPSE"
                ),
            }
        }))
    }
}

impl Drop for Zygote {
    fn drop(&mut self) {
        if let Some(process) = &self.process {
            // PID 1 of the jail: its death takes every child still running.
            process.kill();
        }
        self.control.shut_down();
        let (jail, cgroup) = (self.jail.take(), self.cgroup.take());
        let generation = self.generation;
        let ending = async move {
            if let Some(mut jail) = jail {
                jail.end(JAIL_EXIT_GRACE).await;
            }
            if let Some(cgroup) = cgroup {
                cgroup.destroy().await;
            }
            tracing::debug!(zygote = generation, "zygote ended");
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            self.endings.spawn_on(ending, &runtime);
        }
    }
}
