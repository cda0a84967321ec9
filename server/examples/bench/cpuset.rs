//! `BENCH_CPUS`: the server, and everything it starts, confined to a set of
//! CPUs (a cgroup v1 cpuset of the benchmark's own), to measure how
//! throughput grows with cores. The benchmark's clients stay outside it.
//! The server makes no cpuset cgroups of its own under cgroup v1, so its
//! zygote, jails and jobs stay in this one.

use std::io;
use std::path::{Path, PathBuf};

pub struct Cpuset {
    dir: PathBuf,
}

impl Cpuset {
    /// The cpuset `BENCH_CPUS` asks for (e.g. `0`, `0-1`), if any.
    pub fn from_env(name: &str) -> io::Result<Option<Cpuset>> {
        match std::env::var("BENCH_CPUS") {
            Ok(cpus) if !cpus.trim().is_empty() => Cpuset::make(name, cpus.trim()).map(Some),
            _ => Ok(None),
        }
    }

    fn make(name: &str, cpus: &str) -> io::Result<Cpuset> {
        let root = Path::new("/sys/fs/cgroup/cpuset");
        if !root.join("cpuset.cpus").exists() {
            return Err(io::Error::other(
                "BENCH_CPUS needs cgroup v1's cpuset hierarchy at /sys/fs/cgroup/cpuset",
            ));
        }
        let dir = root.join(name);
        std::fs::create_dir_all(&dir)?;
        let mems = std::fs::read_to_string(root.join("cpuset.mems"))?;
        std::fs::write(dir.join("cpuset.cpus"), cpus)?;
        std::fs::write(dir.join("cpuset.mems"), mems.trim())?;
        Ok(Cpuset { dir })
    }

    pub fn procs(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    pub fn remove(&self) {
        // The server's last processes may take a moment to go.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

/// How many CPUs `BENCH_CPUS` names (`0`, `0-1`, `0,2-3`), if set.
pub fn count_from_env() -> Option<usize> {
    let spec = std::env::var("BENCH_CPUS").ok()?;
    let mut n = 0;
    for part in spec.trim().split(',').filter(|p| !p.is_empty()) {
        n += match part.split_once('-') {
            Some((a, b)) => b.trim().parse::<usize>().ok()? + 1 - a.trim().parse::<usize>().ok()?,
            None => part.trim().parse::<usize>().map(|_| 1).ok()?,
        };
    }
    (n > 0).then_some(n)
}
