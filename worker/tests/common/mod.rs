//! What the tests of the real sandboxes share (`real_jail.rs`,
//! `jail_policy/`, and `examples/run_jobs.rs`): the sandbox configuration
//! they run under, a job, worker ids, and the check that a closed sandbox
//! left no cgroup behind.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use pyexec_worker::{FileCaps, Job, JobLimits, NsjailConfig, Recycling, SandboxLimits, ZygoteLoad};

// The server's tests' reading of PYEXEC_TEST_TIME_SCALE: the cgroup v2 VM
// emulates its CPU at a tenth of the host's speed or less.
#[path = "../../../server/tests/common/time_scale.rs"]
mod time_scale;
#[allow(unused_imports)] // each test binary uses what it needs
pub use time_scale::{scaled, time_scale};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The server's defaults. Each test gets a cgroup parent of its own, removed
/// when the sandbox closes.
pub fn config(test: &str) -> NsjailConfig {
    NsjailConfig {
        nsjail: "/opt/pyexec/bin/nsjail".into(),
        config_file: repo().join("nsjail.cfg"),
        python: "/opt/pyexec/sandbox-venv/bin/python3".into(),
        runner_dir: repo().join("python"),
        limits: SandboxLimits {
            memory_bytes: 256 << 20,
            max_processes: 128,
            cpus: 1.0,
            max_file_mb: 10,
            max_open_files: 128,
            // Spawn mode's counter covers the warm-up too (see the server's
            // Config::cpu_seconds).
            cpu_seconds: scaled(Duration::from_secs(41)).as_secs(),
        },
        max_output_bytes: 1 << 20,
        max_result_bytes: 10 << 20,
        file_caps: FileCaps {
            max_files: 32,
            max_bytes: 4 << 20,
        },
        spawn_timeout: scaled(Duration::from_secs(30)),
        cgroup_parent: format!("pyexec-test-{test}"),
        cgroup_mount: "/sys/fs/cgroup".into(),
    }
}

/// Fork mode's zygote: renewed neither by count nor by age within a run.
pub fn zygote_recycling() -> Recycling {
    Recycling {
        max_forks: 1000,
        max_age: Duration::from_secs(3600),
    }
}

/// Fork mode's load: one zygote, as the server has.
pub fn zygote_load() -> ZygoteLoad {
    ZygoteLoad {
        pool_size: 4,
        max_jobs: 4,
        parallel_spawns: 2,
    }
}

/// A job under the server's limits.
pub fn job(script: &str) -> Job {
    let limits = JobLimits {
        timeout: Duration::from_secs(20),
        memory_bytes: 256 << 20,
    };
    Job::new(script, limits, 10 << 20)
}

static NEXT_ID: AtomicU64 = AtomicU64::new(100);

/// A worker id no other worker of this test binary has.
pub fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// This process's cgroup root is gone from every hierarchy once the
/// sandbox is closed; then the test's own parent is removed too.
pub fn assert_no_cgroups_left(config: &NsjailConfig) {
    let instance = std::process::id().to_string();
    for hierarchy in ["memory", "pids", "cpu", "cpuacct", ""] {
        let parent = config
            .cgroup_mount
            .join(hierarchy)
            .join(&config.cgroup_parent);
        let root = parent.join(&instance);
        assert!(!root.exists(), "{} was left behind", root.display());
        if parent.exists() {
            std::fs::remove_dir(&parent)
                .unwrap_or_else(|e| panic!("{} is not empty: {e}", parent.display()));
        }
    }
}
