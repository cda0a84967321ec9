//! Per-worker cgroups: memory, process and CPU limits for one jail, the
//! OOM-kill counter that tells a memory-limit death from any other, and what
//! a job used (CPU time, peak memory), measured from the job's start.
//!
//! The server makes these itself rather than letting nsjail do it, because
//! nsjail removes its cgroups as it exits, taking the OOM counter with them.
//! Layout, so that servers sharing a host never touch each other's workers:
//!
//! ```text
//! v1: /sys/fs/cgroup/{memory,pids,cpu[,cpuacct]}/<parent>/<server pid>/w<worker id>
//! v2: /sys/fs/cgroup/<parent>/<server pid>/w<worker id>
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::job::{JobFailure, Usage};

/// The two cgroup layouts Linux offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupMode {
    /// One hierarchy per controller (these machines).
    V1,
    /// The unified hierarchy.
    V2,
}

impl CgroupMode {
    pub fn as_str(self) -> &'static str {
        match self {
            CgroupMode::V1 => "v1",
            CgroupMode::V2 => "v2",
        }
    }
}

/// The limits one worker's cgroup enforces.
#[derive(Debug, Clone, PartialEq)]
pub struct CgroupLimits {
    pub memory_bytes: u64,
    /// pids.max: every process and thread in the jail, nsjail's own included.
    pub max_tasks: u32,
    pub cpus: f64,
}

/// How much CPU a worker may claim against its siblings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuPriority {
    /// Warming up: yields to workers running jobs.
    Warmup,
    /// Running a job: a full share.
    Job,
}

const V1_CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];
/// v1 with CPU accounting in a hierarchy of its own (these machines). Where
/// cpuacct is mounted together with cpu, the cpu directory has its files.
const V1_WITH_CPUACCT: [&str; 4] = ["memory", "pids", "cpu", "cpuacct"];
const V2_CONTROLLERS: [&str; 1] = ["unified"];
const CFS_PERIOD_US: u64 = 100_000;

/// This server's cgroup root, where worker cgroups are made.
#[derive(Debug)]
pub struct Cgroups {
    mode: CgroupMode,
    /// The controller of each root (v1), or `unified` (v2).
    controllers: &'static [&'static str],
    /// v1: one directory per controller; v2: one.
    roots: Vec<PathBuf>,
}

impl Cgroups {
    /// Finds the cgroup layout under `mount` and makes this server's root,
    /// removing roots left by servers that are gone. The error says what is
    /// missing and how to fix it.
    pub fn prepare(mount: &Path, parent: &str) -> Result<Self, String> {
        let instance = std::process::id().to_string();
        let cgroups = if mount.join("cgroup.controllers").exists() {
            prepare_v2(mount, parent, &instance)?
        } else if V1_CONTROLLERS.iter().all(|c| mount.join(c).is_dir()) {
            prepare_v1(mount, parent, &instance)?
        } else {
            return Err(format!(
                "no usable cgroup filesystem at {}: pyexec needs the memory, pids and cpu \
                 controllers (cgroup v2, or v1 with each mounted under {0}/<controller>)",
                mount.display()
            ));
        };
        Ok(cgroups)
    }

    pub fn mode(&self) -> CgroupMode {
        self.mode
    }

    /// [`Cgroups::create`] on the blocking pool. Cancel safety: if the caller
    /// gives up, a cgroup made after that is removed again, never leaked.
    pub async fn create_blocking(
        self: &Arc<Self>,
        name: String,
        limits: CgroupLimits,
    ) -> io::Result<JobCgroup> {
        let (reply, made) = tokio::sync::oneshot::channel();
        let cgroups = self.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(Ok(orphan)) = reply.send(cgroups.create(&name, &limits)) {
                orphan.remove();
            }
        });
        made.await
            .unwrap_or_else(|_| Err(io::Error::other("the cgroup task failed")))
    }

    /// Makes the cgroup of one worker and applies its limits.
    pub fn create(&self, name: &str, limits: &CgroupLimits) -> io::Result<JobCgroup> {
        let dirs: Vec<PathBuf> = self.roots.iter().map(|r| r.join(name)).collect();
        for dir in &dirs {
            match fs::create_dir(dir) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    empty_and_remove(dir);
                    fs::create_dir(dir)?;
                }
                other => other?,
            }
        }
        let cgroup = JobCgroup {
            mode: self.mode,
            controllers: self.controllers,
            dirs: Arc::new(dirs),
            join: Arc::new(Vec::new()),
            memory_bytes: limits.memory_bytes,
        };
        let applied = cgroup.apply(limits).and_then(|()| cgroup.open_join_files());
        match applied {
            Ok(join) => Ok(JobCgroup {
                join: Arc::new(join),
                ..cgroup
            }),
            Err(e) => {
                cgroup.remove();
                Err(e)
            }
        }
    }

    /// Removes this server's root. Call after every worker has been reaped.
    pub fn close(&self) {
        for root in &self.roots {
            empty_and_remove(root);
        }
    }
}

