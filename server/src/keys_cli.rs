//! `pyexec keys …`: managing API keys without a network surface. Each
//! subcommand opens the same store the server uses (PYEXEC_DATA_DIR or
//! PYEXEC_DATABASE_URL), does one thing and exits; a running server sees the
//! change within seconds. A bad command line exits 64, as a bad variable does.

use std::fmt::Write as _;
use std::time::Duration;

use pyexec_store::{Change, KeyId, KeyLimits, KeyRecord, LimitsPatch, Store, UsageFilter};
use serde_json::json;

use crate::config::Config;
use crate::http::snippets::rfc3339;

const USAGE: &str = "usage: pyexec keys <command>

  create --name NAME [limits] [--json]   make a key; prints its token once
  list [--json]                          every key, revoked ones included
  revoke ID                              revoke a key for good
  set ID [limits]                        change a key's limits (none: back to the default)
  usage [ID] [--since WHEN] [--json]     usage per key, hour and outcome
                                         WHEN: 2026-12-01, 24h or 7d (default: today, UTC)

limits: --rate PER_S  --burst N  --max-concurrent N  --cpu-per-day SECONDS
        --max-timeout SECONDS  --max-memory MB  --weight N

The store is PYEXEC_DATA_DIR's (or PYEXEC_DATABASE_URL's), as for the server.";

/// What a failed command should exit with.
pub enum Failure {
    /// A bad command line (64).
    Usage(String),
    /// The store refused or could not be reached (1).
    Store(String),
}

/// Runs `pyexec keys <args>`; what to print, or why it failed.
pub async fn run(args: &[String], config: &Config) -> Result<String, Failure> {
    let Some((command, rest)) = args.split_first() else {
        return Err(Failure::Usage(USAGE.into()));
    };
    if matches!(command.as_str(), "help" | "--help" | "-h") {
        return Ok(USAGE.into());
    }
    let mut flags = Flags::parse(rest)?;
    let store = open(config).await?;
    let store = store.as_ref();
    let output = match command.as_str() {
        "create" => create(store, &mut flags).await?,
        "list" => list(store, &mut flags).await?,
        "revoke" => revoke(store, &mut flags).await?,
        "set" => set(store, &mut flags).await?,
        "usage" => usage(store, &mut flags).await?,
        other => {
            return Err(Failure::Usage(format!(
                "pyexec keys: unknown command {other:?}\n\n{USAGE}"
            )))
        }
    };
    flags.finish()?;
    Ok(output)
}

async fn open(config: &Config) -> Result<std::sync::Arc<dyn Store>, Failure> {
    pyexec_store::open(config.store_config())
        .await
        .map_err(|e| Failure::Store(format!("pyexec keys: the store cannot be opened: {e}")))
}

fn store_failure(e: pyexec_store::StoreError) -> Failure {
    match e {
        pyexec_store::StoreError::NotFound => Failure::Usage("pyexec keys: no such key".into()),
        pyexec_store::StoreError::Invalid(why) => Failure::Usage(format!("pyexec keys: {why}")),
        other => Failure::Store(format!("pyexec keys: {other}")),
    }
}

async fn create(store: &dyn Store, flags: &mut Flags) -> Result<String, Failure> {
    let name = flags
        .value("--name")
        .ok_or_else(|| Failure::Usage("pyexec keys create: --name NAME is required".into()))?;
    let patch = flags.limits()?;
    let limits = KeyLimits::default().patched(&patch);
    let (record, token) = store
        .create_key(&name, &limits)
        .await
        .map_err(store_failure)?;
    if flags.switch("--json") {
        return Ok(
            json!({"id": record.id.as_str(), "name": record.name, "token": token.to_string()})
                .to_string(),
        );
    }
    Ok(format!(
        "key {} ({}) made.\ntoken (shown once; keep it secret, it is stored only as a hash):\n\n  {token}\n\nCall with: Authorization: Bearer <token>",
        record.id, record.name
    ))
}

