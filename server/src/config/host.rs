//! Host detection: the CPUs and memory the server may use, which derived
//! defaults follow.

use std::path::Path;

/// The CPUs and memory the server may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Host {
    pub cpus: usize,
    pub memory_bytes: u64,
}

impl Host {
    /// The CPU count, and the smaller of the machine's memory and the memory
    /// limit of the server's own cgroup (a container's limit, where one is
    /// visible).
    pub fn detect() -> Host {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let total = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .map_or(u64::MAX, |kib| kib << 10);
        let own_limit = std::fs::read_to_string("/proc/self/cgroup")
            .ok()
            .and_then(|membership| cgroup_memory_limit(&membership, Path::new("/sys/fs/cgroup")));
        Host {
            cpus,
            memory_bytes: total.min(own_limit.unwrap_or(u64::MAX)),
        }
    }
}

/// The memory limit of the cgroup that `membership` (the text of
/// `/proc/<pid>/cgroup`) names under `root`, if it has one: v2's
/// `memory.max`, or v1's `memory.limit_in_bytes` in the memory hierarchy.
fn cgroup_memory_limit(membership: &str, root: &Path) -> Option<u64> {
    membership.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let path = path.trim_start_matches('/');
        let file = if controllers.is_empty() {
            root.join(path).join("memory.max")
        } else if controllers.split(',').any(|c| c == "memory") {
            root.join("memory").join(path).join("memory.limit_in_bytes")
        } else {
            return None;
        };
        // "max", or v1's page-rounded i64::MAX, mean no limit.
        std::fs::read_to_string(file)
            .ok()?
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|&limit| limit < (1 << 60))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A cgroup tree of its own under the system's temporary directory.
    struct Tree(PathBuf);

    impl Tree {
        fn new(name: &str) -> Tree {
            let root = std::env::temp_dir()
                .join(format!("pyexec-host-test-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&root);
            Tree(root)
        }

        fn write(&self, file: &str, text: &str) {
            let path = self.0.join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_v2_limit_is_memory_max() {
        let tree = Tree::new("v2");
        tree.write("app/server/memory.max", "2147483648\n");
        assert_eq!(
            cgroup_memory_limit("0::/app/server\n", &tree.0),
            Some(2 << 30)
        );
        tree.write("app/server/memory.max", "max\n");
        assert_eq!(cgroup_memory_limit("0::/app/server\n", &tree.0), None);
    }

    #[test]
    fn a_v1_limit_is_in_the_memory_hierarchy() {
        let tree = Tree::new("v1");
        tree.write("memory/docker/abc/memory.limit_in_bytes", "1073741824\n");
        let membership = "12:pids:/docker/abc\n4:cpu,cpuacct:/docker/abc\n3:memory:/docker/abc\n";
        assert_eq!(cgroup_memory_limit(membership, &tree.0), Some(1 << 30));
        // No limit: v1 writes i64::MAX rounded down to a page.
        tree.write(
            "memory/docker/abc/memory.limit_in_bytes",
            "9223372036854771712\n",
        );
        assert_eq!(cgroup_memory_limit(membership, &tree.0), None);
        assert_eq!(cgroup_memory_limit("3:pids:/docker/abc\n", &tree.0), None);
    }

    #[test]
    fn the_host_has_a_cpu_and_some_memory() {
        let host = Host::detect();
        assert!(host.cpus >= 1);
        assert!(host.memory_bytes > 0 && host.memory_bytes < u64::MAX);
    }
}
