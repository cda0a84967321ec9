//! What a real server holds in the cgroup filesystem, for the tests that
//! look for leftovers: the same paths on cgroup v1 and v2, in both modes.

use std::path::{Path, PathBuf};

/// The server's cgroup root in each hierarchy that holds one, whichever
/// cgroup version is mounted (v1: pids, memory, cpu; v2: the unified tree).
/// The first is the one to list processes and workers in.
pub fn roots(server: u32) -> Vec<PathBuf> {
    let base = Path::new("/sys/fs/cgroup");
    let instance = server.to_string();
    if base.join("cgroup.controllers").exists() {
        vec![base.join("pyexec").join(&instance)]
    } else {
        ["pids", "memory", "cpu"]
            .iter()
            .map(|c| base.join(c).join("pyexec").join(&instance))
            .collect()
    }
}

/// The server's workers, alive or being reaped: one cgroup `w<id>` each, in
/// both isolation modes (a fork-mode zygote's is `z<n>`).
pub fn workers(server: u32) -> usize {
    children(server, 'w').len()
}

/// The cgroups of the server's zygotes, oldest first (fork mode).
pub fn zygotes(server: u32) -> Vec<PathBuf> {
    let mut zygotes = children(server, 'z');
    zygotes.sort();
    zygotes
}

fn children(server: u32, prefix: char) -> Vec<PathBuf> {
    std::fs::read_dir(&roots(server)[0])
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// The processes of one cgroup.
pub fn processes_in(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Every process in the server's cgroups: jobs, their jails, zygotes.
pub fn processes(server: u32) -> Vec<i32> {
    fn walk(dir: &Path, into: &mut Vec<i32>) {
        into.extend(processes_in(dir));
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&entry.path(), into);
            }
        }
    }
    let mut processes = Vec::new();
    walk(&roots(server)[0], &mut processes);
    processes
}
