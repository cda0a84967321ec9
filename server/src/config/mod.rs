//! The server's configuration: environment variables, read once at start-up
//! into a [`Config`], what the rest of the server reads.
//!
//! - [`table`]: every variable (name, default, meaning, parser), one row
//!   each: the one place a variable is added. Its row makes the variable's
//!   field of [`Config`] and its line of `pyexec --help`, which prints the
//!   table of docs/configuration.md (a test compares the two). A default is
//!   written once, so the help, the docs and the behaviour can't drift apart.
//! - [`vars`]: what a variable is, how one is read, the parsers, and
//!   [`ConfigError`].
//! - [`host`]: the CPUs and memory that derived defaults follow.
//! - `checks`: the rules between values.
//! - `worker_configs`: the worker crate's configs built from a [`Config`].
//!
//! An empty value counts as unset. A bad value, or values that contradict
//! each other, is a [`ConfigError`] naming the variables; `main` prints it
//! and exits 64 (EX_USAGE) rather than failing request by request later.

mod checks;
pub mod host;
pub mod table;
pub mod vars;
mod worker_configs;

pub use host::Host;
pub use table::{markdown_table, Config};
pub use vars::ConfigError;

use vars::Env;

/// JSON spends at most this many bytes on one character (`\u00XX`).
const MAX_JSON_BYTES_PER_CHAR: usize = 6;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

/// A Postgres connection string. It may hold a password: it is never
/// printed, logged or put in an error (its `Debug` says only that it is set).
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// A `postgres://` / `postgresql://` URL, or libpq's `key=value` form.
    pub fn parse(raw: &str) -> Result<DatabaseUrl, String> {
        let raw = raw.trim();
        let url = raw.starts_with("postgres://") || raw.starts_with("postgresql://");
        let keywords = raw.contains('=') && !raw.contains("://");
        if url || keywords {
            Ok(DatabaseUrl(raw.to_string()))
        } else {
            Err("a Postgres connection string: postgres://user:password@host:port/database, or host=… dbname=… (libpq's key=value form)".into())
        }
    }

    /// The string itself, for the store to connect with.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DatabaseUrl(<redacted>)")
    }
}

impl Config {
    /// Where keys, usage and snippets are kept: Postgres if a URL is set,
    /// else the embedded file in the data directory.
    pub fn store_config(&self) -> pyexec_store::StoreConfig {
        let mut store = pyexec_store::StoreConfig::new(&self.data_dir);
        store.database_url = self.database_url.as_ref().map(|u| u.expose().to_string());
        store.pool_size = self.database_pool;
        store
    }

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
        let config = Config::read_all(&Env::new(&env, host))?;
        checks::check_together(&config)?;
        Ok(config)
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
}

/// The configuration `vars` make on a 2-CPU host of 8 GiB, for unit tests.
#[cfg(test)]
fn read_vars(vars: &[(&str, &str)], cpus: usize) -> Result<Config, ConfigError> {
    let lookup = |name: &str| {
        vars.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.to_string())
    };
    Config::from_env_with_cpus(lookup, cpus)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::time::Duration;

    #[test]
    fn defaults() {
        let c = read_vars(&[], 2).unwrap();
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
    }

    #[test]
    fn values_are_read() {
        let c = read_vars(
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
        assert_eq!((c.max_script_chars, c.pool_size, c.queue_max), (10, 3, 0));
        assert_eq!(c.queue_timeout, Duration::ZERO);
        assert_eq!(c.memory_mb, 512);
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
    fn body_cap_covers_a_fully_escaped_script_and_the_largest_input() {
        let c = read_vars(
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
}
