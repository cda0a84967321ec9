//! The jail-policy tests' harness: a sandbox of either mode started with the
//! server's configuration (or a broken copy of it), a probe script run on one
//! of its real workers, what the host sees of that worker (`/proc`, its
//! cgroup files), and the ledger of checks a section keeps.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pyexec_worker::testing::Observe;
use pyexec_worker::{
    ForkSandbox, JobFailure, NoZygoteObserver, NsjailConfig, Sandbox, SetupError, SpawnSandbox,
    Worker, ZygotePages,
};

use crate::common::{self, scaled};

/// One isolation mode: how its sandbox starts, and what it has of its own.
pub trait Kind: 'static {
    /// "spawn" or "fork", as the probe's lines name it.
    const NAME: &'static str;
    type Worker: Worker + Observe;
    type Sandbox: Sandbox<Worker = Self::Worker>;

    fn start(config: NsjailConfig) -> impl Future<Output = Result<Self::Sandbox, SetupError>>;

    /// The zygote's host pid (fork mode).
    fn zygote_pid(sandbox: &Self::Sandbox) -> Option<i32>;
}

pub struct Spawn;
pub struct Fork;

impl Kind for Spawn {
    const NAME: &'static str = "spawn";
    type Worker = <SpawnSandbox as Sandbox>::Worker;
    type Sandbox = SpawnSandbox;

    async fn start(config: NsjailConfig) -> Result<SpawnSandbox, SetupError> {
        SpawnSandbox::new(config)
    }

    fn zygote_pid(_: &SpawnSandbox) -> Option<i32> {
        None
    }
}

impl Kind for Fork {
    const NAME: &'static str = "fork";
    type Worker = <ForkSandbox as Sandbox>::Worker;
    type Sandbox = ForkSandbox;

    async fn start(config: NsjailConfig) -> Result<ForkSandbox, SetupError> {
        ForkSandbox::start(
            config,
            common::zygote_recycling(),
            common::zygote_load(),
            ZygotePages::Huge,
            Arc::new(NoZygoteObserver),
        )
        .await
    }

    fn zygote_pid(sandbox: &ForkSandbox) -> Option<i32> {
        sandbox.zygote_host_pid()
    }
}

pub fn is_fork<K: Kind>() -> bool {
    K::NAME == "fork"
}

// ------------------------------------------------------------------ checks

/// The checks of one mode, section by section: each printed as it is made
/// (`PASS  [mode/section] property (what was seen)`, visible with
/// `--nocapture`), and every failure listed at the end, with what the jobs
/// printed.
pub struct Checks {
    mode: &'static str,
    /// "spawn/basics": the mode and the current section.
    label: String,
    failed: Vec<String>,
    passed: usize,
    context: String,
}

impl Checks {
    pub fn new<K: Kind>() -> Checks {
        Checks {
            mode: K::NAME,
            label: K::NAME.to_string(),
            failed: Vec::new(),
            passed: 0,
            context: String::new(),
        }
    }

    /// The checks from here on are this section's.
    pub fn section(&mut self, section: &str) {
        self.label = format!("{}/{section}", self.mode);
    }

    /// Records one property; true if it holds.
    pub fn check(&mut self, property: impl AsRef<str>, holds: bool) -> bool {
        let property = property.as_ref();
        if holds {
            self.passed += 1;
            println!("PASS  [{}] {property}", self.label);
        } else {
            println!("FAIL  [{}] {property}", self.label);
            self.failed.push(format!("[{}] {property}", self.label));
        }
        holds
    }

    /// A measurement, not a check.
    pub fn info(&self, text: impl AsRef<str>) {
        println!("INFO  [{}] {}", self.label, text.as_ref());
    }

    /// What to show if a check fails (a job's output).
    pub fn context(&mut self, text: impl AsRef<str>) {
        let _ = writeln!(self.context, "{}", text.as_ref());
    }

    /// Panics listing every failed check, if any did.
    pub fn finish(self) {
        println!(
            "==    [{}] {} passed, {} failed",
            self.mode,
            self.passed,
            self.failed.len()
        );
        assert!(
            self.failed.is_empty(),
            "[{}] {} check(s) failed:\n  {}\n\nwhat the jobs did:\n{}",
            self.mode,
            self.failed.len(),
            self.failed.join("\n  "),
            self.context
        );
    }
}

