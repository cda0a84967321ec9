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
//!
//! - [`root`]: this server's root (v1 or v2 set-up), where workers' are made.
//! - [`worker`]: one worker's cgroup: limits, membership, removal.
//! - [`meter`]: what a job used, from its start.
//! - here: the one table of v1/v2 file names ([`Knob`]) and the file helpers.
//!
//! Async methods run their cgroupfs work on tokio's blocking pool (a write
//! can sleep in the kernel); the `blocking_*` ones do it on the caller's
//! thread, as tokio's own `blocking_*` methods do.

mod meter;
mod root;
mod worker;

use std::fs;
use std::io;
use std::path::Path;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub use meter::JobMeter;
pub use root::Cgroups;
pub use worker::JobCgroup;

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

const CFS_PERIOD_US: u64 = 100_000;

/// Every cgroup file pyexec reads or writes, by what it is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Knob {
    MemoryLimit,
    /// Memory + swap (v1), or swap alone (v2).
    SwapLimit,
    MemoryCurrent,
    MemoryPeak,
    /// The file whose `oom_kill` counter moves on an OOM kill.
    OomEvents,
    PidsMax,
    /// v1: `cpu.cfs_quota_us` (with `cpu.cfs_period_us`); v2: `cpu.max`.
    CpuQuota,
    CpuPeriod,
    CpuWeight,
    /// v1: nanoseconds in `cpuacct.usage`; v2: `usage_usec` of `cpu.stat`.
    CpuUsage,
}

