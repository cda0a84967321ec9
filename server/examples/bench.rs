//! `make bench`: starts the release server once per variant (fork mode,
//! spawn mode, and spawn mode with PYEXEC_POOL_SIZE=0: a jail per request,
//! the original service's way) and prints their figures side by side: paced
//! latency, a burst, spawn time, CPU per job and throughput at saturation.
//! Not a pass/fail test: the machine is shared and noisy, so compare the
//! columns of one run.
//!
//! CPU per job counts every process of the server's (the server, nsjail, the
//! zygote, the jailed interpreters): the server runs in a cpuacct cgroup of
//! the benchmark's own, and the jobs' own cgroups (where they move) are
//! added.
//!
//! Beside it, the whole machine's CPU per job over the same window (busy
//! time in /proc/stat less the benchmark's own clients: `bench/machine.rs`),
//! which counts kernel workers and interrupts too; the CPU ceiling uses it.
//!
//! Environment: BENCH_SECONDS (per phase, default 20), BENCH_RATE (requests/s
//! of the latency phases, default 2), BENCH_CLIENTS (saturation concurrency,
//! default 8), BENCH_BURST (concurrent requests of the burst, default 16),
//! BENCH_CPUS (e.g. `0` or `0-1`: the server and its jobs confined to
//! those CPUs by a cgroup v1 cpuset, the clients outside it),
//! BENCH_VARIANTS (comma-separated subset of fork, spawn, spawn-pool0,
//! fork-no-mpl, fork-small-pages, keys — `bench/keys.rs` — and original —
//! `bench/original.rs`, skipped with a word when it is not installed;
//! default: all).
//!
//! The `fork-no-mpl` variant runs a copy of the runner whose zygote leaves
//! matplotlib to the scripts that plot, as spawn mode does (see
//! `runner_without_matplotlib`): side by side with fork, what
//! pre-importing it costs every job and every worker. The
//! plot phase (a 1 000-point line plot, returned as figure-1.png) runs
//! with the runner as shipped. `fork-small-pages` leaves the zygote's
//! memory in 4 KiB pages (`PYEXEC_ZYGOTE_PAGES=small`): beside fork, what
//! the huge pages save each fork and exit.

use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

#[path = "bench/cpuset.rs"]
mod cpuset;
#[path = "bench/keys.rs"]
mod keys;
#[path = "bench/machine.rs"]
mod machine;
#[path = "bench/original.rs"]
mod original;

const HELLO: &str = "def main():\n    return {\"hello\": \"world\"}\n";
/// A result of about 1 MiB of JSON (1 032 477 bytes): 20 000 str -> int entries
/// and 42 000 floats, the shape of a typical large answer. What it measures
/// beyond hello-world is the runner's validation and encoding of the result
/// and the server passing it through.
const BIG: &str = "def main():\n    return {\"counts\": {f\"key{i:05d}\": i for i in range(20000)}, \"floats\": [i / 7 for i in range(42000)]}\n";
/// A 1 000-point line plot, left open: the runner saves it as figure-1.png.
const PLOT: &str = "import numpy as np\nimport matplotlib.pyplot as plt\n\ndef main():\n    x = np.arange(1000)\n    plt.plot(x, np.sin(x / 50))\n    return {}\n";
const PANDAS: &str = "import pandas as pd\n\ndef main():\n    df = pd.DataFrame({\"k\": [\"a\", \"b\", \"a\", \"c\"], \"v\": [1, 2, 3, 4]})\n    return {\"sums\": df.groupby(\"k\")[\"v\"].sum().to_dict()}\n";

struct Settings {
    seconds: u64,
    rate: f64,
    clients: usize,
    burst: usize,
}

/// One server configuration to measure.
struct Variant {
    name: &'static str,
    env: &'static [(&'static str, &'static str)],
    /// The runner as shipped (fork: matplotlib warm in the zygote; spawn:
    /// imported by the scripts that plot), or fork mode's without it.
    matplotlib: bool,
}