fn prepare_v1(mount: &Path, parent: &str, instance: &str) -> Result<Cgroups, String> {
    // cpuacct in a hierarchy of its own needs a directory of its own; mounted
    // with cpu (the same directory under two names), the cpu one serves. It
    // only measures: where it can't be used (a read-only mount) pyexec serves
    // on, and the answers' cpu_ms is null.
    let separate = |c: &str| fs::canonicalize(mount.join(c)).ok();
    let controllers: &'static [&'static str] = match (separate("cpuacct"), separate("cpu")) {
        (Some(acct), Some(cpu)) if acct != cpu => match make_dir(&acct.join(parent)) {
            Ok(()) => &V1_WITH_CPUACCT,
            Err(error) => {
                tracing::warn!(%error, "no cpuacct cgroups: jobs' CPU time will not be reported");
                &V1_CONTROLLERS
            }
        },
        _ => &V1_CONTROLLERS,
    };
    let mut roots = Vec::new();
    for controller in controllers {
        let parent_dir = mount.join(controller).join(parent);
        make_dir(&parent_dir)?;
        remove_stale_instances(&parent_dir);
        let root = parent_dir.join(instance);
        make_dir(&root)?;
        roots.push(root);
    }
    Ok(Cgroups {
        mode: CgroupMode::V1,
        controllers,
        roots,
    })
}

fn prepare_v2(mount: &Path, parent: &str, instance: &str) -> Result<Cgroups, String> {
    let available = fs::read_to_string(mount.join("cgroup.controllers")).unwrap_or_default();
    for needed in V1_CONTROLLERS {
        if !available.split_whitespace().any(|c| c == needed) {
            return Err(format!(
                "the cgroup v2 hierarchy at {} does not offer the {needed} controller \
                 (it offers: {available:?}); pyexec needs memory, pids and cpu",
                mount.display()
            ));
        }
    }
    enable_controllers_at_top(mount, parent)?;
    let parent_dir = mount.join(parent);
    make_dir(&parent_dir)?;
    write_control(&parent_dir, "cgroup.subtree_control", "+memory +pids +cpu")?;
    remove_stale_instances(&parent_dir);
    let root = parent_dir.join(instance);
    make_dir(&root)?;
    write_control(&root, "cgroup.subtree_control", "+memory +pids +cpu")?;
    Ok(Cgroups {
        mode: CgroupMode::V2,
        controllers: &V2_CONTROLLERS,
        roots: vec![root],
    })
}

/// Enables the controllers for the children of the top cgroup. Outside the
/// real root (in a container), a cgroup that holds processes can't delegate
/// controllers ("no internal processes"): then this server's processes move
/// into a leaf of their own beside ours first.
fn enable_controllers_at_top(mount: &Path, parent: &str) -> Result<(), String> {
    let controls = "+memory +pids +cpu";
    if write_control(mount, "cgroup.subtree_control", controls).is_ok() {
        return Ok(());
    }
    let leaf = mount.join(format!("{parent}-server"));
    make_dir(&leaf)?;
    let procs = fs::read_to_string(mount.join("cgroup.procs")).unwrap_or_default();
    for pid in procs.split_whitespace() {
        // A process may be gone already, or be a kernel thread: skip it.
        let _ = fs::write(leaf.join("cgroup.procs"), pid);
    }
    write_control(mount, "cgroup.subtree_control", controls)
}

