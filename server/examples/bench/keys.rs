//! The two phases the keys work left open: what `PYEXEC_AUTH=keys` costs
//! at saturation (against `none`, the two servers measured in turn), and
//! whether the fair queue shields a light caller from a flooding one (the
//! same flood with the light caller on a key of its own, then on the
//! flooder's key, so the per-key lines are what differs).
//!
//! Both servers run fork mode; keys live in an embedded store in a
//! temporary `PYEXEC_DATA_DIR`, made with `pyexec keys create`, with no
//! per-key rate limit (`PYEXEC_KEY_RATE=0`) so that only the work counts.

use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::{machine, repo, Connection, Latencies, Server, Settings, HELLO};

/// The light caller's pace, requests per second.
const LIGHT_RATE: f64 = 5.0;
/// Saturation rounds per server, alternating none and keys.
const ROUNDS: usize = 2;

/// One saturation run.
#[derive(Default, Clone, Copy)]
pub struct Saturation {
    pub ok: u64,
    pub seconds: f64,
    /// Machine-wide CPU-seconds, the benchmark's own excluded.
    pub machine_s: f64,
    /// CPU-seconds counted in the server's cgroups.
    pub cgroup_s: f64,
}

impl Saturation {
    fn add(&mut self, other: Saturation) {
        self.ok += other.ok;
        self.seconds += other.seconds;
        self.machine_s += other.machine_s;
        self.cgroup_s += other.cgroup_s;
    }
    pub fn jobs_per_second(&self) -> f64 {
        self.ok as f64 / self.seconds
    }
    pub fn machine_ms_per_job(&self) -> f64 {
        1000.0 * self.machine_s / self.ok.max(1) as f64
    }
    pub fn cgroup_ms_per_job(&self) -> f64 {
        1000.0 * self.cgroup_s / self.ok.max(1) as f64
    }
}

/// The light caller's view of one fairness run.
pub struct Fairness {
    pub light: Latencies,
    pub light_refused: u64,
    pub flood_jobs_per_second: f64,
    pub flood_refused: u64,
}

pub struct KeysFigures {
    pub none: Saturation,
    pub keys: Saturation,
    /// The light caller on a key of its own.
    pub own_key: Fairness,
    /// The light caller on the flooder's key.
    pub shared_key: Fairness,
}

pub async fn measure(settings: &Settings) -> io::Result<KeysFigures> {
    let data = TempDir::make()?;
    let data_dir = data.0.to_string_lossy().into_owned();
    let flood_token = create_key(&data_dir, "flood")?;
    let light_token = create_key(&data_dir, "light")?;
    let keys_env = [
        ("PYEXEC_ISOLATION", "fork"),
        ("PYEXEC_AUTH", "keys"),
        ("PYEXEC_DATA_DIR", data_dir.as_str()),
        ("PYEXEC_KEY_RATE", "0"),
    ];
    let none_env = [("PYEXEC_ISOLATION", "fork"), ("PYEXEC_AUTH", "none")];
    let keyed = Server::start(&keys_env).await?;
    let open = Server::start(&none_env).await?;
    eprintln!(
        "[keys] servers ready on ports {} (keys) and {} (none)",
        keyed.port, open.port
    );
    tokio::time::sleep(Duration::from_secs(3)).await;

    let (mut none, mut keys) = (Saturation::default(), Saturation::default());
    for _ in 0..ROUNDS {
        none.add(saturate(&open, settings, None).await);
        keys.add(saturate(&keyed, settings, Some(&flood_token)).await);
    }
    eprintln!("[keys] saturation done");
    open.stop().await;

    let own_key = fairness(&keyed, settings, &flood_token, &light_token).await;
    eprintln!("[keys] fairness, two keys, done");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let shared_key = fairness(&keyed, settings, &flood_token, &flood_token).await;
    eprintln!("[keys] fairness, one key, done");
    keyed.stop().await;
    Ok(KeysFigures {
        none,
        keys,
        own_key,
        shared_key,
    })
}

async fn saturate(server: &Server, settings: &Settings, token: Option<&str>) -> Saturation {
    let cgroup_before = server.cpu_seconds();
    let before = machine::Snapshot::now();
    let (ok, _, _, elapsed) = server
        .saturate_as(HELLO, settings.clients, settings.seconds, token)
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    Saturation {
        ok,
        seconds: elapsed.as_secs_f64(),
        machine_s: machine::Snapshot::now().since(&before).busy_s,
        cgroup_s: server.cpu_seconds() - cgroup_before,
    }
}

