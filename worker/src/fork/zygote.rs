//! One zygote: `python/zygote.py` in a jail of its own, spoken to over a
//! SOCK_SEQPACKET control socket (the protocol is in zygote.py's docstring).
//!
//! ```text
//!  fork(id, job ends) ──{"type":"fork"} + SCM_RIGHTS──▶ zygote
//!                     ◀──{"type":"forked","pid":P}────── (P: pid in the jail)
//!  reader task        ◀──{"type":"exited","pid":P,…}──── when the zygote reaps P
//! ```
//!
//! The reader task owns the receiving side: it answers each pending fork and
//! fills the exit watch of each child. When the control socket closes (the
//! zygote died, or was killed), every pending fork fails and every child's
//! exit watch says the zygote is gone: its children died with it, because
//! the zygote is PID 1 of the jail's pid namespace.
//!
//! A zygote lives as long as someone holds it: the sandbox while it is the
//! current one, and each worker it forked. The last one to let go ends it:
//! the zygote process is killed, nsjail waited for, its cgroup removed.

use std::collections::HashMap;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::socket::{
    recvmsg, sendmsg, setsockopt, socketpair, sockopt, AddressFamily, ControlMessage,
    ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixCredentials,
};
use serde::Deserialize;
use tokio::io::unix::AsyncFd;
use tokio::sync::{oneshot, watch, Notify};
use tokio_util::task::TaskTracker;

use crate::cgroup::{CgroupLimits, Cgroups, CpuPriority, JobCgroup};
use crate::channel::JobEnds;
use crate::launcher::Launcher;
use crate::nsjail::{describe_signal, Jail, Nsjail, Role};
use crate::process::JobProcess;
use crate::protocol::Versions;

/// Largest control message; the zygote's are a few dozen bytes.
const MAX_MESSAGE: usize = 64 * 1024;
/// How long nsjail may take to exit once the zygote is dead.
const JAIL_EXIT_GRACE: Duration = Duration::from_secs(2);

/// How a job child ended, as its zygote saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChildExit {
    /// Reaped by the zygote: "exit status 0", "killed by signal 9 (SIGKILL)".
    Status(String),
    /// The zygote itself ended; its children died with it.
    ZygoteGone,
}

/// Where a child's end will be announced.
pub type ExitWatch = watch::Receiver<Option<ChildExit>>;

/// A child the zygote forked for a job.
pub struct Forked {
    /// Its pid in the zygote's (the jail's) pid namespace.
    pub jail_pid: i32,
    pub exit: ExitWatch,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum FromZygote {
    Ready(Versions),
    Forked {
        id: u64,
        pid: i32,
    },
    ForkFailed {
        id: Option<u64>,
        message: String,
    },
    Exited {
        pid: i32,
        exit_code: Option<i32>,
        signal: Option<i32>,
    },
}

/// What the reader task and the forking side share. The reader holds only
/// this, never the [`Zygote`], so it can't keep a zygote alive.
struct Shared {
    control: AsyncFd<OwnedFd>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Result<Forked, String>>>>,
    exits: Mutex<HashMap<i32, watch::Sender<Option<ChildExit>>>>,
    alive: AtomicBool,
    /// Woken when the zygote dies.
    died: Notify,
}

pub struct Zygote {
    generation: u64,
    started: Instant,
    forks: AtomicU64,
    /// Children asked for since the last one that became ready, that failed
    /// to (see [`Zygote::spawn_failed`]).
    failed_spawns_in_a_row: AtomicU32,
    shared: Arc<Shared>,
    /// The zygote process, PID 1 of its jail. `None` only once ended.
    process: Option<JobProcess>,
    jail: Option<Jail>,
    cgroup: Option<JobCgroup>,
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
    pub endings: TaskTracker,
}

impl Zygote {
    /// Launches zygote number `generation` and waits until it has imported
    /// numpy and pandas and said ready.
    pub async fn start(generation: u64, from: ZygoteStart<'_>) -> Result<Arc<Zygote>, String> {
        let cgroup = from
            .cgroups
            .create_blocking(format!("z{generation}"), from.cgroup_limits.clone())
            .await
            .map_err(|e| format!("cannot create the zygote's cgroup: {e}"))?;
        cgroup.set_cpu_priority_blocking(CpuPriority::Warmup).await;
        let (ours, theirs) = match control_pair() {
            Ok(pair) => pair,
            Err(e) => {
                cgroup.destroy().await;
                return Err(format!("cannot make the zygote's control socket: {e}"));
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
                return Err(format!("cannot start nsjail: {e}"));
            }
        };
        // SAFETY: `ours` is an OwnedFd that moves into the AsyncFd, so the
        // descriptor stays open exactly as long as the registration.
        let control = match unsafe { AsyncFd::register(ours) } {
            Ok(control) => control,
            Err(e) => {
                cgroup.destroy().await;
                return Err(format!("cannot watch the control socket: {e}"));
            }
        };
        // From here on, dropping `zygote` ends whatever was started.
        let mut zygote = Zygote {
            generation,
            started: Instant::now(),
            forks: AtomicU64::new(0),
            failed_spawns_in_a_row: AtomicU32::new(0),
            shared: Arc::new(Shared {
                control,
                pending: Mutex::default(),
                exits: Mutex::default(),
                alive: AtomicBool::new(false),
                died: Notify::new(),
            }),
            process: None,
            jail: Some(jail),
            cgroup: Some(cgroup),
            endings: from.endings,
        };
        let hello = tokio::time::timeout(from.timeout, zygote.wait_ready()).await;
        // The versions come again on each child's ready frame.
        let (_versions, host_pid) = match hello {
            Ok(Ok(ready)) => ready,
            Ok(Err(why)) => return Err(zygote.failure(&why).await),
            Err(_) => {
                let why = format!("not ready within {:?}", from.timeout);
                return Err(zygote.failure(&why).await);
            }
        };
        zygote.process =
            Some(JobProcess::open(host_pid).map_err(|e| format!("cannot hold the zygote: {e}"))?);
        // The zygote's cgroup keeps the warm-up's low CPU weight for good:
        // forks and the children's sealing (charged here until each child
        // moves into its own cgroup) yield to jobs that are running. When
        // jobs wait for workers instead, nothing else competes.
        zygote.shared.alive.store(true, Ordering::SeqCst);
        tokio::spawn(read_control(zygote.shared.clone()));
        Ok(Arc::new(zygote))
    }