// ------------------------------------------------------------------ the sandbox

/// A sandbox of mode `K` on a cgroup parent of its own, with the server's
/// configuration as `tweak` changes it.
pub struct Jail<K: Kind> {
    pub sandbox: K::Sandbox,
    pub config: NsjailConfig,
}

impl<K: Kind> Jail<K> {
    pub async fn start(name: &str, tweak: impl FnOnce(&mut NsjailConfig)) -> Jail<K> {
        let mut config = common::config(&format!("jp-{name}-{}", K::NAME));
        tweak(&mut config);
        let sandbox = K::start(config.clone())
            .await
            .unwrap_or_else(|e| panic!("the {} sandbox starts: {e}", K::NAME));
        Jail { sandbox, config }
    }

    /// The server's configuration.
    pub async fn standard(name: &str) -> Jail<K> {
        Jail::start(name, |_| {}).await
    }

    pub fn zygote_pid(&self) -> Option<i32> {
        K::zygote_pid(&self.sandbox)
    }

    /// A ready worker, seen from outside before it gets its job.
    pub async fn worker(&self) -> Probe<K::Worker> {
        let started = Instant::now();
        let worker = self
            .sandbox
            .spawn(common::next_id())
            .await
            .unwrap_or_else(|e| panic!("a {} worker starts: {e}", K::NAME));
        let ready_after = started.elapsed();
        let pid = worker.job_pid().expect("a ready worker has a job process");
        let cgroup = CgroupFiles::new(worker.cgroup_dirs());
        let before = Before {
            status: ProcStatus::of(pid),
            in_cgroups: cgroup.holds(pid),
            cgroup_path: cgroup_path(pid, "memory"),
            cpu_used: cgroup.cpu_used(),
        };
        Probe {
            worker,
            pid,
            cgroup,
            before,
            ready_after,
            fork_mode: is_fork::<K>(),
            outcome: None,
            run_time: Duration::ZERO,
        }
    }

    /// `script` on a fresh worker, given `bound` to answer (the test stops
    /// it then); the worker reaped afterwards.
    pub async fn probe(&self, script: &str, bound: Duration) -> Done {
        let mut probe = self.worker().await;
        probe.run(script, bound).await;
        probe.finish().await
    }

    /// Closes the sandbox; nothing of it may be left in the cgroup tree.
    pub async fn close(self) {
        self.sandbox.close().await;
        common::assert_no_cgroups_left(&self.config);
    }
}

/// What the host sees of a ready worker before its job.
pub struct Before {
    pub status: ProcStatus,
    /// The job process is listed in each of its worker's cgroup directories.
    pub in_cgroups: bool,
    /// Its memory cgroup, as `/proc/<pid>/cgroup` names it.
    pub cgroup_path: Option<String>,
    /// The CPU time its cgroup counted so far (spawn mode: the interpreter's
    /// start and imports, and nsjail's; fork mode: the child's sealing).
    pub cpu_used: Option<Duration>,
}

/// A worker of a test, and what the host saw of it.
pub struct Probe<W: Worker + Observe> {
    pub worker: W,
    /// The job process's host pid.
    pub pid: i32,
    pub cgroup: CgroupFiles,
    pub before: Before,
    /// From the spawn request to a ready worker.
    pub ready_after: Duration,
    fork_mode: bool,
    /// The job's outcome once run; `None` if it did not answer in time.
    pub outcome: Option<Result<String, JobFailure>>,
    pub run_time: Duration,
}

impl<W: Worker + Observe> Probe<W> {
    /// Runs `script` (a probe, at the script's top level) as the worker's
    /// job; `None` if it did not answer within `bound`.
    pub async fn run(&mut self, script: &str, bound: Duration) {
        self.run_job(&common::job(&with_main(script)), bound).await;
    }

    /// Runs `job` as the worker's job; `None` if it did not answer within
    /// `bound`.
    pub async fn run_job(&mut self, job: &pyexec_worker::Job, bound: Duration) {
        let started = Instant::now();
        let outcome = tokio::time::timeout(bound, self.worker.run(job)).await;
        self.run_time = started.elapsed();
        self.outcome = outcome.ok().map(|r| r.map(|r| r.result.get().to_string()));
    }

