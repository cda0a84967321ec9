//! API keys end to end: the real server with `PYEXEC_AUTH=keys`, the real
//! store (the embedded one, or Postgres with `PYEXEC_TEST_STORE=postgres`:
//! `make test` runs both), real jobs, and keys made, changed and revoked
//! with the real `pyexec keys` command, as an operator would.

mod common;

use std::time::{Duration, Instant};

use common::store::TestStore;
use common::{expect, request, scaled, try_request, Response, TestServer};
use serde_json::{json, Value};

/// A server with keys on, on `store`.
async fn server_with_keys(store: &TestStore, env: &[(&str, &str)]) -> TestServer {
    let store_env = store.env();
    let mut all: Vec<(&str, &str)> = vec![("PYEXEC_AUTH", "keys")];
    all.extend(store_env.iter().map(|(n, v)| (*n, v.as_str())));
    all.extend_from_slice(env);
    TestServer::start(&all).await
}

async fn run(server: &TestServer, token: Option<&str>, body: &Value) -> Response {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(bearer) = &bearer {
        headers.push(("Authorization", bearer.as_str()));
    }
    request(
        server.addr,
        "POST",
        "/execute",
        &headers,
        body.to_string().as_bytes(),
    )
    .await
}

const HELLO: &str = "def main():\n    return {'ok': True}\n";

/// Every way of not having an accepted key gets the same 401, with the
/// Bearer challenge; the probes, the document and /v1/info need no key.
#[tokio::test]
async fn without_an_accepted_key_every_request_gets_the_same_401() {
    let store = TestStore::new();
    let (id, token) = store.new_key("revoked-one", &[]);
    store.keys(&["revoke", &id]);
    let server = server_with_keys(&store, &[]).await;
    let (_, unknown, _) = pyexec_store::new_token();
    let wrong_secret = format!("{}x", &token[..token.len() - 1]);
    let cases: [(&str, Option<String>); 5] = [
        ("no header", None),
        ("malformed", Some("Bearer not-a-token".into())),
        ("unknown", Some(format!("Bearer {unknown}"))),
        ("revoked", Some(format!("Bearer {token}"))),
        ("wrong secret", Some(format!("Bearer {wrong_secret}"))),
    ];
    let mut bodies = Vec::new();
    for (case, authorization) in cases {
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(value) = &authorization {
            headers.push(("Authorization", value.as_str()));
        }
        let body = json!({"script": HELLO}).to_string();
        let response = request(server.addr, "POST", "/execute", &headers, body.as_bytes()).await;
        let answer = expect(&response, 401, "unauthorized");
        assert_eq!(
            response.header("www-authenticate"),
            Some("Bearer realm=\"pyexec\""),
            "{case}"
        );
        bodies.push(answer);
    }
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "no oracle: {bodies:?}"
    );
    for public in ["/healthz", "/readyz", "/openapi.json", "/v1/info", "/"] {
        let response = common::get(server.addr, public).await;
        assert_eq!(response.status, 200, "{public}");
    }
    let info = common::get(server.addr, "/v1/info").await.json();
    assert_eq!(info["auth"], "keys");
}

