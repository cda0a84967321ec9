//! Fork mode: workers are children of a warm zygote, each a fresh sandbox of
//! its own, so a worker costs a fork (a few CPU-milliseconds) instead of an
//! interpreter start and the numpy and pandas imports.
//!
//! ```text
//!  supervisor ── keeps one live zygote current: starts the first, replaces
//!                one that died or whose children keep failing, recycles one
//!                after max_forks or max_age (the replacement is ready
//!                before the old one retires)
//!
//!  spawn(id): cgroup w<id> ┐
//!             job channel  ├─▶ zygote.fork ─▶ child: own pid/mount/ipc/net/
//!                          ┘   user namespaces, session, tmpfs; sealed
//!             ◀── ready frame + credentials (the child's host pid)
//!             pidfd on it; check it is that child; map the ids of its own
//!             user namespace (idmap); move it into w<id> ─▶ warm
//!  run:   job ─▶ answer;  stop: SIGKILL the child (PID 1 of its namespace);
//!  reap:  its exit as the zygote reports it; remove w<id>
//! ```
//!
//! What jobs of one zygote share, and spawn mode's don't: the zygote's
//! memory layout (ASLR) and Python's hash secret. Recycling bounds how long.
//! A job child's host memory charges before the move (its copy-on-write
//! faults while it seals itself, ~2.6 MB) stay with the zygote's cgroup,
//! which is sized for it.

mod control;
mod hugepages;
mod idmap;
mod protocol;
mod supervisor;
mod zygote;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::sandboxed::{self, Ended, ExitSource, SandboxedWorker};
use crate::error::{
    ConfineError, ForkError, SetupError, SpawnError, SpawnFailure, Unready, ZygoteError,
};
use crate::jail::cgroup::{CgroupLimits, CgroupMode, Cgroups};
use crate::jail::launcher::Launcher;
use crate::jail::nsjail::{Nsjail, NsjailConfig};
use crate::jail::process::JobProcess;
use crate::phases::{Phase, PhaseClock, PhaseObserver};
use crate::sandbox::{Sandbox, SelfCheckReport, Worker};
use crate::selfcheck;
use control::{ChildExit, ExitWatch};
pub use hugepages::ZygotePages;
use zygote::Zygote;

/// How long a stopped child's exit may take to be reported before its
/// cgroup is emptied by force.
const EXIT_REPORT_GRACE: Duration = Duration::from_secs(2);

/// When a zygote is replaced by a fresh one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Recycling {
    pub max_forks: u64,
    pub max_age: Duration,
}

/// How many children a zygote may have at once, from the pool's sizing: its
/// cgroup is sized for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZygoteLoad {
    /// Workers the pool keeps warm.
    pub pool_size: usize,
    /// Jobs running at once.
    pub max_jobs: usize,
    /// Spawns in flight at once: children between their fork and their
    /// move into their own cgroup.
    pub parallel_spawns: usize,
}

/// The limits of a zygote's own cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZygoteRoom {
    pub memory_bytes: u64,
    pub max_tasks: u32,
}

/// The zygote's own interpreter with its imports, and room to spare.
const ZYGOTE_OWN_BYTES: u64 = 512 << 20;
/// What a child charges to the zygote's cgroup before it moves into its own
/// (its copy-on-write faults while it seals itself, measured at ~2.6 MB),
/// with room to spare. Those charges stay there as long as the child lives.
const CHILD_CHARGE_BYTES: u64 = 8 << 20;
/// The zygote, nsjail and their threads.
const ZYGOTE_OWN_TASKS: u32 = 32;
/// A child between fork and adoption: itself, and a thread or two while it
/// seals itself.
const TASKS_PER_FORK_IN_FLIGHT: u32 = 4;

impl ZygoteLoad {
    /// The zygote's cgroup limits:
    ///
    /// - memory = max(1 GiB, 2 × a job's memory, 512 MiB + 8 MiB × (pool
    ///   size + jobs at once + spawns in flight)): every child it forked and
    ///   that still lives (warm, running or being made) keeps its pre-move
    ///   charges here;
    /// - tasks = max(256, 32 + 4 × spawns in flight): only children not yet
    ///   moved out count here.
    pub fn room(&self, job_memory_bytes: u64) -> ZygoteRoom {
        let children = (self.pool_size + self.max_jobs + self.parallel_spawns) as u64;
        let memory_bytes = (1u64 << 30)
            .max(job_memory_bytes.saturating_mul(2))
            .max(ZYGOTE_OWN_BYTES + children * CHILD_CHARGE_BYTES);
        let in_flight = u32::try_from(self.parallel_spawns).unwrap_or(u32::MAX);
        let max_tasks = 256u32.max(
            ZYGOTE_OWN_TASKS.saturating_add(in_flight.saturating_mul(TASKS_PER_FORK_IN_FLIGHT)),
        );
        ZygoteRoom {
            memory_bytes,
            max_tasks,
        }
    }
}