    /// The job's end as the mode learns it (nsjail's exit status, or the
    /// zygote's report), waiting at most `bound`; "no end within …" if none.
    pub async fn ended(&mut self, bound: Duration) -> String {
        let started = Instant::now();
        loop {
            let left = bound.saturating_sub(started.elapsed());
            match tokio::time::timeout(left, self.worker.ended()).await {
                // Fork mode: the zygote's report did not come within its grace.
                Ok(status) if status == "unknown status" && started.elapsed() < bound => {}
                Ok(status) => return status,
                Err(_) => return format!("no end within {bound:?}"),
            }
        }
    }

    /// nsjail's log (spawn mode; fork mode has none), once it holds a line
    /// `holds` accepts, or as it is after `bound`: its reader may lag the
    /// jail's exit.
    pub async fn launcher_log(&self, bound: Duration, holds: impl Fn(&str) -> bool) -> String {
        if self.fork_mode {
            return String::new();
        }
        wait_until(bound, || holds(&self.worker.launcher_log())).await;
        self.worker.launcher_log()
    }

    /// Stops the worker, reads its output and its cgroup's counters, reaps it.
    pub async fn finish(mut self) -> Done {
        self.worker.stop();
        let (stdout, stderr) = self.worker.output().await;
        let counters = self.cgroup.counters();
        self.worker.reap().await;
        Done {
            ran: Ran {
                outcome: self.outcome,
                stdout: stdout.text(),
                stderr: stderr.text(),
                run_time: self.run_time,
            },
            before: self.before,
            counters,
            ready_after: self.ready_after,
        }
    }
}

/// A probe's whole life, once its worker is reaped.
pub struct Done {
    pub ran: Ran,
    pub before: Before,
    /// The worker's cgroup, read after the job.
    pub counters: Counters,
    pub ready_after: Duration,
}

/// A probe script's `def main()`: it runs at the script's top level.
pub fn with_main(script: &str) -> String {
    format!("{script}\n\ndef main():\n    return {{}}\n")
}

/// What a probe job did.
pub struct Ran {
    /// `None`: no answer within its bound.
    pub outcome: Option<Result<String, JobFailure>>,
    pub stdout: String,
    pub stderr: String,
    pub run_time: Duration,
}

impl Ran {
    pub fn answered(&self) -> bool {
        matches!(self.outcome, Some(Ok(_)))
    }

    /// Stdout holds exactly this line.
    pub fn has(&self, line: &str) -> bool {
        self.stdout.lines().any(|l| l == line)
    }

    /// The rest of stdout's first line that starts with `tag` and a space
    /// ("?" if none).
    pub fn line(&self, tag: &str) -> String {
        self.lines(tag).next().unwrap_or("?").to_string()
    }

    /// The rest of every stdout line that starts with `tag` and a space.
    pub fn lines<'a>(&'a self, tag: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.stdout.lines().filter_map(move |l| {
            l.strip_prefix(tag)
                .and_then(|rest| rest.strip_prefix(' ').or((rest.is_empty()).then_some("")))
        })
    }

    /// The outcome, stdout and stderr, for a failure's context.
    pub fn describe(&self, name: &str) -> String {
        let tail = |text: &str| {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(15)..].join("\n      | ")
        };
        format!(
            "  {name}: {:?} after {:?}\n    stdout:\n      | {}\n    stderr:\n      | {}",
            self.outcome,
            self.run_time,
            tail(&self.stdout),
            tail(&self.stderr)
        )
    }
}

// ------------------------------------------------------------------ the host's view

/// `/proc/<pid>/status`, its values with runs of blanks made one space.
pub struct ProcStatus(BTreeMap<String, String>);

impl ProcStatus {
    pub fn of(pid: i32) -> ProcStatus {
        let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        ProcStatus(
            text.lines()
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| {
                    let value = v.split_whitespace().collect::<Vec<_>>().join(" ");
                    (k.to_string(), value)
                })
                .collect(),
        )
    }

    /// The value, or "?".
    pub fn get(&self, key: &str) -> &str {
        self.0.get(key).map_or("?", String::as_str)
    }

    /// A process id of the `NSpid` line, outermost namespace first.
    pub fn nspids(&self) -> Vec<i32> {
        self.get("NSpid")
            .split(' ')
            .filter_map(|p| p.parse().ok())
            .collect()
    }
}

