//! Test helpers: a tiny HTTP/1.1 client over a raw TCP stream, the real
//! `pyexec` binary started on a free port ([`TestServer`]), and the server
//! run in-process on a fake sandbox ([`InProcessServer`]).

#![allow(dead_code)]

pub mod cgroups;
pub mod store;
mod time_scale;

pub use time_scale::{scaled, time_scale};

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pyexec_worker::testing::FakeSandbox;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A whole response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts what every JSON answer holds: the body is one JSON value and
    /// exactly one newline, and `Content-Length` counts it exactly.
    pub fn assert_json_line(&self) {
        let text = self.text();
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{text}"
        );
        assert!(
            text.ends_with('\n') && !text.ends_with("\n\n"),
            "the body must end with exactly one newline: {text:?}"
        );
        assert_eq!(
            self.header("content-length"),
            Some(self.body.len().to_string().as_str()),
            "{text:?}"
        );
        self.json();
    }
}

/// Sends one request on a fresh connection (`Connection: close`) and reads
/// the whole answer.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut raw = head.into_bytes();
    raw.extend_from_slice(body);
    send_raw(addr, &raw).await
}

/// Asserts the status and kind of an answer (a body ending in one newline,
/// and an error message with every error) and returns its body.
pub fn expect(response: &Response, status: u16, kind: &str) -> Value {
    response.assert_json_line();
    let body = response.json();
    assert_eq!(
        (response.status, body["kind"].as_str().unwrap_or("")),
        (status, kind),
        "{body}"
    );
    if !kind.is_empty() {
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{body}"
        );
    }
    body
}

/// Polls `check` every 10 ms until it holds, failing after 15 s (scaled).
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + scaled(Duration::from_secs(15));
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `POST /execute` of `{"script": script}`.
pub async fn execute(addr: SocketAddr, script: &str) -> Response {
    execute_with(addr, script, &[]).await
}

pub async fn execute_with(addr: SocketAddr, script: &str, headers: &[(&str, &str)]) -> Response {
    let body = serde_json::json!({ "script": script }).to_string();
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    request(addr, "POST", "/execute", &all, body.as_bytes()).await
}

/// `POST /execute` with a whole request body (script, input, limits).
pub async fn post_execute(addr: SocketAddr, body: &serde_json::Value) -> Response {
    let json = [("Content-Type", "application/json")];
    request(addr, "POST", "/execute", &json, body.to_string().as_bytes()).await
}

pub async fn get(addr: SocketAddr, path: &str) -> Response {
    request(addr, "GET", path, &[], b"").await
}

/// As [`request`], or `None` when the server no longer accepts the
/// connection or closes it unanswered (it shut down).
pub async fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<Response> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut raw = head.into_bytes();
    raw.extend_from_slice(body);
    let mut stream = TcpStream::connect(addr).await.ok()?;
    stream.write_all(&raw).await.ok()?;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    if !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        return None;
    }
    Some(parse_response(&answer))
}

/// Writes `raw` bytes as they are and parses what comes back.
pub async fn send_raw(addr: SocketAddr, raw: &[u8]) -> Response {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(raw).await.expect("write request");
    let mut answer = Vec::new();
    // The server may answer (413) and close before reading all we sent; a
    // reset after the answer arrived is fine.
    let _ = stream.read_to_end(&mut answer).await;
    parse_response(&answer)
}

pub fn parse_response(raw: &[u8]) -> Response {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "no complete response head in {:?}",
                String::from_utf8_lossy(raw)
            )
        });
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let rest = &raw[split + 4..];
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let Some(end) = raw.windows(2).position(|w| w == b"\r\n") else {
            return body;
        };
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&raw[..end]).trim(), 16).unwrap_or(0);
        if size == 0 {
            return body;
        }
        let start = end + 2;
        body.extend_from_slice(&raw[start..(start + size).min(raw.len())]);
        raw = &raw[(start + size + 2).min(raw.len())..];
    }
}

/// Metric samples parsed by a real text-format parser.
pub fn parse_metrics(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .unwrap_or_else(|e| panic!("the exposition does not parse: {e}\n{text}"))
}

