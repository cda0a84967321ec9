//! The server's configuration: environment variables, read once at start-up.
//!
//! Each variable is one [`Var`] below, carrying its name, its default, its
//! meaning and its parser. `pyexec --help` prints [`VARIABLES`] as the
//! Markdown table of docs/configuration.md (a test compares the two), and
//! [`Config::from_env`] reads every value through the same entries: a default
//! is written once, so the help, the docs and the behaviour can't drift
//! apart. An empty value counts as unset. A bad value, or values that
//! contradict each other, is a [`ConfigError`] naming the variables; `main`
//! prints it and exits 64 (EX_USAGE) rather than failing request by request
//! later.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use pyexec_worker::max_answer_frame;
use pyexec_worker::Recycling;
use pyexec_worker::{FileCaps, PoolConfig};
use pyexec_worker::{NsjailConfig, SandboxLimits};

/// One environment variable the server reads.
pub struct Var<T> {
    pub name: &'static str,
    pub default: DefaultValue<T>,
    pub meaning: &'static str,
    /// Reads a set value; the error says what a valid value looks like.
    pub parse: fn(&str) -> Result<T, String>,
}

/// What a variable is when it is unset.
pub enum DefaultValue<T> {
    /// Written as a user would write it, and read by the variable's own parser.
    Text(&'static str),
    /// Worked out at start-up; `shown` is how the table describes it.
    Derived {
        shown: &'static str,
        derive: fn(&Machine) -> T,
    },
}

/// What derived defaults follow: the host, and variables filled in as they
/// are read (a derived default may use only those read before it).
pub struct Machine {
    pub cpus: usize,
    pub memory_bytes: u64,
    pub isolation: Isolation,
    pub memory_mb: u64,
    pub pool_size: usize,
    pub queue_max: usize,
    pub max_jobs: usize,
}

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
        Host {
            cpus,
            memory_bytes: total.min(own_cgroup_memory_limit().unwrap_or(u64::MAX)),
        }
    }
}

/// The memory limit of the cgroup this process is in, if it has one.
fn own_cgroup_memory_limit() -> Option<u64> {
    let membership = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let root = std::path::Path::new("/sys/fs/cgroup");
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

/// How a job's process is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// A child forked from a warm zygote, a fresh sandbox of its own.
    Fork,
    /// A fresh jail (and interpreter) per job.
    Spawn,
}

impl Isolation {
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Fork => "fork",
            Isolation::Spawn => "spawn",
        }
    }
}

/// A row of the table, whatever the variable's type.
pub trait Row: Sync {
    fn name(&self) -> &'static str;
    fn default_shown(&self) -> &'static str;
    fn meaning(&self) -> &'static str;
}

impl<T> Row for Var<T> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn default_shown(&self) -> &'static str {
        match self.default {
            DefaultValue::Text(text) => text,
            DefaultValue::Derived { shown, .. } => shown,
        }
    }

    fn meaning(&self) -> &'static str {
        self.meaning
    }
}

pub static PORT: Var<u16> = Var {
    name: "PORT",
    default: DefaultValue::Text("8080"),
    meaning: "TCP port to listen on (0.0.0.0), as Cloud Run sets it",
    parse: |s| number(s, "a TCP port, 0 to 65535", |_| true),
};

/// Each connection is a task and a file descriptor, and it may hold a request
/// body of up to the body cap (about 1.6 MiB by default: a script and an
/// input) or one job. 256 is more than ten times what the defaults on 2 CPUs
/// can use at once (pool 4 + queue 16), which leaves room for probes,
/// scrapes and idle keep-alive clients, while keeping the server's worst
/// case (every connection holding a maximal body) near 420 MiB and its
/// descriptors well inside the usual limit of 1024 beside the workers'
/// pipes and sockets.
pub static MAX_CONNECTIONS: Var<usize> = Var {
    name: "PYEXEC_MAX_CONNECTIONS",
    default: DefaultValue::Derived {
        shown: "256, or 2 × (max jobs + queue max) if more",
        derive: |m| (2 * (m.max_jobs + m.queue_max)).max(256),
    },
    meaning: "open client connections at most; more wait in the kernel's backlog until one closes",
    parse: |s| number(s, "a positive number of connections", |n| *n > 0),
};

pub static BODY_TIMEOUT: Var<Duration> = Var {
    name: "PYEXEC_BODY_TIMEOUT",
    default: DefaultValue::Text("10"),
    meaning: "seconds a client gets to send a request's whole body (then 408 request_timeout)",
    parse: |s| seconds(s, false),
};

pub static ISOLATION: Var<Isolation> = Var {
    name: "PYEXEC_ISOLATION",
    default: DefaultValue::Text("fork"),
    meaning: "fork: each job is a child of a warm zygote, forked into a fresh sandbox of its own (a few ms of CPU); spawn: a fresh jail and interpreter per job (shares nothing but the kernel; about 0.25 CPU-s)",
    parse: |s| choice(s, &[("fork", Isolation::Fork), ("spawn", Isolation::Spawn)]),
};