/// What the fork sandbox tells the server about its zygotes.
pub trait ZygoteObserver: Send + Sync + 'static {
    /// Zygote `generation` became current; `reason`: "start", "died",
    /// "failing" or "recycled"; `start_time`: launch to ready.
    fn zygote_started(&self, _generation: u64, _reason: &str, _start_time: Duration) {}
    /// A zygote could not be started.
    fn zygote_failed(&self, _generation: u64, _error: &ZygoteError) {}
    /// The current zygote died while it was current.
    fn zygote_died(&self, _generation: u64) {}
}

pub struct NoZygoteObserver;
impl ZygoteObserver for NoZygoteObserver {}

pub struct ForkSandbox {
    inner: Arc<Inner>,
    supervisor: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

struct Inner {
    nsjail: Nsjail,
    cgroups: Arc<Cgroups>,
    launcher: Launcher,
    recycling: Recycling,
    pages: ZygotePages,
    zygote_limits: CgroupLimits,
    observer: Arc<dyn ZygoteObserver>,
    /// The zygote new workers are forked from; `None` while none is live.
    current: watch::Sender<Option<Arc<Zygote>>>,
    generations: AtomicU64,
    /// Why the last zygote start failed, for `/readyz`.
    last_failure: Mutex<Option<Arc<ZygoteError>>>,
    /// Wakes the supervisor before its tick (forks reached the maximum).
    nudge: tokio::sync::Notify,
    stop: CancellationToken,
    /// Zygote endings in progress (see `Zygote`'s drop).
    endings: TaskTracker,
    clock: PhaseClock,
}

impl ForkSandbox {
    /// Checks nsjail's files, prepares the cgroup root, starts the first
    /// zygote and its supervisor. Fails, saying why, if the zygote can't
    /// start. Must be called inside a tokio runtime.
    pub async fn start(
        config: NsjailConfig,
        recycling: Recycling,
        load: ZygoteLoad,
        pages: ZygotePages,
        observer: Arc<dyn ZygoteObserver>,
    ) -> Result<ForkSandbox, SetupError> {
        let cgroups = Cgroups::prepare(&config.cgroup_mount, &config.cgroup_parent)
            .map_err(SetupError::Cgroup)?;
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let room = load.room(config.limits.memory_bytes);
        tracing::info!(
            memory_mb = room.memory_bytes >> 20,
            tasks = room.max_tasks,
            "zygote cgroup sized for the pool"
        );
        let zygote_limits = CgroupLimits {
            memory_bytes: room.memory_bytes,
            max_tasks: room.max_tasks,
            // Forking must never wait behind a quota.
            cpus: cpus as f64,
        };
        let nsjail = Nsjail::new(config)?;
        let launcher = Launcher::start().map_err(SetupError::Launcher)?;
        let inner = Arc::new(Inner {
            nsjail,
            cgroups: Arc::new(cgroups),
            launcher,
            recycling,
            pages,
            zygote_limits,
            observer,
            current: watch::Sender::new(None),
            generations: AtomicU64::new(0),
            last_failure: Mutex::new(None),
            nudge: tokio::sync::Notify::new(),
            stop: CancellationToken::new(),
            endings: TaskTracker::new(),
            clock: PhaseClock::default(),
        });
        let first = match inner.start_zygote("start").await {
            Ok(first) => first,
            Err(e) => {
                // Nothing is left behind: the failed zygote's ending (its
                // jail, its cgroup), then this server's cgroup root.
                inner.endings.close();
                inner.endings.wait().await;
                let cgroups = inner.cgroups.clone();
                let _ = tokio::task::spawn_blocking(move || cgroups.blocking_close()).await;
                // The same causes, and fixes, as a spawn-mode worker's failure.
                return Err(SetupError::cannot_start(format!(
                    "the zygote cannot start: {e}"
                )));
            }
        };
        inner.current.send_replace(Some(first));
        let supervisor = tokio::spawn(supervisor::supervise(inner.clone()));
        Ok(ForkSandbox {
            inner,
            supervisor: Mutex::new(Some(supervisor)),
        })
    }

    pub fn config(&self) -> &NsjailConfig {
        self.inner.nsjail.config()
    }

    pub fn cgroup_mode(&self) -> CgroupMode {
        self.inner.cgroups.mode()
    }

    /// Reports how long each phase of every worker made from now on takes.
    pub fn observe_phases(&self, observer: Arc<dyn PhaseObserver>) {
        self.inner.clock.observe(observer);
    }