/// A key runs jobs; its answers say where it stands; over its rate it gets
/// 429 rate_limited with Retry-After and the RateLimit fields.
#[tokio::test]
async fn a_key_runs_jobs_and_its_rate_is_enforced_with_the_headers() {
    let store = TestStore::new();
    let (_, token) = store.new_key("rated", &["--rate", "0.5", "--burst", "2"]);
    let server = server_with_keys(&store, &[]).await;
    let first = run(&server, Some(&token), &json!({"script": HELLO})).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.header("ratelimit-policy"), Some("\"rate\";q=2;w=4"));
    // One of two left; whole again within the 4 s window (embedded: in 2 s,
    // the time one request takes to refill; a fleet's window is fixed).
    let standing = first.header("ratelimit").unwrap();
    let t: u64 = standing
        .strip_prefix("\"rate\";r=1;t=")
        .unwrap_or_else(|| panic!("{standing}"))
        .parse()
        .unwrap();
    assert!((1..=4).contains(&t), "{standing}");
    let second = run(&server, Some(&token), &json!({"script": HELLO})).await;
    assert_eq!(second.status, 200, "{}", second.text());
    let refused = run(&server, Some(&token), &json!({"script": HELLO})).await;
    expect(&refused, 429, "rate_limited");
    // Embedded: one request refills in 2 s. A fleet counts in fixed 4 s
    // windows, so the wait is up to the end of the current one.
    let most = if store.is_postgres() { 4 } else { 2 };
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=most).contains(&retry), "Retry-After {retry}");
    assert_eq!(refused.header("ratelimit-policy"), Some("\"rate\";q=2;w=4"));
    assert!(
        refused
            .header("ratelimit")
            .unwrap()
            .starts_with("\"rate\";r=0;t="),
        "{:?}",
        refused.header("ratelimit")
    );
}

/// Jobs at once, CPU-seconds per day and the ceilings on a request's own
/// limits, each refused with its kind.
#[tokio::test]
async fn jobs_at_once_cpu_per_day_and_ceilings_are_each_refused_by_kind() {
    let store = TestStore::new();
    let (_, one_at_a_time) = store.new_key("one", &["--max-concurrent", "1"]);
    let (_, frugal) = store.new_key("frugal", &["--cpu-per-day", "0.05"]);
    let (_, capped) = store.new_key("capped", &["--max-timeout", "2", "--max-memory", "64"]);
    let server = server_with_keys(&store, &[]).await;

    // Jobs at once: one holds the key's only slot while another is refused.
    let slow = json!({"script": "import time\ndef main():\n    time.sleep(3)\n    return {}\n"});
    let holder = {
        let (addr, token) = (server.addr, one_at_a_time.clone());
        tokio::spawn(async move {
            let body = slow.to_string();
            let bearer = format!("Bearer {token}");
            let headers = [
                ("Content-Type", "application/json"),
                ("Authorization", bearer.as_str()),
            ];
            request(addr, "POST", "/execute", &headers, body.as_bytes()).await
        })
    };
    tokio::time::sleep(scaled(Duration::from_millis(800))).await;
    let refused = run(&server, Some(&one_at_a_time), &json!({"script": HELLO})).await;
    expect(&refused, 429, "concurrency_limited");
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(refused
        .header("ratelimit")
        .unwrap()
        .contains("\"concurrency\";r=0"));
    assert_eq!(holder.await.unwrap().status, 200);
    let after = run(&server, Some(&one_at_a_time), &json!({"script": HELLO})).await;
    assert_eq!(after.status, 200, "the slot came back: {}", after.text());

    // CPU per day: a job that spins past the quota, then the next is refused.
    let spin = json!({"script": "import time\ndef main():\n    t = time.process_time()\n    while time.process_time() - t < 0.2:\n        pass\n    return {}\n"});
    assert_eq!(run(&server, Some(&frugal), &spin).await.status, 200);
    let refused = run(&server, Some(&frugal), &json!({"script": HELLO})).await;
    let body = expect(&refused, 429, "quota_exceeded");
    assert!(
        body["error"].as_str().unwrap().contains("0.05 CPU-seconds"),
        "{body}"
    );
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&retry), "until midnight UTC: {retry}");
    assert!(refused.header("ratelimit").unwrap().contains("\"cpu\";r=0"));

    // Ceilings: over the key's are 400s naming them; none asked: the key's apply.
    let over = run(
        &server,
        Some(&capped),
        &json!({"script": HELLO, "limits": {"timeout_s": 5}}),
    )
    .await;
    let body = expect(&over, 400, "invalid_request");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("this API key's max_timeout_s"),
        "{body}"
    );
    let over = run(
        &server,
        Some(&capped),
        &json!({"script": HELLO, "limits": {"memory_mb": 128}}),
    )
    .await;
    expect(&over, 400, "invalid_request");
    let plain = run(&server, Some(&capped), &json!({"script": HELLO})).await;
    assert_eq!(
        plain.json()["limits"],
        json!({"timeout_s": 2.0, "memory_mb": 64})
    );
}