pub static TIMEOUT: Var<Duration> = Var {
    name: "PYEXEC_TIMEOUT",
    default: DefaultValue::Text("10"),
    meaning:
        "wall-clock limit of a job, seconds (decimals allowed); CPU limit is ceil(timeout)+1 s (spawn mode: ceil(timeout + spawn timeout)+1 s, its counter includes the warm-up)",
    parse: |s| seconds(s, false),
};

pub static MAX_SCRIPT_CHARS: Var<usize> = Var {
    name: "PYEXEC_MAX_SCRIPT_CHARS",
    default: DefaultValue::Text("100000"),
    meaning: "longest script accepted, in characters (not bytes)",
    parse: |s| number(s, "a positive number of characters", |n| *n > 0),
};

/// Fork mode: a pre-forked child costs about 2.6 MB private memory and 5 ms
/// of CPU, so eight per core serve a burst of that size warm. Spawn mode:
/// a spawn (interpreter start plus the numpy/pandas imports) costs about a
/// quarter of a CPU-second, so two per core keep one ready while the other
/// refills.
pub static MAX_INPUT_BYTES: Var<usize> = Var {
    name: "PYEXEC_MAX_INPUT_BYTES",
    default: DefaultValue::Text("1048576"),
    meaning: "cap on the JSON of a request's input, in bytes as sent (413 input_too_large beyond); the body cap grows by as much",
    parse: |s| number(s, "a positive number of bytes", |n| *n > 0),
};

pub static POOL_SIZE: Var<usize> = Var {
    name: "PYEXEC_POOL_SIZE",
    default: DefaultValue::Derived {
        shown: "fork: 8 × CPUs, at least 8; spawn: 2 × CPUs, at least 2",
        derive: |m| match m.isolation {
            Isolation::Fork => (8 * m.cpus).max(8),
            Isolation::Spawn => (2 * m.cpus).max(2),
        },
    },
    meaning: "warm workers; 0 = one worker made per request (the benchmark's baseline)",
    parse: |s| number(s, "a number of workers, 0 to 4096", |n| *n <= 4096),
};

pub static QUEUE_MAX: Var<usize> = Var {
    name: "PYEXEC_QUEUE_MAX",
    default: DefaultValue::Derived {
        shown: "4 × max(pool size, 2)",
        derive: |m| 4 * m.pool_size.max(2),
    },
    meaning: "requests that may wait for a worker; one more gets 503 overloaded",
    parse: |s| number(s, "a number of waiting requests", |_| true),
};

pub static QUEUE_TIMEOUT: Var<Duration> = Var {
    name: "PYEXEC_QUEUE_TIMEOUT",
    default: DefaultValue::Text("5"),
    meaning: "seconds a request may wait for a worker before 503 overloaded",
    parse: |s| seconds(s, true),
};

/// Each running job may take up to PYEXEC_MEMORY_MB, so the default lets as
/// many run as fit, each at its limit, in three quarters of the memory the
/// server may use (the rest: the server, the warm pool, the page cache). It
/// is not tied to the CPUs: jobs that sleep or wait would otherwise hold
/// every slot while the cores idle.
pub static MAX_JOBS: Var<usize> = Var {
    name: "PYEXEC_MAX_JOBS",
    default: DefaultValue::Derived {
        shown: "¾ of the memory ÷ PYEXEC_MEMORY_MB, at least 1 (the memory: the machine's, or the server's cgroup limit if lower)",
        derive: |m| {
            let job = (m.memory_mb << 20).max(1);
            usize::try_from(m.memory_bytes / 4 * 3 / job).unwrap_or(usize::MAX).max(1)
        },
    },
    meaning: "jobs running at once; more wait in the queue",
    parse: |s| number(s, "a positive number of jobs", |n| *n > 0),
};

/// Spawn mode: a spawn is a quarter of a CPU-second, so one per core keeps
/// refilling from starving running jobs. Fork mode: a fork costs a few
/// CPU-milliseconds but about 5 ms of waiting (the zygote, the child sealing
/// itself, cgroup writes), so more in flight keep the pool full at hundreds
/// of jobs a second.
pub static MAX_PARALLEL_SPAWNS: Var<usize> = Var {
    name: "PYEXEC_MAX_PARALLEL_SPAWNS",
    default: DefaultValue::Derived {
        shown: "fork: 4 × CPUs; spawn: CPUs",
        derive: |m| match m.isolation {
            Isolation::Fork => 4 * m.cpus.max(1),
            Isolation::Spawn => m.cpus.max(1),
        },
    },
    meaning: "workers being made at once, so refilling can't starve running jobs",
    parse: |s| number(s, "a positive number of spawns", |n| *n > 0),
};

pub static NSJAIL: Var<PathBuf> = Var {
    name: "PYEXEC_NSJAIL",
    default: DefaultValue::Text("/opt/pyexec/bin/nsjail"),
    meaning: "path of the nsjail binary",
    parse: path,
};