    /// The current zygote's generation (1 for the first), if one is live.
    pub fn zygote_generation(&self) -> Option<u64> {
        self.inner.current.borrow().as_ref().map(|z| z.generation())
    }

    /// The current zygote's process, as the host sees it, if one is live.
    pub fn zygote_host_pid(&self) -> Option<i32> {
        self.inner
            .current
            .borrow()
            .as_ref()
            .and_then(|z| z.host_pid())
    }
}

/// One job child of a zygote; the zygote says how it ended.
pub type ForkWorker = SandboxedWorker<ZygoteChild>;

/// What a fork worker holds of its zygote.
pub struct ZygoteChild {
    exit: ExitWatch,
    /// Held so the zygote (and with it this child) lives as long as the worker.
    zygote: Arc<Zygote>,
}

impl ZygoteChild {
    async fn exit_report(&mut self) -> Option<ChildExit> {
        tokio::time::timeout(EXIT_REPORT_GRACE, self.exit.wait_for(Option::is_some))
            .await
            .ok()
            .and_then(Result::ok)
            .and_then(|e| e.clone())
    }
}

impl ExitSource for ZygoteChild {
    async fn ended(&mut self) -> Ended {
        match self.exit_report().await {
            Some(ChildExit::Status(status)) => Ended::Status(status),
            Some(ChildExit::ZygoteGone) => Ended::Lost {
                zygote: self.zygote.generation(),
            },
            None => Ended::Status("unknown status".into()),
        }
    }

    /// Nothing of the mode's own to kill: a child not yet ready finds its
    /// job socket closed when the worker goes, and exits.
    fn kill(&mut self) {}

    /// Once the zygote has reaped the child, its whole pid namespace is gone
    /// and the cgroup is empty (the cgroup's removal kills any straggler).
    async fn settle(&mut self) {
        let _ = self.exit_report().await;
    }

    fn is_alive(&self) -> bool {
        self.zygote.is_alive()
    }
}

impl Sandbox for ForkSandbox {
    type Worker = ForkWorker;

    async fn spawn(&self, id: u64) -> Result<ForkWorker, SpawnError> {
        let fail = |failure| SpawnError::new(id, failure);
        let inner = &self.inner;
        let config = inner.nsjail.config();
        let zygote = inner
            .live_zygote()
            .await
            .map_err(|e| fail(SpawnFailure::Fork(e)))?;
        let clock = &inner.clock;
        let (cgroup, channel, ends) = sandboxed::prepare(&inner.cgroups, config, id, 0, clock)
            .await
            .map_err(fail)?;
        // One bound from the fork request to the child's ready frame. A
        // wedged zygote never answers: without it the spawn, and the pool's
        // slot with it, would wait for it forever.
        let deadline = tokio::time::Instant::now() + config.spawn_timeout;
        let asked = Instant::now();
        let forked = match tokio::time::timeout_at(deadline, zygote.fork(id, ends)).await {
            Ok(Ok(forked)) => {
                clock.since(Phase::Fork, asked);
                forked
            }
            failed => {
                cgroup.destroy().await;
                let error = match failed {
                    Ok(Err(e)) => e,
                    _ => ForkError::NoAnswer(config.spawn_timeout),
                };
                inner.count_failed_spawn(&zygote);
                return Err(fail(SpawnFailure::Fork(error)));
            }
        };
        if zygote.forks() >= inner.recycling.max_forks {
            inner.nudge.notify_one();
        }
        let child = ZygoteChild {
            exit: forked.exit,
            zygote,
        };
        let mut worker = ForkWorker::new(id, channel, cgroup, child, clock.clone());
        let forked_at = Instant::now();
        let ready = tokio::time::timeout_at(deadline, async {
            let (channel, child) = worker.channel_and_exit();
            let mut exit = child.exit.clone();
            tokio::select! {
                ready = channel.wait_ready() => ready.map_err(|error| SpawnFailure::Handshake {
                    error,
                    log: String::new(),
                }),
                ended = exit.wait_for(Option::is_some) => Err(SpawnFailure::ChildEnded {
                    status: match ended.ok().and_then(|e| e.clone()) {
                        Some(ChildExit::Status(status)) => status,
                        Some(ChildExit::ZygoteGone) => "its zygote ended".into(),
                        None => "unknown status".into(),
                    },
                }),
            }
        })
        .await
        .unwrap_or_else(|_| {
            Err(SpawnFailure::NotReady {
                after: config.spawn_timeout,
                log: String::new(),
            })
        });
        let ready = match ready {
            Ok(ready) => {
                clock.since(Phase::Setup, forked_at);
                ready
            }
            Err(failure) => {
                let zygote = worker.exit().zygote.clone();
                worker.reap().await;
                inner.count_failed_spawn(&zygote);
                return Err(fail(failure));
            }
        };
        let zygote = worker.exit().zygote.clone();
        // Timed as the cgroup move: the id map is written in the same step.
        let confining = Instant::now();
        match confine(&worker, ready.host_pid, forked.jail_pid, zygote).await {
            Ok(process) => {
                clock.since(Phase::CgroupMove, confining);
                worker.exit().zygote.spawn_succeeded();
                worker.ready(process, ready.versions);
            }
            Err(error) => {
                worker.reap().await;
                return Err(fail(SpawnFailure::Confine(error)));
            }
        }
        Ok(worker)
    }

