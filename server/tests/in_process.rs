//! The HTTP layer end to end, in-process, on a fake sandbox: every row of the
//! status table, the request checks, request ids, metrics, overload and
//! shutdown. (The same rows against the real jail are in `api.rs`.)

mod common;

use std::time::{Duration, Instant};

use common::{eventually, execute, execute_with, get, request, scrape, send_raw, InProcessServer};
use pyexec_worker::testing::{FakeSandbox, JobState, Spawns};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn a_result_is_passed_through_with_the_output() {
    let server = InProcessServer::start(&[]).await;
    let response = execute(server.addr, r#"ok:{"a": 1.50, "b": [1, "x"]}"#).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("content-type"), Some("application/json"));
    // Raw JSON passes through untouched: 1.50 was not re-encoded as 1.5.
    assert!(
        response
            .text()
            .starts_with(r#"{"result":{"a": 1.50, "b": [1, "x"]},"#),
        "{}",
        response.text()
    );
    let body = response.json();
    assert_eq!(body["stdout"], "out\n");
    assert_eq!(body["stderr"], "");
    assert_eq!(body["stdout_truncated"], false);
    assert!(body["duration_ms"].as_f64().unwrap() >= 0.0);
    server.shutdown().await;
}

#[tokio::test]
async fn truncated_output_is_flagged() {
    let server = InProcessServer::start(&[]).await;
    let body = execute(server.addr, "noisy").await.json();
    assert_eq!(body["stdout_truncated"], true);
    assert_eq!(body["stdout"].as_str().unwrap().len(), 1000);
    server.shutdown().await;
}

#[tokio::test]
async fn every_job_failure_row_of_the_status_table() {
    let server = InProcessServer::start(&[("PYEXEC_TIMEOUT", "0.2")]).await;
    let rows = [
        ("error:syntax_error", 400, "syntax_error"),
        ("error:missing_main", 400, "missing_main"),
        ("error:script_exception", 400, "script_exception"),
        ("error:invalid_result", 400, "invalid_result"),
        ("error:result_too_large", 400, "result_too_large"),
        ("error:worker_exited", 400, "worker_exited"),
        ("error:memory_limit", 400, "memory_limit"),
        ("error:internal", 500, "internal"),
        ("sleep", 408, "timeout"),
        ("memory", 400, "memory_limit"),
        ("exited", 400, "worker_exited"),
        ("protocol", 400, "protocol_violation"),
        ("sandbox", 500, "internal"),
    ];
    for (script, status, kind) in rows {
        let response = execute(server.addr, script).await;
        let body = response.json();
        assert_eq!(
            (response.status, body["kind"].as_str().unwrap()),
            (status, kind),
            "{script}: {body}"
        );
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{script}: {body}"
        );
        assert_eq!(
            body["stdout"], "out\n",
            "{script}: the script ran, so its output is in the answer"
        );
        if status == 500 {
            assert!(
                !response.text().contains("secret"),
                "internal detail leaked: {body}"
            );
        }
    }
    let exception = execute(server.addr, "error:script_exception").await.json();
    assert_eq!(exception["line"], 3);
    assert!(exception["traceback"]
        .as_str()
        .unwrap()
        .starts_with("Traceback"));
    server.shutdown().await;
}

#[tokio::test]
async fn request_rows_of_the_status_table() {
    let server = InProcessServer::start(&[("PYEXEC_MAX_SCRIPT_CHARS", "10")]).await;
    let addr = server.addr;
    let json = [("Content-Type", "application/json")];
    let cases: Vec<(common::Response, u16, &str)> = vec![
        (
            request(addr, "POST", "/execute", &json, b"not json").await,
            400,
            "invalid_request",
        ),
        (
            request(addr, "POST", "/execute", &json, b"[]").await,
            400,
            "invalid_request",
        ),
        (
            request(addr, "POST", "/execute", &json, b"{}").await,
            400,
            "invalid_request",
        ),
        (
            request(addr, "POST", "/execute", &json, br#"{"script": 1}"#).await,
            400,
            "invalid_request",
        ),
        (
            request(addr, "POST", "/execute", &json, br#"{"script": "  "}"#).await,
            400,
            "invalid_request",
        ),
        (
            request(
                addr,
                "POST",
                "/execute",
                &json,
                br#"{"script": "x", "args": []}"#,
            )
            .await,
            400,
            "invalid_request",
        ),
        (
            request(addr, "POST", "/execute", &[], br#"{"script": "x"}"#).await,
            415,
            "unsupported_media_type",
        ),
        (
            request(
                addr,
                "POST",
                "/execute",
                &[("Content-Type", "text/plain")],
                br#"{"script": "x"}"#,
            )
            .await,
            415,
            "unsupported_media_type",
        ),
        (execute(addr, "12345678901").await, 413, "script_too_large"),
        (get(addr, "/nope").await, 404, "not_found"),
        (get(addr, "/execute").await, 405, "method_not_allowed"),
        (
            request(addr, "DELETE", "/metrics", &[], b"").await,
            405,
            "method_not_allowed",
        ),
    ];
    for (response, status, kind) in cases {
        let body = response.json();
        assert_eq!(
            (response.status, body["kind"].as_str().unwrap()),
            (status, kind),
            "{body}"
        );
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()));
        assert!(body.get("stdout").is_none(), "no script ran: {body}");
    }
    // Ten characters of three bytes each are within a 10-character limit.
    assert_eq!(execute(addr, "€€€€€€€€€€").await.status, 200);
    assert_eq!(get(addr, "/execute").await.header("allow"), Some("POST"));
    assert_eq!(
        request(
            addr,
            "POST",
            "/execute",
            &[("Content-Type", "application/json; charset=utf-8")],
            br#"{"script": "x"}"#
        )
        .await
        .status,
        200
    );
    server.shutdown().await;
}

#[tokio::test]
async fn an_oversized_body_is_refused_before_it_is_read() {
    let server = InProcessServer::start(&[
        ("PYEXEC_MAX_SCRIPT_CHARS", "10"),
        ("PYEXEC_MAX_INPUT_BYTES", "100"),
    ])
    .await;
    // Six bytes per script character, the input's cap, room for the rest.
    let limit = 10 * 6 + 100 + 64 * 1024;
    // A declared length over the cap: answered from the head alone.
    let head = format!(
        "POST /execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        limit + 1
    );
    let started = Instant::now();
    let response = send_raw(server.addr, head.as_bytes()).await;
    assert_eq!(
        (response.status, response.json()["kind"].as_str().unwrap()),
        (413, "script_too_large")
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "it waited for a body it should not read"
    );

    // A chunked body is cut off as it passes the cap.
    let chunk = vec![b' '; 8192];
    let over_the_cap = vec![chunk.as_slice(); limit / chunk.len() + 2];
    let response = send_raw(server.addr, &chunked_post(&over_the_cap)).await;
    assert_eq!(
        (response.status, response.json()["kind"].as_str().unwrap()),
        (413, "script_too_large")
    );

    // The same with an input that is too large: the input is named, from a
    // declared length (after a look at the first bytes) and while streaming.
    let start = br#"{"script": "def main(x): ...", "input": ["#;
    let head = format!(
        "POST /execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        limit * 10
    );
    let mut raw = head.into_bytes();
    raw.extend_from_slice(start);
    raw.extend(std::iter::repeat_n(b'1', 1000));
    let started = Instant::now();
    let response = send_raw(server.addr, &raw).await;
    assert_eq!(
        (response.status, response.json()["kind"].as_str().unwrap()),
        (413, "input_too_large")
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    let input_over_the_cap = [&[start.as_slice()], over_the_cap.as_slice()].concat();
    let response = send_raw(server.addr, &chunked_post(&input_over_the_cap)).await;
    assert_eq!(
        (response.status, response.json()["kind"].as_str().unwrap()),
        (413, "input_too_large")
    );
    server.shutdown().await;
}

#[tokio::test]
async fn every_json_answer_ends_with_one_newline() {
    let server =
        InProcessServer::start(&[("PYEXEC_TIMEOUT", "0.2"), ("PYEXEC_MAX_SCRIPT_CHARS", "25")])
            .await;
    let addr = server.addr;
    let json = [("Content-Type", "application/json")];
    let answers = [
        (execute(addr, r#"ok:{"a":1}"#).await, 200),
        (execute(addr, "error:invalid_result").await, 400),
        (execute(addr, "error:internal").await, 500),
        (execute(addr, "sleep").await, 408),
        (
            request(addr, "POST", "/execute", &json, b"not json").await,
            400,
        ),
        (request(addr, "POST", "/execute", &[], b"{}").await, 415),
        (execute(addr, &"#".repeat(26)).await, 413),
        (get(addr, "/nope").await, 404),
        (get(addr, "/execute").await, 405),
        (get(addr, "/healthz").await, 200),
        (get(addr, "/readyz").await, 200),
    ];
    for (response, status) in answers {
        assert_eq!(response.status, status, "{}", response.text());
        response.assert_json_line();
    }
    // Prometheus text is not JSON and keeps its own format.
    let metrics = get(addr, "/metrics").await;
    assert!(metrics
        .header("content-type")
        .unwrap()
        .starts_with("text/plain"));
    server.shutdown().await;
}

#[tokio::test]
async fn health_and_readiness() {
    let server = InProcessServer::start(&[]).await;
    assert_eq!(get(server.addr, "/healthz").await.json()["status"], "ok");
    let ready = get(server.addr, "/readyz").await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["ready"], true);
    assert_eq!(
        request(server.addr, "HEAD", "/healthz", &[], b"")
            .await
            .status,
        200
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_broken_sandbox_is_not_ready() {
    // Each spawn takes a while before it fails, so the first probe surely
    // comes while the pool is still warming up (fork mode's defaults start
    // eight spawns at once: without the delay, three failures can come first).
    let sandbox = FakeSandbox {
        spawns: Spawns::Fail,
        spawn_delay: Duration::from_millis(500),
        ..FakeSandbox::default()
    };
    let data_dir = tempfile::tempdir().unwrap();
    let env: std::collections::HashMap<String, String> = [(
        "PYEXEC_DATA_DIR".to_string(),
        data_dir.path().display().to_string(),
    )]
    .into();
    let config =
        pyexec_server::config::Config::from_env_with_cpus(|n| env.get(n).cloned(), 2).unwrap();
    let metrics = std::sync::Arc::new(
        pyexec_server::metrics::Metrics::new(
            config.timeout,
            config.queue_timeout,
            config.spawn_timeout,
            config.metrics_max_keys,
        )
        .unwrap(),
    );
    let callers = pyexec_server::startup::start_callers(&config)
        .await
        .unwrap();
    let state = pyexec_server::AppState::start(&config, sandbox, metrics, callers);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(pyexec_server::run(listener, state, async move {
        let _ = stopped.await;
    }));
    let first = get(addr, "/readyz").await;
    assert_eq!(first.status, 503);
    first.assert_json_line();
    assert!(first.json()["reason"]
        .as_str()
        .unwrap()
        .contains("warming up"));
    // Spawns back off 100, 200, 400 ms: after three failures it says why.
    let deadline = Instant::now() + common::scaled(Duration::from_secs(10));
    loop {
        let body = get(addr, "/readyz").await.json();
        if body["reason"]
            .as_str()
            .unwrap()
            .contains("fails on purpose")
        {
            break;
        }
        assert!(Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = scrape(addr).await;
    assert!(common::sample(&metrics, "pyexec_worker_spawn_failures_total", &[]) >= 3.0);
    let _ = stop.send(());
    task.await.unwrap();
}

#[tokio::test]
async fn request_ids_are_echoed_or_made() {
    let server = InProcessServer::start(&[]).await;
    let mine = execute_with(server.addr, "x", &[("X-Request-Id", "client-abc.1")]).await;
    assert_eq!(mine.header("x-request-id"), Some("client-abc.1"));
    let bad = execute_with(server.addr, "x", &[("X-Request-Id", "no spaces allowed")]).await;
    let made = bad.header("x-request-id").unwrap();
    assert_eq!(made.len(), 32);
    let a = get(server.addr, "/nope").await;
    let b = get(server.addr, "/nope").await;
    assert_ne!(a.header("x-request-id"), b.header("x-request-id"));
    assert!(
        a.header("x-request-id").is_some(),
        "errors carry the id too"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn overloaded_when_no_worker_comes() {
    let sandbox = FakeSandbox {
        spawn_delay: Duration::from_millis(600),
        ..FakeSandbox::default()
    };
    let server = InProcessServer::start_with(
        &[
            ("PYEXEC_POOL_SIZE", "1"),
            ("PYEXEC_QUEUE_MAX", "1"),
            ("PYEXEC_QUEUE_TIMEOUT", "0.1"),
        ],
        sandbox,
    )
    .await;
    // Takes the only warm worker; its replacement needs 600 ms.
    let holder = tokio::spawn(execute(server.addr, "slow:300"));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let waited = execute(server.addr, "x").await;
    assert_eq!(waited.status, 503, "{}", waited.text());
    assert_eq!(waited.json()["kind"], "overloaded");
    waited.assert_json_line();
    assert_eq!(waited.header("retry-after"), Some("1"));
    assert_eq!(holder.await.unwrap().status, 200);

    let metrics = scrape(server.addr).await;
    assert_eq!(
        common::sample(
            &metrics,
            "pyexec_rejected_total",
            &[("reason", "overloaded")]
        ),
        1.0
    );
    server.shutdown().await;
}

#[tokio::test]
async fn queue_full_is_refused_at_once() {
    let sandbox = FakeSandbox {
        spawn_delay: Duration::from_millis(600),
        ..FakeSandbox::default()
    };
    let server = InProcessServer::start_with(
        &[
            ("PYEXEC_POOL_SIZE", "1"),
            ("PYEXEC_QUEUE_MAX", "0"),
            ("PYEXEC_QUEUE_TIMEOUT", "5"),
        ],
        sandbox,
    )
    .await;
    let holder = tokio::spawn(execute(server.addr, "slow:100"));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    let refused = execute(server.addr, "x").await;
    assert_eq!(refused.status, 503);
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "a full queue must not make the client wait"
    );
    assert_eq!(holder.await.unwrap().status, 200);
    server.shutdown().await;
}

#[tokio::test]
async fn metrics_move_with_jobs() {
    let server =
        InProcessServer::start(&[("PYEXEC_TIMEOUT", "0.2"), ("PYEXEC_POOL_SIZE", "4")]).await;
    execute(server.addr, "x").await;
    execute(server.addr, "error:script_exception").await;
    execute(server.addr, "sleep").await;
    execute(server.addr, "").await;
    let m = scrape(server.addr).await;
    for outcome in ["ok", "script_exception", "timeout"] {
        assert_eq!(
            common::sample(&m, "pyexec_jobs_total", &[("outcome", outcome)]),
            1.0,
            "{outcome}"
        );
        assert_eq!(
            common::histogram_count(&m, "pyexec_job_duration_seconds", &[("outcome", outcome)]),
            1,
            "{outcome}"
        );
    }
    assert_eq!(
        common::sample(
            &m,
            "pyexec_rejected_total",
            &[("reason", "invalid_request")]
        ),
        1.0
    );
    assert_eq!(
        common::sample(
            &m,
            "pyexec_http_requests_total",
            &[("route", "/execute"), ("status", "200")]
        ),
        1.0
    );
    assert_eq!(
        common::sample(
            &m,
            "pyexec_http_requests_total",
            &[("route", "/execute"), ("status", "408")]
        ),
        1.0
    );
    assert_eq!(
        common::histogram_count(
            &m,
            "pyexec_http_request_duration_seconds",
            &[("route", "/execute")]
        ),
        4
    );
    assert!(common::histogram_count(&m, "pyexec_queue_wait_seconds", &[]) >= 3);
    assert!(common::histogram_count(&m, "pyexec_worker_spawn_duration_seconds", &[]) >= 2);
    assert_eq!(common::sample(&m, "pyexec_pool_target_size", &[]), 4.0);
    assert_eq!(common::sample(&m, "pyexec_queue_depth", &[]), 0.0);
    assert!(common::sample(&m, "pyexec_workers", &[("state", "ready")]) >= 1.0);
    assert_eq!(
        common::sample(
            &m,
            "pyexec_build_info",
            &[("python_version", "3.11.2"), ("pandas_version", "2.3.3")]
        ),
        1.0
    );
    assert!(common::sample(&m, "process_resident_memory_bytes", &[]) > 0.0);
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_that_goes_away_stops_its_worker() {
    let sandbox = FakeSandbox::default();
    let server = InProcessServer::start_with(&[("PYEXEC_TIMEOUT", "30")], sandbox.clone()).await;
    let body = br#"{"script": "sleep"}"#;
    let raw = format!(
        "POST /execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stream, raw.as_bytes())
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stream, body)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.state.pool.status().busy == 0 {
        assert!(Instant::now() < deadline, "the job never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(sandbox.ledger.stopped(JobState::Running).is_empty());
    drop(stream);
    // Stopped mid-job, by its lease's drop: nothing else stops a busy worker.
    while sandbox.ledger.stopped(JobState::Running).is_empty()
        || server.state.pool.status().busy > 0
    {
        assert!(
            Instant::now() < deadline,
            "the abandoned job's worker was not stopped"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(sandbox.ledger.stopped(JobState::Running).len(), 1);
    server.shutdown().await;
}

/// Until the job running at the signal is done: `/readyz` answers 503 at
/// once, a new job is refused with `shutting_down`, the running one answers
/// normally, and the shutdown ends as soon as nothing is left (not at the end
/// of the grace period).
#[tokio::test]
async fn from_the_signal_probes_and_new_jobs_get_503_while_in_flight_requests_finish() {
    let mut server = InProcessServer::start(&[("PYEXEC_SHUTDOWN_GRACE", "5")]).await;
    let addr = server.addr;
    let in_flight = tokio::spawn(execute(addr, "slow:600"));
    eventually("the job runs", || server.state.pool.status().busy == 1).await;
    let signalled = Instant::now();
    let stopping = server.begin_shutdown();
    eventually("the drain begins", || server.state.drain.is_draining()).await;

    let ready = get(addr, "/readyz").await;
    assert_eq!(ready.status, 503, "{}", ready.text());
    assert_eq!(ready.json()["reason"], "shutting down");
    let refused = execute(addr, "x").await;
    assert_eq!(
        (refused.status, refused.json()["kind"].as_str().unwrap()),
        (503, "shutting_down"),
        "{}",
        refused.text()
    );
    assert_eq!(refused.header("retry-after"), Some("1"));
    let answered = in_flight.await.unwrap();
    assert_eq!(answered.status, 200, "{}", answered.text());

    tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .expect("run returned")
        .unwrap();
    assert!(
        signalled.elapsed() < Duration::from_secs(2),
        "it waited out the grace period with nothing left to finish"
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
    assert!(server.state.pool.status().closed);
    let metrics = rendered_metrics(&server);
    assert_eq!(
        common::sample(
            &metrics,
            "pyexec_rejected_total",
            &[("reason", "shutting_down")]
        ),
        1.0
    );
}

/// A client that connected just before the signal and sends its request just
/// after gets an answer: the drain does not close a connection whose first
/// request it has not read yet.
#[tokio::test]
async fn a_request_on_a_connection_opened_before_the_signal_is_answered() {
    let mut server = InProcessServer::start(&[("PYEXEC_SHUTDOWN_GRACE", "5")]).await;
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    // Accepted, and nothing sent yet.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopping = server.begin_shutdown();
    eventually("the drain begins", || server.state.drain.is_draining()).await;
    // Long enough for the connection's task to have seen the drain.
    tokio::time::sleep(Duration::from_millis(100)).await;

    stream
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: pyexec\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let ready = common::parse_response(&answer);
    assert_eq!(ready.status, 503, "{}", ready.text());
    assert_eq!(ready.json()["reason"], "shutting down");

    tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .expect("run returned")
        .unwrap();
}

/// At the end of the grace period, a running job and a request queued for a
/// worker (whose replacement never comes: its spawn hangs) are both answered
/// 503 `shutting_down`, the running job's worker is stopped by its lease, and
/// the whole shutdown still ends within the grace period plus one second.
#[tokio::test]
async fn what_outlives_the_grace_is_answered_and_stopped() {
    let sandbox = FakeSandbox {
        spawns: Spawns::HangFrom(2),
        ..FakeSandbox::default()
    };
    let mut server = InProcessServer::start_with(
        &[
            ("PYEXEC_POOL_SIZE", "1"),
            ("PYEXEC_QUEUE_MAX", "4"),
            ("PYEXEC_QUEUE_TIMEOUT", "60"),
            ("PYEXEC_SHUTDOWN_GRACE", "0.3"),
            ("PYEXEC_TIMEOUT", "60"),
        ],
        sandbox.clone(),
    )
    .await;
    let addr = server.addr;
    let running = tokio::spawn(execute(addr, "sleep"));
    eventually("the job runs", || server.state.pool.status().busy == 1).await;
    let queued = tokio::spawn(execute(addr, "x"));
    eventually("a request queues", || {
        server.state.pool.status().waiting == 1
    })
    .await;

    let signalled = Instant::now();
    let stopping = server.begin_shutdown();
    for (what, request) in [("running", running), ("queued", queued)] {
        let answer = request.await.unwrap();
        assert_eq!(
            (answer.status, answer.json()["kind"].as_str().unwrap()),
            (503, "shutting_down"),
            "{what}: {}",
            answer.text()
        );
        assert_eq!(answer.header("retry-after"), Some("1"), "{what}");
        assert!(
            signalled.elapsed() >= Duration::from_millis(250),
            "{what}: answered before the grace period was over"
        );
    }
    tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .expect("run returned")
        .unwrap();
    let took = signalled.elapsed();
    println!("shutdown took {took:?}");
    assert!(
        took <= Duration::from_millis(1300),
        "shutdown took {took:?}, over the grace period (0.3 s) + 1 s"
    );
    // The pool's shutdown stops the idle workers; only the lease's drop can
    // stop the one whose job was cut off.
    assert_eq!(
        sandbox.ledger.stopped(JobState::Running).len(),
        1,
        "the cut-off job's worker was not stopped by its lease: {:?}",
        sandbox.ledger.stops()
    );
    // The queued request was refused; the cut-off job was not a refusal.
    let metrics = rendered_metrics(&server);
    assert_eq!(
        common::sample(
            &metrics,
            "pyexec_rejected_total",
            &[("reason", "shutting_down")]
        ),
        1.0
    );
}

/// A spawn that never finishes cannot hold the shutdown past the grace period
/// plus one second, even with nothing in flight.
#[tokio::test]
async fn a_hung_spawn_does_not_stall_the_shutdown() {
    let sandbox = FakeSandbox {
        spawns: Spawns::HangFrom(2),
        ..FakeSandbox::default()
    };
    let mut server = InProcessServer::start_with(
        &[("PYEXEC_POOL_SIZE", "2"), ("PYEXEC_SHUTDOWN_GRACE", "0.5")],
        sandbox,
    )
    .await;
    eventually("the second spawn hangs", || {
        let status = server.state.pool.status();
        status.ready == 1 && status.spawning == 1
    })
    .await;
    let signalled = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), server.begin_shutdown())
        .await
        .expect("the shutdown waited for a spawn that never ends")
        .unwrap();
    let took = signalled.elapsed();
    println!("shutdown took {took:?}");
    assert!(
        took <= Duration::from_millis(1500),
        "shutdown took {took:?}, over the grace period (0.5 s) + 1 s"
    );
}

/// The metrics without HTTP (the listener is gone after a shutdown).
fn rendered_metrics(server: &InProcessServer) -> prometheus_parse::Scrape {
    let (text, _) = server.state.metrics.render().unwrap();
    common::parse_metrics(&String::from_utf8(text).unwrap())
}

/// A body trickled a byte every 50 ms never goes idle, yet the deadline for
/// the whole body cuts it off: 408 `request_timeout`, counted as a refusal.
#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_gets_408() {
    let server = InProcessServer::start(&[("PYEXEC_BODY_TIMEOUT", "0.3")]).await;
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"POST /execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let (mut reader, mut writer) = stream.into_split();
    let trickle = tokio::spawn(async move {
        while writer.write_all(b" ").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), reader.read_to_end(&mut answer))
        .await
        .expect("no answer within 5 s")
        .ok();
    let elapsed = started.elapsed();
    trickle.abort();
    let response = common::parse_response(&answer);
    assert_eq!(
        (response.status, response.json()["kind"].as_str().unwrap()),
        (408, "request_timeout"),
        "{}",
        response.text()
    );
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );
    let metrics = scrape(server.addr).await;
    assert_eq!(
        common::sample(
            &metrics,
            "pyexec_rejected_total",
            &[("reason", "request_timeout")]
        ),
        1.0
    );
    // A body sent in time is not affected.
    assert_eq!(execute(server.addr, "x").await.status, 200);
    server.shutdown().await;
}

/// Beyond the cap, a new connection is not accepted (it waits in the kernel's
/// backlog) until an open one closes.
#[tokio::test]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    let server = InProcessServer::start(&[
        ("PYEXEC_MAX_CONNECTIONS", "2"),
        ("PYEXEC_POOL_SIZE", "1"),
        ("PYEXEC_MAX_JOBS", "1"),
        ("PYEXEC_QUEUE_MAX", "0"),
    ])
    .await;
    let first = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let _second = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let third = tokio::spawn(get(server.addr, "/healthz"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !third.is_finished(),
        "a third connection was served beyond the cap of 2"
    );
    drop(first);
    let answered = tokio::time::timeout(Duration::from_secs(2), third)
        .await
        .expect("the waiting connection was not served once a slot freed")
        .unwrap();
    assert_eq!(answered.status, 200);
    server.shutdown().await;
}

#[tokio::test]
async fn the_served_openapi_document_is_the_repositorys_file() {
    let server = InProcessServer::start(&[]).await;
    let response = get(server.addr, "/openapi.json").await;
    assert_eq!(response.status, 200);
    response.assert_json_line();
    let file = std::fs::read(common::repo_root().join("openapi.json")).unwrap();
    assert_eq!(
        response.body, file,
        "the binary serves a stale openapi.json"
    );
    let wrong = request(server.addr, "POST", "/openapi.json", &[], b"").await;
    assert_eq!(wrong.status, 405);
    assert_eq!(wrong.header("allow"), Some("GET, HEAD"));
    server.shutdown().await;
}

/// A chunked POST /execute whose body is `chunks`, one HTTP chunk each.
fn chunked_post(chunks: &[&[u8]]) -> Vec<u8> {
    let mut raw = b"POST /execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for chunk in chunks {
        raw.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        raw.extend_from_slice(chunk);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    raw
}