pub static PYTHON: Var<PathBuf> = Var {
    name: "PYEXEC_PYTHON",
    default: DefaultValue::Text("/opt/pyexec/sandbox-venv/bin/python3"),
    meaning: "the sandbox Python (with numpy and pandas)",
    parse: path,
};

pub static NSJAIL_CONFIG: Var<PathBuf> = Var {
    name: "PYEXEC_NSJAIL_CONFIG",
    default: DefaultValue::Text("nsjail.cfg"),
    meaning: "the jail policy, relative to the working directory",
    parse: path,
};

pub static RUNNER_DIR: Var<PathBuf> = Var {
    name: "PYEXEC_RUNNER_DIR",
    default: DefaultValue::Text("python"),
    meaning: "directory holding runner.py, relative to the working directory",
    parse: path,
};

pub static MEMORY_MB: Var<u64> = Var {
    name: "PYEXEC_MEMORY_MB",
    default: DefaultValue::Text("256"),
    meaning: "memory limit of one jail (memory cgroup), MiB",
    parse: |s| number(s, "a number of MiB, 16 or more", |n| *n >= 16),
};

pub static MAX_PROCESSES: Var<u32> = Var {
    name: "PYEXEC_MAX_PROCESSES",
    default: DefaultValue::Text("128"),
    meaning: "processes and threads one jail may have at once (pids cgroup)",
    parse: |s| number(s, "a positive number of processes", |n| *n > 0),
};

pub static MAX_FILE_MB: Var<u64> = Var {
    name: "PYEXEC_MAX_FILE_MB",
    default: DefaultValue::Text("10"),
    meaning: "largest file a script may write, MiB (RLIMIT_FSIZE)",
    parse: |s| number(s, "a positive number of MiB", |n| *n > 0),
};

pub static MAX_OPEN_FILES: Var<u32> = Var {
    name: "PYEXEC_MAX_OPEN_FILES",
    default: DefaultValue::Text("128"),
    meaning: "open files per process (RLIMIT_NOFILE)",
    parse: |s| {
        number(
            s,
            "a number of files, 16 or more (Python needs a few itself)",
            |n| *n >= 16,
        )
    },
};

pub static CPUS: Var<f64> = Var {
    name: "PYEXEC_CPUS",
    default: DefaultValue::Text("1"),
    meaning: "CPU quota of one jail, in cores (decimals allowed)",
    parse: |s| {
        number(s, "a positive number of cores, e.g. 1 or 0.5", |n: &f64| {
            n.is_finite() && *n > 0.0
        })
    },
};

pub static MAX_OUTPUT_BYTES: Var<usize> = Var {
    name: "PYEXEC_MAX_OUTPUT_BYTES",
    default: DefaultValue::Text("1048576"),
    meaning: "cap on each of stdout and stderr; more is cut and flagged *_truncated",
    parse: |s| number(s, "a number of bytes", |_| true),
};

pub static MAX_RESULT_BYTES: Var<u64> = Var {
    name: "PYEXEC_MAX_RESULT_BYTES",
    default: DefaultValue::Text("10485760"),
    meaning: "cap on the JSON of main()'s result (result_too_large beyond)",
    parse: |s| number(s, "a positive number of bytes", |n| *n > 0),
};

pub static MAX_OUTPUT_FILES: Var<u32> = Var {
    name: "PYEXEC_MAX_OUTPUT_FILES",
    default: DefaultValue::Text("32"),
    meaning: "files of /tmp/outputs returned at most; more are listed in files_omitted",
    parse: |s| number(s, "a number of files, 0 to 10000", |n| *n <= 10_000),
};

pub static MAX_OUTPUT_FILES_BYTES: Var<u64> = Var {
    name: "PYEXEC_MAX_OUTPUT_FILES_BYTES",
    default: DefaultValue::Text("4194304"),
    meaning: "bytes of the returned files in all (before base64); files beyond are listed in files_omitted",
    parse: |s| number(s, "a number of bytes", |_| true),
};

pub static SPAWN_TIMEOUT: Var<Duration> = Var {
    name: "PYEXEC_SPAWN_TIMEOUT",
    default: DefaultValue::Text("30"),
    meaning: "seconds a worker may take from launch to ready",
    parse: |s| seconds(s, false),
};

pub static ZYGOTE_MAX_FORKS: Var<u64> = Var {
    name: "PYEXEC_ZYGOTE_MAX_FORKS",
    default: DefaultValue::Text("10000"),
    meaning: "fork mode: a zygote is replaced by a fresh one after this many forks (its jobs share its memory layout and hash secret)",
    parse: |s| number(s, "a positive number of forks", |n| *n > 0),
};

