//! The table of environment variables: each row's name, default, meaning and
//! parser, and the field of [`Config`] it fills. A variable is added here,
//! with one row, and nowhere else; `pyexec --help` prints the table
//! ([`markdown_table`]) and docs/configuration.md must match it.

use std::path::PathBuf;
use std::time::Duration;

use super::vars::DefaultValue::{Derived, Text};
use super::vars::{cgroup_name, choice, number, path, seconds, variables};
use super::{DatabaseUrl, Isolation, LogFormat};
use crate::callers::AuthMode;
use pyexec_worker::ZygotePages;

variables! {
    port: u16 = PORT {
        name: "PORT",
        default: Text("8080"),
        meaning: "TCP port to listen on (0.0.0.0), as Cloud Run sets it",
        parse: |s| number(s, "a TCP port, 0 to 65535", |_| true),
    },

    /// Each connection is a task and a file descriptor, and it may hold a
    /// request body of up to the body cap (about 1.6 MiB by default: a script
    /// and an input) or one job. 256 is more than ten times what the defaults
    /// on 2 CPUs can use at once (pool 4 + queue 16), which leaves room for
    /// probes, scrapes and idle keep-alive clients, while keeping the
    /// server's worst case (every connection holding a maximal body) near
    /// 420 MiB and its descriptors well inside the usual limit of 1024 beside
    /// the workers' pipes and sockets.
    max_connections: usize = MAX_CONNECTIONS {
        name: "PYEXEC_MAX_CONNECTIONS",
        default: Derived {
            shown: "256, or 2 × (max jobs + queue max) if more",
            derive: |env| Ok((2 * (env.read(&MAX_JOBS)? + env.read(&QUEUE_MAX)?)).max(256)),
        },
        meaning: "open client connections at most; more wait in the kernel's backlog until one closes",
        parse: |s| number(s, "a positive number of connections", |n| *n > 0),
    },

    body_timeout: Duration = BODY_TIMEOUT {
        name: "PYEXEC_BODY_TIMEOUT",
        default: Text("10"),
        meaning: "seconds a client gets to send a request's whole body (then 408 request_timeout)",
        parse: |s| seconds(s, false),
    },

    isolation: Isolation = ISOLATION {
        name: "PYEXEC_ISOLATION",
        default: Text("fork"),
        meaning: "fork: each job is a child of a warm zygote, forked into a fresh sandbox of its own (a few ms of CPU); spawn: a fresh jail and interpreter per job (shares nothing but the kernel; about 0.25 CPU-s)",
        parse: |s| choice(s, &[("fork", Isolation::Fork), ("spawn", Isolation::Spawn)]),
    },

    timeout: Duration = TIMEOUT {
        name: "PYEXEC_TIMEOUT",
        default: Text("10"),
        meaning: "wall-clock limit of a job, seconds (decimals allowed); CPU limit is ceil(timeout)+1 s (spawn mode: ceil(timeout + spawn timeout)+1 s, its counter includes the warm-up)",
        parse: |s| seconds(s, false),
    },

    max_script_chars: usize = MAX_SCRIPT_CHARS {
        name: "PYEXEC_MAX_SCRIPT_CHARS",
        default: Text("100000"),
        meaning: "longest script accepted, in characters (not bytes)",
        parse: |s| number(s, "a positive number of characters", |n| *n > 0),
    },

    max_input_bytes: usize = MAX_INPUT_BYTES {
        name: "PYEXEC_MAX_INPUT_BYTES",
        default: Text("1048576"),
        meaning: "cap on the JSON of a request's input, in bytes as sent (413 input_too_large beyond); the body cap grows by as much",
        parse: |s| number(s, "a positive number of bytes", |n| *n > 0),
    },

    /// Fork mode: a pre-forked child costs about 2.6 MB private memory and
    /// 5 ms of CPU, so eight per core serve a burst of that size warm. Spawn
    /// mode: a spawn (interpreter start plus the numpy/pandas imports) costs
    /// about a quarter of a CPU-second, so two per core keep one ready while
    /// the other refills.
    pool_size: usize = POOL_SIZE {
        name: "PYEXEC_POOL_SIZE",
        default: Derived {
            shown: "fork: 8 × CPUs, at least 8; spawn: 2 × CPUs, at least 2",
            derive: |env| {
                let cpus = env.host.cpus;
                Ok(match env.read(&ISOLATION)? {
                    Isolation::Fork => (8 * cpus).max(8),
                    Isolation::Spawn => (2 * cpus).max(2),
                })
            },
        },
        meaning: "warm workers; 0 = one worker made per request (the benchmark's baseline)",
        parse: |s| number(s, "a number of workers, 0 to 4096", |n| *n <= 4096),
    },

    queue_max: usize = QUEUE_MAX {
        name: "PYEXEC_QUEUE_MAX",
        default: Derived {
            shown: "4 × max(pool size, 2)",
            derive: |env| Ok(4 * env.read(&POOL_SIZE)?.max(2)),
        },
        meaning: "requests that may wait for a worker; one more gets 503 overloaded",
        parse: |s| number(s, "a number of waiting requests", |_| true),
    },

    queue_timeout: Duration = QUEUE_TIMEOUT {
        name: "PYEXEC_QUEUE_TIMEOUT",
        default: Text("5"),
        meaning: "seconds a request may wait for a worker before 503 overloaded",
        parse: |s| seconds(s, true),
    },

    /// Each running job may take up to PYEXEC_MEMORY_MB, so the default lets
    /// as many run as fit, each at its limit, in three quarters of the memory
    /// the server may use (the rest: the server, the warm pool, the page
    /// cache). It is not tied to the CPUs: jobs that sleep or wait would
    /// otherwise hold every slot while the cores idle.
    max_jobs: usize = MAX_JOBS {
        name: "PYEXEC_MAX_JOBS",
        default: Derived {
            shown: "¾ of the memory ÷ PYEXEC_MEMORY_MB, at least 1 (the memory: the machine's, or the server's cgroup limit if lower)",
            derive: |env| {
                let job = (env.read(&MEMORY_MB)? << 20).max(1);
                let fit = env.host.memory_bytes / 4 * 3 / job;
                Ok(usize::try_from(fit).unwrap_or(usize::MAX).max(1))
            },
        },
        meaning: "jobs running at once; more wait in the queue",
        parse: |s| number(s, "a positive number of jobs", |n| *n > 0),
    },

    /// Spawn mode: a spawn is a quarter of a CPU-second, so one per core
    /// keeps refilling from starving running jobs. Fork mode: a fork costs a
    /// few CPU-milliseconds but about 5 ms of waiting (the zygote, the child
    /// sealing itself, cgroup writes), so more in flight keep the pool full
    /// at hundreds of jobs a second.
    max_parallel_spawns: usize = MAX_PARALLEL_SPAWNS {
        name: "PYEXEC_MAX_PARALLEL_SPAWNS",
        default: Derived {
            shown: "fork: 4 × CPUs; spawn: CPUs",
            derive: |env| {
                let cpus = env.host.cpus.max(1);
                Ok(match env.read(&ISOLATION)? {
                    Isolation::Fork => 4 * cpus,
                    Isolation::Spawn => cpus,
                })
            },
        },
        meaning: "workers being made at once, so refilling can't starve running jobs",
        parse: |s| number(s, "a positive number of spawns", |n| *n > 0),
    },

    nsjail: PathBuf = NSJAIL {
        name: "PYEXEC_NSJAIL",
        default: Text("/opt/pyexec/bin/nsjail"),
        meaning: "path of the nsjail binary",
        parse: path,
    },

    python: PathBuf = PYTHON {
        name: "PYEXEC_PYTHON",
        default: Text("/opt/pyexec/sandbox-venv/bin/python3"),
        meaning: "the sandbox Python (with numpy and pandas)",
        parse: path,
    },

    nsjail_config: PathBuf = NSJAIL_CONFIG {
        name: "PYEXEC_NSJAIL_CONFIG",
        default: Text("nsjail.cfg"),
        meaning: "the jail policy, relative to the working directory",
        parse: path,
    },

    runner_dir: PathBuf = RUNNER_DIR {
        name: "PYEXEC_RUNNER_DIR",
        default: Text("python"),
        meaning: "directory holding runner.py, relative to the working directory",
        parse: path,
    },

    memory_mb: u64 = MEMORY_MB {
        name: "PYEXEC_MEMORY_MB",
        default: Text("256"),
        meaning: "memory limit of one jail (memory cgroup), MiB",
        parse: |s| number(s, "a number of MiB, 16 or more", |n| *n >= 16),
    },

    max_processes: u32 = MAX_PROCESSES {
        name: "PYEXEC_MAX_PROCESSES",
        default: Text("128"),
        meaning: "processes and threads one jail may have at once (pids cgroup)",
        parse: |s| number(s, "a positive number of processes", |n| *n > 0),
    },

    max_file_mb: u64 = MAX_FILE_MB {
        name: "PYEXEC_MAX_FILE_MB",
        default: Text("10"),
        meaning: "largest file a script may write, MiB (RLIMIT_FSIZE)",
        parse: |s| number(s, "a positive number of MiB", |n| *n > 0),
    },

    max_open_files: u32 = MAX_OPEN_FILES {
        name: "PYEXEC_MAX_OPEN_FILES",
        default: Text("128"),
        meaning: "open files per process (RLIMIT_NOFILE)",
        parse: |s| {
            number(
                s,
                "a number of files, 16 or more (Python needs a few itself)",
                |n| *n >= 16,
            )
        },
    },

    cpus: f64 = CPUS {
        name: "PYEXEC_CPUS",
        default: Text("1"),
        meaning: "CPU quota of one jail, in cores (decimals allowed)",
        parse: |s| {
            number(s, "a positive number of cores, e.g. 1 or 0.5", |n: &f64| {
                n.is_finite() && *n > 0.0
            })
        },
    },

    max_output_bytes: usize = MAX_OUTPUT_BYTES {
        name: "PYEXEC_MAX_OUTPUT_BYTES",
        default: Text("1048576"),
        meaning: "cap on each of stdout and stderr; more is cut and flagged *_truncated",
        parse: |s| number(s, "a number of bytes", |_| true),
    },

    max_result_bytes: u64 = MAX_RESULT_BYTES {
        name: "PYEXEC_MAX_RESULT_BYTES",
        default: Text("10485760"),
        meaning: "cap on the JSON of main()'s result (result_too_large beyond)",
        parse: |s| number(s, "a positive number of bytes", |n| *n > 0),
    },

    max_output_files: u32 = MAX_OUTPUT_FILES {
        name: "PYEXEC_MAX_OUTPUT_FILES",
        default: Text("32"),
        meaning: "files of /tmp/outputs returned at most; more are listed in files_omitted",
        parse: |s| number(s, "a number of files, 0 to 10000", |n| *n <= 10_000),
    },

    max_output_files_bytes: u64 = MAX_OUTPUT_FILES_BYTES {
        name: "PYEXEC_MAX_OUTPUT_FILES_BYTES",
        default: Text("4194304"),
        meaning: "bytes of the returned files in all (before base64); files beyond are listed in files_omitted",
        parse: |s| number(s, "a number of bytes", |_| true),
    },

    spawn_timeout: Duration = SPAWN_TIMEOUT {
        name: "PYEXEC_SPAWN_TIMEOUT",
        default: Text("30"),
        meaning: "seconds a worker may take from launch to ready",
        parse: |s| seconds(s, false),
    },

    zygote_max_forks: u64 = ZYGOTE_MAX_FORKS {
        name: "PYEXEC_ZYGOTE_MAX_FORKS",
        default: Text("10000"),
        meaning: "fork mode: a zygote is replaced by a fresh one after this many forks (its jobs share its memory layout and hash secret)",
        parse: |s| number(s, "a positive number of forks", |n| *n > 0),
    },

    zygote_max_age: Duration = ZYGOTE_MAX_AGE {
        name: "PYEXEC_ZYGOTE_MAX_AGE",
        default: Text("600"),
        meaning: "fork mode: seconds after which a zygote is replaced by a fresh one (its successor is ready first)",
        parse: |s| seconds(s, false),
    },

    zygote_pages: ZygotePages = ZYGOTE_PAGES {
        name: "PYEXEC_ZYGOTE_PAGES",
        default: Text("huge"),
        meaning: "fork mode: huge: the zygote's heap is collapsed into 2 MiB pages (MADV_COLLAPSE, Linux 6.1+), so each fork copies and each exit frees far fewer page-table entries; small: left in 4 KiB pages",
        parse: |s| choice(s, &[("huge", ZygotePages::Huge), ("small", ZygotePages::Small)]),
    },

    shutdown_grace: Duration = SHUTDOWN_GRACE {
        name: "PYEXEC_SHUTDOWN_GRACE",
        default: Text("8"),
        meaning: "seconds in-flight requests get after SIGTERM (inside Cloud Run's 10 s)",
        parse: |s| seconds(s, true),
    },

    cgroup_parent: String = CGROUP_PARENT {
        name: "PYEXEC_CGROUP_PARENT",
        default: Text("pyexec"),
        meaning: "cgroup under which the per-worker cgroups are made",
        parse: cgroup_name,
    },

    cgroup_mount: PathBuf = CGROUP_MOUNT {
        name: "PYEXEC_CGROUP_MOUNT",
        default: Text("/sys/fs/cgroup"),
        meaning: "where the cgroup filesystem (v1 or v2) is mounted",
        parse: path,
    },

    log_level: tracing::Level = LOG_LEVEL {
        name: "PYEXEC_LOG_LEVEL",
        default: Text("info"),
        meaning: "error, warn, info, debug or trace",
        parse: |s| {
            choice(
                s,
                &[
                    ("error", tracing::Level::ERROR),
                    ("warn", tracing::Level::WARN),
                    ("info", tracing::Level::INFO),
                    ("debug", tracing::Level::DEBUG),
                    ("trace", tracing::Level::TRACE),
                ],
            )
        },
    },

    log_format: LogFormat = LOG_FORMAT {
        name: "PYEXEC_LOG_FORMAT",
        default: Text("json"),
        meaning: "json (one Cloud Logging object per line) or text (for a terminal)",
        parse: |s| choice(s, &[("json", LogFormat::Json), ("text", LogFormat::Text)]),
    },

    auth: AuthMode = AUTH {
        name: "PYEXEC_AUTH",
        default: Text("none"),
        meaning: "none: anyone who reaches the port can run code (one anonymous caller, no limits beyond the server's); keys: every API request needs Authorization: Bearer <token> of a key made with `pyexec keys create` (docs/callers.md)",
        parse: |s| choice(s, &[("none", AuthMode::None), ("keys", AuthMode::Keys)]),
    },

    data_dir: PathBuf = DATA_DIR {
        name: "PYEXEC_DATA_DIR",
        default: Text("/var/lib/pyexec"),
        meaning: "directory of the embedded store (keys, usage, snippets: pyexec.sqlite3), made on first start; unused with PYEXEC_DATABASE_URL",
        parse: path,
    },

    database_url: Option<DatabaseUrl> = DATABASE_URL {
        name: "PYEXEC_DATABASE_URL",
        default: Derived {
            shown: "(unset: the embedded store)",
            derive: |_| Ok(None),
        },
        meaning: "postgres://… (or key=value form): keep keys, usage and snippets in Postgres, shared by every instance; never logged",
        parse: |s| DatabaseUrl::parse(s).map(Some),
    },

    database_pool: u32 = DATABASE_POOL {
        name: "PYEXEC_DATABASE_POOL",
        default: Text("4"),
        meaning: "connections each instance keeps to Postgres (PYEXEC_DATABASE_URL): instances × this must stay under the database's max_connections",
        parse: |s| number(s, "a number of connections from 1 to 100", |n| (1..=100).contains(n)),
    },

    key_rate: Option<f64> = KEY_RATE {
        name: "PYEXEC_KEY_RATE",
        default: Text("10"),
        meaning: "requests per second a key may make unless it has its own rate (0: no limit); with keys only",
        parse: |s| {
            number(s, "a number of requests per second, 0 for no limit", |n: &f64| {
                n.is_finite() && *n >= 0.0
            })
            .map(|n| (n > 0.0).then_some(n))
        },
    },

    key_burst: u32 = KEY_BURST {
        name: "PYEXEC_KEY_BURST",
        default: Text("20"),
        meaning: "requests a key may make at once above its rate unless it has its own burst",
        parse: |s| number(s, "a positive number of requests", |n| *n > 0),
    },

    key_max_concurrent: Option<u32> = KEY_MAX_CONCURRENT {
        name: "PYEXEC_KEY_MAX_CONCURRENT",
        default: Text("0"),
        meaning: "jobs a key may run at once unless it has its own cap (0: only the server's PYEXEC_MAX_JOBS)",
        parse: |s| number(s, "a number of jobs, 0 for no cap", |_: &u32| true).map(|n| (n > 0).then_some(n)),
    },

    key_cpu_s_per_day: Option<f64> = KEY_CPU_S_PER_DAY {
        name: "PYEXEC_KEY_CPU_S_PER_DAY",
        default: Text("0"),
        meaning: "CPU-seconds of jobs a key may use per UTC day unless it has its own quota (0: no quota)",
        parse: |s| {
            number(s, "a number of CPU-seconds, 0 for no quota", |n: &f64| {
                n.is_finite() && *n >= 0.0
            })
            .map(|n| (n > 0.0).then_some(n))
        },
    },

    key_weight: u32 = KEY_WEIGHT {
        name: "PYEXEC_KEY_WEIGHT",
        default: Text("1"),
        meaning: "a key's share of the pool when requests queue (served in turn, this many per turn) unless it has its own weight",
        parse: |s| number(s, "a weight from 1 to 1000", |n| (1..=1000).contains(n)),
    },

    metrics_max_keys: usize = METRICS_MAX_KEYS {
        name: "PYEXEC_METRICS_MAX_KEYS",
        default: Text("100"),
        meaning: "keys with their own label in the per-key metrics; the others are counted as key=\"other\"",
        parse: |s| number(s, "a number of keys", |_| true),
    },

    gcp_project: Option<String> = GCP_PROJECT {
        name: "GOOGLE_CLOUD_PROJECT",
        default: Derived {
            shown: "(unset)",
            derive: |_| Ok(None),
        },
        meaning: "GCP project id; with it, trace headers become the log's trace field",
        parse: |s| Ok(Some(s.to_string())),
    },
}

