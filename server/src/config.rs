//! The server's configuration: environment variables, read once at start-up.
//!
//! [`VARIABLES`] is the one list of every variable with its default and
//! meaning; `pyexec --help` prints it as the README's Markdown table, and a
//! test checks that the parser reads exactly these names. An empty value
//! counts as unset. A bad value is a [`ConfigError`] naming the variable;
//! `main` prints it and exits 64 (EX_USAGE).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use pyexec_worker::nsjail::{NsjailConfig, SandboxLimits};
use pyexec_worker::PoolConfig;

/// One environment variable the server reads.
pub struct EnvVar {
    pub name: &'static str,
    pub default: &'static str,
    pub meaning: &'static str,
}

const fn var(name: &'static str, default: &'static str, meaning: &'static str) -> EnvVar {
    EnvVar {
        name,
        default,
        meaning,
    }
}

/// Every variable, in the order of the README table.
///
/// Why the pool default is two workers per core: a spawn (interpreter start
/// plus the numpy/pandas imports) costs about 0.35 CPU-s, so with two per core
/// one is ready to take a job while the other refills.
pub const VARIABLES: &[EnvVar] = &[
    var(
        "PORT",
        "8080",
        "TCP port to listen on (0.0.0.0), as Cloud Run sets it",
    ),
    var(
        "PYEXEC_TIMEOUT",
        "10",
        "wall-clock limit of a job, seconds (decimals allowed); CPU limit is ceil(timeout + spawn timeout)+1 s",
    ),
    var(
        "PYEXEC_MAX_SCRIPT_CHARS",
        "100000",
        "longest script accepted, in characters (not bytes)",
    ),
    var(
        "PYEXEC_POOL_SIZE",
        "2 × CPUs, at least 2",
        "warm workers; 0 = one jail per request. Two per core: one ready while one refills",
    ),
    var(
        "PYEXEC_QUEUE_MAX",
        "4 × max(pool size, 2)",
        "requests that may wait for a worker; one more gets 503 overloaded",
    ),
    var(
        "PYEXEC_QUEUE_TIMEOUT",
        "5",
        "seconds a request may wait for a worker before 503 overloaded",
    ),
    var(
        "PYEXEC_MAX_PARALLEL_SPAWNS",
        "CPUs",
        "worker spawns running at once, so refilling can't starve running jobs",
    ),
    var(
        "PYEXEC_NSJAIL",
        "/opt/pyexec/bin/nsjail",
        "path of the nsjail binary",
    ),
    var(
        "PYEXEC_PYTHON",
        "/opt/pyexec/sandbox-venv/bin/python3",
        "the sandbox Python (with numpy and pandas)",
    ),
    var(
        "PYEXEC_NSJAIL_CONFIG",
        "nsjail.cfg",
        "the jail policy, relative to the working directory",
    ),
    var(
        "PYEXEC_RUNNER_DIR",
        "python",
        "directory holding runner.py, relative to the working directory",
    ),
    var(
        "PYEXEC_MEMORY_MB",
        "256",
        "memory limit of one jail (memory cgroup), MiB",
    ),
    var(
        "PYEXEC_MAX_PROCESSES",
        "128",
        "processes and threads one jail may have at once (pids cgroup)",
    ),
    var(
        "PYEXEC_MAX_FILE_MB",
        "10",
        "largest file a script may write, MiB (RLIMIT_FSIZE)",
    ),
    var(
        "PYEXEC_MAX_OPEN_FILES",
        "128",
        "open files per process (RLIMIT_NOFILE)",
    ),
    var(
        "PYEXEC_CPUS",
        "1",
        "CPU quota of one jail, in cores (decimals allowed)",
    ),
    var(
        "PYEXEC_MAX_OUTPUT_BYTES",
        "1048576",
        "cap on each of stdout and stderr; more is cut and flagged *_truncated",
    ),
    var(
        "PYEXEC_MAX_RESULT_BYTES",
        "10485760",
        "cap on the JSON of main()'s result (result_too_large beyond)",
    ),
    var(
        "PYEXEC_SPAWN_TIMEOUT",
        "30",
        "seconds a worker may take from launch to ready",
    ),
    var(
        "PYEXEC_SHUTDOWN_GRACE",
        "8",
        "seconds in-flight requests get after SIGTERM (inside Cloud Run's 10 s)",
    ),
    var(
        "PYEXEC_CGROUP_PARENT",
        "pyexec",
        "cgroup under which the per-worker cgroups are made",
    ),
    var(
        "PYEXEC_CGROUP_MOUNT",
        "/sys/fs/cgroup",
        "where the cgroup filesystem (v1 or v2) is mounted",
    ),
    var(
        "PYEXEC_LOG_LEVEL",
        "info",
        "error, warn, info, debug or trace",
    ),
    var(
        "PYEXEC_LOG_FORMAT",
        "json",
        "json (one Cloud Logging object per line) or text (for a terminal)",
    ),
    var(
        "GOOGLE_CLOUD_PROJECT",
        "(unset)",
        "GCP project id; with it, trace headers become the log's trace field",
    ),
];