pub static ZYGOTE_MAX_AGE: Var<Duration> = Var {
    name: "PYEXEC_ZYGOTE_MAX_AGE",
    default: DefaultValue::Text("600"),
    meaning: "fork mode: seconds after which a zygote is replaced by a fresh one (its successor is ready first)",
    parse: |s| seconds(s, false),
};

pub static SHUTDOWN_GRACE: Var<Duration> = Var {
    name: "PYEXEC_SHUTDOWN_GRACE",
    default: DefaultValue::Text("8"),
    meaning: "seconds in-flight requests get after SIGTERM (inside Cloud Run's 10 s)",
    parse: |s| seconds(s, true),
};

pub static CGROUP_PARENT: Var<String> = Var {
    name: "PYEXEC_CGROUP_PARENT",
    default: DefaultValue::Text("pyexec"),
    meaning: "cgroup under which the per-worker cgroups are made",
    parse: cgroup_name,
};

pub static CGROUP_MOUNT: Var<PathBuf> = Var {
    name: "PYEXEC_CGROUP_MOUNT",
    default: DefaultValue::Text("/sys/fs/cgroup"),
    meaning: "where the cgroup filesystem (v1 or v2) is mounted",
    parse: path,
};

pub static LOG_LEVEL: Var<tracing::Level> = Var {
    name: "PYEXEC_LOG_LEVEL",
    default: DefaultValue::Text("info"),
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
};

pub static LOG_FORMAT: Var<LogFormat> = Var {
    name: "PYEXEC_LOG_FORMAT",
    default: DefaultValue::Text("json"),
    meaning: "json (one Cloud Logging object per line) or text (for a terminal)",
    parse: |s| choice(s, &[("json", LogFormat::Json), ("text", LogFormat::Text)]),
};

pub static GCP_PROJECT: Var<Option<String>> = Var {
    name: "GOOGLE_CLOUD_PROJECT",
    default: DefaultValue::Derived {
        shown: "(unset)",
        derive: |_| None,
    },
    meaning: "GCP project id; with it, trace headers become the log's trace field",
    parse: |s| Ok(Some(s.to_string())),
};

/// Every variable, in the order of docs/configuration.md's table.
pub static VARIABLES: &[&dyn Row] = &[
    &PORT,
    &MAX_CONNECTIONS,
    &BODY_TIMEOUT,
    &ISOLATION,
    &TIMEOUT,
    &MAX_SCRIPT_CHARS,
    &MAX_INPUT_BYTES,
    &POOL_SIZE,
    &QUEUE_MAX,
    &QUEUE_TIMEOUT,
    &MAX_JOBS,
    &MAX_PARALLEL_SPAWNS,
    &NSJAIL,
    &PYTHON,
    &NSJAIL_CONFIG,
    &RUNNER_DIR,
    &MEMORY_MB,
    &MAX_PROCESSES,
    &MAX_FILE_MB,
    &MAX_OPEN_FILES,
    &CPUS,
    &MAX_OUTPUT_BYTES,
    &MAX_RESULT_BYTES,
    &MAX_OUTPUT_FILES,
    &MAX_OUTPUT_FILES_BYTES,
    &SPAWN_TIMEOUT,
    &ZYGOTE_MAX_FORKS,
    &ZYGOTE_MAX_AGE,
    &SHUTDOWN_GRACE,
    &CGROUP_PARENT,
    &CGROUP_MOUNT,
    &LOG_LEVEL,
    &LOG_FORMAT,
    &GCP_PROJECT,
];

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

/// The largest job frame the runner accepts (`MAX_JOB_FRAME_BYTES` in
/// python/pyexec_runner/protocol.py; a test checks the two agree).
const RUNNER_MAX_JOB_FRAME: usize = 16 << 20;
/// Room in a job frame beyond the script's JSON string: the envelope.
const JOB_ENVELOPE: usize = 1024;
/// JSON spends at most this many bytes on one character (`\u00XX`).
const MAX_JSON_BYTES_PER_CHAR: usize = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

/// Everything the server is configured with.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub port: u16,
    pub max_connections: usize,
    pub body_timeout: Duration,
    pub isolation: Isolation,
    pub timeout: Duration,
    pub max_script_chars: usize,
    pub max_input_bytes: usize,
    pub pool_size: usize,
    pub queue_max: usize,
    pub queue_timeout: Duration,
    pub max_jobs: usize,
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
    pub max_output_files: u32,
    pub max_output_files_bytes: u64,
    pub spawn_timeout: Duration,
    pub zygote_max_forks: u64,
    pub zygote_max_age: Duration,
    pub shutdown_grace: Duration,
    pub cgroup_parent: String,
    pub cgroup_mount: PathBuf,
    pub log_level: tracing::Level,
    pub log_format: LogFormat,
    pub gcp_project: Option<String>,
}

/// A configuration the server refuses to start with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// A variable whose value can't be used.
    Invalid {
        name: &'static str,
        value: String,
        expected: String,
    },
    /// Values that are each fine but contradict each other.
    Conflict {
        names: Vec<&'static str>,
        why: String,
    },
}