/// The value of a counter or gauge sample with these labels (0 when absent).
pub fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            _ => 0.0,
        })
        .sum()
}

/// The observation count of a histogram with these labels (0 when absent).
pub fn histogram_count(
    scrape: &prometheus_parse::Scrape,
    name: &str,
    labels: &[(&str, &str)],
) -> u64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            prometheus_parse::Value::Histogram(buckets) => {
                buckets.iter().map(|b| b.count).fold(0.0, f64::max) as u64
            }
            _ => 0,
        })
        .sum()
}

pub async fn scrape(addr: SocketAddr) -> prometheus_parse::Scrape {
    let response = get(addr, "/metrics").await;
    assert_eq!(response.status, 200);
    parse_metrics(&response.text())
}

/// The repository root: where nsjail.cfg and python/ resolve.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The isolation mode the real servers of this run use: `PYEXEC_TEST_ISOLATION`
/// (`make test` runs the end-to-end suites once per mode), else fork.
pub fn isolation() -> String {
    std::env::var("PYEXEC_TEST_ISOLATION").unwrap_or_else(|_| "fork".into())
}

/// The server's time limits, each stretched by [`time_scale`]: the value a
/// test sets, else the server's default. Empty at scale 1.
fn scaled_time_limits(env: &[(&str, &str)]) -> Vec<(&'static str, String)> {
    let scale = time_scale();
    if scale == 1.0 {
        return Vec::new();
    }
    let defaults = pyexec_server::config::Config::from_env_with_cpus(|_| None, 2)
        .expect("the default configuration");
    [
        ("PYEXEC_TIMEOUT", defaults.timeout),
        ("PYEXEC_QUEUE_TIMEOUT", defaults.queue_timeout),
        ("PYEXEC_SPAWN_TIMEOUT", defaults.spawn_timeout),
        ("PYEXEC_SHUTDOWN_GRACE", defaults.shutdown_grace),
    ]
    .into_iter()
    .filter_map(|(name, default)| {
        let seconds = match env.iter().find(|(n, _)| *n == name) {
            // Not a number: the test wants the server to refuse it; leave it.
            Some((_, value)) => value.parse::<f64>().ok()?,
            None => default.as_secs_f64(),
        };
        Some((name, format!("{:.3}", seconds * scale)))
    })
    .collect()
}

/// The real `pyexec` binary, on a free port, with the real sandbox.
pub struct TestServer {
    pub addr: SocketAddr,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    /// Reads the server's stdout into `lines` until the server exits.
    reader: Option<std::thread::JoinHandle<()>>,
    /// The server's own store (PYEXEC_DATA_DIR), unless the test gave one;
    /// removed with the server.
    pub data_dir: Option<tempfile::TempDir>,
}

/// How long the real server may take to be ready (self-check + first worker).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

impl TestServer {
    /// Starts the binary with a clean pyexec environment plus `env`, waits
    /// until it listens and `/readyz` answers 200.
    pub async fn start(env: &[(&str, &str)]) -> TestServer {
        let mut server = TestServer::spawn(env);
        server.wait_ready().await;
        server
    }