/// The cgroup of `pid` holding `controller` (v1), or its one cgroup (v2),
/// as `/proc/<pid>/cgroup` names it.
pub fn cgroup_path(pid: i32, controller: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let ours = if v2 {
            id == "0"
        } else {
            controllers.split(',').any(|c| c == controller)
        };
        ours.then(|| path.to_string())
    })
}

/// Whether the process still exists.
pub fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !ProcStatus::of(pid).get("State").starts_with('Z')
}

/// Polls `done` every 10 ms until it holds or `bound` has passed; how long
/// it took, or `None`.
pub async fn wait_until(bound: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    loop {
        if done() {
            return Some(started.elapsed());
        }
        if started.elapsed() > bound {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A process held by a pidfd, as the server holds a job's: a signal through
/// it can never reach a stranger that inherited a recycled pid.
pub struct Pidfd(std::os::fd::OwnedFd);

impl Pidfd {
    /// Opens it while the process is known to be alive.
    pub fn open(pid: i32) -> Pidfd {
        use std::os::fd::FromRawFd;
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid, 0) };
        assert!(
            fd >= 0,
            "pidfd_open({pid}): {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: the kernel just returned this descriptor; nothing else owns it.
        Pidfd(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
    }

    pub fn kill(&self) {
        use std::os::fd::AsRawFd;
        // SAFETY: pidfd_send_signal(pidfd, sig, info = NULL, flags = 0).
        unsafe {
            nix::libc::syscall(
                nix::libc::SYS_pidfd_send_signal,
                self.0.as_raw_fd(),
                nix::libc::SIGKILL,
                std::ptr::null::<nix::libc::siginfo_t>(),
                0,
            );
        }
    }
}

/// nsjail logged, for its jailed child, `[<level>][<time>] pid=<n>
/// ([STANDALONE MODE]) <event>`.
pub fn nsjail_logged(log: &str, event: &str) -> bool {
    log.lines().any(|line| {
        let Some((_, rest)) = line.split_once("] pid=") else {
            return false;
        };
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        line.starts_with('[')
            && digits > 0
            && rest[digits..] == format!(" ([STANDALONE MODE]) {event}")
    })
}

/// A file the job process made, seen from the host through its root.
pub fn job_file(pid: i32, path: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/root{path}"))
}

/// A worker's cgroup files, found in whichever of its directories (v1: one
/// per controller) holds them.
pub struct CgroupFiles {
    dirs: Vec<PathBuf>,
    v2: bool,
}

impl CgroupFiles {
    pub fn new(dirs: Vec<PathBuf>) -> CgroupFiles {
        let v2 = dirs.len() == 1 && dirs[0].join("cgroup.controllers").exists();
        CgroupFiles { dirs, v2 }
    }

    pub fn read(&self, file: &str) -> Option<String> {
        self.dirs
            .iter()
            .find_map(|d| std::fs::read_to_string(d.join(file)).ok())
            .map(|t| t.trim().to_string())
    }

    fn number(&self, file: &str) -> Option<u64> {
        self.read(file)?.parse().ok()
    }

    /// `key`'s value in a file of `key value` lines.
    fn counter(&self, file: &str, key: &str) -> Option<u64> {
        self.read(file)?.lines().find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == key).then(|| v.trim().parse().ok()).flatten()
        })
    }

    /// Every process in the cgroup.
    pub fn procs(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = self
            .dirs
            .iter()
            .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
            .flat_map(|t| {
                t.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect::<Vec<_>>()
            })
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// `pid` is listed in every one of the cgroup's directories.
    pub fn holds(&self, pid: i32) -> bool {
        !self.dirs.is_empty()
            && self.dirs.iter().all(|d| {
                std::fs::read_to_string(d.join("cgroup.procs"))
                    .is_ok_and(|t| t.split_whitespace().any(|p| p == pid.to_string()))
            })
    }

    /// The CPU time of every process the cgroup has held.
    pub fn cpu_used(&self) -> Option<Duration> {
        if self.v2 {
            self.counter("cpu.stat", "usage_usec")
                .map(Duration::from_micros)
        } else {
            self.number("cpuacct.usage").map(Duration::from_nanos)
        }
    }

    pub fn pids_current(&self) -> Option<u64> {
        self.number("pids.current")
    }

    /// No process left, and none charged.
    pub fn is_empty(&self) -> bool {
        self.procs().is_empty() && self.pids_current() == Some(0)
    }

    pub fn counters(&self) -> Counters {
        let (memory_limit, memory_peak, oom_file, cpu_max) = if self.v2 {
            let cpu_max = self.read("cpu.max");
            ("memory.max", "memory.peak", "memory.events", cpu_max)
        } else {
            let quota = self.read("cpu.cfs_quota_us").unwrap_or_default();
            let period = self.read("cpu.cfs_period_us").unwrap_or_default();
            (
                "memory.limit_in_bytes",
                "memory.max_usage_in_bytes",
                "memory.oom_control",
                Some(format!("{quota} {period}")),
            )
        };
        Counters {
            memory_limit: self.number(memory_limit),
            memory_peak: self.number(memory_peak),
            oom_kills: self.counter(oom_file, "oom_kill"),
            pids_max: self.number("pids.max"),
            pids_peak: self.number("pids.peak"),
            pids_refused: self.counter("pids.events", "max"),
            cpu_max: cpu_max.unwrap_or_default(),
            cpu_periods: self.counter("cpu.stat", "nr_periods"),
            cpu_throttled: self.counter("cpu.stat", "nr_throttled"),
        }
    }
}

/// A worker's cgroup limits and counters, read at once.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    pub memory_limit: Option<u64>,
    pub memory_peak: Option<u64>,
    pub oom_kills: Option<u64>,
    pub pids_max: Option<u64>,
    pub pids_peak: Option<u64>,
    /// Forks refused at pids.max (`pids.events`' `max`).
    pub pids_refused: Option<u64>,
    /// "quota period", in microseconds.
    pub cpu_max: String,
    pub cpu_periods: Option<u64>,
    pub cpu_throttled: Option<u64>,
}