fn make_dir(dir: &Path) -> Result<(), String> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) if e.raw_os_error() == Some(nix::libc::EROFS) => Err(format!(
            "cannot create {}: the cgroup filesystem is read-only. In Docker, run with \
             --cap-add SYS_ADMIN --security-opt seccomp=unconfined --cgroupns private \
             (the image's entrypoint then remounts the container's own cgroups writable)",
            dir.display()
        )),
        Err(e) => Err(format!("cannot create {}: {e}", dir.display())),
    }
}

fn write_control(dir: &Path, file: &str, value: &str) -> Result<(), String> {
    fs::write(dir.join(file), value).map_err(|e| {
        format!(
            "cannot write {value:?} to {}: {e}",
            dir.join(file).display()
        )
    })
}

/// Removes the roots of servers that no longer run (a crash or a kill -9 can
/// leave them), with anything still inside.
fn remove_stale_instances(parent_dir: &Path) {
    let Ok(entries) = fs::read_dir(parent_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let alive = pid == std::process::id() as i32 || Path::new(&format!("/proc/{pid}")).exists();
        if !alive {
            empty_and_remove(&entry.path());
        }
    }
}

/// Kills whatever is left in `dir` and below, then removes the directories.
fn empty_and_remove(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                empty_and_remove(&entry.path());
            }
        }
    }
    for _ in 0..100 {
        kill_members(dir);
        match fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    tracing::warn!(cgroup = %dir.display(), "could not remove a cgroup");
}