async fn list(store: &dyn Store, flags: &mut Flags) -> Result<String, Failure> {
    let keys = store.list_keys().await.map_err(store_failure)?;
    if flags.switch("--json") {
        let keys: Vec<_> = keys.iter().map(key_json).collect();
        return Ok(serde_json::Value::Array(keys).to_string());
    }
    let mut out = format!(
        "{:<12}  {:<24}  {:<20}  {:<8}  limits\n",
        "id", "name", "created (UTC)", "state"
    );
    for key in &keys {
        let _ = writeln!(
            out,
            "{:<12}  {:<24}  {:<20}  {:<8}  {}",
            key.id,
            truncate(&key.name, 24),
            rfc3339(key.created_at),
            if key.is_revoked() {
                "revoked"
            } else {
                "active"
            },
            limits_text(&key.limits)
        );
    }
    Ok(out)
}

async fn revoke(store: &dyn Store, flags: &mut Flags) -> Result<String, Failure> {
    let id = flags.key_id()?;
    let key = store.revoke(&id).await.map_err(store_failure)?;
    Ok(format!(
        "key {} ({}) revoked; running servers refuse it within seconds.",
        key.id, key.name
    ))
}

async fn set(store: &dyn Store, flags: &mut Flags) -> Result<String, Failure> {
    let id = flags.key_id()?;
    let patch = flags.limits()?;
    if patch == LimitsPatch::default() {
        return Err(Failure::Usage(format!(
            "pyexec keys set: name at least one limit to change\n\n{USAGE}"
        )));
    }
    let key = store.set_limits(&id, &patch).await.map_err(store_failure)?;
    Ok(format!(
        "key {} ({}): {}",
        key.id,
        key.name,
        limits_text(&key.limits)
    ))
}

async fn usage(store: &dyn Store, flags: &mut Flags) -> Result<String, Failure> {
    let key_id = match flags.positional() {
        Some(text) => Some(KeyId::parse(&text).ok_or_else(|| {
            Failure::Usage(format!("pyexec keys usage: {text:?} is not a key id"))
        })?),
        None => None,
    };
    let since = match flags.value("--since") {
        Some(when) => since_hour(&when)?,
        None => crate::callers::limits::utc_day() * 86_400,
    };
    let rows = store
        .usage(&UsageFilter {
            key_id,
            since_hour: since,
            until_hour: None,
        })
        .await
        .map_err(store_failure)?;
    if flags.switch("--json") {
        let rows: Vec<_> = rows
            .iter()
            .map(|r| {
                json!({
                    "key": r.key_id.as_str(), "hour": rfc3339(r.hour_start), "outcome": r.outcome,
                    "jobs": r.jobs, "cpu_ms": r.cpu_us as f64 / 1e3, "wall_ms": r.wall_us as f64 / 1e3,
                    "peak_memory_mb": (r.peak_memory_bytes as f64 / f64::from(1 << 20) * 100.0).round() / 100.0,
                })
            })
            .collect();
        return Ok(serde_json::Value::Array(rows).to_string());
    }
    let mut out = format!(
        "{:<12}  {:<20}  {:<20}  {:>8}  {:>12}  {:>12}  {:>10}\n",
        "key", "hour (UTC)", "outcome", "jobs", "cpu_s", "wall_s", "peak_mb"
    );
    for r in &rows {
        let _ = writeln!(
            out,
            "{:<12}  {:<20}  {:<20}  {:>8}  {:>12.3}  {:>12.3}  {:>10.1}",
            r.key_id,
            rfc3339(r.hour_start),
            r.outcome,
            r.jobs,
            r.cpu_us as f64 / 1e6,
            r.wall_us as f64 / 1e6,
            r.peak_memory_bytes as f64 / f64::from(1 << 20)
        );
    }
    let (jobs, cpu): (u64, u64) = rows
        .iter()
        .fold((0, 0), |(j, c), r| (j + r.jobs, c + r.cpu_us));
    let _ = writeln!(
        out,
        "total: {jobs} jobs, {:.3} CPU-seconds",
        cpu as f64 / 1e6
    );
    Ok(out)
}