    /// Why the start failed, with nsjail's last words.
    async fn failure(&mut self, why: &str) -> String {
        let words = match self.jail.as_mut() {
            Some(jail) => jail.last_words().await,
            None => String::new(),
        };
        format!("{why}: {words}")
    }

    async fn wait_ready(&mut self) -> Result<(Versions, i32), String> {
        let received = tokio::select! {
            received = receive(&self.shared.control) => received,
            status = async { match self.jail.as_mut() { Some(jail) => jail.wait().await, None => std::future::pending().await } } => {
                return Err(format!("the zygote's jail ended before it was ready ({status})"));
            }
        };
        let (bytes, credentials) =
            received.map_err(|e| format!("the control socket failed: {e}"))?;
        if bytes.is_empty() {
            return Err("the zygote ended before it was ready".into());
        }
        let host_pid = credentials
            .map(|c| c.pid())
            .filter(|&p| p > 0)
            .ok_or("the zygote's ready message came without credentials")?;
        match serde_json::from_slice(&bytes) {
            Ok(FromZygote::Ready(versions)) => Ok((versions, host_pid)),
            Ok(_) => Err("the zygote sent something before it was ready".into()),
            Err(e) => Err(format!("the zygote's ready message was unreadable: {e}")),
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn is_alive(&self) -> bool {
        self.shared.alive.load(Ordering::SeqCst)
    }

    /// Completes when the zygote has died (at once if it already has).
    pub async fn died(&self) {
        let notified = self.shared.died.notified();
        if self.is_alive() {
            notified.await;
        }
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

    /// Asks for one job child holding `ends`. The child then sends its ready
    /// frame on the job socket by itself.
    ///
    /// Cancel safety: safe to drop. A child forked for a request that was
    /// dropped finds its job socket closed and exits.
    pub async fn fork(&self, id: u64, ends: JobEnds) -> Result<Forked, String> {
        let (reply, answer) = oneshot::channel();
        let pending = PendingFork {
            id,
            shared: &self.shared,
        };
        self.shared
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, reply);
        if !self.is_alive() {
            return Err("the zygote has ended".into());
        }
        self.forks.fetch_add(1, Ordering::Relaxed);
        let message = format!(r#"{{"type":"fork","id":{id}}}"#);
        let fds = [
            ends.socket.as_raw_fd(),
            ends.stdout.as_raw_fd(),
            ends.stderr.as_raw_fd(),
        ];
        send(&self.shared.control, message.as_bytes(), &fds)
            .await
            .map_err(|e| format!("cannot ask the zygote for a child: {e}"))?;
        // The zygote holds copies now; the child will hold the only ones.
        drop(ends);
        let forked = answer
            .await
            .unwrap_or_else(|_| Err("the zygote ended before it forked".into()));
        drop(pending);
        forked
    }
}

/// Removes a fork's entry from the pending table however `fork` ends.
struct PendingFork<'a> {
    id: u64,
    shared: &'a Shared,
}

impl Drop for PendingFork<'_> {
    fn drop(&mut self) {
        self.shared
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

impl Drop for Zygote {
    fn drop(&mut self) {
        if let Some(process) = &self.process {
            // PID 1 of the jail: its death takes every child still running.
            process.kill();
        }
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

/// The reader task: dispatches the zygote's messages until its socket closes.
async fn read_control(shared: Arc<Shared>) {
    loop {
        let message = match receive(&shared.control).await {
            Ok((bytes, _)) if !bytes.is_empty() => bytes,
            _ => break,
        };
        match serde_json::from_slice::<FromZygote>(&message) {
            Ok(FromZygote::Forked { id, pid }) => {
                let (sender, exit) = watch::channel(None);
                lock(&shared.exits).insert(pid, sender);
                if let Some(reply) = lock(&shared.pending).remove(&id) {
                    let _ = reply.send(Ok(Forked {
                        jail_pid: pid,
                        exit,
                    }));
                }
            }
            Ok(FromZygote::ForkFailed { id, message }) => {
                if let Some(reply) = id.and_then(|id| lock(&shared.pending).remove(&id)) {
                    let _ = reply.send(Err(format!("the zygote could not fork: {message}")));
                }
            }
            Ok(FromZygote::Exited {
                pid,
                exit_code,
                signal,
            }) => {
                let status = match (exit_code, signal) {
                    (_, Some(signal)) => describe_signal(signal),
                    (Some(code), None) => format!("exit status {code}"),
                    (None, None) => "unknown status".into(),
                };
                if let Some(sender) = lock(&shared.exits).remove(&pid) {
                    let _ = sender.send(Some(ChildExit::Status(status)));
                }
            }
            Ok(FromZygote::Ready(_)) | Err(_) => {
                tracing::warn!(
                    message = %String::from_utf8_lossy(&message[..message.len().min(200)]),
                    "the zygote sent an unexpected control message; ending it"
                );
                break;
            }
        }
    }
    shared.alive.store(false, Ordering::SeqCst);
    for (_, reply) in lock(&shared.pending).drain() {
        let _ = reply.send(Err("the zygote ended".into()));
    }
    for (_, sender) in lock(&shared.exits).drain() {
        let _ = sender.send(Some(ChildExit::ZygoteGone));
    }
    shared.died.notify_waiters();
    // A zygote that stopped making sense is not left running: without its
    // control socket it exits, and its jail with it.
    let _ =
        nix::sys::socket::shutdown(shared.control.as_raw_fd(), nix::sys::socket::Shutdown::Both);
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn control_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )?;
    // The zygote must block on its end; only ours is non-blocking.
    nix::fcntl::fcntl(
        &theirs,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
    )?;
    setsockopt(&ours, sockopt::PassCred, &true)?;
    Ok((ours, theirs))
}

async fn send(control: &AsyncFd<OwnedFd>, message: &[u8], fds: &[RawFd]) -> io::Result<()> {
    loop {
        let mut ready = control.writable().await?;
        let sent = ready.try_io(|inner| {
            let rights = [ControlMessage::ScmRights(fds)];
            sendmsg::<()>(
                inner.as_raw_fd(),
                &[IoSlice::new(message)],
                &rights,
                MsgFlags::MSG_NOSIGNAL,
                None,
            )
            .map_err(io::Error::from)
        });
        match sent {
            Ok(result) => return result.map(|_| ()),
            Err(_would_block) => continue,
        }
    }
}

/// One whole message and its sender's credentials; empty at end of stream.
async fn receive(control: &AsyncFd<OwnedFd>) -> io::Result<(Vec<u8>, Option<UnixCredentials>)> {
    let mut buffer = vec![0u8; MAX_MESSAGE];
    loop {
        let mut ready = control.readable().await?;
        let received = ready.try_io(|inner| {
            let mut space = nix::cmsg_space!(UnixCredentials);
            let mut iov = [IoSliceMut::new(&mut buffer)];
            let message = recvmsg::<()>(
                inner.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            )
            .map_err(io::Error::from)?;
            if message.flags.contains(MsgFlags::MSG_TRUNC) {
                return Err(io::Error::other("a control message was too long"));
            }
            let credentials = message.cmsgs().ok().and_then(|mut cmsgs| {
                cmsgs.find_map(|cmsg| match cmsg {
                    ControlMessageOwned::ScmCredentials(c) => Some(c),
                    _ => None,
                })
            });
            Ok((message.bytes, credentials))
        });
        match received {
            Ok(Ok((bytes, credentials))) => {
                buffer.truncate(bytes);
                return Ok((buffer, credentials));
            }
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
}
