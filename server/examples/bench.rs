//! `make bench`: starts the release server twice — with the warm pool and with
//! PYEXEC_POOL_SIZE=0 (a jail per request, the baseline) — and prints latency,
//! spawn time and throughput figures. Not a pass/fail test: the machine is
//! shared and noisy, so compare the two columns of one run.
//!
//! Environment: BENCH_SECONDS (per phase, default 20), BENCH_RATE (requests/s
//! of the latency phases, default 2), BENCH_CLIENTS (saturation concurrency,
//! default 8), BENCH_POOL_SIZE (the warm pool's size, default the server's).

use std::io;
use std::net::TcpListener;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

const HELLO: &str = "def main():\n    return {\"hello\": \"world\"}\n";
/// A result of about 1 MiB of JSON (1 032 477 bytes): 20 000 str -> int entries
/// and 42 000 floats, the shape of a typical large answer. What it measures
/// beyond hello-world is the runner's validation and encoding of the result
/// and the server passing it through.
const BIG: &str = "def main():\n    return {\"counts\": {f\"key{i:05d}\": i for i in range(20000)}, \"floats\": [i / 7 for i in range(42000)]}\n";
const PANDAS: &str = "import pandas as pd\n\ndef main():\n    df = pd.DataFrame({\"k\": [\"a\", \"b\", \"a\", \"c\"], \"v\": [1, 2, 3, 4]})\n    return {\"sums\": df.groupby(\"k\")[\"v\"].sum().to_dict()}\n";