/// An `Option`'s value, or "?".
pub fn shown<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "?".into(), |v| v.to_string())
}

// ------------------------------------------------------------------ broken copies

/// A directory of this test's own under /tmp, readable by the jail's
/// unprivileged uid (bind sources must be), removed when dropped.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("pyexec-jail-policy-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        Scratch(dir)
    }

    /// A copy of nsjail.cfg as `edit` rewrites it.
    pub fn policy(&self, edit: impl FnOnce(&str) -> String) -> PathBuf {
        let original = std::fs::read_to_string(common::repo().join("nsjail.cfg")).unwrap();
        let path = self.0.join("nsjail.cfg");
        std::fs::write(&path, edit(&original)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        path
    }

    /// A copy of the runner's directory whose `confine.install_job_filter`
    /// does nothing: a later definition replaces the real one.
    pub fn runner_without_job_filter(&self) -> PathBuf {
        self.runner_with(
            "python",
            "def install_job_filter(",
            "\n\ndef install_job_filter():\n    \"\"\"The test's control: this copy installs no job filter.\"\"\"\n",
        )
    }

    /// A copy of the runner's directory (in `name`) whose `confine.py` ends
    /// with `tail`, which redefines what `defined` starts: a later
    /// definition replaces the real one.
    pub fn runner_with(&self, name: &str, defined: &str, tail: &str) -> PathBuf {
        let copy = self.0.join(name);
        copy_tree(&common::repo().join("python"), &copy);
        let confine = copy.join("confine.py");
        let mut text = std::fs::read_to_string(&confine).unwrap();
        assert!(text.contains(defined), "confine.py no longer has {defined}");
        text.push_str(tail);
        std::fs::write(&confine, text).unwrap();
        copy
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            if entry.file_name() != "__pycache__" {
                copy_tree(&entry.path(), &target);
            }
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target).unwrap();
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
}

/// A job process's end by SIGKILL, in the words of `JobFailure::Exited`
/// (spawn mode: nsjail's exit status 137).
pub const SIGKILLED: &str = "killed by signal 9 (SIGKILL)";

/// How long a probe job that should answer may take.
pub fn answer_bound() -> Duration {
    scaled(Duration::from_secs(30))
}
