//! The errors at the sandbox's edge, one enum per thing that can fail (a
//! cgroup, the ready handshake, a zygote, a fork, a spawn, the set-up), so a
//! caller tells a missing nsjail from a failed fork by its variant, never by
//! its text. The text is built from them.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

use crate::job::codec::FrameError;

/// A cgroup could not be made, set or used.
#[derive(Debug, Error)]
pub enum CgroupError {
    #[error(
        "no usable cgroup filesystem at {}: pyexec needs the memory, pids and cpu controllers \
         (cgroup v2, or v1 with each mounted under {0}/<controller>)", mount.display()
    )]
    NoHierarchy { mount: PathBuf },
    #[error(
        "the cgroup v2 hierarchy at {} does not offer the {missing} controller (it offers: \
         {offered:?}); pyexec needs memory, pids and cpu", mount.display()
    )]
    MissingController {
        mount: PathBuf,
        missing: &'static str,
        offered: String,
    },
    #[error(
        "cannot create {}: the cgroup filesystem is read-only. In Docker, run with --cap-add \
         SYS_ADMIN --security-opt seccomp=unconfined --cgroupns private (the image's entrypoint \
         then remounts the container's own cgroups writable)", dir.display()
    )]
    ReadOnly { dir: PathBuf },
    #[error("cannot create {}: {source}", dir.display())]
    Create { dir: PathBuf, source: io::Error },
    #[error("cannot write {value:?} to {}: {source}", file.display())]
    Write {
        file: PathBuf,
        value: String,
        source: io::Error,
    },
    #[error("a cgroup task on the blocking pool failed: {0}")]
    Task(String),
}

/// The job process did not report ready on its job socket.
#[derive(Debug, Error)]
pub enum HandshakeError {
    #[error("the ready frame came without the sender's credentials")]
    NoCredentials,
    #[error("the job process failed to start: {0}")]
    RunnerFailed(String),
    #[error("the job process sent a result before it was ready")]
    ResultBeforeReady,
    #[error("the ready frame was unreadable: {0}")]
    Unreadable(FrameError),
    #[error("the job socket failed before the process was ready: {0}")]
    Socket(io::Error),
    #[error("the job process ended before it was ready")]
    Closed,
}

/// A zygote could not be started or held.
#[derive(Debug, Error)]
pub enum ZygoteError {
    #[error("cannot create the zygote's cgroup: {0}")]
    Cgroup(CgroupError),
    #[error("cannot make the zygote's control socket: {0}")]
    ControlSocket(io::Error),
    #[error("cannot start nsjail: {0}")]
    Launch(io::Error),
    /// It never said ready; `log` is what nsjail said.
    #[error("{why}: {log}")]
    NotReady { why: ZygoteNotReady, log: String },
    #[error("cannot hold the zygote's process: {0}")]
    Hold(io::Error),
}

/// How the wait for a zygote's ready message ended instead.
#[derive(Debug, Error)]
pub enum ZygoteNotReady {
    #[error("the zygote's jail ended before it was ready ({0})")]
    JailEnded(String),
    #[error("the zygote ended before it was ready")]
    Closed,
    #[error("not ready within {0:?}")]
    Timeout(Duration),
    #[error("the control socket failed: {0}")]
    Socket(io::Error),
    #[error("the zygote's ready message came without credentials")]
    NoCredentials,
    #[error("the zygote sent something before it was ready")]
    UnexpectedMessage,
    #[error("the zygote's ready message was unreadable: {0}")]
    Unreadable(serde_json::Error),
}

/// Why a sandbox can't make workers right now (read by `/readyz`).
#[derive(Debug, Error)]
pub enum Unready {
    #[error("no live zygote (restarting){}", last_failure.as_ref().map(|e| format!("; last start failure: {e}")).unwrap_or_default())]
    NoZygote {
        last_failure: Option<std::sync::Arc<ZygoteError>>,
    },
}

/// The zygote did not fork a child for a worker.
#[derive(Debug, Error)]
pub enum ForkError {
    #[error("no live zygote within {waited:?}; last start failure: {}", last_failure.as_ref().map_or("none".to_string(), |e| e.to_string()))]
    NoZygote {
        waited: Duration,
        last_failure: Option<std::sync::Arc<ZygoteError>>,
    },
    #[error("the sandbox is closing")]
    Closing,
    #[error("the zygote has ended")]
    ZygoteEnded,
    #[error("cannot ask the zygote for a child: {0}")]
    Send(io::Error),
    #[error("the zygote could not fork: {0}")]
    Refused(String),
    #[error("the zygote did not answer within {0:?}")]
    NoAnswer(Duration),
}

/// Why a worker could not be started.
#[derive(Debug, Error)]
#[error("worker {worker}: {failure}")]
pub struct SpawnError {
    pub worker: u64,
    pub failure: SpawnFailure,
}

impl SpawnError {
    pub fn new(worker: u64, failure: SpawnFailure) -> SpawnError {
        SpawnError { worker, failure }
    }
}