impl ConfigError {
    /// The variables at fault.
    pub fn names(&self) -> Vec<&'static str> {
        match self {
            ConfigError::Invalid { name, .. } => vec![name],
            ConfigError::Conflict { names, .. } => names.clone(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Invalid {
                name,
                value,
                expected,
            } => write!(
                f,
                "invalid environment variable {name}={value:?}: expected {expected}"
            ),
            ConfigError::Conflict { names, why } => {
                write!(f, "{} do not fit together: {why}", names.join(" and "))
            }
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads the configuration through `env` (`std::env::var(..).ok()` in
    /// production, a map in tests), with defaults derived from this host.
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        Config::from_env_on(env, Host::detect())
    }

    /// As [`Config::from_env`] on a host with `cpus` CPUs and 8 GiB of
    /// memory: predictable defaults for tests.
    pub fn from_env_with_cpus(
        env: impl Fn(&str) -> Option<String>,
        cpus: usize,
    ) -> Result<Config, ConfigError> {
        let host = Host {
            cpus,
            memory_bytes: 8 << 30,
        };
        Config::from_env_on(env, host)
    }

    /// As [`Config::from_env`], with the host the defaults derive from.
    pub fn from_env_on(
        env: impl Fn(&str) -> Option<String>,
        host: Host,
    ) -> Result<Config, ConfigError> {
        let env = Env { get: &env };
        let mut machine = Machine {
            cpus: host.cpus,
            memory_bytes: host.memory_bytes,
            isolation: Isolation::Fork,
            memory_mb: 0,
            pool_size: 0,
            queue_max: 0,
            max_jobs: 0,
        };
        machine.isolation = env.read(&ISOLATION, &machine)?;
        machine.memory_mb = env.read(&MEMORY_MB, &machine)?;
        machine.pool_size = env.read(&POOL_SIZE, &machine)?;
        machine.queue_max = env.read(&QUEUE_MAX, &machine)?;
        machine.max_jobs = env.read(&MAX_JOBS, &machine)?;
        let (isolation, memory_mb, pool_size, queue_max, max_jobs) = (
            machine.isolation,
            machine.memory_mb,
            machine.pool_size,
            machine.queue_max,
            machine.max_jobs,
        );
        let m = &machine;
        let config = Config {
            port: env.read(&PORT, m)?,
            max_connections: env.read(&MAX_CONNECTIONS, m)?,
            body_timeout: env.read(&BODY_TIMEOUT, m)?,
            isolation,
            timeout: env.read(&TIMEOUT, m)?,
            max_script_chars: env.read(&MAX_SCRIPT_CHARS, m)?,
            max_input_bytes: env.read(&MAX_INPUT_BYTES, m)?,
            pool_size,
            queue_max,
            queue_timeout: env.read(&QUEUE_TIMEOUT, m)?,
            max_jobs,
            max_parallel_spawns: env.read(&MAX_PARALLEL_SPAWNS, m)?,
            nsjail: env.read(&NSJAIL, m)?,
            python: env.read(&PYTHON, m)?,
            nsjail_config: env.read(&NSJAIL_CONFIG, m)?,
            runner_dir: env.read(&RUNNER_DIR, m)?,
            memory_mb,
            max_processes: env.read(&MAX_PROCESSES, m)?,
            max_file_mb: env.read(&MAX_FILE_MB, m)?,
            max_open_files: env.read(&MAX_OPEN_FILES, m)?,
            cpus: env.read(&CPUS, m)?,
            max_output_bytes: env.read(&MAX_OUTPUT_BYTES, m)?,
            max_result_bytes: env.read(&MAX_RESULT_BYTES, m)?,
            max_output_files: env.read(&MAX_OUTPUT_FILES, m)?,
            max_output_files_bytes: env.read(&MAX_OUTPUT_FILES_BYTES, m)?,
            spawn_timeout: env.read(&SPAWN_TIMEOUT, m)?,
            zygote_max_forks: env.read(&ZYGOTE_MAX_FORKS, m)?,
            zygote_max_age: env.read(&ZYGOTE_MAX_AGE, m)?,
            shutdown_grace: env.read(&SHUTDOWN_GRACE, m)?,
            cgroup_parent: env.read(&CGROUP_PARENT, m)?,
            cgroup_mount: env.read(&CGROUP_MOUNT, m)?,
            log_level: env.read(&LOG_LEVEL, m)?,
            log_format: env.read(&LOG_FORMAT, m)?,
            gcp_project: env.read(&GCP_PROJECT, m)?,
        };
        config.check_together()?;
        Ok(config)
    }

    /// The rules between variables: each refuses a combination that would
    /// otherwise fail request after request.
    fn check_together(&self) -> Result<(), ConfigError> {
        let conflict = |names: &[&'static str], why: String| {
            Err(ConfigError::Conflict {
                names: names.to_vec(),
                why,
            })
        };
        if self.pool_size == 0 && self.queue_max == 0 {
            return conflict(
                &[POOL_SIZE.name, QUEUE_MAX.name],
                "with PYEXEC_POOL_SIZE=0 every request waits for its own spawn, so PYEXEC_QUEUE_MAX must be at least 1".into(),
            );
        }
        if self.pool_size == 0 && self.queue_timeout.is_zero() {
            return conflict(
                &[POOL_SIZE.name, QUEUE_TIMEOUT.name],
                "with PYEXEC_POOL_SIZE=0 every request waits for its own spawn (about 0.3 s), so PYEXEC_QUEUE_TIMEOUT=0 would refuse every request".into(),
            );
        }
        if self.max_connections <= self.max_jobs + self.queue_max {
            return conflict(
                &[MAX_CONNECTIONS.name, MAX_JOBS.name, QUEUE_MAX.name],
                format!(
                    "PYEXEC_MAX_CONNECTIONS={} leaves no connection for health probes once PYEXEC_MAX_JOBS ({}) jobs run and PYEXEC_QUEUE_MAX ({}) wait; it must be more than their sum",
                    self.max_connections, self.max_jobs, self.queue_max
                ),
            );
        }
        // The job frame carries the script, JSON-escaped, and the input as sent.
        let largest_job_frame = self
            .max_script_chars
            .saturating_mul(MAX_JSON_BYTES_PER_CHAR)
            .saturating_add(self.max_input_bytes)
            .saturating_add(JOB_ENVELOPE);
        if largest_job_frame > RUNNER_MAX_JOB_FRAME {
            return conflict(
                &[MAX_SCRIPT_CHARS.name, MAX_INPUT_BYTES.name],
                format!(
                    "PYEXEC_MAX_SCRIPT_CHARS={} with PYEXEC_MAX_INPUT_BYTES={} allows a job frame of up to {largest_job_frame} bytes, over the runner's {RUNNER_MAX_JOB_FRAME}-byte limit; with this input cap at most {} characters fit",
                    self.max_script_chars,
                    self.max_input_bytes,
                    RUNNER_MAX_JOB_FRAME.saturating_sub(JOB_ENVELOPE + self.max_input_bytes)
                        / MAX_JSON_BYTES_PER_CHAR
                ),
            );
        }
        // The worker reads answer frames of up to the result cap plus the
        // output files (base64) plus room for the envelope and a traceback;
        // the frame's length is 4 bytes.
        let largest_answer = max_answer_frame(self.max_result_bytes, self.file_caps());
        if largest_answer > u64::from(u32::MAX) {
            return conflict(
                &[
                    MAX_RESULT_BYTES.name,
                    MAX_OUTPUT_FILES.name,
                    MAX_OUTPUT_FILES_BYTES.name,
                ],
                format!(
                    "PYEXEC_MAX_RESULT_BYTES={} with the output files' caps ({} files, {} bytes) allows an answer frame of {largest_answer} bytes, over the 4-byte length's {}",
                    self.max_result_bytes,
                    self.max_output_files,
                    self.max_output_files_bytes,
                    u32::MAX
                ),
            );
        }
        Ok(())
    }

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

    /// The largest request body that can hold a script and an input within
    /// their limits. JSON's `\u00XX` escape spends 6 bytes on one character,
    /// so a body over 6 bytes per character, plus the input's cap, plus room
    /// for the object around them (and `limits`) cannot hold an acceptable
    /// request and is refused before it is read whole.
    pub fn max_body_bytes(&self) -> usize {
        self.max_script_chars
            .saturating_mul(MAX_JSON_BYTES_PER_CHAR)
            .saturating_add(self.max_input_bytes)
            .saturating_add(64 * 1024)
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

/// The environment lookup.
struct Env<'a> {
    get: &'a dyn Fn(&str) -> Option<String>,
}

impl Env<'_> {
    /// The variable's value, or its default.
    fn read<T>(&self, var: &Var<T>, machine: &Machine) -> Result<T, ConfigError> {
        let invalid = |value: &str, expected| ConfigError::Invalid {
            name: var.name,
            value: value.to_string(),
            expected,
        };
        match (self.get)(var.name).filter(|v| !v.trim().is_empty()) {
            Some(raw) => (var.parse)(&raw).map_err(|expected| invalid(&raw, expected)),
            // A default that doesn't parse is a bug; a unit test reads them all.
            None => match var.default {
                DefaultValue::Text(text) => (var.parse)(text).map_err(|e| invalid(text, e)),
                DefaultValue::Derived { derive, .. } => Ok(derive(machine)),
            },
        }
    }
}

fn number<T: FromStr>(raw: &str, expected: &str, valid: fn(&T) -> bool) -> Result<T, String> {
    match raw.trim().parse::<T>() {
        Ok(value) if valid(&value) => Ok(value),
        _ => Err(expected.into()),
    }
}

fn seconds(raw: &str, zero_ok: bool) -> Result<Duration, String> {
    let expected = if zero_ok {
        "a number of seconds, 0 or more, e.g. 5 or 0.5"
    } else {
        "a positive number of seconds, e.g. 10 or 2.5"
    };
    // A day is far beyond any sane value; the cap keeps Duration arithmetic safe.
    let seconds: f64 = match raw.trim().parse() {
        Ok(s) if f64::is_finite(s) && s <= 86_400.0 && (s > 0.0 || (zero_ok && s == 0.0)) => s,
        _ => return Err(expected.into()),
    };
    Ok(Duration::from_secs_f64(seconds))
}

fn path(raw: &str) -> Result<PathBuf, String> {
    Ok(PathBuf::from(raw))
}

fn cgroup_name(raw: &str) -> Result<String, String> {
    let valid = raw.split('/').all(|part| {
        !part.is_empty()
            && part != "."
            && part != ".."
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    });
    if valid {
        Ok(raw.to_string())
    } else {
        Err("a relative cgroup path of [A-Za-z0-9._-] names, e.g. pyexec".into())
    }
}

fn choice<T: Copy>(raw: &str, options: &[(&str, T)]) -> Result<T, String> {
    let wanted = raw.trim().to_ascii_lowercase();
    match options.iter().find(|(label, _)| *label == wanted) {
        Some((_, value)) => Ok(*value),
        None => Err(format!(
            "one of {}",
            options
                .iter()
                .map(|(label, _)| *label)
                .collect::<Vec<_>>()
                .join(", ")
        )),
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
        assert_eq!(c.max_connections, 256);
        assert_eq!(c.body_timeout, Duration::from_secs(10));
        assert_eq!(c.timeout, Duration::from_secs(10));
        assert_eq!(c.max_script_chars, 100_000);
        assert_eq!(c.max_input_bytes, 1 << 20);
        assert_eq!(
            (c.max_output_files, c.max_output_files_bytes),
            (32, 4 << 20)
        );
        assert_eq!(c.isolation, Isolation::Fork);
        assert_eq!(c.pool_size, 16);
        assert_eq!(c.queue_max, 64);
        assert_eq!(c.queue_timeout, Duration::from_secs(5));
        // ¾ of the test host's 8 GiB in 256 MiB jobs.
        assert_eq!(c.max_jobs, 24);
        assert_eq!(c.max_parallel_spawns, 8);
        assert_eq!(c.zygote_max_forks, 10_000);
        assert_eq!(c.zygote_max_age, Duration::from_secs(600));
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
        assert_eq!(c.cpu_seconds(), 11);
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
        let one = parse(&spawn, 1).unwrap();
        assert_eq!(
            (
                one.pool_size,
                one.queue_max,
                one.max_parallel_spawns,
                one.max_jobs
            ),
            (2, 8, 1, 24)
        );
        let eight = parse(&spawn, 8).unwrap();
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
        let fork_one = parse(&[], 1).unwrap();
        assert_eq!((fork_one.pool_size, fork_one.queue_max), (8, 32));
        // A big machine: the connection cap follows the jobs and the queue.
        let big = parse(&[], 64).unwrap();
        assert_eq!((big.pool_size, big.queue_max), (512, 2048));
        assert_eq!(big.max_connections, 2 * (24 + 2048));
        let zero = parse(&[("PYEXEC_POOL_SIZE", "0")], 2).unwrap();
        assert_eq!((zero.pool_size, zero.queue_max), (0, 8));
    }

    #[test]
    fn values_are_read() {
        let c = parse(
            &[
                ("PORT", "0"),
                ("PYEXEC_MAX_CONNECTIONS", "21"),
                ("PYEXEC_BODY_TIMEOUT", "0.5"),
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
        assert_eq!(c.max_connections, 21);
        assert_eq!(c.body_timeout, Duration::from_millis(500));
        assert_eq!(c.timeout, Duration::from_millis(2500));
        assert_eq!(c.cpu_seconds(), 4, "fork mode: the job alone");
        let spawn = parse(
            &[("PYEXEC_ISOLATION", "spawn"), ("PYEXEC_TIMEOUT", "2.5")],
            2,
        )
        .unwrap();
        assert_eq!(spawn.cpu_seconds(), 34, "spawn mode: the warm-up too");
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
            let err = parse(&[(name, value)], 2).expect_err(&format!("{name}={value} accepted"));
            assert_eq!(err.names(), [name]);
            let message = err.to_string();
            assert!(
                message.contains(name) && message.contains(value),
                "{message}"
            );
        }
    }

    /// Values fine on their own, refused together, each error naming the
    /// variables involved; and the largest values that still fit are accepted.
    #[test]
    fn values_are_checked_against_each_other() {
        type Vars<'a> = &'a [(&'a str, &'a str)];
        let cases: &[(Vars, &[&str])] = &[
            (
                &[("PYEXEC_POOL_SIZE", "0"), ("PYEXEC_QUEUE_MAX", "0")],
                &["PYEXEC_POOL_SIZE", "PYEXEC_QUEUE_MAX"],
            ),
            (
                &[("PYEXEC_POOL_SIZE", "0"), ("PYEXEC_QUEUE_TIMEOUT", "0")],
                &["PYEXEC_POOL_SIZE", "PYEXEC_QUEUE_TIMEOUT"],
            ),
            (
                &[("PYEXEC_MAX_CONNECTIONS", "20")],
                &[
                    "PYEXEC_MAX_CONNECTIONS",
                    "PYEXEC_MAX_JOBS",
                    "PYEXEC_QUEUE_MAX",
                ],
            ),
            (
                &[("PYEXEC_MAX_SCRIPT_CHARS", "2621270")],
                &["PYEXEC_MAX_SCRIPT_CHARS", "PYEXEC_MAX_INPUT_BYTES"],
            ),
            (
                &[
                    ("PYEXEC_MAX_SCRIPT_CHARS", "1000"),
                    ("PYEXEC_MAX_INPUT_BYTES", "16770193"),
                ],
                &["PYEXEC_MAX_SCRIPT_CHARS", "PYEXEC_MAX_INPUT_BYTES"],
            ),
            (
                &[("PYEXEC_MAX_RESULT_BYTES", "4287447720")],
                &[
                    "PYEXEC_MAX_RESULT_BYTES",
                    "PYEXEC_MAX_OUTPUT_FILES",
                    "PYEXEC_MAX_OUTPUT_FILES_BYTES",
                ],
            ),
            (
                &[
                    ("PYEXEC_MAX_RESULT_BYTES", "1000"),
                    ("PYEXEC_MAX_OUTPUT_FILES_BYTES", "3300000000"),
                ],
                &[
                    "PYEXEC_MAX_RESULT_BYTES",
                    "PYEXEC_MAX_OUTPUT_FILES",
                    "PYEXEC_MAX_OUTPUT_FILES_BYTES",
                ],
            ),
        ];
        for (vars, names) in cases {
            let err = parse(vars, 2).expect_err(&format!("{vars:?} accepted"));
            assert_eq!(err.names(), *names, "{err}");
            let message = err.to_string();
            assert!(names.iter().all(|name| message.contains(name)), "{message}");
        }
        let largest = parse(
            &[
                ("PYEXEC_MAX_SCRIPT_CHARS", "2621269"),
                ("PYEXEC_MAX_RESULT_BYTES", "4287447719"),
            ],
            2,
        )
        .unwrap();
        // The largest script and input still fit the runner's job frame, the
        // script escaped.
        let input = format!("\"{}\"", "x".repeat(largest.max_input_bytes - 2));
        let job = pyexec_worker::Job {
            script: "\u{1}".repeat(largest.max_script_chars),
            input: Some(serde_json::value::RawValue::from_string(input).unwrap()),
            limits: pyexec_worker::JobLimits {
                timeout: largest.timeout,
                memory_bytes: largest.memory_mb << 20,
            },
            max_result_bytes: largest.max_result_bytes,
            file_caps: largest.file_caps(),
        };
        assert!(job.frame_len() <= RUNNER_MAX_JOB_FRAME);
        assert!(
            max_answer_frame(largest.max_result_bytes, largest.file_caps()) <= u64::from(u32::MAX)
        );
        // A pool of zero with a queue and a wait is fine.
        assert!(parse(&[("PYEXEC_POOL_SIZE", "0")], 2).is_ok());
    }

    /// The job-frame cap mirrors the runner's; if one changes, so must the other.
    #[test]
    fn the_job_frame_cap_is_the_runners() {
        let runner = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../python/pyexec_runner/protocol.py"),
        )
        .unwrap();
        let line = runner
            .lines()
            .find_map(|l| l.strip_prefix("MAX_JOB_FRAME_BYTES = "))
            .expect("protocol.py defines MAX_JOB_FRAME_BYTES");
        let value: usize = line
            .split('*')
            .map(|factor| factor.trim().parse::<usize>().unwrap())
            .product();
        assert_eq!(value, RUNNER_MAX_JOB_FRAME);
    }

    #[test]
    fn body_cap_covers_a_fully_escaped_script_and_the_largest_input() {
        let c = parse(
            &[
                ("PYEXEC_MAX_SCRIPT_CHARS", "1000"),
                ("PYEXEC_MAX_INPUT_BYTES", "5000"),
            ],
            2,
        )
        .unwrap();
        let script: String = "\u{1}".repeat(1000);
        let input = serde_json::json!(["x".repeat(4996)]);
        assert_eq!(input.to_string().len(), 5000);
        let body = serde_json::json!({
            "script": script,
            "input": input,
            "limits": {"timeout_s": 1.25, "memory_mb": 64},
        })
        .to_string();
        assert!(body.len() <= c.max_body_bytes());
        assert!(c.max_body_bytes() < 1000 * 6 + 5000 + 128 * 1024);
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
}