impl Knob {
    /// The controller (v1 only) and the file's name, in each layout.
    pub(crate) fn file(self, mode: CgroupMode) -> (&'static str, &'static str) {
        use CgroupMode::{V1, V2};
        use Knob::*;
        match (self, mode) {
            (MemoryLimit, V1) => ("memory", "memory.limit_in_bytes"),
            (MemoryLimit, V2) => ("memory", "memory.max"),
            (SwapLimit, V1) => ("memory", "memory.memsw.limit_in_bytes"),
            (SwapLimit, V2) => ("memory", "memory.swap.max"),
            (MemoryCurrent, V1) => ("memory", "memory.usage_in_bytes"),
            (MemoryCurrent, V2) => ("memory", "memory.current"),
            (MemoryPeak, V1) => ("memory", "memory.max_usage_in_bytes"),
            (MemoryPeak, V2) => ("memory", "memory.peak"),
            (OomEvents, V1) => ("memory", "memory.oom_control"),
            (OomEvents, V2) => ("memory", "memory.events"),
            (PidsMax, _) => ("pids", "pids.max"),
            (CpuQuota, V1) => ("cpu", "cpu.cfs_quota_us"),
            (CpuQuota | CpuPeriod, V2) => ("cpu", "cpu.max"),
            (CpuPeriod, V1) => ("cpu", "cpu.cfs_period_us"),
            (CpuWeight, V1) => ("cpu", "cpu.shares"),
            (CpuWeight, V2) => ("cpu", "cpu.weight"),
            (CpuUsage, V1) => ("cpuacct", "cpuacct.usage"),
            (CpuUsage, V2) => ("cpu", "cpu.stat"),
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

fn read_pids(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn kill_members(dir: &Path) {
    for pid in read_pids(dir) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

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
    #[tokio::test]
    async fn v2_layout_limits_and_oom_counter_on_a_stand_in_tree() {
        let mount = std::env::temp_dir().join(format!("pyexec-v2-{}", std::process::id()));
        fs::create_dir_all(&mount).unwrap();
        fs::write(
            mount.join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();

        let cgroups = Arc::new(Cgroups::prepare(&mount, "pyexec").unwrap());
        assert_eq!(cgroups.mode(), CgroupMode::V2);
        let root = mount.join("pyexec").join(std::process::id().to_string());
        assert_eq!(cgroups.roots(), std::slice::from_ref(&root));
        for dir in [&mount, &mount.join("pyexec"), &root] {
            let delegated = fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap();
            assert_eq!(delegated, "+memory +pids +cpu", "{}", dir.display());
        }

        let dir = root.join("w1");
        let limits = CgroupLimits {
            memory_bytes: 256 << 20,
            max_tasks: 129,
            cpus: 1.5,
        };
        // The stand-in has no cgroup.procs to open, so the worker's cgroup is
        // made by hand and its limits applied as `create` would.
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("memory.swap.max"), "max").unwrap();
        let cgroup = JobCgroup::stand_in(CgroupMode::V2, vec![dir.clone()], 256 << 20);
        cgroup.blocking_apply(&limits).unwrap();
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
        let meter = cgroup.begin_job(128 << 20).await.unwrap();
        assert_eq!(read("memory.max"), "134217728");
        assert_eq!(read("memory.swap.max"), "0");
        fs::write(dir.join("cpu.stat"), "usage_usec 251000\nuser_usec 9\n").unwrap();
        fs::write(dir.join("memory.peak"), "104857600\n").unwrap();
        let usage = cgroup.usage(meter).await;
        assert_eq!(usage.cpu, Some(Duration::from_millis(250)));
        assert_eq!(usage.peak_memory_bytes, Some(100 << 20));
        // The cgroup's own limit needs no write.
        fs::write(dir.join("memory.max"), "untouched").unwrap();
        cgroup.begin_job(256 << 20).await.unwrap();
        assert_eq!(read("memory.max"), "untouched");
        fs::write(dir.join("memory.max"), "268435456").unwrap();

        cgroup.set_cpu_priority(CpuPriority::Warmup).await;
        assert_eq!(read("cpu.weight"), "6");
        cgroup.set_cpu_priority(CpuPriority::Job).await;
        assert_eq!(read("cpu.weight"), "100");

        fs::write(
            dir.join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 0\n",
        )
        .unwrap();
        assert!(!cgroup.oom_killed().await);
        fs::write(
            dir.join("memory.events"),
            "low 0\nhigh 0\nmax 9\noom 2\noom_kill 1\n",
        )
        .unwrap();
        assert!(cgroup.oom_killed().await);

        fs::remove_dir_all(&mount).unwrap();
    }

    #[test]
    fn a_v2_tree_without_the_memory_controller_is_refused() {
        let mount = std::env::temp_dir().join(format!("pyexec-v2-nomem-{}", std::process::id()));
        fs::create_dir_all(&mount).unwrap();
        fs::write(mount.join("cgroup.controllers"), "cpu pids\n").unwrap();
        let err = Cgroups::prepare(&mount, "pyexec").unwrap_err();
        assert!(
            matches!(
                err,
                crate::error::CgroupError::MissingController {
                    missing: "memory",
                    ..
                }
            ),
            "{err}"
        );
        fs::remove_dir_all(&mount).unwrap();
    }

    #[test]
    fn a_missing_hierarchy_is_refused_with_a_reason() {
        let empty = std::env::temp_dir().join(format!("pyexec-no-cgroup-{}", std::process::id()));
        fs::create_dir_all(&empty).unwrap();
        let err = Cgroups::prepare(&empty, "pyexec").unwrap_err();
        assert!(err.to_string().contains("memory, pids and cpu"), "{err}");
        fs::remove_dir_all(&empty).unwrap();
    }

    /// Every knob names a file in both layouts, and v1's live under the
    /// controller that owns them.
    #[test]
    fn the_knob_table_names_each_file_under_its_controller() {
        use Knob::*;
        for knob in [
            MemoryLimit,
            SwapLimit,
            MemoryCurrent,
            MemoryPeak,
            OomEvents,
            PidsMax,
            CpuQuota,
            CpuPeriod,
            CpuWeight,
            CpuUsage,
        ] {
            for mode in [CgroupMode::V1, CgroupMode::V2] {
                let (controller, file) = knob.file(mode);
                assert!(
                    file.starts_with(controller),
                    "{knob:?} {mode:?}: {controller}/{file}"
                );
            }
        }
    }
}
