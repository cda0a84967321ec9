//! One worker's cgroup: its limits, joining it before exec (spawn mode) or
//! moving a running child into it (fork mode), the OOM counter, a job's own
//! memory limit, and its removal once the worker is gone.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::{
    counter, empty_and_remove, kill_members, read_number, read_pids, run_blocking, CgroupLimits,
    CgroupMode, CpuPriority, Knob, CFS_PERIOD_US,
};
use crate::error::{CgroupError, SandboxFault};
use crate::job::JobFailure;

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
    pub(super) memory_bytes: u64,
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
            LimitError::Io(e) => JobFailure::Sandbox(SandboxFault::MemoryLimit(e)),
        }
    }
}

impl JobCgroup {
    /// Takes the freshly made directories, applies the limits and opens the
    /// join files; on an error, removes the directories again.
    pub(super) fn blocking_make(
        mode: CgroupMode,
        controllers: &'static [&'static str],
        dirs: Vec<PathBuf>,
        limits: &CgroupLimits,
    ) -> Result<JobCgroup, CgroupError> {
        let cgroup = JobCgroup {
            mode,
            controllers,
            dirs: Arc::new(dirs),
            join: Arc::new(Vec::new()),
            memory_bytes: limits.memory_bytes,
        };
        let applied = cgroup
            .blocking_apply(limits)
            .and_then(|()| cgroup.open_join_files());
        match applied {
            Ok(join) => Ok(JobCgroup {
                join: Arc::new(join),
                ..cgroup
            }),
            Err(e) => {
                cgroup.blocking_remove();
                Err(e)
            }
        }
    }

    /// A cgroup over directories a test made by hand (no join files).
    #[cfg(test)]
    pub(super) fn stand_in(mode: CgroupMode, dirs: Vec<PathBuf>, memory_bytes: u64) -> JobCgroup {
        JobCgroup {
            mode,
            controllers: match mode {
                CgroupMode::V1 => &["memory", "pids", "cpu"],
                CgroupMode::V2 => &["unified"],
            },
            dirs: Arc::new(dirs),
            join: Arc::new(Vec::new()),
            memory_bytes,
        }
    }

    pub fn mode(&self) -> CgroupMode {
        self.mode
    }

    /// The cgroup's directories (v1: one per controller; v2: one).
    #[cfg(any(test, feature = "test-support"))]
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// The directory holding `knob`'s file, and its path.
    pub(crate) fn path(&self, knob: Knob) -> PathBuf {
        let (controller, file) = knob.file(self.mode);
        self.dir(controller).join(file)
    }

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

    pub(super) fn blocking_apply(&self, limits: &CgroupLimits) -> Result<(), CgroupError> {
        let quota = ((limits.cpus * CFS_PERIOD_US as f64).round() as u64).max(1000);
        let write = |knob: Knob, value: String| -> Result<(), CgroupError> {
            let file = self.path(knob);
            fs::write(&file, &value).map_err(|source| CgroupError::Write {
                file,
                value,
                source,
            })
        };
        write(Knob::MemoryLimit, limits.memory_bytes.to_string())?;
        // With swap accounting, swap must be capped too or the limit leaks into swap.
        if self.path(Knob::SwapLimit).exists() {
            let swap = match self.mode {
                CgroupMode::V1 => limits.memory_bytes.to_string(),
                CgroupMode::V2 => "0".into(),
            };
            write(Knob::SwapLimit, swap)?;
        }
        write(Knob::PidsMax, limits.max_tasks.to_string())?;
        match self.mode {
            CgroupMode::V1 => {
                write(Knob::CpuPeriod, CFS_PERIOD_US.to_string())?;
                write(Knob::CpuQuota, quota.to_string())?;
            }
            CgroupMode::V2 => write(Knob::CpuQuota, format!("{quota} {CFS_PERIOD_US}"))?,
        }
        Ok(())
    }

    fn open_join_files(&self) -> Result<Vec<File>, CgroupError> {
        self.dirs
            .iter()
            .map(|d| {
                let file = d.join("cgroup.procs");
                OpenOptions::new()
                    .write(true)
                    .open(&file)
                    .map_err(|source| CgroupError::Write {
                        file,
                        value: String::new(),
                        source,
                    })
            })
            .collect()
    }

    /// Descriptors the child writes "0" to, between fork and exec, to join.
    pub fn join_fds(&self) -> Vec<RawFd> {
        self.join.iter().map(|f| f.as_raw_fd()).collect()
    }

    /// Moves a running process (and its threads) into this cgroup: a
    /// fork-mode job child, made by the zygote inside the zygote's cgroup.
    /// Charges it made before the move stay where they were.
    pub fn blocking_adopt(&self, pid: i32) -> io::Result<()> {
        for dir in self.dirs.iter() {
            fs::write(dir.join("cgroup.procs"), pid.to_string())?;
        }
        Ok(())
    }

    /// Lets a warming worker yield the CPU to workers running jobs. Best
    /// effort: a missing knob only costs latency under load.
    pub async fn set_cpu_priority(&self, priority: CpuPriority) {
        let value = match (self.mode, priority) {
            (CgroupMode::V1, CpuPriority::Warmup) => "64",
            (CgroupMode::V1, CpuPriority::Job) => "1024",
            (CgroupMode::V2, CpuPriority::Warmup) => "6",
            (CgroupMode::V2, CpuPriority::Job) => "100",
        };
        let file = self.path(Knob::CpuWeight);
        let _ = run_blocking(move || fs::write(file, value)).await;
    }

    /// True once the kernel's OOM killer has killed a process of this cgroup.
    pub async fn oom_killed(&self) -> bool {
        let file = self.path(Knob::OomEvents);
        run_blocking(move || {
            let text = fs::read_to_string(file).unwrap_or_default();
            counter(&text, "oom_kill").is_some_and(|n| n > 0)
        })
        .await
        .unwrap_or(false)
    }

    /// Lowers (or restores) the memory limit for one job. On v1 the kernel
    /// refuses a limit below the charge it can't reclaim: that is
    /// [`LimitError::InUse`].
    pub(super) fn blocking_set_memory_limit(&self, bytes: u64) -> Result<(), LimitError> {
        match fs::write(self.path(Knob::MemoryLimit), bytes.to_string()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(nix::libc::EBUSY) => {
                let bytes = read_number(&self.path(Knob::MemoryCurrent)).unwrap_or(0);
                return Err(LimitError::InUse { bytes });
            }
            Err(e) => return Err(LimitError::Io(e)),
        }
        // Lowering: memory first, then memory+swap, which may not be below it.
        let swap = self.path(Knob::SwapLimit);
        if swap.exists() {
            let value = match self.mode {
                CgroupMode::V1 => bytes.to_string(),
                CgroupMode::V2 => "0".into(),
            };
            fs::write(swap, value).map_err(LimitError::Io)?;
        }
        Ok(())
    }

    /// The memory limit as the kernel holds it (rounded to pages).
    pub fn memory_limit(&self) -> Option<u64> {
        read_number(&self.path(Knob::MemoryLimit))
    }

    /// The CPU quota in cores, or `None` when there is none.
    pub fn cpu_limit(&self) -> Option<f64> {
        let (quota, period) = match self.mode {
            CgroupMode::V1 => (
                fs::read_to_string(self.path(Knob::CpuQuota)).ok()?,
                fs::read_to_string(self.path(Knob::CpuPeriod)).ok()?,
            ),
            CgroupMode::V2 => {
                let max = fs::read_to_string(self.path(Knob::CpuQuota)).ok()?;
                let (quota, period) = max.trim().split_once(' ')?;
                (quota.to_string(), period.to_string())
            }
        };
        let quota: f64 = quota.trim().parse().ok().filter(|q: &f64| *q > 0.0)?;
        let period: f64 = period.trim().parse().ok().filter(|p: &f64| *p > 0.0)?;
        Some(quota / period)
    }

    pub fn tasks_limit(&self) -> Option<u64> {
        read_number(&self.path(Knob::PidsMax))
    }

    /// Processes in the cgroup, as pids of the server's namespace.
    pub fn processes(&self) -> Vec<i32> {
        read_pids(&self.dirs[0])
    }

    /// Kills everything in the cgroup and removes it, waiting as long as the
    /// kernel needs to let the last process go, on the blocking pool (the
    /// retries sleep). Runs to the end even if the caller stops waiting.
    pub async fn destroy(self) {
        let _ = tokio::task::spawn_blocking(move || self.blocking_destroy()).await;
    }

    /// [`JobCgroup::destroy`] without waiting for it: for `Drop`, where
    /// nothing can be awaited. Outside a runtime it runs here and now.
    pub fn destroy_in_background(self) {
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(move || self.blocking_destroy())),
            Err(_) => self.blocking_destroy(),
        }
    }

    fn blocking_destroy(&self) {
        for _ in 0..500 {
            self.kill_all();
            if self.dirs.iter().all(|d| read_pids(d).is_empty()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.blocking_remove();
    }

    fn kill_all(&self) {
        if self.mode == CgroupMode::V2 && fs::write(self.dirs[0].join("cgroup.kill"), "1").is_ok() {
            return;
        }
        for dir in self.dirs.iter() {
            kill_members(dir);
        }
    }

    pub(super) fn blocking_remove(&self) {
        for dir in self.dirs.iter() {
            empty_and_remove(dir);
        }
    }
}