/// `settings.clients` closed-loop clients on `flood`, and beside them one
/// paced client on `light` at [`LIGHT_RATE`].
async fn fairness(server: &Server, settings: &Settings, flood: &str, light: &str) -> Fairness {
    let (flooded, (light, light_refused)) = tokio::join!(
        server.saturate_as(HELLO, settings.clients, settings.seconds, Some(flood)),
        paced_as(server.port, light, settings.seconds),
    );
    let (ok, refused, _, elapsed) = flooded;
    Fairness {
        light,
        light_refused,
        flood_jobs_per_second: ok as f64 / elapsed.as_secs_f64(),
        flood_refused: refused,
    }
}

/// Hello-world at [`LIGHT_RATE`] for `seconds` with `token`: the successes'
/// latencies and how many were refused (anything but 200), each refusal
/// timed too, since a caller waits for it.
async fn paced_as(port: u16, token: &str, seconds: u64) -> (Latencies, u64) {
    let body = serde_json::json!({ "script": HELLO }).to_string();
    let (mut samples, mut refused) = (Vec::new(), 0);
    let Ok(mut conn) = Connection::open_as(port, Some(token)).await else {
        return (Latencies(samples), 1);
    };
    let interval = Duration::from_secs_f64(1.0 / LIGHT_RATE);
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut next = Instant::now();
    while Instant::now() < end {
        tokio::time::sleep_until(next.into()).await;
        next += interval;
        let started = Instant::now();
        match conn.request("POST", "/execute", &body).await {
            Ok((200, _)) => samples.push(started.elapsed()),
            Ok(_) => refused += 1,
            Err(_) => {
                refused += 1;
                match Connection::open_as(port, Some(token)).await {
                    Ok(c) => conn = c,
                    Err(_) => break,
                }
            }
        }
    }
    (Latencies(samples), refused)
}

/// A key made with `pyexec keys create` in the store at `data_dir`: its token.
fn create_key(data_dir: &str, name: &str) -> io::Result<String> {
    let out = std::process::Command::new(repo().join("target/release/pyexec"))
        .args(["keys", "create", "--name", name, "--json"])
        .env("PYEXEC_DATA_DIR", data_dir)
        .env("PYEXEC_LOG_LEVEL", "warn")
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "pyexec keys create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| io::Error::other(format!("pyexec keys create --json: {e}")))?;
    answer["token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| io::Error::other("pyexec keys create --json gave no token"))
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn make() -> io::Result<TempDir> {
        let path = std::env::temp_dir().join(format!("pyexec-bench-keys-{}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Prints the keys table.
pub fn print(f: &KeysFigures) {
    println!("\nkeys (fork mode; {ROUNDS} saturation rounds each, alternating)");
    println!(
        "{:<46} {:>20} {:>20}",
        "", "PYEXEC_AUTH=none", "PYEXEC_AUTH=keys"
    );
    println!(
        "{:<46} {:>20.1} {:>20.1}",
        "sustained jobs/s at saturation",
        f.none.jobs_per_second(),
        f.keys.jobs_per_second()
    );
    println!(
        "{:<46} {:>20.1} {:>20.1}",
        "CPU per job, all processes (ms)",
        f.none.cgroup_ms_per_job(),
        f.keys.cgroup_ms_per_job()
    );
    println!(
        "{:<46} {:>20.1} {:>20.1}",
        "CPU per job, machine-wide (ms)",
        f.none.machine_ms_per_job(),
        f.keys.machine_ms_per_job()
    );
    println!(
        "\nfairness: a flood of closed-loop clients on one key, a light caller at {LIGHT_RATE}/s"
    );
    println!(
        "{:<46} {:>20} {:>20}",
        "", "light: own key", "light: flood's key"
    );
    let both = |name: &str, cell: &dyn Fn(&Fairness) -> String| {
        println!(
            "{name:<46} {:>20} {:>20}",
            cell(&f.own_key),
            cell(&f.shared_key)
        );
    };
    both("light caller p50 / p99 (ms)", &|x| x.light.summary());
    both("light caller served / refused", &|x| {
        format!("{} / {}", x.light.0.len(), x.light_refused)
    });
    both("flood jobs/s / refused", &|x| {
        format!("{:.1} / {}", x.flood_jobs_per_second, x.flood_refused)
    });
}