struct Settings {
    seconds: u64,
    rate: f64,
    clients: usize,
    pool_size: Option<String>,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> io::Result<()> {
    let settings = Settings {
        seconds: env_or("BENCH_SECONDS", 20),
        rate: env_or("BENCH_RATE", 2.0),
        clients: env_or("BENCH_CLIENTS", 8),
        pool_size: std::env::var("BENCH_POOL_SIZE").ok(),
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("pyexec benchmark: {cores} cores, {} s per phase, {} req/s in latency phases, {} clients at saturation\n", settings.seconds, settings.rate, settings.clients);

    let warm = measure(&settings, settings.pool_size.as_deref()).await?;
    let cold = measure(&settings, Some("0")).await?;

    println!(
        "{:<44} {:>14} {:>14}",
        "",
        format!("pool {}", warm.pool_size),
        "pool 0 (baseline)"
    );
    let row = |name: &str, a: String, b: String| println!("{name:<44} {a:>14} {b:>14}");
    row(
        "hello-world p50 / p99 (ms)",
        warm.hello.summary(),
        cold.hello.summary(),
    );
    row(
        "pandas groupby p50 / p99 (ms)",
        warm.pandas.summary(),
        cold.pandas.summary(),
    );
    row(
        "1 MiB result p50 / p99 (ms)",
        warm.big.summary(),
        cold.big.summary(),
    );
    row(
        "worker spawn-to-ready, mean (ms)",
        format!("{:.0}", warm.spawn_ms),
        format!("{:.0}", cold.spawn_ms),
    );
    row(
        "CPU-seconds per job (spawn + job + server)",
        format!("{:.3}", warm.cpu_per_job),
        format!("{:.3}", cold.cpu_per_job),
    );
    row(
        "sustained jobs/s at saturation",
        format!("{:.2}", warm.jobs_per_second),
        format!("{:.2}", cold.jobs_per_second),
    );
    row(
        "  of which refused 503 / errors",
        format!("{} / {}", warm.refused, warm.errors),
        format!("{} / {}", cold.refused, cold.errors),
    );
    let ceiling = cores as f64 / warm.cpu_per_job;
    println!(
        "\nCPU ceiling = cores / CPU-seconds per job = {cores} / {:.3} = {ceiling:.2} jobs/s; \
         the warm pool sustained {:.0}% of it (target ≥ 90%).",
        warm.cpu_per_job,
        100.0 * warm.jobs_per_second / ceiling
    );
    println!("Targets: hello-world p50 ≤ 5 ms, p99 ≤ 20 ms; pandas p50 ≤ 30 ms.");
    Ok(())
}

struct Figures {
    pool_size: String,
    hello: Latencies,
    pandas: Latencies,
    big: Latencies,
    spawn_ms: f64,
    cpu_per_job: f64,
    jobs_per_second: f64,
    refused: u64,
    errors: u64,
}

struct Latencies(Vec<Duration>);

impl Latencies {
    fn percentile(&self, p: f64) -> f64 {
        let mut sorted = self.0.clone();
        sorted.sort();
        if sorted.is_empty() {
            return f64::NAN;
        }
        let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
        sorted[i].as_secs_f64() * 1000.0
    }

    fn summary(&self) -> String {
        format!(
            "{:.1} / {:.1}",
            self.percentile(50.0),
            self.percentile(99.0)
        )
    }
}

async fn measure(settings: &Settings, pool_size: Option<&str>) -> io::Result<Figures> {
    let server = Server::start(pool_size).await?;
    let label = pool_size.map_or("default".to_string(), str::to_string);
    eprintln!("[pool {label}] server ready on port {}", server.port);
    // Let the pool fill before timing anything.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let hello = server.paced(HELLO, settings.rate, settings.seconds).await?;
    eprintln!("[pool {label}] hello-world done");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pandas = server
        .paced(PANDAS, settings.rate, settings.seconds)
        .await?;
    eprintln!("[pool {label}] pandas done");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let big = server.paced(BIG, settings.rate, settings.seconds).await?;
    eprintln!("[pool {label}] 1 MiB result done");
    tokio::time::sleep(Duration::from_secs(2)).await;

    let cpu_before = server.cpu_seconds()?;
    let (ok, refused, errors, elapsed) = server
        .saturate(HELLO, settings.clients, settings.seconds)
        .await;
    // Count the CPU of the replacements that saturation used up, too.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cpu = server.cpu_seconds()? - cpu_before;
    eprintln!("[pool {label}] saturation done");

    let metrics = server.get("/metrics").await?.1;
    let spawn_ms = 1000.0 * metric(&metrics, "pyexec_worker_spawn_duration_seconds_sum")
        / metric(&metrics, "pyexec_worker_spawn_duration_seconds_count");
    let actual_size = metric(&metrics, "pyexec_pool_target_size");
    server.stop().await;
    Ok(Figures {
        pool_size: format!("{actual_size}"),
        hello,
        pandas,
        big,
        spawn_ms,
        cpu_per_job: cpu / ok.max(1) as f64,
        jobs_per_second: ok as f64 / elapsed.as_secs_f64(),
        refused,
        errors,
    })
}

/// The first sample of `name` in a Prometheus text exposition.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

struct Server {
    child: Child,
    port: u16,
}

impl Server {
    async fn start(pool_size: Option<&str>) -> io::Result<Server> {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut command = Command::new(repo.join("target/release/pyexec"));
        command
            .current_dir(repo)
            .env("PORT", port.to_string())
            .env("PYEXEC_LOG_LEVEL", "warn")
            .env("PYEXEC_QUEUE_MAX", "64")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if let Some(size) = pool_size {
            command.env("PYEXEC_POOL_SIZE", size);
        }
        let server = Server {
            child: command.spawn()?,
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if matches!(server.get("/readyz").await, Ok((200, _))) {
                return Ok(server);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(io::Error::other(
            "the server did not become ready within 60 s",
        ))
    }

    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let _ = tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await;
    }

    /// CPU time of the server and every process it has reaped (nsjail and, through
    /// nsjail, the jailed interpreters).
    fn cpu_seconds(&self) -> io::Result<f64> {
        let pid = self
            .child
            .id()
            .ok_or_else(|| io::Error::other("server gone"))?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or("", |(_, rest)| rest)
            .split_whitespace()
            .collect();
        // utime, stime, cutime, cstime are fields 14-17 (1-based), i.e. 11..15 after the comm.
        let ticks: f64 = fields[11..15]
            .iter()
            .filter_map(|v| v.parse::<f64>().ok())
            .sum();
        let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .unwrap_or(100) as f64;
        Ok(ticks / hz)
    }

    async fn get(&self, path: &str) -> io::Result<(u16, String)> {
        let mut conn = Connection::open(self.port).await?;
        conn.request("GET", path, "").await
    }

    /// One request every 1/rate seconds, for `seconds`; each on a kept-alive
    /// connection, below capacity so no request queues behind another.
    async fn paced(&self, script: &str, rate: f64, seconds: u64) -> io::Result<Latencies> {
        let body = serde_json::json!({ "script": script }).to_string();
        let mut conn = Connection::open(self.port).await?;
        let mut samples = Vec::new();
        let interval = Duration::from_secs_f64(1.0 / rate);
        let end = Instant::now() + Duration::from_secs(seconds);
        let mut next = Instant::now();
        while Instant::now() < end {
            tokio::time::sleep_until(next.into()).await;
            next += interval;
            let started = Instant::now();
            let (status, text) = conn.request("POST", "/execute", &body).await?;
            let took = started.elapsed();
            if status != 200 {
                eprintln!("unexpected {status}: {text}");
                continue;
            }
            samples.push(took);
        }
        Ok(Latencies(samples))
    }

    /// `clients` closed-loop clients for `seconds`: (ok, refused, errors, elapsed).
    async fn saturate(
        &self,
        script: &str,
        clients: usize,
        seconds: u64,
    ) -> (u64, u64, u64, Duration) {
        let body = serde_json::json!({ "script": script }).to_string();
        let started = Instant::now();
        let end = started + Duration::from_secs(seconds);
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let (body, port) = (body.clone(), self.port);
            tasks.push(tokio::spawn(async move {
                let (mut ok, mut refused, mut errors) = (0u64, 0u64, 0u64);
                let Ok(mut conn) = Connection::open(port).await else {
                    return (0, 0, 1);
                };
                while Instant::now() < end {
                    match conn.request("POST", "/execute", &body).await {
                        Ok((200, _)) => ok += 1,
                        Ok((503, _)) => {
                            refused += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Ok(_) | Err(_) => {
                            errors += 1;
                            match Connection::open(port).await {
                                Ok(c) => conn = c,
                                Err(_) => break,
                            }
                        }
                    }
                }
                (ok, refused, errors)
            }));
        }
        let mut totals = (0, 0, 0);
        for task in tasks {
            if let Ok((ok, refused, errors)) = task.await {
                totals = (totals.0 + ok, totals.1 + refused, totals.2 + errors);
            }
        }
        (totals.0, totals.1, totals.2, started.elapsed())
    }
}

/// A minimal HTTP/1.1 keep-alive client: enough for a benchmark, and no
/// client library between the timer and the socket.
struct Connection {
    stream: BufReader<TcpStream>,
}

impl Connection {
    async fn open(port: u16) -> io::Result<Connection> {
        let stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream: BufReader::new(stream),
        })
    }

    async fn request(&mut self, method: &str, path: &str, body: &str) -> io::Result<(u16, String)> {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let stream = self.stream.get_mut();
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        let mut status_line = String::new();
        if self.stream.read_line(&mut status_line).await? == 0 {
            return Err(io::Error::other("connection closed"));
        }
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            self.stream.read_line(&mut line).await?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; length];
        self.stream.read_exact(&mut body).await?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}