fn kill_members(dir: &Path) {
    for pid in read_pids(dir) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

fn read_pids(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// The cgroup(s) of one worker. Clones name the same cgroup (so blocking-pool
/// tasks can take one along); whoever owns the worker destroys it once.
#[derive(Debug, Clone)]
pub struct JobCgroup {
    mode: CgroupMode,
    /// The controller of each directory (v1), or `unified` (v2).
    controllers: &'static [&'static str],
    /// v1: memory, pids, cpu (and cpuacct); v2: the one directory.
    dirs: Arc<Vec<PathBuf>>,
    /// `cgroup.procs` of each directory, opened for writing before the fork so
    /// the child only has to write "0" to them to join.
    join: Arc<Vec<File>>,
    /// The memory limit it was made with: a job asking for the same needs no write.
    memory_bytes: u64,
}

/// Why a job's memory limit could not be applied.
#[derive(Debug)]
pub enum LimitError {
    /// The cgroup already holds more than the limit asked for, and the
    /// kernel could not reclaim it (v1 refuses the write with EBUSY).
    InUse {
        bytes: u64,
    },
    Io(io::Error),
}

impl From<LimitError> for JobFailure {
    fn from(error: LimitError) -> JobFailure {
        match error {
            LimitError::InUse { bytes } => JobFailure::MemoryBelowBaseline {
                in_use_bytes: bytes,
            },
            LimitError::Io(e) => {
                JobFailure::Sandbox(format!("cannot apply the job's memory limit: {e}"))
            }
        }
    }
}

/// What a job's usage is measured from, taken as the job starts.
#[derive(Debug)]
pub struct JobMeter {
    /// CPU time the cgroup had used before the job (spawn mode: the
    /// interpreter start and the imports).
    cpu_before: Option<Duration>,
    /// v2: `memory.peak`, reset through this descriptor: the reset holds
    /// only for reads through the same open file.
    peak_file: Option<File>,
}

impl JobCgroup {
    fn dir(&self, controller: &str) -> &Path {
        match self.mode {
            CgroupMode::V2 => &self.dirs[0],
            CgroupMode::V1 => {
                let find = |name: &str| self.controllers.iter().position(|c| *c == name);
                let i = find(controller)
                    .or_else(|| (controller == "cpuacct").then(|| find("cpu")).flatten())
                    .unwrap_or(0);
                &self.dirs[i]
            }
        }
    }

    /// Makes the cgroup ready for its job: applies the job's memory limit if
    /// it is lower than the cgroup's, resets the memory peak to the current
    /// charge, and reads the CPU time used so far, so that [`JobCgroup::usage`]
    /// measures the job alone.
    pub fn begin_job(&self, memory_bytes: u64) -> Result<JobMeter, LimitError> {
        if memory_bytes != self.memory_bytes {
            self.set_memory_limit(memory_bytes)?;
        }
        let memory = self.dir("memory");
        let peak_file = match self.mode {
            // Writing 0 resets it to the current usage.
            CgroupMode::V1 => {
                let _ = fs::write(memory.join("memory.max_usage_in_bytes"), "0");
                None
            }
            // Resettable from kernel 6.12 on; before, the write fails and the
            // peak counts from the cgroup's creation.
            CgroupMode::V2 => OpenOptions::new()
                .read(true)
                .write(true)
                .open(memory.join("memory.peak"))
                .ok()
                .map(|mut file| {
                    let _ = file.write_all(b"reset\n");
                    file
                }),
        };
        Ok(JobMeter {
            cpu_before: self.cpu_used(),
            peak_file,
        })
    }

    fn set_memory_limit(&self, bytes: u64) -> Result<(), LimitError> {
        let memory = self.dir("memory");
        let (limit, swap, swap_value) = match self.mode {
            CgroupMode::V1 => (
                "memory.limit_in_bytes",
                "memory.memsw.limit_in_bytes",
                bytes.to_string(),
            ),
            CgroupMode::V2 => ("memory.max", "memory.swap.max", "0".to_string()),
        };
        match fs::write(memory.join(limit), bytes.to_string()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(nix::libc::EBUSY) => {
                let usage = match self.mode {
                    CgroupMode::V1 => "memory.usage_in_bytes",
                    CgroupMode::V2 => "memory.current",
                };
                let bytes = read_number(&memory.join(usage)).unwrap_or(0);
                return Err(LimitError::InUse { bytes });
            }
            Err(e) => return Err(LimitError::Io(e)),
        }
        // Lowering: memory first, then memory+swap, which may not be below it.
        let swap = memory.join(swap);
        if swap.exists() {
            fs::write(swap, swap_value).map_err(LimitError::Io)?;
        }
        Ok(())
    }

    /// CPU time used by every process that was ever in the cgroup.
    fn cpu_used(&self) -> Option<Duration> {
        match self.mode {
            CgroupMode::V1 => {
                read_number(&self.dir("cpuacct").join("cpuacct.usage")).map(Duration::from_nanos)
            }
            CgroupMode::V2 => {
                let stat = fs::read_to_string(self.dirs[0].join("cpu.stat")).ok()?;
                counter(&stat, "usage_usec").map(Duration::from_micros)
            }
        }
    }

    /// What the job used since [`JobCgroup::begin_job`]: call once its
    /// processes are stopped, before the cgroup is removed.
    pub fn usage(&self, meter: &mut JobMeter) -> Usage {
        let cpu = match (meter.cpu_before, self.cpu_used()) {
            (Some(before), Some(now)) => Some(now.saturating_sub(before)),
            _ => None,
        };
        let peak_memory_bytes = match meter.peak_file.as_mut() {
            Some(file) => {
                let mut text = String::new();
                file.rewind()
                    .and_then(|()| file.read_to_string(&mut text))
                    .ok()
                    .and_then(|_| text.trim().parse().ok())
            }
            None => self.peak_memory(),
        };
        Usage {
            cpu,
            peak_memory_bytes,
        }
    }

    /// [`JobCgroup::begin_job`] on the blocking pool.
    pub async fn begin_job_blocking(&self, memory_bytes: u64) -> Result<JobMeter, LimitError> {
        let cgroup = self.clone();
        run_blocking(move || cgroup.begin_job(memory_bytes))
            .await
            .map_err(LimitError::Io)?
    }

    /// [`JobCgroup::usage`] on the blocking pool.
    pub async fn usage_blocking(&self, mut meter: JobMeter) -> Usage {
        let cgroup = self.clone();
        run_blocking(move || cgroup.usage(&mut meter))
            .await
            .unwrap_or_default()
    }

    fn apply(&self, limits: &CgroupLimits) -> io::Result<()> {
        let quota = ((limits.cpus * CFS_PERIOD_US as f64).round() as u64).max(1000);
        match self.mode {
            CgroupMode::V1 => {
                let memory = self.dir("memory");
                fs::write(
                    memory.join("memory.limit_in_bytes"),
                    limits.memory_bytes.to_string(),
                )?;
                // With swap accounting, swap must be capped too or the limit leaks into swap.
                let memsw = memory.join("memory.memsw.limit_in_bytes");
                if memsw.exists() {
                    fs::write(memsw, limits.memory_bytes.to_string())?;
                }
                fs::write(
                    self.dir("pids").join("pids.max"),
                    limits.max_tasks.to_string(),
                )?;
                let cpu = self.dir("cpu");
                fs::write(cpu.join("cpu.cfs_period_us"), CFS_PERIOD_US.to_string())?;
                fs::write(cpu.join("cpu.cfs_quota_us"), quota.to_string())?;
            }
            CgroupMode::V2 => {
                let dir = &self.dirs[0];
                fs::write(dir.join("memory.max"), limits.memory_bytes.to_string())?;
                let swap = dir.join("memory.swap.max");
                if swap.exists() {
                    fs::write(swap, "0")?;
                }
                fs::write(dir.join("pids.max"), limits.max_tasks.to_string())?;
                fs::write(dir.join("cpu.max"), format!("{quota} {CFS_PERIOD_US}"))?;
            }
        }
        Ok(())
    }

    fn open_join_files(&self) -> io::Result<Vec<File>> {
        self.dirs
            .iter()
            .map(|d| OpenOptions::new().write(true).open(d.join("cgroup.procs")))
            .collect()
    }

    /// Descriptors the child writes "0" to, between fork and exec, to join.
    pub fn join_fds(&self) -> Vec<RawFd> {
        self.join.iter().map(|f| f.as_raw_fd()).collect()
    }

    /// Moves a running process (and its threads) into this cgroup: a
    /// fork-mode job child, made by the zygote inside the zygote's cgroup.
    /// Charges it made before the move stay where they were.
    pub fn adopt(&self, pid: i32) -> io::Result<()> {
        for dir in self.dirs.iter() {
            fs::write(dir.join("cgroup.procs"), pid.to_string())?;
        }
        Ok(())
    }

    /// [`JobCgroup::adopt`] on the blocking pool.
    pub async fn adopt_blocking(&self, pid: i32) -> io::Result<()> {
        let cgroup = self.clone();
        run_blocking(move || cgroup.adopt(pid)).await?
    }

    /// [`JobCgroup::set_cpu_priority`] on the blocking pool.
    pub async fn set_cpu_priority_blocking(&self, priority: CpuPriority) {
        let cgroup = self.clone();
        let _ = run_blocking(move || cgroup.set_cpu_priority(priority)).await;
    }

    /// [`JobCgroup::oom_killed`] on the blocking pool.
    pub async fn oom_killed_blocking(&self) -> bool {
        let cgroup = self.clone();
        run_blocking(move || cgroup.oom_killed())
            .await
            .unwrap_or(false)
    }

    /// Lets a warming worker yield the CPU to workers running jobs. Best
    /// effort: a missing knob only costs latency under load.
    pub fn set_cpu_priority(&self, priority: CpuPriority) {
        let (file, value) = match (self.mode, priority) {
            (CgroupMode::V1, CpuPriority::Warmup) => ("cpu.shares", "64"),
            (CgroupMode::V1, CpuPriority::Job) => ("cpu.shares", "1024"),
            (CgroupMode::V2, CpuPriority::Warmup) => ("cpu.weight", "6"),
            (CgroupMode::V2, CpuPriority::Job) => ("cpu.weight", "100"),
        };
        let _ = fs::write(self.dir("cpu").join(file), value);
    }

    /// True once the kernel's OOM killer has killed a process of this cgroup.
    pub fn oom_killed(&self) -> bool {
        let (file, key) = match self.mode {
            CgroupMode::V1 => ("memory.oom_control", "oom_kill"),
            CgroupMode::V2 => ("memory.events", "oom_kill"),
        };
        let text = fs::read_to_string(self.dir("memory").join(file)).unwrap_or_default();
        counter(&text, key).is_some_and(|n| n > 0)
    }

    /// The memory limit as the kernel holds it (rounded to pages).
    pub fn memory_limit(&self) -> Option<u64> {
        let file = match self.mode {
            CgroupMode::V1 => "memory.limit_in_bytes",
            CgroupMode::V2 => "memory.max",
        };
        read_number(&self.dir("memory").join(file))
    }

    /// The CPU quota in cores, or `None` when there is none.
    pub fn cpu_limit(&self) -> Option<f64> {
        let cpu = self.dir("cpu");
        let (quota, period) = match self.mode {
            CgroupMode::V1 => (
                fs::read_to_string(cpu.join("cpu.cfs_quota_us")).ok()?,
                fs::read_to_string(cpu.join("cpu.cfs_period_us")).ok()?,
            ),
            CgroupMode::V2 => {
                let max = fs::read_to_string(cpu.join("cpu.max")).ok()?;
                let (quota, period) = max.trim().split_once(' ')?;
                (quota.to_string(), period.to_string())
            }
        };
        let quota: f64 = quota.trim().parse().ok().filter(|q: &f64| *q > 0.0)?;
        let period: f64 = period.trim().parse().ok().filter(|p: &f64| *p > 0.0)?;
        Some(quota / period)
    }

    pub fn tasks_limit(&self) -> Option<u64> {
        read_number(&self.dir("pids").join("pids.max"))
    }

    /// The highest memory use seen, where the kernel reports it.
    pub fn peak_memory(&self) -> Option<u64> {
        let file = match self.mode {
            CgroupMode::V1 => "memory.max_usage_in_bytes",
            CgroupMode::V2 => "memory.peak",
        };
        read_number(&self.dir("memory").join(file))
    }

    /// Processes in the cgroup, as pids of the server's namespace.
    pub fn processes(&self) -> Vec<i32> {
        read_pids(&self.dirs[0])
    }

    /// Kills everything in the cgroup and removes it, waiting as long as the
    /// kernel needs to let the last process go, on the blocking pool (the
    /// retries sleep). Runs to the end even if the caller stops waiting.
    pub async fn destroy(self) {
        let _ = tokio::task::spawn_blocking(move || self.destroy_now()).await;
    }

    /// [`JobCgroup::destroy`] without waiting for it: for `Drop`, where
    /// nothing can be awaited. Outside a runtime it runs here and now.
    pub fn destroy_in_background(self) {
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(move || self.destroy_now())),
            Err(_) => self.destroy_now(),
        }
    }

    fn destroy_now(&self) {
        for _ in 0..500 {
            self.kill_all();
            if self.dirs.iter().all(|d| read_pids(d).is_empty()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.remove();
    }

    fn kill_all(&self) {
        if self.mode == CgroupMode::V2 && fs::write(self.dirs[0].join("cgroup.kill"), "1").is_ok() {
            return;
        }
        for dir in self.dirs.iter() {
            kill_members(dir);
        }
    }

    fn remove(&self) {
        for dir in self.dirs.iter() {
            empty_and_remove(dir);
        }
    }
}

/// Runs cgroupfs work on the blocking pool: it can sleep in the kernel, and
/// tokio's worker threads must never wait. A panic in `work`, or a runtime
/// shutting down, becomes an error.
async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| io::Error::other(format!("a cgroup task failed: {e}")))
}