    async fn self_check(&self) -> Result<SelfCheckReport, SetupError> {
        let config = self.inner.nsjail.config();
        let expected = selfcheck::Expected::of(config, 0);
        selfcheck::run(
            self,
            &expected,
            self.inner.cgroups.mode(),
            self.inner.nsjail.version(),
            "fork",
        )
        .await
    }

    fn health(&self) -> Result<(), Unready> {
        match self.inner.current.borrow().as_ref() {
            Some(zygote) if zygote.is_alive() => Ok(()),
            _ => Err(Unready::NoZygote {
                last_failure: lock(&self.inner.last_failure).clone(),
            }),
        }
    }

    async fn close(&self) {
        let inner = &self.inner;
        inner.stop.cancel();
        let supervisor = lock(&self.supervisor).take();
        if let Some(supervisor) = supervisor {
            let _ = supervisor.await;
        }
        // The last hold on the current zygote: dropping it starts its end.
        inner.current.send_replace(None);
        inner.endings.close();
        inner.endings.wait().await;
        let cgroups = inner.cgroups.clone();
        let _ = tokio::task::spawn_blocking(move || cgroups.blocking_close()).await;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Holds the child by a pidfd, proves that the pidfd is the child the
/// zygote forked (its pid in the jail, from the pidfd's own fdinfo), maps
/// the ids of its own user namespace (see [`idmap`]), and moves it into the
/// worker's cgroup.
async fn confine(
    worker: &ForkWorker,
    host_pid: i32,
    jail_pid: i32,
    zygote: Arc<Zygote>,
) -> Result<JobProcess, ConfineError> {
    let process = JobProcess::open(host_pid).map_err(ConfineError::Hold)?;
    let cgroup = worker.job_cgroup().cloned().ok_or(ConfineError::NoCgroup)?;
    tokio::task::spawn_blocking(move || {
        let namespaces = pidfd_namespace_pids(process.raw_pidfd())?;
        if namespaces.get(1) != Some(&jail_pid) {
            return Err(ConfineError::NotTheChild {
                host_pid,
                namespaces,
                jail_pid,
            });
        }
        let zygote_process = zygote.process().ok_or(ConfineError::IdMap {
            step: "finding the zygote",
            error: std::io::Error::from_raw_os_error(nix::libc::ESRCH),
        })?;
        idmap::write(zygote_process, &process)?;
        cgroup
            .blocking_adopt(host_pid)
            .map_err(ConfineError::Adopt)?;
        Ok(process)
    })
    .await
    .map_err(|e| ConfineError::Task(e.to_string()))?
}

/// The pids of the process behind `pidfd` in each pid namespace it is in,
/// outermost first (`NSpid:` of its fdinfo).
fn pidfd_namespace_pids(pidfd: i32) -> Result<Vec<i32>, ConfineError> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{pidfd}"))
        .map_err(|e| ConfineError::Fdinfo(e.to_string()))?;
    let line = info
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .ok_or_else(|| ConfineError::Fdinfo("the pidfd's fdinfo has no NSpid line".into()))?;
    Ok(line
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_pool_keeps_the_floor_and_a_large_one_grows_the_zygotes_room() {
        let small = ZygoteLoad {
            pool_size: 16,
            max_jobs: 6,
            parallel_spawns: 2,
        };
        assert_eq!(
            small.room(256 << 20),
            ZygoteRoom {
                memory_bytes: 1 << 30,
                max_tasks: 256
            }
        );
        // A job memory limit of 1 GiB: the zygote gets twice that.
        assert_eq!(small.room(1 << 30).memory_bytes, 2 << 30);
        // 32 CPUs' worth: 256 warm, 96 running, 32 being made.
        let large = ZygoteLoad {
            pool_size: 256,
            max_jobs: 96,
            parallel_spawns: 32,
        };
        let room = large.room(256 << 20);
        assert_eq!(room.memory_bytes, (512 << 20) + 384 * (8 << 20));
        assert_eq!(room.max_tasks, 256);
        let huge_spawns = ZygoteLoad {
            parallel_spawns: 100,
            ..large
        };
        assert_eq!(huge_spawns.room(256 << 20).max_tasks, 32 + 400);
    }
}