/// `VARIABLES` as a Markdown table, for `--help` and docs/configuration.md.
pub fn markdown_table() -> String {
    let mut table = String::from("| variable | default | meaning |\n|---|---|---|\n");
    for var in VARIABLES {
        table.push_str(&format!(
            "| `{}` | {} | {} |\n",
            var.name(),
            var.default_shown(),
            var.meaning()
        ));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{read_vars, Host};
    use std::cell::RefCell;
    use std::collections::HashMap;

    /// Which names reading the defaults looked up.
    fn names_read() -> Vec<String> {
        let seen = RefCell::new(Vec::new());
        let _ = Config::from_env_with_cpus(
            |name| {
                seen.borrow_mut().push(name.to_string());
                None
            },
            2,
        );
        seen.into_inner()
    }

    #[test]
    fn the_table_lists_exactly_the_variables_read() {
        let mut read = names_read();
        read.sort();
        read.dedup();
        let mut listed: Vec<String> = VARIABLES.iter().map(|v| v.name().to_string()).collect();
        listed.sort();
        assert_eq!(read, listed);
        assert!(markdown_table().contains("| `PYEXEC_TIMEOUT` | 10 |"));
    }

    #[test]
    fn max_jobs_fit_three_quarters_of_the_memory_at_their_limit() {
        let on = |memory_bytes: u64, vars: &[(&str, &str)]| {
            let map: HashMap<String, String> = vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            Config::from_env_on(
                |name| map.get(name).cloned(),
                Host {
                    cpus: 2,
                    memory_bytes,
                },
            )
            .unwrap()
            .max_jobs
        };
        assert_eq!(on(2 << 30, &[]), 6, "a 2 GiB Cloud Run instance");
        assert_eq!(on(2 << 30, &[("PYEXEC_MEMORY_MB", "128")]), 12);
        assert_eq!(on(100 << 20, &[]), 1, "at least one");
        assert_eq!(on(2 << 30, &[("PYEXEC_MAX_JOBS", "3")]), 3);
    }

    #[test]
    fn pool_defaults_follow_the_cpu_count_and_the_mode() {
        let spawn = [("PYEXEC_ISOLATION", "spawn")];
        let one = read_vars(&spawn, 1).unwrap();
        assert_eq!(
            (
                one.pool_size,
                one.queue_max,
                one.max_parallel_spawns,
                one.max_jobs
            ),
            (2, 8, 1, 24)
        );
        let eight = read_vars(&spawn, 8).unwrap();
        assert_eq!(
            (
                eight.pool_size,
                eight.queue_max,
                eight.max_parallel_spawns,
                eight.max_jobs
            ),
            (16, 64, 8, 24)
        );
        assert_eq!(eight.max_connections, 256);
        let fork_one = read_vars(&[], 1).unwrap();
        assert_eq!((fork_one.pool_size, fork_one.queue_max), (8, 32));
        // A big machine: the connection cap follows the jobs and the queue.
        let big = read_vars(&[], 64).unwrap();
        assert_eq!((big.pool_size, big.queue_max), (512, 2048));
        assert_eq!(big.max_connections, 2 * (24 + 2048));
        let zero = read_vars(&[("PYEXEC_POOL_SIZE", "0")], 2).unwrap();
        assert_eq!((zero.pool_size, zero.queue_max), (0, 8));
    }

    #[test]
    fn each_bad_value_names_its_variable() {
        let bad = [
            ("PORT", "80808"),
            ("PORT", "http"),
            ("PYEXEC_MAX_CONNECTIONS", "0"),
            ("PYEXEC_BODY_TIMEOUT", "0"),
            ("PYEXEC_TIMEOUT", "0"),
            ("PYEXEC_TIMEOUT", "-1"),
            ("PYEXEC_TIMEOUT", "ten"),
            ("PYEXEC_TIMEOUT", "NaN"),
            ("PYEXEC_TIMEOUT", "inf"),
            ("PYEXEC_MAX_SCRIPT_CHARS", "0"),
            ("PYEXEC_MAX_SCRIPT_CHARS", "1e5"),
            ("PYEXEC_POOL_SIZE", "-1"),
            ("PYEXEC_POOL_SIZE", "100000"),
            ("PYEXEC_QUEUE_MAX", "many"),
            ("PYEXEC_QUEUE_TIMEOUT", "-0.5"),
            ("PYEXEC_MAX_PARALLEL_SPAWNS", "0"),
            ("PYEXEC_MEMORY_MB", "8"),
            ("PYEXEC_MEMORY_MB", "256MB"),
            ("PYEXEC_MAX_PROCESSES", "0"),
            ("PYEXEC_MAX_FILE_MB", "0"),
            ("PYEXEC_MAX_OPEN_FILES", "3"),
            ("PYEXEC_CPUS", "0"),
            ("PYEXEC_CPUS", "two"),
            ("PYEXEC_MAX_OUTPUT_BYTES", "-5"),
            ("PYEXEC_MAX_RESULT_BYTES", "0"),
            ("PYEXEC_MAX_INPUT_BYTES", "0"),
            ("PYEXEC_MAX_INPUT_BYTES", "1MiB"),
            ("PYEXEC_MAX_OUTPUT_FILES", "10001"),
            ("PYEXEC_MAX_OUTPUT_FILES_BYTES", "-1"),
            ("PYEXEC_SPAWN_TIMEOUT", "0"),
            ("PYEXEC_SHUTDOWN_GRACE", "soon"),
            ("PYEXEC_CGROUP_PARENT", "../escape"),
            ("PYEXEC_CGROUP_PARENT", "/abs"),
            ("PYEXEC_LOG_LEVEL", "verbose"),
            ("PYEXEC_LOG_FORMAT", "xml"),
        ];
        for (name, value) in bad {
            let err =
                read_vars(&[(name, value)], 2).expect_err(&format!("{name}={value} accepted"));
            assert_eq!(err.names(), [name]);
            let message = err.to_string();
            assert!(
                message.contains(name) && message.contains(value),
                "{message}"
            );
        }
    }
}
