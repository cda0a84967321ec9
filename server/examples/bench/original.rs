//! The `original` variant: the service pyexec replaces, measured in the same
//! run with the same phases (paced hello-world, a burst, saturation), so
//! the ratios hold whatever the machine's day. It runs under gunicorn as its
//! Dockerfile does, started by `scripts/original-service.sh run` once
//! `scripts/original-service.sh install` has made /opt/pyexec-original; or
//! an instance already running at `ORIGINAL_SERVICE_URL`
//! (`http://127.0.0.1:PORT`; only its machine-wide CPU is counted then).

use std::io;
use std::path::Path;
use std::time::Duration;

use tokio::process::Command;

use super::{free_port, machine, repo, Figures, Latencies, Server, Settings, HELLO};

/// Where `scripts/original-service.sh install` puts it.
const INSTALLED: &str = "/opt/pyexec-original/venv/bin/gunicorn";

pub struct OriginalFigures {
    pub hello: Latencies,
    pub burst: Latencies,
    pub burst_refused: u64,
    pub ok: u64,
    pub jobs_per_second: f64,
    pub refused: u64,
    pub errors: u64,
    /// CPU-seconds in its cgroup (NaN when the benchmark did not start it).
    pub cgroup_s: f64,
    pub machine: machine::Window,
}

/// The original's figures, or None (said on stderr) when it is not available.
pub async fn measure(settings: &Settings) -> io::Result<Option<OriginalFigures>> {
    let server = if let Ok(url) = std::env::var("ORIGINAL_SERVICE_URL") {
        let port = url
            .strip_prefix("http://127.0.0.1:")
            .or_else(|| url.strip_prefix("http://localhost:"))
            .and_then(|p| p.trim_end_matches('/').parse().ok())
            .ok_or_else(|| {
                io::Error::other(format!(
                    "ORIGINAL_SERVICE_URL={url:?}: expected http://127.0.0.1:PORT"
                ))
            })?;
        Server::existing(port, "/healthz").await?
    } else if Path::new(INSTALLED).exists() {
        let port = free_port()?;
        let mut command = Command::new("bash");
        command
            .arg(repo().join("scripts/original-service.sh"))
            .arg("run")
            .env("PORT", port.to_string());
        Server::launch(command, port, "/healthz").await?
    } else {
        eprintln!(
            "[original] skipped: no ORIGINAL_SERVICE_URL and not installed (scripts/original-service.sh install)"
        );
        return Ok(None);
    };
    eprintln!("[original] ready on port {}", server.port);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let hello = server.paced(HELLO, settings.rate, settings.seconds).await?;
    eprintln!("[original] hello-world done");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (burst, burst_refused) = server.burst(HELLO, settings.burst).await;
    eprintln!("[original] burst done");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cgroup_before = server.cpu_seconds();
    let before = machine::Snapshot::now();
    let (ok, refused, errors, elapsed) = server
        .saturate(HELLO, settings.clients, settings.seconds)
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let machine = machine::Snapshot::now().since(&before);
    let cgroup_s = match server.pid() {
        Some(_) => server.cpu_seconds() - cgroup_before,
        None => f64::NAN,
    };
    eprintln!("[original] saturation done");
    server.stop().await;
    Ok(Some(OriginalFigures {
        hello,
        burst,
        burst_refused,
        ok,
        jobs_per_second: ok as f64 / elapsed.as_secs_f64(),
        refused,
        errors,
        cgroup_s,
        machine,
    }))
}

/// Prints the original beside fork mode (if measured in this run) and the ratios.
pub fn print(o: &OriginalFigures, fork: Option<&Figures>) {
    println!(
        "\nthe original service (gunicorn -w 2 -k gthread, a jail per request) beside fork mode"
    );
    println!(
        "{:<46} {:>20} {:>20} {:>12}",
        "", "original", "fork", "fork / orig"
    );
    let line = |name: &str, orig: f64, fork: Option<f64>, precision: usize| {
        let fork_cell = fork.map_or("-".into(), |v| format!("{v:.precision$}"));
        let ratio = fork.map_or("-".into(), |v| format!("{:.2}x", v / orig));
        println!("{name:<46} {orig:>20.precision$} {fork_cell:>20} {ratio:>12}");
    };
    line(
        "hello-world p50 (ms)",
        o.hello.percentile(50.0),
        fork.map(|f| f.hello.percentile(50.0)),
        1,
    );
    line(
        "burst: p50 (ms)",
        o.burst.percentile(50.0),
        fork.map(|f| f.burst.percentile(50.0)),
        1,
    );
    line(
        "burst: max (ms)",
        o.burst.percentile(100.0),
        fork.map(|f| f.burst.percentile(100.0)),
        1,
    );
    line(
        "sustained jobs/s at saturation",
        o.jobs_per_second,
        fork.map(|f| f.jobs_per_second),
        1,
    );
    line(
        "CPU per job, all processes (ms)",
        1000.0 * o.cgroup_s / o.ok.max(1) as f64,
        fork.map(|f| 1000.0 * f.cpu_per_job),
        1,
    );
    line(
        "CPU per job, machine-wide (ms)",
        1000.0 * o.machine.busy_s / o.ok.max(1) as f64,
        fork.map(|f| 1000.0 * f.machine_per_job()),
        1,
    );
    println!(
        "{:<46} {:>20}",
        "original: burst refused; saturation refused / errors",
        format!("{}; {} / {}", o.burst_refused, o.refused, o.errors)
    );
}