/// A key revoked with `pyexec keys revoke` is refused by the running server
/// within 5 s; a changed limit is followed as fast.
#[tokio::test]
async fn a_revoked_key_is_refused_by_the_running_server_within_five_seconds() {
    let store = TestStore::new();
    let (id, token) = store.new_key("soon-gone", &[]);
    let server = server_with_keys(&store, &[]).await;
    assert_eq!(
        run(&server, Some(&token), &json!({"script": HELLO}))
            .await
            .status,
        200
    );
    store.keys(&["set", &id, "--max-timeout", "1"]);
    let revoked_at = Instant::now();
    store.keys(&["revoke", &id]);
    loop {
        let response = run(&server, Some(&token), &json!({"script": HELLO})).await;
        if response.status == 401 {
            break;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(5),
            "still served {:?} after the revocation",
            revoked_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("revocation honoured after {:?}", revoked_at.elapsed());
}

/// The usage in the store is the sum of what the answers said, also when
/// the server is stopped with SIGTERM while jobs run: what ended is written
/// within the grace period.
#[tokio::test]
async fn metered_usage_is_the_sum_of_the_answers_also_across_a_sigterm() {
    let store = TestStore::new();
    let (id, token) = store.new_key("metered", &["--rate", "1000", "--burst", "1000"]);
    let mut server = server_with_keys(&store, &[("PYEXEC_SHUTDOWN_GRACE", "4")]).await;
    let script = "import time\ndef main():\n    time.sleep(0.3)\n    return {}\n";
    let addr = server.addr;
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let token = token.clone();
            tokio::spawn(async move {
                let mut answers = Vec::new();
                let bearer = format!("Bearer {token}");
                let headers = [
                    ("Content-Type", "application/json"),
                    ("Authorization", bearer.as_str()),
                ];
                let body = json!({"script": script}).to_string();
                for _ in 0..40 {
                    let Some(response) =
                        try_request(addr, "POST", "/execute", &headers, body.as_bytes()).await
                    else {
                        break;
                    };
                    answers.push(response);
                }
                answers
            })
        })
        .collect();
    tokio::time::sleep(scaled(Duration::from_secs(3))).await;
    let signalled = Instant::now();
    server.sigterm();
    let mut answered = Vec::new();
    for client in clients {
        answered.extend(client.await.unwrap());
    }
    server
        .exits_cleanly_within(signalled, Duration::from_secs(4))
        .await;
    let ran: Vec<Value> = answered
        .iter()
        .map(Response::json)
        .filter(|b| b.get("usage").is_some())
        .collect();
    assert!(ran.len() >= 4, "only {} jobs ran", ran.len());
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
    assert_eq!(jobs, ran.len() as u64, "jobs metered vs answered");
    assert_eq!(
        stored("cpu_ms"),
        sum("cpu_ms"),
        "CPU µs, stored vs answered"
    );
    assert_eq!(
        stored("wall_ms"),
        sum("wall_ms"),
        "wall µs, stored vs answered"
    );
}

