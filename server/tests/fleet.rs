//! A fleet: two real pyexec servers sharing one throwaway Postgres, behind
//! a real load balancer (haproxy, round robin, health-checked on /readyz),
//! all on 127.0.0.1. A key's limits hold for the fleet as a whole, a
//! revocation reaches both servers, and the usage in the database is the sum
//! of the answers' usage, also when a server is stopped and Postgres is
//! stopped and restarted mid-run.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::store::TestStore;
use common::{scaled, try_request, Response, TestServer};
use serde_json::{json, Value};

/// haproxy on a free port, round robin over `servers`, stopped by its pid.
struct Balancer {
    addr: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Balancer {
    fn start(servers: &[SocketAddr]) -> Balancer {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut config = format!(
            "global\n    maxconn 256\ndefaults\n    mode http\n    timeout connect 2s\n    timeout client 60s\n    timeout server 60s\n    retries 0\nfrontend fleet\n    bind 127.0.0.1:{port}\n    default_backend pyexec\nbackend pyexec\n    balance roundrobin\n    option httpchk GET /readyz\n    default-server inter 500ms fall 1 rise 2\n"
        );
        for (i, server) in servers.iter().enumerate() {
            config.push_str(&format!("    server s{i} {server} check\n"));
        }
        let file = dir.path().join("haproxy.cfg");
        std::fs::write(&file, config).unwrap();
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy (setup.sh installs it)");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "haproxy did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        // Both servers healthy (rise 2 checks at 500 ms).
        std::thread::sleep(Duration::from_millis(1500));
        Balancer {
            addr,
            child,
            _dir: dir,
        }
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two servers with keys on the shared Postgres store.
async fn two_servers(store: &TestStore, env: &[(&str, &str)]) -> (TestServer, TestServer) {
    let store_env = store.env();
    let mut all: Vec<(&str, &str)> = vec![("PYEXEC_AUTH", "keys")];
    all.extend(store_env.iter().map(|(n, v)| (*n, v.as_str())));
    all.extend_from_slice(env);
    let (a, b) = tokio::join!(TestServer::start(&all), TestServer::start(&all));
    (a, b)
}

async fn run(addr: SocketAddr, token: &str, script: &str) -> Option<Response> {
    let bearer = format!("Bearer {token}");
    let headers = [
        ("Content-Type", "application/json"),
        ("Authorization", bearer.as_str()),
    ];
    let body = json!({ "script": script }).to_string();
    try_request(addr, "POST", "/execute", &headers, body.as_bytes()).await
}

const HELLO: &str = "def main():\n    return {}\n";

/// A key limited to R requests per second, driven at 3R through the
/// balancer for several windows: the fleet accepts R per window, within the
/// stated error (per window, at most the burst, and less by at most the
/// other server's unspent slice: a quarter of the burst, at least 1).
#[tokio::test]
async fn a_keys_rate_holds_for_the_fleet_within_the_stated_error() {
    let store = TestStore::postgres();
    let (rate, burst) = (4.0, 4u64);
    let (_, token) = store.new_key("rated", &["--rate", "4", "--burst", "4"]);
    let (a, b) = two_servers(&store, &[]).await;
    let balancer = Balancer::start(&[a.addr, b.addr]);
    // Start on a window's boundary (windows of ceil(burst / rate) = 1 s).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    tokio::time::sleep(Duration::from_nanos(
        1_000_000_000 - u64::from(now.subsec_nanos()),
    ))
    .await;
    let windows = 6u64;
    let interval = Duration::from_secs_f64(1.0 / (3.0 * rate));
    let started = Instant::now();
    let mut per_window = vec![0u64; windows as usize];
    let mut refused = 0;
    while started.elapsed() < Duration::from_secs(windows) {
        let sent = started.elapsed();
        let Some(response) = run(balancer.addr, &token, HELLO).await else {
            continue;
        };
        match response.status {
            200 => per_window[(sent.as_secs() as usize).min(windows as usize - 1)] += 1,
            429 => refused += 1,
            other => panic!("unexpected {other}: {}", response.text()),
        }
        let next = sent + interval;
        if let Some(wait) = next.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
    let accepted: u64 = per_window.iter().sum();
    eprintln!(
        "fleet rate: {accepted} accepted in {windows} s at {rate}/s (per window {per_window:?}), {refused} refused"
    );
    // The server counts a request in the window it arrives in; the client
    // in the one it was sent in: a request may cross a boundary between the
    // two. So the bounds are on the whole run: at most the limit in each
    // window the run touched, at least the limit less a slice in each whole
    // window.
    let slice = (burst / 4).max(1);
    assert!(
        accepted <= burst * (windows + 1),
        "{accepted} accepted, over {burst} in each of {} windows: {per_window:?}",
        windows + 1
    );
    assert!(
        accepted >= (burst - slice) * (windows - 1),
        "{accepted} accepted, fewer than {} in each of {} whole windows: {per_window:?}",
        burst - slice,
        windows - 1
    );
    // Two servers each limiting alone would accept twice the limit.
    assert!(accepted < 2 * burst * (windows - 1), "{per_window:?}");
    assert!(refused > 0, "3R must be refused in part");
}

/// A key with a CPU quota, used through both servers: once it is spent,
/// both refuse it (quota_exceeded) within the stated overshoot.
#[tokio::test]
async fn a_cpu_quota_stops_the_key_on_every_server() {
    let store = TestStore::postgres();
    let quota = 0.6;
    let (_, token) = store.new_key(
        "frugal",
        &["--cpu-per-day", "0.6", "--rate", "100", "--burst", "100"],
    );
    let (a, b) = two_servers(&store, &[]).await;
    let spin = "import time\ndef main():\n    t = time.process_time()\n    while time.process_time() - t < 0.1:\n        pass\n    return {}\n";
    let mut used_ms = 0.0;
    let deadline = Instant::now() + scaled(Duration::from_secs(60));
    let mut servers = [a.addr, b.addr].into_iter().cycle();
    loop {
        let response = run(servers.next().unwrap(), &token, spin).await.unwrap();
        if response.status == 429 {
            assert_eq!(response.json()["kind"], "quota_exceeded");
            break;
        }
        assert_eq!(response.status, 200, "{}", response.text());
        used_ms += response.json()["usage"]["cpu_ms"].as_f64().unwrap();
        assert!(
            Instant::now() < deadline,
            "never stopped: {used_ms} ms used"
        );
    }
    // The other server refuses too, within the refresh of the fleet's totals.
    let other = servers.next().unwrap();
    let deadline = Instant::now() + scaled(Duration::from_secs(5));
    loop {
        let response = run(other, &token, HELLO).await.unwrap();
        if response.status == 429 {
            break;
        }
        used_ms += response.json()["usage"]["cpu_ms"].as_f64().unwrap_or(0.0);
        assert!(Instant::now() < deadline, "the other server kept serving");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "cpu quota: {used_ms:.0} ms used against {} ms",
        quota * 1000.0
    );
    // Stated overshoot: what runs when it is spent plus about 3 s of the
    // key's usage (metering within 1 s, the fleet's totals re-read every
    // 2 s); one client runs at most one CPU's worth.
    assert!(used_ms >= quota * 1000.0, "stopped early: {used_ms}");
    assert!(
        used_ms <= quota * 1000.0 + 3000.0 + 100.0,
        "overshoot beyond the stated bound: {used_ms} ms"
    );
}

/// `pyexec keys revoke` against the database: both servers refuse the key
/// within 5 s.
#[tokio::test]
async fn a_revocation_reaches_every_server_within_five_seconds() {
    let store = TestStore::postgres();
    let (id, token) = store.new_key("gone", &[]);
    let (a, b) = two_servers(&store, &[]).await;
    for server in [&a, &b] {
        assert_eq!(run(server.addr, &token, HELLO).await.unwrap().status, 200);
    }
    store.keys(&["revoke", &id]);
    let revoked = Instant::now();
    for server in [&a, &b] {
        loop {
            if run(server.addr, &token, HELLO).await.unwrap().status == 401 {
                break;
            }
            assert!(
                revoked.elapsed() < Duration::from_secs(5),
                "a server still served after 5 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    eprintln!(
        "revocation honoured by both servers after {:?}",
        revoked.elapsed()
    );
}

/// Load through the balancer while one server is stopped with SIGTERM and
/// Postgres is stopped for a few seconds and restarted: known keys keep
/// working, an unknown one gets 503 store_unavailable meanwhile, no request
/// waits on the dead database, the servers stay ready, and the fleet's
/// usage in the database is exactly the sum of the answers' usage.
#[tokio::test]
async fn usage_adds_up_across_a_stopped_server_and_a_database_outage() {
    let mut store = TestStore::postgres();
    let (id, token) = store.new_key("busy", &["--rate", "1000", "--burst", "1000"]);
    let (mut a, mut b) = two_servers(&store, &[("PYEXEC_SHUTDOWN_GRACE", "4")]).await;
    let balancer = Balancer::start(&[a.addr, b.addr]);
    let addr = balancer.addr;
    let stop_at = Instant::now() + scaled(Duration::from_secs(14));
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let token = token.clone();
            tokio::spawn(async move {
                let mut answers = Vec::new();
                let script = "import time\ndef main():\n    time.sleep(0.1)\n    return {}\n";
                while Instant::now() < stop_at {
                    let sent = Instant::now();
                    if let Some(response) = run(addr, &token, script).await {
                        answers.push((sent.elapsed(), response));
                    }
                }
                answers
            })
        })
        .collect();
    // A SIGTERM to one server mid-run; the balancer moves on to the other.
    tokio::time::sleep(scaled(Duration::from_secs(3))).await;
    let signalled = Instant::now();
    a.sigterm();
    a.exits_cleanly_within(signalled, Duration::from_secs(4))
        .await;
    // Postgres stopped for 4 s under load.
    tokio::time::sleep(scaled(Duration::from_secs(1))).await;
    store.cluster().unwrap().stop();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, stranger, _) = pyexec_store::new_token();
    let unknown = run(b.addr, &stranger.to_string(), HELLO).await.unwrap();
    assert_eq!(unknown.status, 503, "{}", unknown.text());
    assert_eq!(unknown.json()["kind"], "store_unavailable");
    assert_eq!(
        common::get(b.addr, "/readyz").await.status,
        200,
        "ready through the outage"
    );
    let metrics = common::get(b.addr, "/metrics").await.text();
    assert!(
        metrics.contains("pyexec_store_up 0"),
        "the outage is visible"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    store.cluster().unwrap().restart();
    let mut answers = Vec::new();
    for client in clients {
        answers.extend(client.await.unwrap());
    }
    let signalled = Instant::now();
    b.sigterm();
    b.exits_cleanly_within(signalled, Duration::from_secs(4))
        .await;

    // The balancer's own answers (a server gone between two health checks)
    // are not JSON; every pyexec answer is.
    let ran: Vec<Value> = answers
        .iter()
        .filter_map(|(_, r)| serde_json::from_slice::<Value>(&r.body).ok())
        .filter(|body| body.get("usage").is_some())
        .collect();
    let slowest = answers.iter().map(|(took, _)| *took).max().unwrap();
    eprintln!(
        "fleet usage: {} answers, {} jobs ran, slowest answer {slowest:?}",
        answers.len(),
        ran.len()
    );
    assert!(
        slowest < scaled(Duration::from_secs(3)),
        "a request waited on the dead database: {slowest:?}"
    );
    let sum = |field: &str| -> u64 {
        ran.iter()
            .map(|b| (b["usage"][field].as_f64().unwrap_or(0.0) * 1000.0).round() as u64)
            .sum()
    };
    let rows = store.usage_rows(&id);
    let stored = |field: &str| -> u64 {
        rows.iter()
            .map(|r| (r[field].as_f64().unwrap() * 1000.0).round() as u64)
            .sum()
    };
    let jobs: u64 = rows.iter().map(|r| r["jobs"].as_u64().unwrap()).sum();
    assert_eq!(jobs, ran.len() as u64, "jobs in the database vs answered");
    assert_eq!(stored("cpu_ms"), sum("cpu_ms"), "CPU µs");
    assert_eq!(stored("wall_ms"), sum("wall_ms"), "wall µs");
}