/// `VARIABLES` as a Markdown table, for the README.
pub fn markdown_table() -> String {
    let mut table = String::from("| variable | default | meaning |\n|---|---|---|\n");
    for var in VARIABLES {
        table.push_str(&format!(
            "| `{}` | {} | {} |\n",
            var.name, var.default, var.meaning
        ));
    }
    table
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

/// Everything the server is configured with.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub port: u16,
    pub timeout: Duration,
    pub max_script_chars: usize,
    pub pool_size: usize,
    pub queue_max: usize,
    pub queue_timeout: Duration,
    pub max_parallel_spawns: usize,
    pub nsjail: PathBuf,
    pub python: PathBuf,
    pub nsjail_config: PathBuf,
    pub runner_dir: PathBuf,
    pub memory_mb: u64,
    pub max_processes: u32,
    pub max_file_mb: u64,
    pub max_open_files: u32,
    pub cpus: f64,
    pub max_output_bytes: usize,
    pub max_result_bytes: u64,
    pub spawn_timeout: Duration,
    pub shutdown_grace: Duration,
    pub cgroup_parent: String,
    pub cgroup_mount: PathBuf,
    pub log_level: tracing::Level,
    pub log_format: LogFormat,
    pub gcp_project: Option<String>,
}

/// A variable whose value can't be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub name: &'static str,
    pub value: String,
    pub expected: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid environment variable {}={:?}: expected {}",
            self.name, self.value, self.expected
        )
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads the configuration through `env` (`std::env::var(..).ok()` in
    /// production, a map in tests).
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Config::from_env_with_cpus(env, cpus)
    }

    /// As [`Config::from_env`], with the CPU count the defaults derive from.
    pub fn from_env_with_cpus(
        env: impl Fn(&str) -> Option<String>,
        cpus: usize,
    ) -> Result<Config, ConfigError> {
        let env = Env { get: &env };
        let pool_size = env.parse(
            "PYEXEC_POOL_SIZE",
            (2 * cpus).max(2),
            "a number of workers, 0 to 4096",
            |n| *n <= 4096,
        )?;
        let config = Config {
            port: env.parse("PORT", 8080, "a TCP port, 0 to 65535", |_| true)?,
            timeout: env.seconds("PYEXEC_TIMEOUT", 10.0, false)?,
            max_script_chars: env.parse(
                "PYEXEC_MAX_SCRIPT_CHARS",
                100_000,
                "a positive number of characters",
                |n| *n > 0,
            )?,
            pool_size,
            queue_max: env.parse(
                "PYEXEC_QUEUE_MAX",
                4 * pool_size.max(2),
                "a number of waiting requests",
                |_| true,
            )?,
            queue_timeout: env.seconds("PYEXEC_QUEUE_TIMEOUT", 5.0, true)?,
            max_parallel_spawns: env.parse(
                "PYEXEC_MAX_PARALLEL_SPAWNS",
                cpus.max(1),
                "a positive number of spawns",
                |n| *n > 0,
            )?,
            nsjail: env.path("PYEXEC_NSJAIL", "/opt/pyexec/bin/nsjail")?,
            python: env.path("PYEXEC_PYTHON", "/opt/pyexec/sandbox-venv/bin/python3")?,
            nsjail_config: env.path("PYEXEC_NSJAIL_CONFIG", "nsjail.cfg")?,
            runner_dir: env.path("PYEXEC_RUNNER_DIR", "python")?,
            memory_mb: env.parse(
                "PYEXEC_MEMORY_MB",
                256,
                "a number of MiB, 16 or more",
                |n| *n >= 16,
            )?,
            max_processes: env.parse(
                "PYEXEC_MAX_PROCESSES",
                128,
                "a positive number of processes",
                |n| *n > 0,
            )?,
            max_file_mb: env.parse("PYEXEC_MAX_FILE_MB", 10, "a positive number of MiB", |n| {
                *n > 0
            })?,
            max_open_files: env.parse(
                "PYEXEC_MAX_OPEN_FILES",
                128,
                "a number of files, 16 or more (Python needs a few itself)",
                |n| *n >= 16,
            )?,
            cpus: env.parse(
                "PYEXEC_CPUS",
                1.0,
                "a positive number of cores, e.g. 1 or 0.5",
                |n: &f64| n.is_finite() && *n > 0.0,
            )?,
            max_output_bytes: env.parse(
                "PYEXEC_MAX_OUTPUT_BYTES",
                1 << 20,
                "a number of bytes",
                |_| true,
            )?,
            max_result_bytes: env.parse(
                "PYEXEC_MAX_RESULT_BYTES",
                10 << 20,
                "a positive number of bytes",
                |n| *n > 0,
            )?,
            spawn_timeout: env.seconds("PYEXEC_SPAWN_TIMEOUT", 30.0, false)?,
            shutdown_grace: env.seconds("PYEXEC_SHUTDOWN_GRACE", 8.0, true)?,
            cgroup_parent: env.cgroup_name("PYEXEC_CGROUP_PARENT", "pyexec")?,
            cgroup_mount: env.path("PYEXEC_CGROUP_MOUNT", "/sys/fs/cgroup")?,
            log_level: env.choice(
                "PYEXEC_LOG_LEVEL",
                "info",
                &[
                    ("error", tracing::Level::ERROR),
                    ("warn", tracing::Level::WARN),
                    ("info", tracing::Level::INFO),
                    ("debug", tracing::Level::DEBUG),
                    ("trace", tracing::Level::TRACE),
                ],
            )?,
            log_format: env.choice(
                "PYEXEC_LOG_FORMAT",
                "json",
                &[("json", LogFormat::Json), ("text", LogFormat::Text)],
            )?,
            gcp_project: env.get("GOOGLE_CLOUD_PROJECT"),
        };
        if config.pool_size == 0 && config.queue_max == 0 {
            // With no warm worker every request waits for its own spawn.
            return Err(ConfigError {
                name: "PYEXEC_QUEUE_MAX",
                value: "0".into(),
                expected: "at least 1 when PYEXEC_POOL_SIZE=0 (every request waits for a spawn)"
                    .into(),
            });
        }
        Ok(config)
    }

    /// The CPU-time backstop: a script that spins gets killed by RLIMIT_CPU
    /// even if the wall-clock deadline somehow didn't fire. RLIMIT_CPU counts
    /// the jailed interpreter's whole life, its warm-up (importing numpy and
    /// pandas, at most the spawn timeout) as well as the job, so it covers
    /// both: else a CPU-bound job on a slow CPU (0.25 CPU-s of warm-up here,
    /// 3.5 under emulation) is killed before its deadline and reported as a
    /// crash, not a timeout.
    pub fn cpu_seconds(&self) -> u64 {
        (self.timeout + self.spawn_timeout).as_secs_f64().ceil() as u64 + 1
    }

    /// The largest request body that can hold a script within the limit.
    /// JSON's `\u00XX` escape spends 6 bytes on one character, so a body over
    /// 6 bytes per character (plus room for the object around it) cannot hold
    /// an acceptable script and is refused before it is read whole.
    pub fn max_body_bytes(&self) -> usize {
        self.max_script_chars
            .saturating_mul(6)
            .saturating_add(64 * 1024)
    }

    pub fn pool_config(&self) -> PoolConfig {
        PoolConfig {
            size: self.pool_size,
            queue_max: self.queue_max,
            queue_timeout: self.queue_timeout,
            job_timeout: self.timeout,
            max_parallel_spawns: self.max_parallel_spawns,
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
            spawn_timeout: self.spawn_timeout,
            cgroup_parent: self.cgroup_parent.clone(),
            cgroup_mount: self.cgroup_mount.clone(),
        }
    }
}