fn read_number(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Reads `key N` out of a flat keyed file such as memory.events.
fn counter(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_read_by_key() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        assert_eq!(counter(v1, "oom_kill"), Some(2));
        assert_eq!(counter(v1, "oom_kill_disable"), Some(0));
        let v2 = "low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(counter(v2, "oom_kill"), Some(1));
        assert_eq!(counter(v2, "missing"), None);
    }

    /// These machines are cgroup v1, so the v2 path is exercised on a plain
    /// directory standing in for /sys/fs/cgroup: what it creates and writes,
    /// and how it reads the OOM counter. (A real v2 kernel makes the control
    /// files itself; here writes simply create them.)
    #[test]
    fn v2_layout_limits_and_oom_counter_on_a_stand_in_tree() {
        let mount = std::env::temp_dir().join(format!("pyexec-v2-{}", std::process::id()));
        fs::create_dir_all(&mount).unwrap();
        fs::write(
            mount.join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();

        let cgroups = Cgroups::prepare(&mount, "pyexec").unwrap();
        assert_eq!(cgroups.mode(), CgroupMode::V2);
        let root = mount.join("pyexec").join(std::process::id().to_string());
        assert_eq!(cgroups.roots, vec![root.clone()]);
        for dir in [&mount, &mount.join("pyexec"), &root] {
            let delegated = fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap();
            assert_eq!(delegated, "+memory +pids +cpu", "{}", dir.display());
        }

        let dir = root.join("w1");
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("memory.swap.max"), "max").unwrap();
        let cgroup = JobCgroup {
            mode: CgroupMode::V2,
            controllers: &V2_CONTROLLERS,
            dirs: Arc::new(vec![dir.clone()]),
            join: Arc::new(Vec::new()),
            memory_bytes: 256 << 20,
        };
        let limits = CgroupLimits {
            memory_bytes: 256 << 20,
            max_tasks: 129,
            cpus: 1.5,
        };
        cgroup.apply(&limits).unwrap();
        let read = |file: &str| fs::read_to_string(dir.join(file)).unwrap();
        assert_eq!(read("memory.max"), "268435456");
        assert_eq!(read("memory.swap.max"), "0");
        assert_eq!(read("pids.max"), "129");
        assert_eq!(read("cpu.max"), "150000 100000");
        assert_eq!(cgroup.memory_limit(), Some(256 << 20));
        assert_eq!(cgroup.cpu_limit(), Some(1.5));

        // A job's own memory limit, its CPU time and memory peak measured
        // from its start. (On the stand-in, "reset" lands in the file itself.)
        fs::write(dir.join("cpu.stat"), "usage_usec 1000\nuser_usec 600\n").unwrap();
        fs::write(dir.join("memory.peak"), "70000000\n").unwrap();
        let mut meter = cgroup.begin_job(128 << 20).unwrap();
        assert_eq!(read("memory.max"), "134217728");
        assert_eq!(read("memory.swap.max"), "0");
        fs::write(dir.join("cpu.stat"), "usage_usec 251000\nuser_usec 9\n").unwrap();
        fs::write(dir.join("memory.peak"), "104857600\n").unwrap();
        let usage = cgroup.usage(&mut meter);
        assert_eq!(usage.cpu, Some(Duration::from_millis(250)));
        assert_eq!(usage.peak_memory_bytes, Some(100 << 20));
        // The cgroup's own limit needs no write.
        fs::write(dir.join("memory.max"), "untouched").unwrap();
        cgroup.begin_job(256 << 20).unwrap();
        assert_eq!(read("memory.max"), "untouched");
        fs::write(dir.join("memory.max"), "268435456").unwrap();

        cgroup.set_cpu_priority(CpuPriority::Warmup);
        assert_eq!(read("cpu.weight"), "6");
        cgroup.set_cpu_priority(CpuPriority::Job);
        assert_eq!(read("cpu.weight"), "100");

        fs::write(
            dir.join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 0\n",
        )
        .unwrap();
        assert!(!cgroup.oom_killed());
        fs::write(
            dir.join("memory.events"),
            "low 0\nhigh 0\nmax 9\noom 2\noom_kill 1\n",
        )
        .unwrap();
        assert!(cgroup.oom_killed());

        fs::remove_dir_all(&mount).unwrap();
    }

    #[test]
    fn a_v2_tree_without_the_memory_controller_is_refused() {
        let mount = std::env::temp_dir().join(format!("pyexec-v2-nomem-{}", std::process::id()));
        fs::create_dir_all(&mount).unwrap();
        fs::write(mount.join("cgroup.controllers"), "cpu pids\n").unwrap();
        let err = Cgroups::prepare(&mount, "pyexec").unwrap_err();
        assert!(err.contains("memory controller"), "{err}");
        fs::remove_dir_all(&mount).unwrap();
    }

    #[test]
    fn a_missing_hierarchy_is_refused_with_a_reason() {
        let empty = std::env::temp_dir().join(format!("pyexec-no-cgroup-{}", std::process::id()));
        fs::create_dir_all(&empty).unwrap();
        let err = Cgroups::prepare(&empty, "pyexec").unwrap_err();
        assert!(err.contains("memory, pids and cpu"), "{err}");
        fs::remove_dir_all(&empty).unwrap();
    }
}