/// What went wrong in a spawn.
#[derive(Debug, Error)]
pub enum SpawnFailure {
    #[error("cannot create its cgroup: {0}")]
    Cgroup(CgroupError),
    #[error("cannot make its job channel: {0}")]
    Channel(io::Error),
    #[error("cannot start nsjail: {0}")]
    Launch(io::Error),
    #[error("the zygote did not fork it: {0}")]
    Fork(ForkError),
    #[error("{error}: {log}")]
    Handshake { error: HandshakeError, log: String },
    /// Spawn mode: nsjail exited first. `log` is what it said.
    #[error("the jail ended before the runner was ready ({status}): {log}")]
    JailEnded { status: String, log: String },
    /// Fork mode: the zygote reported the child's end first.
    #[error("the child ended before it was ready ({status})")]
    ChildEnded { status: String },
    #[error("not ready within {after:?}: {log}")]
    NotReady { after: Duration, log: String },
    #[error("cannot hold its process: {0}")]
    Hold(io::Error),
    /// Fork mode: the ready frame came from a process that is not the child
    /// the zygote forked, or the child could not be moved into its cgroup.
    #[error("cannot confine the child: {0}")]
    Confine(ConfineError),
}

/// A fork-mode child could not be confined to its worker's cgroup.
#[derive(Debug, Error)]
pub enum ConfineError {
    #[error("cannot hold it by a pidfd: {0}")]
    Hold(io::Error),
    #[error("cannot read the pidfd's namespaces: {0}")]
    Fdinfo(String),
    #[error("the ready frame came from pid {host_pid} (NSpid {namespaces:?}), not the zygote's child {jail_pid}")]
    NotTheChild {
        host_pid: i32,
        namespaces: Vec<i32>,
        jail_pid: i32,
    },
    #[error("cannot move it into its cgroup: {0}")]
    Adopt(io::Error),
    #[error("the worker has no cgroup")]
    NoCgroup,
    #[error("cannot map its user namespace's ids ({step}): {error}")]
    IdMap {
        step: &'static str,
        error: io::Error,
    },
    #[error("a task on the blocking pool failed: {0}")]
    Task(String),
}

/// The sandbox failed a job that the script did nothing wrong in: our fault.
#[derive(Debug, Error)]
pub enum SandboxFault {
    #[error("the job process took no job: {0}")]
    Send(FrameError),
    #[error("the runner failed: {0}")]
    Runner(String),
    #[error("cannot apply the job's memory limit: {0}")]
    MemoryLimit(io::Error),
}

/// The job process sent something that breaks the job protocol: the script
/// interfered with its channel. The text is the client's message.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ProtocolViolation {
    #[error("the job process sent a second ready message")]
    SecondReady,
    #[error("a frame was larger than {limit} bytes")]
    FrameTooLarge { limit: usize },
    #[error("a frame was malformed: {0}")]
    Malformed(String),
}

/// What cannot be set up; the server refuses to serve, and each message says
/// what is missing and how to fix it.
#[derive(Debug, Error)]
pub enum SetupError {
    #[error("{what} is missing: {} does not exist ({variable}); {fix}", path.display())]
    Missing {
        what: &'static str,
        path: PathBuf,
        variable: &'static str,
        fix: &'static str,
    },
    #[error("{variable}={}: {reason}", path.display())]
    BadPath {
        variable: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{0}")]
    Cgroup(CgroupError),
    #[error("cannot start the launcher thread: {0}")]
    Launcher(io::Error),
    /// The first worker (or zygote) can't start: the cause, and its likely fix.
    #[error(
        "the sandbox cannot start a worker, so pyexec will not serve.\n{cause}\nLikely fix: {hint}"
    )]
    CannotStart { cause: String, hint: &'static str },
    /// The self-check found a wall missing, or could not run its canary.
    #[error("sandbox self-check failed: {0}")]
    SelfCheck(String),
}

impl SetupError {
    /// A worker or zygote that can't start at start-up, with the likely cause
    /// and its fix.
    pub fn cannot_start(cause: impl std::fmt::Display) -> SetupError {
        let cause = cause.to_string();
        let gvisor = std::fs::read_to_string("/proc/version").is_ok_and(|v| v.contains("gVisor"));
        let hint = if gvisor || cause.contains("PR_SET_SECUREBITS") {
            "this looks like gVisor (Cloud Run's first generation), where nsjail cannot work: \
             deploy with --execution-environment=gen2"
        } else if cause.contains("Operation not permitted") || cause.contains("EPERM") {
            "the kernel refused to create namespaces or mounts: run as root with user \
             namespaces enabled; in Docker add --cap-add SYS_ADMIN --security-opt \
             seccomp=unconfined --cgroupns private (on AppArmor hosts also --security-opt \
             apparmor=unconfined)"
        } else if cause.contains("No such file") {
            "a path in nsjail.cfg or the sandbox Python is missing: run `make setup`"
        } else {
            "see nsjail's messages above"
        };
        SetupError::CannotStart { cause, hint }
    }
}