/// `2026-12-01` (that day, UTC), `24h` or `7d` (that long ago, to the hour).
fn since_hour(when: &str) -> Result<i64, Failure> {
    let bad = || {
        Failure::Usage(format!(
            "pyexec keys usage: --since {when:?}: expected a date (2026-12-01), or hours or days ago (24h, 7d)"
        ))
    };
    let now = crate::callers::limits::unix_seconds();
    let hour = |t: i64| t - t.rem_euclid(3600);
    if let Some(hours) = when.strip_suffix('h') {
        let hours: i64 = hours.parse().map_err(|_| bad())?;
        return Ok(hour(now - hours.clamp(0, 24 * 3660) * 3600));
    }
    if let Some(days) = when.strip_suffix('d') {
        let days: i64 = days.parse().map_err(|_| bad())?;
        return Ok(hour(now - days.clamp(0, 3660) * 86_400));
    }
    let parts: Vec<&str> = when.split('-').collect();
    let [y, m, d] = parts.as_slice() else {
        return Err(bad());
    };
    let (y, m, d): (i64, i64, i64) = (
        y.parse().map_err(|_| bad())?,
        m.parse().map_err(|_| bad())?,
        d.parse().map_err(|_| bad())?,
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return Err(bad());
    }
    // Days from a civil date (the inverse of rfc3339's).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Ok((era * 146_097 + doe - 719_468) * 86_400)
}

fn key_json(key: &KeyRecord) -> serde_json::Value {
    let l = &key.limits;
    json!({
        "id": key.id.as_str(), "name": key.name, "created_at": rfc3339(key.created_at),
        "revoked_at": key.revoked_at.map(rfc3339),
        "limits": {
            "rate_per_s": l.rate_per_s, "burst": l.burst, "max_concurrent": l.max_concurrent,
            "cpu_s_per_day": l.cpu_s_per_day, "max_timeout_s": l.max_timeout_s,
            "max_memory_mb": l.max_memory_mb, "weight": l.weight,
        },
    })
}

fn limits_text(l: &KeyLimits) -> String {
    let mut parts = Vec::new();
    let mut add = |name: &str, value: Option<String>| {
        if let Some(value) = value {
            parts.push(format!("{name}={value}"));
        }
    };
    add("rate", l.rate_per_s.map(|v| v.to_string()));
    add("burst", l.burst.map(|v| v.to_string()));
    add("max-concurrent", l.max_concurrent.map(|v| v.to_string()));
    add("cpu-per-day", l.cpu_s_per_day.map(|v| v.to_string()));
    add("max-timeout", l.max_timeout_s.map(|v| v.to_string()));
    add("max-memory", l.max_memory_mb.map(|v| v.to_string()));
    add("weight", l.weight.map(|v| v.to_string()));
    if parts.is_empty() {
        "the server's defaults".into()
    } else {
        parts.join(" ")
    }
}

fn truncate(text: &str, chars: usize) -> String {
    text.chars().take(chars).collect()
}

/// The flags of one subcommand, consumed as they are read; whatever is left
/// at the end is an error.
struct Flags {
    args: Vec<String>,
}

impl Flags {
    fn parse(args: &[String]) -> Result<Flags, Failure> {
        Ok(Flags {
            args: args.to_vec(),
        })
    }

    /// `--name VALUE` (or `--name=VALUE`).
    fn value(&mut self, name: &str) -> Option<String> {
        let prefixed = format!("{name}=");
        if let Some(i) = self.args.iter().position(|a| a.starts_with(&prefixed)) {
            let arg = self.args.remove(i);
            return Some(arg[prefixed.len()..].to_string());
        }
        let i = self.args.iter().position(|a| a == name)?;
        if i + 1 >= self.args.len() {
            return None;
        }
        self.args.remove(i);
        Some(self.args.remove(i))
    }

    fn switch(&mut self, name: &str) -> bool {
        match self.args.iter().position(|a| a == name) {
            Some(i) => {
                self.args.remove(i);
                true
            }
            None => false,
        }
    }

    fn positional(&mut self) -> Option<String> {
        let i = self.args.iter().position(|a| !a.starts_with("--"))?;
        Some(self.args.remove(i))
    }