/// The token never appears in the server's logs, its metrics, its error
/// bodies or the database; the key's public id does, in the log and metrics.
#[tokio::test]
async fn the_token_never_reaches_a_log_a_metric_an_error_or_the_database() {
    let store = TestStore::new();
    let (id, token) = store.new_key("secretive", &["--rate", "1", "--burst", "1"]);
    let secret = token.rsplit('_').next().unwrap().to_string();
    let server = server_with_keys(&store, &[]).await;
    let mut bodies = String::new();
    for script in [HELLO, "def main(:\n", "raise ValueError('x')\n"] {
        let response = run(&server, Some(&token), &json!({"script": script})).await;
        bodies.push_str(&response.text());
        for (_, value) in &response.headers {
            bodies.push_str(value);
        }
    }
    let wrong = format!("{}Z", &token[..token.len() - 1]);
    bodies.push_str(
        &run(&server, Some(&wrong), &json!({"script": HELLO}))
            .await
            .text(),
    );
    let metrics = common::get(server.addr, "/metrics").await.text();
    assert!(
        metrics.contains(&format!("pyexec_key_jobs_total{{key=\"{id}\"}}")),
        "per-key series"
    );
    common::eventually("the job's log line names the key's id", || {
        server.logs().iter().any(|line| line.contains(&id))
    })
    .await;
    let logs = server.logs().join("\n");
    let database = String::from_utf8_lossy(&store.raw_contents()).into_owned();
    for (place, text) in [
        ("answers", &bodies),
        ("metrics", &metrics),
        ("logs", &logs),
        ("database", &database),
    ] {
        assert!(!text.contains(&secret), "the secret is in the {place}");
        assert!(!text.contains(&token), "the token is in the {place}");
    }
}

/// The store gone while the server runs (the embedded store's file moved
/// away; Postgres stopped): known keys keep working from memory, an unknown
/// one gets 503 store_unavailable, the server stays ready; the store back,
/// everything works again.
#[tokio::test]
async fn a_store_gone_while_running_keeps_known_keys_and_refuses_unknown_ones() {
    let mut store = TestStore::new();
    let (_, known) = store.new_key("known", &[]);
    let server = server_with_keys(&store, &[]).await;
    assert_eq!(
        run(&server, Some(&known), &json!({"script": HELLO}))
            .await
            .status,
        200
    );
    let file = store.data_dir().join("pyexec.sqlite3");
    let aside = store.data_dir().join("aside.sqlite3");
    match store.cluster() {
        Some(cluster) => cluster.stop(),
        None => std::fs::rename(&file, &aside).unwrap(),
    }
    let (_, stranger, _) = pyexec_store::new_token();
    let stranger = stranger.to_string();
    let refused = run(&server, Some(&stranger), &json!({"script": HELLO})).await;
    expect(&refused, 503, "store_unavailable");
    assert!(refused.header("retry-after").is_some());
    let served = run(&server, Some(&known), &json!({"script": HELLO})).await;
    assert_eq!(
        served.status,
        200,
        "a known key works from memory: {}",
        served.text()
    );
    assert_eq!(common::get(server.addr, "/readyz").await.status, 200);
    let metrics = common::get(server.addr, "/metrics").await.text();
    assert!(metrics.contains("pyexec_store_up 0"), "{metrics}");
    match store.cluster() {
        Some(cluster) => cluster.restart(),
        None => std::fs::rename(&aside, &file).unwrap(),
    }
    let deadline = Instant::now() + scaled(Duration::from_secs(10));
    loop {
        let response = run(&server, Some(&stranger), &json!({"script": HELLO})).await;
        if response.status == 401 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the store never came back: {}",
            response.text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        run(&server, Some(&known), &json!({"script": HELLO}))
            .await
            .status,
        200
    );
}

/// With keys on, the store must open: a data directory that can't hold it
/// stops the start, saying why.
#[tokio::test]
async fn with_keys_an_unusable_store_stops_the_start() {
    let store = TestStore::new();
    let file = store.data_dir().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    // Postgres: nothing listens where the URL points.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = format!(
        "postgres://pyexec@127.0.0.1:{}/pyexec?connect_timeout=2",
        closed.local_addr().unwrap().port()
    );
    drop(closed);
    let mut env = vec![
        ("PYEXEC_AUTH", "keys"),
        ("PYEXEC_DATA_DIR", file.to_str().unwrap()),
    ];
    if store.is_postgres() {
        env.push(("PYEXEC_DATABASE_URL", nowhere.as_str()));
    }
    let mut server = TestServer::spawn(&env);
    let status = server
        .wait_exit(scaled(Duration::from_secs(30)))
        .await
        .expect("it exits");
    assert_eq!(status.code(), Some(1));
    let logs = server.logs().join("\n");
    assert!(logs.contains("PYEXEC_AUTH=keys needs it"), "{logs}");
}