/// The environment lookup with the parsing helpers every variable shares.
struct Env<'a> {
    get: &'a dyn Fn(&str) -> Option<String>,
}

impl Env<'_> {
    fn get(&self, name: &str) -> Option<String> {
        (self.get)(name).filter(|v| !v.trim().is_empty())
    }

    fn parse<T: std::str::FromStr>(
        &self,
        name: &'static str,
        default: T,
        expected: &str,
        valid: impl Fn(&T) -> bool,
    ) -> Result<T, ConfigError> {
        let Some(raw) = self.get(name) else {
            return Ok(default);
        };
        match raw.trim().parse::<T>() {
            Ok(value) if valid(&value) => Ok(value),
            _ => Err(ConfigError {
                name,
                value: raw,
                expected: expected.into(),
            }),
        }
    }

    fn seconds(
        &self,
        name: &'static str,
        default: f64,
        zero_ok: bool,
    ) -> Result<Duration, ConfigError> {
        let expected = if zero_ok {
            "a number of seconds, 0 or more, e.g. 5 or 0.5"
        } else {
            "a positive number of seconds, e.g. 10 or 2.5"
        };
        // A day is far beyond any sane value; the cap keeps Duration arithmetic safe.
        let seconds = self.parse(name, default, expected, |s: &f64| {
            s.is_finite() && *s <= 86_400.0 && (*s > 0.0 || (zero_ok && *s == 0.0))
        })?;
        Ok(Duration::from_secs_f64(seconds))
    }

    fn path(&self, name: &'static str, default: &str) -> Result<PathBuf, ConfigError> {
        Ok(PathBuf::from(
            self.get(name).unwrap_or_else(|| default.into()),
        ))
    }

    fn cgroup_name(&self, name: &'static str, default: &str) -> Result<String, ConfigError> {
        let value = self.get(name).unwrap_or_else(|| default.into());
        let valid = value.split('/').all(|part| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        });
        if valid {
            Ok(value)
        } else {
            Err(ConfigError {
                name,
                value,
                expected: "a relative cgroup path of [A-Za-z0-9._-] names, e.g. pyexec".into(),
            })
        }
    }

    fn choice<T: Copy>(
        &self,
        name: &'static str,
        default: &str,
        options: &[(&str, T)],
    ) -> Result<T, ConfigError> {
        let raw = self.get(name).unwrap_or_else(|| default.into());
        let wanted = raw.trim().to_ascii_lowercase();
        match options.iter().find(|(label, _)| *label == wanted) {
            Some((_, value)) => Ok(*value),
            None => Err(ConfigError {
                name,
                value: raw,
                expected: format!(
                    "one of {}",
                    options
                        .iter()
                        .map(|(label, _)| *label)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;

    /// Records which names a parse looked up (for the test that `VARIABLES` is complete).
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

    fn parse(vars: &[(&str, &str)], cpus: usize) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_env_with_cpus(|name| map.get(name).cloned(), cpus)
    }

    #[test]
    fn defaults() {
        let c = parse(&[], 2).unwrap();
        assert_eq!(c.port, 8080);
        assert_eq!(c.timeout, Duration::from_secs(10));
        assert_eq!(c.max_script_chars, 100_000);
        assert_eq!(c.pool_size, 4);
        assert_eq!(c.queue_max, 16);
        assert_eq!(c.queue_timeout, Duration::from_secs(5));
        assert_eq!(c.max_parallel_spawns, 2);
        assert_eq!(c.nsjail, PathBuf::from("/opt/pyexec/bin/nsjail"));
        assert_eq!(
            c.python,
            PathBuf::from("/opt/pyexec/sandbox-venv/bin/python3")
        );
        assert_eq!(c.nsjail_config, PathBuf::from("nsjail.cfg"));
        assert_eq!(c.runner_dir, PathBuf::from("python"));
        assert_eq!(
            (
                c.memory_mb,
                c.max_processes,
                c.max_file_mb,
                c.max_open_files
            ),
            (256, 128, 10, 128)
        );
        assert_eq!(c.cpus, 1.0);
        assert_eq!(
            (c.max_output_bytes, c.max_result_bytes),
            (1 << 20, 10 << 20)
        );
        assert_eq!(c.spawn_timeout, Duration::from_secs(30));
        assert_eq!(c.shutdown_grace, Duration::from_secs(8));
        assert_eq!(c.cgroup_parent, "pyexec");
        assert_eq!(c.cgroup_mount, PathBuf::from("/sys/fs/cgroup"));
        assert_eq!(c.log_level, tracing::Level::INFO);
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.gcp_project, None);
        assert_eq!(c.cpu_seconds(), 41);
    }

    #[test]
    fn pool_defaults_follow_the_cpu_count() {
        let one = parse(&[], 1).unwrap();
        assert_eq!(
            (one.pool_size, one.queue_max, one.max_parallel_spawns),
            (2, 8, 1)
        );
        let eight = parse(&[], 8).unwrap();
        assert_eq!(
            (eight.pool_size, eight.queue_max, eight.max_parallel_spawns),
            (16, 64, 8)
        );
        let zero = parse(&[("PYEXEC_POOL_SIZE", "0")], 2).unwrap();
        assert_eq!((zero.pool_size, zero.queue_max), (0, 8));
    }

    #[test]
    fn values_are_read() {
        let c = parse(
            &[
                ("PORT", "0"),
                ("PYEXEC_TIMEOUT", "2.5"),
                ("PYEXEC_MAX_SCRIPT_CHARS", "10"),
                ("PYEXEC_POOL_SIZE", "3"),
                ("PYEXEC_QUEUE_MAX", "0"),
                ("PYEXEC_QUEUE_TIMEOUT", "0"),
                ("PYEXEC_MEMORY_MB", "512"),
                ("PYEXEC_CPUS", "0.5"),
                ("PYEXEC_CGROUP_PARENT", "system.slice/pyexec"),
                ("PYEXEC_LOG_LEVEL", "DEBUG"),
                ("PYEXEC_LOG_FORMAT", "text"),
                ("GOOGLE_CLOUD_PROJECT", "my-project"),
                ("PYEXEC_SHUTDOWN_GRACE", ""),
            ],
            2,
        )
        .unwrap();
        assert_eq!(c.port, 0);
        assert_eq!(c.timeout, Duration::from_millis(2500));
        assert_eq!(c.cpu_seconds(), 34);
        assert_eq!((c.max_script_chars, c.pool_size, c.queue_max), (10, 3, 0));
        assert_eq!(c.queue_timeout, Duration::ZERO);
        assert_eq!(c.nsjail_config().limits.memory_bytes, 512 << 20);
        assert_eq!(c.cpus, 0.5);
        assert_eq!(c.cgroup_parent, "system.slice/pyexec");
        assert_eq!(c.log_level, tracing::Level::DEBUG);
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.gcp_project.as_deref(), Some("my-project"));
        assert_eq!(
            c.shutdown_grace,
            Duration::from_secs(8),
            "empty counts as unset"
        );
    }

    #[test]
    fn each_bad_value_names_its_variable() {
        let bad = [
            ("PORT", "80808"),
            ("PORT", "http"),
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
            ("PYEXEC_SPAWN_TIMEOUT", "0"),
            ("PYEXEC_SHUTDOWN_GRACE", "soon"),
            ("PYEXEC_CGROUP_PARENT", "../escape"),
            ("PYEXEC_CGROUP_PARENT", "/abs"),
            ("PYEXEC_LOG_LEVEL", "verbose"),
            ("PYEXEC_LOG_FORMAT", "xml"),
        ];
        for (name, value) in bad {
            let err = parse(&[(name, value)], 2).expect_err(&format!("{name}={value} accepted"));
            assert_eq!(err.name, name);
            let message = err.to_string();
            assert!(
                message.contains(name) && message.contains(value),
                "{message}"
            );
        }
    }

    #[test]
    fn a_pool_of_zero_needs_a_queue() {
        let err = parse(&[("PYEXEC_POOL_SIZE", "0"), ("PYEXEC_QUEUE_MAX", "0")], 2).unwrap_err();
        assert_eq!(err.name, "PYEXEC_QUEUE_MAX");
    }

    #[test]
    fn body_cap_covers_a_fully_escaped_script() {
        let c = parse(&[("PYEXEC_MAX_SCRIPT_CHARS", "1000")], 2).unwrap();
        let script: String = "\u{1}".repeat(1000);
        let body = serde_json::json!({ "script": script }).to_string();
        assert!(body.len() <= c.max_body_bytes());
    }

    #[test]
    fn the_table_lists_exactly_the_variables_read() {
        let mut read = names_read();
        read.sort();
        read.dedup();
        let mut listed: Vec<String> = VARIABLES.iter().map(|v| v.name.to_string()).collect();
        listed.sort();
        assert_eq!(read, listed);
        assert!(markdown_table().contains("| `PYEXEC_TIMEOUT` | 10 |"));
    }
}
