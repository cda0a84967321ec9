//! The worker crate's configs built from a [`Config`]: the pool's, the
//! jail's, the zygotes' recycling, and the limits derived on the way.

use pyexec_worker::{FileCaps, NsjailConfig, PoolConfig, Recycling, SandboxLimits, ZygoteLoad};

use super::{Config, Isolation};

impl Config {
    /// The CPU-time backstop: a script that spins gets killed by RLIMIT_CPU
    /// even if the wall-clock deadline somehow didn't fire. What the
    /// limit's counter covers depends on the mode. Spawn mode: the jailed
    /// interpreter's whole life, its warm-up (importing numpy and pandas, at
    /// most the spawn timeout) as well as the job, so the limit covers both:
    /// else a CPU-bound job on a slow CPU (0.25 CPU-s of warm-up here, 3.5
    /// under emulation) is killed before its deadline and reported as a
    /// crash, not a timeout. Fork mode: a child's counter starts at its fork,
    /// so the job (and its sealing, milliseconds) is all it covers.
    pub fn cpu_seconds(&self) -> u64 {
        let counted = match self.isolation {
            Isolation::Spawn => self.timeout + self.spawn_timeout,
            Isolation::Fork => self.timeout,
        };
        counted.as_secs_f64().ceil() as u64 + 1
    }

    /// What the runner may send back of /tmp/outputs.
    pub fn file_caps(&self) -> FileCaps {
        FileCaps {
            max_files: self.max_output_files,
            max_bytes: self.max_output_files_bytes,
        }
    }

    pub fn pool_config(&self) -> PoolConfig {
        PoolConfig {
            size: self.pool_size,
            queue_max: self.queue_max,
            queue_timeout: self.queue_timeout,
            job_timeout: self.timeout,
            max_parallel_spawns: self.max_parallel_spawns,
            max_jobs: self.max_jobs,
        }
    }

    /// How many children a zygote may have at once: its cgroup is sized
    /// for them (`ZygoteLoad::room`).
    pub fn zygote_load(&self) -> ZygoteLoad {
        ZygoteLoad {
            pool_size: self.pool_size,
            max_jobs: self.max_jobs,
            parallel_spawns: self.max_parallel_spawns,
        }
    }

    pub fn recycling(&self) -> Recycling {
        Recycling {
            max_forks: self.zygote_max_forks,
            max_age: self.zygote_max_age,
        }
    }

    pub fn nsjail_config(&self) -> NsjailConfig {
        NsjailConfig {
            nsjail: self.nsjail.clone(),
            config_file: self.nsjail_config.clone(),
            python: self.python.clone(),
            runner_dir: self.runner_dir.clone(),
            limits: SandboxLimits {
                memory_bytes: self.memory_mb << 20,
                max_processes: self.max_processes,
                cpus: self.cpus,
                max_file_mb: self.max_file_mb,
                max_open_files: self.max_open_files,
                cpu_seconds: self.cpu_seconds(),
            },
            max_output_bytes: self.max_output_bytes,
            max_result_bytes: self.max_result_bytes,
            file_caps: self.file_caps(),
            spawn_timeout: self.spawn_timeout,
            cgroup_parent: self.cgroup_parent.clone(),
            cgroup_mount: self.cgroup_mount.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::read_vars;

    #[test]
    fn the_cpu_limit_covers_what_its_counter_counts() {
        assert_eq!(read_vars(&[], 2).unwrap().cpu_seconds(), 11);
        let fork = read_vars(&[("PYEXEC_TIMEOUT", "2.5")], 2).unwrap();
        assert_eq!(fork.cpu_seconds(), 4, "fork mode: the job alone");
        let spawn = read_vars(
            &[("PYEXEC_ISOLATION", "spawn"), ("PYEXEC_TIMEOUT", "2.5")],
            2,
        )
        .unwrap();
        assert_eq!(spawn.cpu_seconds(), 34, "spawn mode: the warm-up too");
    }

    /// The zygote's cgroup follows the pool as the host grows: at 32 CPUs
    /// the pool's defaults (256 warm, 128 jobs, 128 spawns) need more than
    /// the 1 GiB that suffices on 2.
    #[test]
    fn the_zygotes_room_grows_with_the_pool_of_a_larger_host() {
        let small = read_vars(&[], 2).unwrap();
        let room = small.zygote_load().room(small.memory_mb << 20);
        assert_eq!(room.memory_bytes, 1 << 30);
        let large = read_vars(&[("PYEXEC_MAX_JOBS", "96")], 32).unwrap();
        let load = large.zygote_load();
        assert_eq!(
            (load.pool_size, load.max_jobs, load.parallel_spawns),
            (256, 96, 128)
        );
        let room = load.room(large.memory_mb << 20);
        assert_eq!(
            room.memory_bytes,
            (512 << 20) + (256 + 96 + 128) * (8 << 20)
        );
        assert_eq!(room.max_tasks, 32 + 4 * 128);
    }

    #[test]
    fn the_jail_gets_the_configured_limits() {
        let c = read_vars(
            &[
                ("PYEXEC_MEMORY_MB", "512"),
                ("PYEXEC_CPUS", "0.5"),
                ("PYEXEC_TIMEOUT", "2.5"),
            ],
            2,
        )
        .unwrap();
        let jail = c.nsjail_config();
        assert_eq!(jail.limits.memory_bytes, 512 << 20);
        assert_eq!(jail.limits.cpus, 0.5);
        assert_eq!(jail.limits.cpu_seconds, 4);
        assert_eq!(jail.file_caps, c.file_caps());
        assert_eq!(c.pool_config().job_timeout, c.timeout);
    }
}