    fn key_id(&mut self) -> Result<KeyId, Failure> {
        let text = self.positional().ok_or_else(|| {
            Failure::Usage(format!("pyexec keys: a key id is required\n\n{USAGE}"))
        })?;
        KeyId::parse(&text).ok_or_else(|| {
            Failure::Usage(format!(
                "pyexec keys: {text:?} is not a key id (12 characters of a-z and 0-9)"
            ))
        })
    }

    /// The limit flags as a patch: a value sets, `none` clears (back to the
    /// server's default), absent keeps.
    fn limits(&mut self) -> Result<LimitsPatch, Failure> {
        fn read<T: std::str::FromStr>(
            flags: &mut Flags,
            name: &str,
            valid: fn(&T) -> bool,
            what: &str,
        ) -> Result<Change<T>, Failure> {
            match flags.value(name) {
                None => Ok(Change::Keep),
                Some(v) if v == "none" => Ok(Change::Clear),
                Some(v) => match v.parse::<T>() {
                    Ok(value) if valid(&value) => Ok(Change::Set(value)),
                    _ => Err(Failure::Usage(format!(
                        "pyexec keys: {name} {v:?}: expected {what}, or none"
                    ))),
                },
            }
        }
        let positive = |v: &f64| v.is_finite() && *v > 0.0;
        Ok(LimitsPatch {
            rate_per_s: read(self, "--rate", positive, "requests per second")?,
            burst: read(self, "--burst", |v: &u32| *v > 0, "a number of requests")?,
            max_concurrent: read(
                self,
                "--max-concurrent",
                |v: &u32| *v > 0,
                "a number of jobs",
            )?,
            cpu_s_per_day: read(self, "--cpu-per-day", positive, "CPU-seconds per day")?,
            max_timeout_s: read(self, "--max-timeout", positive, "seconds")?,
            max_memory_mb: read(self, "--max-memory", |v: &u64| *v >= 16, "MiB, at least 16")?,
            weight: read(
                self,
                "--weight",
                |v: &u32| (1..=1000).contains(v),
                "a weight from 1 to 1000",
            )?,
        })
    }

    fn finish(self) -> Result<(), Failure> {
        match self.args.first() {
            None => Ok(()),
            Some(extra) => Err(Failure::Usage(format!(
                "pyexec keys: unexpected argument {extra:?}\n\n{USAGE}"
            ))),
        }
    }
}

/// How long a command waits for the store, in all.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str]) -> Flags {
        Flags::parse(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
            .ok()
            .unwrap()
    }

    #[test]
    fn limit_flags_set_clear_or_keep_and_refuse_nonsense() {
        let mut f = flags(&["--rate", "2.5", "--weight=3", "--max-memory", "none"]);
        let patch = f.limits().ok().unwrap();
        assert_eq!(patch.rate_per_s, Change::Set(2.5));
        assert_eq!(patch.weight, Change::Set(3));
        assert_eq!(patch.max_memory_mb, Change::Clear);
        assert_eq!(patch.burst, Change::Keep);
        assert!(f.finish().is_ok());
        for bad in [
            ["--rate", "-1"],
            ["--weight", "0"],
            ["--max-memory", "8"],
            ["--burst", "x"],
        ] {
            assert!(
                matches!(flags(&bad).limits(), Err(Failure::Usage(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            flags(&["--bogus"]).finish(),
            Err(Failure::Usage(_))
        ));
    }

    #[test]
    fn since_reads_a_date_or_a_span() {
        assert_eq!(since_hour("2026-12-03").ok().unwrap(), 1_796_256_000);
        assert_eq!(since_hour("1970-01-01").ok().unwrap(), 0);
        let now = crate::callers::limits::unix_seconds();
        let day_ago = since_hour("1d").ok().unwrap();
        assert!((now - day_ago - 86_400).abs() < 3600);
        for bad in ["yesterday", "2026-13-01", "5x", "h"] {
            assert!(matches!(since_hour(bad), Err(Failure::Usage(_))), "{bad}");
        }
    }
}
