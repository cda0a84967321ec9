//! Metrics, logs and request ids, end to end on the real binary: counters and
//! histograms move as jobs run, the exposition parses, log lines have the
//! documented shape and never carry a script's text.

mod common;

use sha2::{Digest, Sha256};

use common::{execute, execute_with, histogram_count, sample, scrape, TestServer};

#[tokio::test]
async fn metrics_move_as_jobs_run() {
    // One worker and one queue slot: sequential requests wait for the
    // replacement, four concurrent ones overflow the queue.
    let server = TestServer::start(&[
        ("PYEXEC_TIMEOUT", "1"),
        ("PYEXEC_POOL_SIZE", "1"),
        ("PYEXEC_QUEUE_MAX", "1"),
    ])
    .await;
    let addr = server.addr;
    let before = scrape(addr).await;

    assert_eq!(
        execute(addr, "def main():\n    return {}\n").await.status,
        200
    );
    assert_eq!(
        execute(addr, "def main():\n    raise ValueError('no')\n")
            .await
            .status,
        400
    );
    assert_eq!(
        execute(addr, "def main():\n    while True:\n        pass\n")
            .await
            .status,
        408
    );
    let script = "import time\ndef main():\n    time.sleep(0.5)\n    return {}\n";
    let tasks: Vec<_> = (0..4)
        .map(|_| tokio::spawn(async move { execute(addr, script).await.status }))
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    assert!(statuses.contains(&503), "{statuses:?}");

    let after = scrape(addr).await;
    let moved = |name: &str, labels: &[(&str, &str)]| {
        sample(&after, name, labels) - sample(&before, name, labels)
    };
    assert!(moved("pyexec_jobs_total", &[("outcome", "ok")]) >= 2.0);
    assert_eq!(
        moved("pyexec_jobs_total", &[("outcome", "script_exception")]),
        1.0
    );
    assert_eq!(moved("pyexec_jobs_total", &[("outcome", "timeout")]), 1.0);
    assert!(moved("pyexec_rejected_total", &[("reason", "overloaded")]) >= 1.0);
    assert!(
        moved(
            "pyexec_http_requests_total",
            &[("route", "/execute"), ("status", "503")]
        ) >= 1.0
    );
    for outcome in ["ok", "script_exception", "timeout"] {
        assert!(
            histogram_count(
                &after,
                "pyexec_job_duration_seconds",
                &[("outcome", outcome)]
            ) > histogram_count(
                &before,
                "pyexec_job_duration_seconds",
                &[("outcome", outcome)]
            ),
            "{outcome}"
        );
    }
    assert!(histogram_count(&after, "pyexec_queue_wait_seconds", &[]) >= 3);
    assert!(histogram_count(&after, "pyexec_worker_spawn_duration_seconds", &[]) >= 3);
    assert!(
        histogram_count(
            &after,
            "pyexec_http_request_duration_seconds",
            &[("route", "/execute")]
        ) >= 7
    );
    assert_eq!(sample(&after, "pyexec_pool_target_size", &[]), 1.0);
    assert!(sample(&after, "process_resident_memory_bytes", &[]) > 0.0);
    let build = after
        .samples
        .iter()
        .find(|s| s.metric == "pyexec_build_info")
        .expect("pyexec_build_info");
    for label in [
        "version",
        "nsjail_version",
        "python_version",
        "numpy_version",
        "pandas_version",
    ] {
        assert!(
            build.labels.get(label).is_some_and(|v| !v.is_empty()),
            "{label} empty"
        );
    }
    assert!(
        after.docs.contains_key("pyexec_jobs_total"),
        "HELP text missing"
    );
}

#[tokio::test]
async fn job_log_lines_have_the_documented_shape_and_no_script_text() {
    let server = TestServer::start(&[("GOOGLE_CLOUD_PROJECT", "test-project")]).await;
    let marker = "MARKER_7c1f_do_not_log";
    let script =
        format!("# {marker}\ndef main():\n    print('{marker}')\n    return {{'m': '{marker}'}}\n");
    let response = execute_with(
        server.addr,
        &script,
        &[
            ("X-Request-Id", "obs-test-1"),
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        ],
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("x-request-id"), Some("obs-test-1"));

    // The job line is written just before the answer; give the reader thread a moment.
    let mut job = None;
    for _ in 0..100 {
        job = server
            .json_lines()
            .into_iter()
            .find(|l| l["request_id"] == "obs-test-1" && l["message"] == "job finished");
        if job.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let job = job.expect("a job line with the request id");
    assert_eq!(job["severity"], "INFO");
    assert!(job["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(job["outcome"], "ok");
    for field in ["queue_wait_ms", "run_ms", "worker_id", "script_chars"] {
        assert!(job[field].is_number(), "{field}: {job}");
    }
    assert_eq!(job["script_chars"], script.chars().count());
    let sha: String = Sha256::digest(script.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(job["script_sha256"], sha);
    assert_eq!(
        job["logging.googleapis.com/trace"],
        "projects/test-project/traces/4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(job["logging.googleapis.com/spanId"], "00f067aa0ba902b7");

    let logs = server.logs();
    assert!(
        logs.iter().all(|l| !l.contains(marker)),
        "script text or output in the log"
    );
    for line in &logs {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        for key in ["severity", "message", "time"] {
            assert!(value.get(key).is_some(), "{key} missing: {line}");
        }
    }
    let startup = server.json_lines();
    let check = startup
        .iter()
        .find(|l| l["message"] == "sandbox self-check passed")
        .expect("self-check line");
    for field in [
        "python_version",
        "numpy_version",
        "pandas_version",
        "cgroup_mode",
    ] {
        assert!(
            check[field].as_str().is_some_and(|v| !v.is_empty()),
            "{field}: {check}"
        );
    }
    assert!(startup
        .iter()
        .any(|l| l["message"] == "starting pyexec" && l["pool_size"] == 2));
}
