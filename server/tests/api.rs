//! The API contract end to end: the real binary, the real nsjail, over HTTP.
//! One row of the status table after another (the `internal` row can't be
//! provoked from outside; `in_process.rs` covers it on a fake sandbox).

mod common;

use std::time::Duration;

use common::{execute, expect, get, request, TestServer};

#[tokio::test]
async fn every_row_of_the_status_table() {
    let server = TestServer::start(&[
        ("PYEXEC_TIMEOUT", "2"),
        ("PYEXEC_MAX_RESULT_BYTES", "100000"),
        ("PYEXEC_MAX_SCRIPT_CHARS", "5000"),
    ])
    .await;
    let addr = server.addr;

    let ok = execute(
        addr,
        "print('hello')\ndef main():\n    print('from main')\n    return {'answer': 42}\n",
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let body = ok.json();
    assert_eq!(body["result"], serde_json::json!({"answer": 42}));
    assert_eq!(body["stdout"], "hello\nfrom main\n");

    let json = [("Content-Type", "application/json")];
    expect(
        &request(addr, "POST", "/execute", &json, b"{nope").await,
        400,
        "invalid_request",
    );
    expect(
        &request(addr, "POST", "/execute", &json, br#"{"script": "   "}"#).await,
        400,
        "invalid_request",
    );
    expect(
        &request(addr, "POST", "/execute", &json, br#"{"code": "x"}"#).await,
        400,
        "invalid_request",
    );
    expect(
        &request(
            addr,
            "POST",
            "/execute",
            &[("Content-Type", "text/plain")],
            b"{}",
        )
        .await,
        415,
        "unsupported_media_type",
    );
    expect(
        &execute(addr, &"#".repeat(5001)).await,
        413,
        "script_too_large",
    );

    let syntax = expect(
        &execute(addr, "def main(:\n    return {}\n").await,
        400,
        "syntax_error",
    );
    assert_eq!(syntax["line"], 1, "{syntax}");
    expect(&execute(addr, "x = 1\n").await, 400, "missing_main");
    let exception = expect(
        &execute(addr, "def main():\n    print('before')\n    return 1 / 0\n").await,
        400,
        "script_exception",
    );
    assert_eq!(exception["stdout"], "before\n");
    assert!(
        exception["traceback"]
            .as_str()
            .unwrap()
            .contains("ZeroDivisionError"),
        "{exception}"
    );
    expect(
        &execute(addr, "def main():\n    return [1, 2]\n").await,
        400,
        "invalid_result",
    );
    expect(
        &execute(addr, "def main():\n    return {'x': float('nan')}\n").await,
        400,
        "invalid_result",
    );
    expect(
        &execute(addr, "def main():\n    return {'x': 'a' * 200000}\n").await,
        400,
        "result_too_large",
    );
    expect(
        &execute(addr, "def main():\n    while True:\n        pass\n").await,
        408,
        "timeout",
    );
    expect(
        &execute(
            addr,
            "def main():\n    b = b'x' * (1024 * 1024 * 1024)\n    return {}\n",
        )
        .await,
        400,
        "memory_limit",
    );
    expect(
        &execute(addr, "import os\ndef main():\n    os._exit(3)\n").await,
        400,
        "worker_exited",
    );
    expect(
        &execute(addr, "import sys\ndef main():\n    sys.exit(2)\n").await,
        400,
        "worker_exited",
    );
    // The runner keeps its channel off fd 3, but a script can still hunt for it.
    let hijack = r#"import os, stat
def main():
    for fd in range(3, 256):
        try:
            if stat.S_ISSOCK(os.fstat(fd).st_mode):
                os.write(fd, b'\xff\xff\xff\xffgarbage')
        except OSError:
            pass
    return {}
"#;
    expect(&execute(addr, hijack).await, 400, "protocol_violation");
    expect(&get(addr, "/nope").await, 404, "not_found");
    expect(&get(addr, "/execute").await, 405, "method_not_allowed");

    // After all that, the pool still answers.
    assert_eq!(
        execute(addr, "def main():\n    return {}\n").await.status,
        200
    );
}

#[tokio::test]
async fn overloaded_answers_503_with_retry_after() {
    let server = TestServer::start(&[("PYEXEC_POOL_SIZE", "1"), ("PYEXEC_QUEUE_MAX", "0")]).await;
    let slow = "import time\ndef main():\n    time.sleep(1)\n    return {}\n";
    let answers = futures_join(server.addr, slow, 4).await;
    let refused: Vec<_> = answers.iter().filter(|r| r.status == 503).collect();
    assert!(
        !refused.is_empty(),
        "{:?}",
        answers.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for response in refused {
        assert_eq!(response.json()["kind"], "overloaded");
        assert_eq!(response.header("retry-after"), Some("1"));
    }
    assert!(answers.iter().any(|r| r.status == 200));
}

/// `n` concurrent executions of `script`.
async fn futures_join(addr: std::net::SocketAddr, script: &str, n: usize) -> Vec<common::Response> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let script = script.to_string();
            tokio::spawn(async move { execute(addr, &script).await })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("request task"));
    }
    answers
}

#[tokio::test]
async fn sigterm_drains_and_exits_zero() {
    let mut server = TestServer::start(&[("PYEXEC_SHUTDOWN_GRACE", "5")]).await;
    let addr = server.addr;
    let in_flight = tokio::spawn(execute(
        addr,
        "import time\ndef main():\n    time.sleep(0.5)\n    return {'done': True}\n",
    ));
    tokio::time::sleep(Duration::from_millis(150)).await;
    server.sigterm();
    let answered = in_flight.await.unwrap();
    assert_eq!(answered.status, 200, "{}", answered.text());
    let status = server
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("pyexec did not exit after SIGTERM");
    assert!(status.success(), "{status}");
    let logs = server.logs().join("\n");
    assert!(logs.contains("shutdown complete"), "{logs}");
}