const VARIANTS: &[Variant] = &[
    Variant {
        name: "fork",
        env: &[("PYEXEC_ISOLATION", "fork")],
        matplotlib: true,
    },
    Variant {
        name: "spawn",
        env: &[("PYEXEC_ISOLATION", "spawn")],
        matplotlib: true,
    },
    Variant {
        name: "spawn-pool0",
        env: &[("PYEXEC_ISOLATION", "spawn"), ("PYEXEC_POOL_SIZE", "0")],
        matplotlib: true,
    },
    Variant {
        name: "fork-no-mpl",
        env: &[("PYEXEC_ISOLATION", "fork")],
        matplotlib: false,
    },
    Variant {
        name: "fork-small-pages",
        env: &[
            ("PYEXEC_ISOLATION", "fork"),
            ("PYEXEC_ZYGOTE_PAGES", "small"),
        ],
        matplotlib: true,
    },
];

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
        burst: env_or("BENCH_BURST", 16),
    };
    let chosen: Option<Vec<String>> = std::env::var("BENCH_VARIANTS")
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
    let variants: Vec<&Variant> = VARIANTS
        .iter()
        .filter(|v| {
            chosen
                .as_ref()
                .map_or(true, |c| c.iter().any(|n| n == v.name))
        })
        .collect();
    let cores = cpuset::count_from_env()
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if let Ok(cpus) = std::env::var("BENCH_CPUS") {
        println!("the server confined to CPUs {cpus} (BENCH_CPUS)");
    }
    println!(
        "pyexec benchmark: {cores} cores, {} s per phase, {} req/s in latency phases, {} clients at saturation, bursts of {}\n",
        settings.seconds, settings.rate, settings.clients, settings.burst
    );

    let mut columns = Vec::new();
    for variant in &variants {
        columns.push(measure(&settings, variant).await?);
    }
    let wants = |name: &str| {
        chosen
            .as_ref()
            .map_or(true, |c| c.iter().any(|n| n == name))
    };
    let keys_figures = match wants("keys") {
        true => Some(keys::measure(&settings).await?),
        false => None,
    };
    let original_figures = match wants("original") {
        true => original::measure(&settings).await?,
        false => None,
    };

    print!("{:<46}", "");
    for f in &columns {
        print!(" {:>20}", format!("{} (pool {})", f.name, f.pool_size));
    }
    println!();
    let row = |name: &str, cell: &dyn Fn(&Figures) -> String| {
        print!("{name:<46}");
        for f in &columns {
            print!(" {:>20}", cell(f));
        }
        println!();
    };
    row("hello-world p50 / p99 (ms)", &|f| f.hello.summary());
    row("pandas groupby p50 / p99 (ms)", &|f| f.pandas.summary());
    row("plot, 1 000 points to PNG p50 / p99 (ms)", &|f| {
        f.plot.as_ref().map_or("-".into(), Latencies::summary)
    });
    row("1 MiB result p50 / p99 (ms)", &|f| f.big.summary());
    row("burst: p50 / max (ms)", &|f| {
        format!(
            "{:.1} / {:.1}",
            f.burst.percentile(50.0),
            f.burst.percentile(100.0)
        )
    });
    row("burst: refused", &|f| format!("{}", f.burst_refused));
    row("worker spawn-to-ready, mean (ms)", &|f| {
        format!("{:.1}", f.spawn_ms)
    });
    row("idle worker, private memory (MiB)", &|f| {
        f.idle_private_mib.map_or("-".into(), |m| format!("{m:.1}"))
    });
    row("zygote RSS / private memory (MiB)", &|f| {
        f.zygote_mib.map_or("-".into(), |(rss, private)| {
            format!("{rss:.1} / {private:.1}")
        })
    });
    row("CPU per job, all processes (ms)", &|f| {
        format!("{:.1}", 1000.0 * f.cpu_per_job)
    });
    row("CPU per job, machine-wide (ms)", &|f| {
        format!("{:.1}", 1000.0 * f.machine.busy_s / f.ok.max(1) as f64)
    });
    row("  bench clients / steal, not counted (ms)", &|f| {
        let per_job = |s: f64| 1000.0 * s / f.ok.max(1) as f64;
        format!(
            "{:.1} / {:.1}",
            per_job(f.machine.own_s),
            per_job(f.machine.steal_s)
        )
    });
    row("sustained jobs/s at saturation", &|f| {
        format!("{:.1}", f.jobs_per_second)
    });
    for phase in PHASES {
        row(&format!("  phase {phase}, mean (ms)"), &|f| {
            let mean = phase_mean(&f.metrics, phase);
            if mean.is_nan() {
                "-".into()
            } else {
                format!("{:.2}", 1000.0 * mean)
            }
        });
    }
    row("  of which refused 503 / errors", &|f| {
        format!("{} / {}", f.refused, f.errors)
    });
    row("CPU ceiling, cores / machine-wide per job", &|f| {
        format!("{:.1}", cores as f64 / f.machine_per_job())
    });
    row("  sustained share of the ceiling", &|f| {
        format!(
            "{:.0}%",
            100.0 * f.jobs_per_second * f.machine_per_job() / cores as f64
        )
    });
    if let Some(k) = &keys_figures {
        keys::print(k);
    }
    if let Some(o) = &original_figures {
        original::print(o, columns.iter().find(|f| f.name == "fork"));
    }
    Ok(())
}