    /// Starts the binary and returns at once (for start-up failure tests).
    pub fn spawn(env: &[(&str, &str)]) -> TestServer {
        let mut command = Command::new(env!("CARGO_BIN_EXE_pyexec"));
        command.current_dir(repo_root());
        for (name, _) in std::env::vars() {
            if name.starts_with("PYEXEC_") || name == "PORT" || name == "GOOGLE_CLOUD_PROJECT" {
                command.env_remove(name);
            }
        }
        let data_dir = (!env.iter().any(|(name, _)| *name == "PYEXEC_DATA_DIR"))
            .then(|| tempfile::tempdir().expect("a data dir for the store"));
        if let Some(dir) = &data_dir {
            command.env("PYEXEC_DATA_DIR", dir.path());
        }
        command
            .env("PORT", "0")
            .env("PYEXEC_ISOLATION", isolation())
            .env("PYEXEC_POOL_SIZE", "2")
            .env("PYEXEC_LOG_FORMAT", "json")
            .env("PYEXEC_LOG_LEVEL", "info");
        for (name, value) in env {
            command.env(name, value);
        }
        for (name, value) in scaled_time_limits(env) {
            command.env(name, value);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the pyexec binary");
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        TestServer {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            child,
            lines,
            reader: Some(reader),
            data_dir,
        }
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + scaled(READY_TIMEOUT);
        // The port is in the "listening" log line.
        loop {
            if let Some(port) = self
                .json_lines()
                .iter()
                .find(|l| l["message"] == "listening")
                .and_then(|l| l["port"].as_u64())
            {
                self.addr = SocketAddr::from(([127, 0, 0, 1], port as u16));
                break;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "pyexec exited with {status} before listening; log:\n{}",
                    self.logs().join("\n")
                );
            }
            assert!(
                Instant::now() < deadline,
                "pyexec did not listen in time; log:\n{}",
                self.logs().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        loop {
            if get(self.addr, "/readyz").await.status == 200 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "pyexec did not become ready; log:\n{}",
                self.logs().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every line the server printed so far.
    pub fn logs(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// The lines that parse as JSON objects.
    pub fn json_lines(&self) -> Vec<Value> {
        self.logs()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(Value::is_object)
            .collect()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, signal);
    }

    pub fn sigterm(&self) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
    }

    /// After a SIGTERM sent at `signalled`: the server must exit 0 within
    /// `grace` + 1 s, its shutdown promise. Returns how long it took.
    pub async fn exits_cleanly_within(&mut self, signalled: Instant, grace: Duration) -> Duration {
        let status = self
            .wait_exit(Duration::from_secs(10))
            .await
            .expect("pyexec exits after SIGTERM");
        let exited = signalled.elapsed();
        assert!(status.success(), "{status}");
        assert!(
            exited <= grace + Duration::from_secs(1),
            "exit {exited:?} after SIGTERM, over the grace period + 1 s"
        );
        exited
    }

    /// Waits for the process to exit, up to `timeout` (stretched by [`time_scale`]).
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + scaled(timeout);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                // Its stdout is closed now: every line it wrote is read.
                if let Some(reader) = self.reader.take() {
                    let _ = reader.join();
                }
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // Let it stop its jails itself; kill only if it hangs.
            self.sigterm();
            let deadline = Instant::now() + scaled(Duration::from_secs(15));
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The server run in-process on [`FakeSandbox`] (`pyexec_worker::testing`), on 127.0.0.1:0.
pub struct InProcessServer {
    pub addr: SocketAddr,
    _data_dir: tempfile::TempDir,
    pub state: Arc<pyexec_server::AppState<FakeSandbox>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl InProcessServer {
    pub async fn start(env: &[(&str, &str)]) -> InProcessServer {
        InProcessServer::start_with(env, FakeSandbox::default()).await
    }

    pub async fn start_with(env: &[(&str, &str)], sandbox: FakeSandbox) -> InProcessServer {
        let mut env: std::collections::HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let data_dir = tempfile::tempdir().expect("a data dir for the store");
        env.entry("PYEXEC_DATA_DIR".into())
            .or_insert_with(|| data_dir.path().display().to_string());
        let config =
            pyexec_server::config::Config::from_env_with_cpus(|name| env.get(name).cloned(), 2)
                .expect("test configuration");
        let metrics = Arc::new(
            pyexec_server::metrics::Metrics::new(
                config.timeout,
                config.queue_timeout,
                config.spawn_timeout,
                config.metrics_max_keys,
            )
            .expect("metrics"),
        );
        let callers = pyexec_server::startup::start_callers(&config)
            .await
            .expect("callers");
        let state = pyexec_server::AppState::start(&config, sandbox, metrics, callers);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(pyexec_server::run(listener, state.clone(), async move {
            let _ = stopped.await;
        }));
        let server = InProcessServer {
            addr,
            _data_dir: data_dir,
            state,
            stop: Some(stop),
            task: Some(task),
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while get(addr, "/readyz").await.status != 200 {
            assert!(Instant::now() < deadline, "in-process server not ready");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        server
    }

    /// Sends the shutdown signal and waits for `run` to return.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("run panicked");
        }
    }

    /// Starts the shutdown without waiting for it.
    pub fn begin_shutdown(&mut self) -> tokio::task::JoinHandle<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.take().expect("already shut down")
    }
}