struct Figures {
    name: &'static str,
    pool_size: String,
    hello: Latencies,
    pandas: Latencies,
    plot: Option<Latencies>,
    zygote_mib: Option<(f64, f64)>,
    big: Latencies,
    burst: Latencies,
    burst_refused: u64,
    spawn_ms: f64,
    idle_private_mib: Option<f64>,
    cpu_per_job: f64,
    /// The whole machine over the saturation window.
    machine: machine::Window,
    /// The server's /metrics at the end of the variant's run.
    metrics: String,
    ok: u64,
    jobs_per_second: f64,
    refused: u64,
    errors: u64,
}

impl Figures {
    /// Machine-wide CPU-seconds per job at saturation.
    fn machine_per_job(&self) -> f64 {
        self.machine.busy_s / self.ok.max(1) as f64
    }
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

async fn measure(settings: &Settings, variant: &Variant) -> io::Result<Figures> {
    let runner = if variant.matplotlib {
        None
    } else {
        Some(runner_without_matplotlib()?)
    };
    let mut env: Vec<(&str, &str)> = variant.env.to_vec();
    if let Some(dir) = &runner {
        env.push((
            "PYEXEC_RUNNER_DIR",
            dir.to_str().expect("a UTF-8 temp path"),
        ));
    }
    let server = Server::start(&env).await?;
    let label = variant.name;
    eprintln!("[{label}] server ready on port {}", server.port);
    // Let the pool fill before timing anything.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle_private_mib = server.idle_worker_private_mib();
    let zygote_mib = server.zygote_memory_mib();

    let hello = server.paced(HELLO, settings.rate, settings.seconds).await?;
    eprintln!("[{label}] hello-world done");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pandas = server
        .paced(PANDAS, settings.rate, settings.seconds)
        .await?;
    eprintln!("[{label}] pandas done");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let plot = plot_phase(&server, settings, variant).await?;
    let big = server.paced(BIG, settings.rate, settings.seconds).await?;
    eprintln!("[{label}] 1 MiB result done");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (burst, burst_refused) = server.burst(HELLO, settings.burst).await;
    eprintln!("[{label}] burst done");
    tokio::time::sleep(Duration::from_secs(3)).await;

    let cpu_before = server.cpu_seconds();
    let machine_before = machine::Snapshot::now();
    let (ok, refused, errors, elapsed) = server
        .saturate(HELLO, settings.clients, settings.seconds)
        .await;
    // Count the CPU of the replacements that saturation used up, too.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cpu = server.cpu_seconds() - cpu_before;
    let machine = machine::Snapshot::now().since(&machine_before);
    eprintln!("[{label}] saturation done");

    let metrics = server.get("/metrics").await?.1;
    let metrics_at_end = metrics.clone();
    let spawn_ms = 1000.0 * metric(&metrics, "pyexec_worker_spawn_duration_seconds_sum")
        / metric(&metrics, "pyexec_worker_spawn_duration_seconds_count");
    let actual_size = metric(&metrics, "pyexec_pool_target_size");
    server.stop().await;
    if let Some(dir) = runner {
        let _ = std::fs::remove_dir_all(dir);
    }
    Ok(Figures {
        name: variant.name,
        pool_size: format!("{actual_size}"),
        hello,
        pandas,
        plot,
        zygote_mib,
        big,
        burst,
        burst_refused,
        spawn_ms,
        idle_private_mib,
        cpu_per_job: cpu / ok.max(1) as f64,
        machine,
        metrics: metrics_at_end,
        ok,
        jobs_per_second: ok as f64 / elapsed.as_secs_f64(),
        refused,
        errors,
    })
}

/// The phases of `pyexec_worker_phase_seconds`, in a worker's order.
const PHASES: [&str; 9] = [
    "cgroup_make",
    "fork",
    "setup",
    "cgroup_move",
    "cgroup_limits",
    "job",
    "cgroup_usage",
    "exit",
    "cgroup_remove",
];

/// The mean of `pyexec_worker_phase_seconds{phase}` over the whole run
/// (NaN if the phase never happened).
fn phase_mean(text: &str, phase: &str) -> f64 {
    let sample = |suffix: &str| {
        let head = format!("pyexec_worker_phase_seconds_{suffix}{{phase=\"{phase}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&head))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    let count = sample("count");
    if count > 0.0 {
        sample("sum") / count
    } else {
        f64::NAN
    }
}

/// The plot phase: paced like the others, each answer checked to carry
/// figure-1.png. None for fork-no-mpl (each job would import matplotlib).
async fn plot_phase(
    server: &Server,
    settings: &Settings,
    variant: &Variant,
) -> io::Result<Option<Latencies>> {
    if !variant.matplotlib {
        return Ok(None);
    }
    let request = serde_json::json!({ "script": PLOT }).to_string();
    let (status, body) = Connection::open(server.port)
        .await?
        .request("POST", "/execute", &request)
        .await?;
    if status != 200 || !body.contains("\"name\":\"figure-1.png\"") {
        return Err(io::Error::other(format!(
            "the plot job answered {status} without figure-1.png: {body:.300}"
        )));
    }
    let plot = server.paced(PLOT, settings.rate, settings.seconds).await?;
    eprintln!("[{}] plot done", variant.name);
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(Some(plot))
}

/// A copy of python/ (in a fresh temp folder the jail can read) whose
/// warm-up skips matplotlib: the runner as it would be without it.
fn runner_without_matplotlib() -> io::Result<PathBuf> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let dir = std::env::temp_dir().join(format!("pyexec-bench-runner-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(repo.join("python"))
        .arg(&dir)
        .status()?;
    if !status.success() {
        return Err(io::Error::other("cp -r python failed"));
    }
    let warmup = dir.join("pyexec_runner/warmup.py");
    let text = std::fs::read_to_string(&warmup)?;
    let call = "figures.warm_up()";
    if !text.contains(call) {
        return Err(io::Error::other(format!(
            "{} no longer calls {call}",
            warmup.display()
        )));
    }
    std::fs::write(&warmup, text.replace(call, "figures.warm_on_import()"))?;
    let status = std::process::Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(&dir)
        .status()?;
    if !status.success() {
        return Err(io::Error::other("chmod failed"));
    }
    Ok(dir)
}

/// The first sample of `name` in a Prometheus text exposition.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// The repository's root.
fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

struct Server {
    /// None for a server the benchmark found running.
    child: Option<Child>,
    port: u16,
    /// The benchmark's own cpuacct cgroup, which the server starts in.
    accounting: Accounting,
    /// BENCH_CPUS: the cpuset the server starts in.
    cpuset: Option<cpuset::Cpuset>,
}

/// Where the CPU of the server and everything it starts is counted.
struct Accounting {
    /// The benchmark's cgroup for the server (its jails and zygotes start in it).
    own: PathBuf,
    /// Where the server's per-worker cgroups are made in the same hierarchy
    /// (`<parent>/<server pid>`), if the hierarchy has them.
    workers: PathBuf,
    /// cgroup v2: `cpu.stat`'s `usage_usec`; v1: `cpuacct.usage` (ns).
    v2: bool,
}

impl Accounting {
    fn make(name: &str) -> io::Result<Accounting> {
        let base = Path::new("/sys/fs/cgroup");
        let v2 = base.join("cgroup.controllers").exists();
        let hierarchy = if v2 {
            base.to_path_buf()
        } else {
            base.join("cpuacct")
        };
        let own = hierarchy.join(name);
        std::fs::create_dir_all(&own)?;
        Ok(Accounting {
            own,
            workers: hierarchy.join("pyexec"),
            v2,
        })
    }

    fn usage_seconds(dir: &Path, v2: bool) -> f64 {
        if v2 {
            std::fs::read_to_string(dir.join("cpu.stat"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("usage_usec "))
                        .and_then(|v| v.trim().parse::<f64>().ok())
                })
                .map_or(0.0, |us| us / 1e6)
        } else {
            std::fs::read_to_string(dir.join("cpuacct.usage"))
                .ok()
                .and_then(|v| v.trim().parse::<f64>().ok())
                .map_or(0.0, |ns| ns / 1e9)
        }
    }

    /// CPU-seconds of the server's whole tree. Counters are hierarchical and
    /// keep what removed child cgroups used.
    fn seconds(&self, server_pid: u32) -> f64 {
        Self::usage_seconds(&self.own, self.v2)
            + Self::usage_seconds(&self.workers.join(server_pid.to_string()), self.v2)
    }

    fn remove(&self) {
        let _ = std::fs::remove_dir(&self.own);
    }
}

impl Server {
    async fn start(env: &[(&str, &str)]) -> io::Result<Server> {
        let port = free_port()?;
        let mut command = Command::new(repo().join("target/release/pyexec"));
        command
            .current_dir(repo())
            .env("PORT", port.to_string())
            .env("PYEXEC_LOG_LEVEL", "warn")
            .env("PYEXEC_QUEUE_MAX", "64")
            .envs(env.iter().copied());
        Self::launch(command, port, "/readyz").await
    }

    /// Starts `command` (a server that will listen on `port`) in a cpuacct
    /// cgroup of the benchmark's own and waits until `ready` answers 200.
    async fn launch(mut command: Command, port: u16, ready: &str) -> io::Result<Server> {
        let accounting = Accounting::make(&format!("pyexec-bench-{}-{port}", std::process::id()))?;
        let join = std::fs::OpenOptions::new()
            .write(true)
            .open(accounting.own.join("cgroup.procs"))?;
        let cpuset =
            cpuset::Cpuset::from_env(&format!("pyexec-bench-{}-{port}", std::process::id()))?;
        let join_cpuset = match &cpuset {
            Some(c) => Some(std::fs::OpenOptions::new().write(true).open(c.procs())?),
            None => None,
        };
        let cpuset_fd = join_cpuset.as_ref().map(std::os::fd::AsRawFd::as_raw_fd);
        command
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let join_fd = std::os::fd::AsRawFd::as_raw_fd(&join);
        // SAFETY: write(2) is async-signal-safe; the fd was opened before the fork.
        unsafe {
            command.pre_exec(move || {
                if nix::libc::write(join_fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(io::Error::last_os_error());
                }
                if let Some(fd) = cpuset_fd {
                    if nix::libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let server = Server {
            child: Some(command.spawn()?),
            port,
            accounting,
            cpuset,
        };
        drop(join);
        drop(join_cpuset);
        server.wait_ready(ready).await?;
        Ok(server)
    }

    /// A server the benchmark did not start, listening on 127.0.0.1:`port`:
    /// only the machine-wide CPU counts it.
    async fn existing(port: u16, ready: &str) -> io::Result<Server> {
        let server = Server {
            child: None,
            port,
            accounting: Accounting::make(&format!("pyexec-bench-{}-{port}", std::process::id()))?,
            cpuset: None,
        };
        server.wait_ready(ready).await?;
        Ok(server)
    }

    async fn wait_ready(&self, ready: &str) -> io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if matches!(self.get(ready).await, Ok((200, _))) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(io::Error::other(
            "the server did not become ready within 60 s",
        ))
    }

    async fn stop(mut self) {
        if let Some(child) = self.child.as_mut() {
            if let Some(pid) = child.id() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            let _ = tokio::time::timeout(Duration::from_secs(15), child.wait()).await;
        }
        self.accounting.remove();
        if let Some(cpuset) = &self.cpuset {
            cpuset.remove();
        }
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref()?.id()
    }

    fn cpu_seconds(&self) -> f64 {
        self.pid().map_or(0.0, |pid| self.accounting.seconds(pid))
    }

    /// The mean private memory (smaps_rollup: Private_Clean + Private_Dirty)
    /// of the job processes of the idle workers: what one more warm worker
    /// costs beyond what it shares (spawn mode: the jailed interpreter; fork
    /// mode: the zygote's child).
    fn idle_worker_private_mib(&self) -> Option<f64> {
        let sizes = self.interpreter_memory_mib('w')?;
        (!sizes.is_empty()).then(|| sizes.iter().map(|s| s.1).sum::<f64>() / sizes.len() as f64)
    }

    /// The zygotes' interpreters (fork mode): mean RSS and private memory
    /// (smaps_rollup), what the children share and what is the zygote's own.
    fn zygote_memory_mib(&self) -> Option<(f64, f64)> {
        let sizes = self.interpreter_memory_mib('z')?;
        let n = sizes.len() as f64;
        (!sizes.is_empty()).then(|| {
            (
                sizes.iter().map(|s| s.0).sum::<f64>() / n,
                sizes.iter().map(|s| s.1).sum::<f64>() / n,
            )
        })
    }

    /// (RSS, private) MiB of each Python process in this server's cgroups
    /// whose name starts with `kind` (`w` a worker's, `z` a zygote's); nsjail
    /// processes are left out.
    fn interpreter_memory_mib(&self, kind: char) -> Option<Vec<(f64, f64)>> {
        let pid = self.pid()?;
        let base = Path::new("/sys/fs/cgroup");
        let root = if base.join("cgroup.controllers").exists() {
            base.join("pyexec").join(pid.to_string())
        } else {
            base.join("pids/pyexec").join(pid.to_string())
        };
        let mut sizes = Vec::new();
        for group in std::fs::read_dir(root).ok()?.flatten() {
            if !group.file_name().to_string_lossy().starts_with(kind) {
                continue;
            }
            let procs =
                std::fs::read_to_string(group.path().join("cgroup.procs")).unwrap_or_default();
            for p in procs.split_whitespace() {
                let comm = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
                if !comm.trim().starts_with("python") {
                    continue;
                }
                let rollup =
                    std::fs::read_to_string(format!("/proc/{p}/smaps_rollup")).unwrap_or_default();
                let kib = |fields: &[&str]| -> f64 {
                    rollup
                        .lines()
                        .filter(|l| fields.iter().any(|f| l.starts_with(f)))
                        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
                        .sum()
                };
                sizes.push((
                    kib(&["Rss:"]) / 1024.0,
                    kib(&["Private_Clean:", "Private_Dirty:"]) / 1024.0,
                ));
            }
        }
        Some(sizes)
    }

    /// `n` requests at the same moment, each on its own connection: their
    /// latencies and how many were refused.
    async fn burst(&self, script: &str, n: usize) -> (Latencies, u64) {
        let body = serde_json::json!({ "script": script }).to_string();
        let mut connections = Vec::new();
        for _ in 0..n {
            if let Ok(c) = Connection::open(self.port).await {
                connections.push(c);
            }
        }
        let start = std::sync::Arc::new(tokio::sync::Barrier::new(connections.len()));
        let tasks: Vec<_> = connections
            .into_iter()
            .map(|mut conn| {
                let (body, start) = (body.clone(), start.clone());
                tokio::spawn(async move {
                    start.wait().await;
                    let began = Instant::now();
                    let answer = conn.request("POST", "/execute", &body).await;
                    (began.elapsed(), matches!(answer, Ok((200, _))))
                })
            })
            .collect();
        let (mut times, mut refused) = (Vec::new(), 0);
        for task in tasks {
            if let Ok((took, ok)) = task.await {
                times.push(took);
                refused += u64::from(!ok);
            }
        }
        (Latencies(times), refused)
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
        self.saturate_as(script, clients, seconds, None).await
    }

    /// [`Server::saturate`], every request carrying `token` if given; 429
    /// counts as refused, like 503.
    async fn saturate_as(
        &self,
        script: &str,
        clients: usize,
        seconds: u64,
        token: Option<&str>,
    ) -> (u64, u64, u64, Duration) {
        let body = serde_json::json!({ "script": script }).to_string();
        let started = Instant::now();
        let end = started + Duration::from_secs(seconds);
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let (body, port) = (body.clone(), self.port);
            let token = token.map(str::to_owned);
            tasks.push(tokio::spawn(async move {
                let (mut ok, mut refused, mut errors) = (0u64, 0u64, 0u64);
                let Ok(mut conn) = Connection::open_as(port, token.as_deref()).await else {
                    return (0, 0, 1);
                };
                while Instant::now() < end {
                    match conn.request("POST", "/execute", &body).await {
                        Ok((200, _)) => ok += 1,
                        Ok((503 | 429, _)) => {
                            refused += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Ok(_) | Err(_) => {
                            errors += 1;
                            match Connection::open_as(port, token.as_deref()).await {
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
    /// An `Authorization` header line sent with every request, if any.
    authorization: String,
}

impl Connection {
    async fn open(port: u16) -> io::Result<Connection> {
        Self::open_as(port, None).await
    }

    /// A connection whose requests carry `token` as a bearer key, if given.
    async fn open_as(port: u16, token: Option<&str>) -> io::Result<Connection> {
        let stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream: BufReader::new(stream),
            authorization: token
                .map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n")),
        })
    }

    async fn request(&mut self, method: &str, path: &str, body: &str) -> io::Result<(u16, String)> {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{}Content-Length: {}\r\n\r\n",
            self.authorization,
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
