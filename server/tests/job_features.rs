//! The request's optional fields end to end, on the real binary and the real
//! jail: `input` (main's argument), `limits` (a tighter timeout or memory
//! limit), the files a script leaves in /tmp/outputs, and the `usage` and
//! `limits` every job answer carries. Each with its bad inputs. Run in the
//! isolation mode of `PYEXEC_TEST_ISOLATION` (fork by default).

mod common;

use serde_json::{json, Value};

use common::{execute, expect, post_execute, time_scale, Response, TestServer};

async fn post(server: &TestServer, body: &Value) -> Response {
    post_execute(server.addr, body).await
}

/// Standard base64 (with padding), as the answer carries file contents.
fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut bits, mut count) = (0u32, 0);
    for c in text.bytes().filter(|c| *c != b'=') {
        let value = ALPHABET
            .iter()
            .position(|a| *a == c)
            .expect("a base64 character") as u32;
        bits = bits << 6 | value;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    out
}

#[tokio::test]
async fn a_plain_request_answers_as_before_with_the_new_fields_added() {
    let server = TestServer::start(&[]).await;
    let ok = execute(
        server.addr,
        "print('hi')\ndef main():\n    return {'n': 1}\n",
    )
    .await;
    let body = expect(&ok, 200, "");
    // The old fields, then the new ones, in the order they are written.
    let text = ok.text();
    let positions: Vec<usize> = [
        "result",
        "stdout",
        "stderr",
        "stdout_truncated",
        "stderr_truncated",
        "duration_ms",
        "limits",
        "usage",
        "files",
        "files_truncated",
        "files_omitted",
    ]
    .iter()
    .map(|key| {
        text.find(&format!("\"{key}\":"))
            .unwrap_or_else(|| panic!("{key}: {text}"))
    })
    .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
    assert_eq!(body.as_object().unwrap().len(), positions.len(), "{text}");
    assert_eq!(body["result"], json!({"n": 1}));
    assert_eq!(body["stdout"], "hi\n");
    assert_eq!(body["stderr"], "");
    assert_eq!(body["stdout_truncated"], false);
    assert!(body["duration_ms"].as_f64().unwrap() > 0.0);
    // The server's own limits applied (its timeout stretched on a slow
    // machine, as the test server's is); no file is an empty list.
    let timeout = 10.0 * time_scale();
    assert_eq!(
        body["limits"],
        json!({"timeout_s": timeout, "memory_mb": 256})
    );
    assert_eq!(body["usage"]["wall_ms"], body["duration_ms"]);
    assert!(body["usage"]["cpu_ms"].as_f64().unwrap() >= 0.0);
    assert!(body["usage"]["peak_memory_mb"].as_f64().unwrap() > 0.0);
    assert_eq!(body["files"], json!([]));
    assert_eq!(body["files_truncated"], false);
    assert_eq!(body["files_omitted"], json!([]));

    let failed = execute(server.addr, "def main():\n    return 1 / 0\n").await;
    let body = expect(&failed, 400, "script_exception");
    assert_eq!(
        body["limits"],
        json!({"timeout_s": timeout, "memory_mb": 256})
    );
    assert!(
        body["usage"].is_object() && body.get("files").is_none(),
        "{body}"
    );
}

#[tokio::test]
async fn input_is_mains_argument_and_its_bad_forms_are_refused() {
    let server = TestServer::start(&[("PYEXEC_MAX_INPUT_BYTES", "1000")]).await;
    let script = "import pandas as pd\ndef main(data):\n    df = pd.DataFrame(data['rows'])\n    return {'total': int(df['v'].sum()), 'name': data['name']}\n";
    let input = json!({"rows": [{"v": 1}, {"v": 2}, {"v": 39}], "name": "Zoë"});
    let ok = post(&server, &json!({"script": script, "input": input})).await;
    assert_eq!(
        expect(&ok, 200, "")["result"],
        json!({"total": 42, "name": "Zoë"})
    );
    // null is an input: main(None).
    let null = post(
        &server,
        &json!({"script": "def main(x):\n    return {'x': x}\n", "input": null}),
    )
    .await;
    assert_eq!(expect(&null, 200, "")["result"], json!({"x": null}));

    // Sent but main takes none; needed but not sent: the request's fault,
    // found before main runs (its print never happens).
    let body = expect(
        &post(
            &server,
            &json!({"script": "def main():\n    print('ran')\n    return {}\n", "input": [1]}),
        )
        .await,
        400,
        "invalid_request",
    );
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("main() takes no parameter"),
        "{body}"
    );
    assert_eq!(
        (body["line"].as_u64(), &body["stdout"]),
        (Some(1), &json!(""))
    );
    let body = expect(
        &execute(server.addr, "def main(rows):\n    return {}\n").await,
        400,
        "invalid_request",
    );
    assert!(
        body["error"].as_str().unwrap().contains("sent no input"),
        "{body}"
    );
    assert!(body["usage"].is_object(), "a job ran: {body}");

    // Over its own cap: 413, however small the script.
    let big = json!({"script": "def main(x):\n    return {}\n", "input": "x".repeat(1000)});
    let body = expect(&post(&server, &big).await, 413, "input_too_large");
    assert!(body["error"].as_str().unwrap().contains("1000"), "{body}");
    // Within it: fine.
    let fits =
        json!({"script": "def main(x):\n    return {'n': len(x)}\n", "input": "x".repeat(990)});
    assert_eq!(
        expect(&post(&server, &fits).await, 200, "")["result"],
        json!({"n": 990})
    );
}

#[tokio::test]
async fn limits_tighten_the_job_and_the_answer_says_which_applied() {
    let server = TestServer::start(&[("PYEXEC_TIMEOUT", "3"), ("PYEXEC_MEMORY_MB", "256")]).await;
    let spin = "def main():\n    while True:\n        pass\n";
    let started = std::time::Instant::now();
    let body = expect(
        &post(
            &server,
            &json!({"script": spin, "limits": {"timeout_s": 0.5}}),
        )
        .await,
        408,
        "timeout",
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    assert!(
        body["error"].as_str().unwrap().contains("the 0.5 s limit"),
        "{body}"
    );
    assert_eq!(body["limits"], json!({"timeout_s": 0.5, "memory_mb": 256}));

    // 200 MiB fit the server's 256 MiB, not the 180 MiB asked for.
    let grow = "def main():\n    b = bytearray(b'x') * (200 << 20)\n    return {'n': len(b)}\n";
    let body = expect(
        &post(
            &server,
            &json!({"script": grow, "limits": {"memory_mb": 180}}),
        )
        .await,
        400,
        "memory_limit",
    );
    assert!(
        body["error"].as_str().unwrap().contains("180 MiB"),
        "{body}"
    );
    let server_timeout = 3.0 * time_scale();
    assert_eq!(
        body["limits"],
        json!({"timeout_s": server_timeout, "memory_mb": 180})
    );
    let body = expect(&post(&server, &json!({"script": grow})).await, 200, "");
    assert_eq!(body["result"], json!({"n": 200 << 20}));

    // The floor: a fork-mode job's cgroup holds only the job, which fits;
    // a spawn-mode worker's already holds the warm interpreter, which
    // doesn't, and the script never runs.
    let small = json!({"script": "def main():\n    return {}\n", "limits": {"memory_mb": 16}});
    let answer = post(&server, &small).await;
    if common::isolation() == "spawn" {
        let body = expect(&answer, 400, "memory_limit");
        assert!(
            body["error"].as_str().unwrap().contains("already uses"),
            "{body}"
        );
    } else {
        assert_eq!(expect(&answer, 200, "")["limits"]["memory_mb"], 16);
    }

    let both = json!({"script": "def main():\n    return {}\n", "limits": {"timeout_s": 2, "memory_mb": 200}});
    let body = expect(&post(&server, &both).await, 200, "");
    assert_eq!(body["limits"], json!({"timeout_s": 2.0, "memory_mb": 200}));

    for (limits, says) in [
        (
            json!({"timeout_s": server_timeout + 0.5}),
            format!("to {server_timeout} (the server's PYEXEC_TIMEOUT)"),
        ),
        (
            json!({"memory_mb": 512}),
            "to 256 (the server's PYEXEC_MEMORY_MB)".into(),
        ),
        (json!({"memory_mb": 8}), "from 16".into()),
        (json!({"timeout_s": 0}), "from 0.001".into()),
        (json!({"timeout_s": "1"}), "not a string".into()),
        (json!({"memory_mb": 64.5}), "whole number".into()),
        (json!({"cpu": 1}), "unknown field \"cpu\"".into()),
        (json!([1]), "must be an object".into()),
    ] {
        let body = expect(
            &post(
                &server,
                &json!({"script": "def main():\n    return {}\n", "limits": limits}),
            )
            .await,
            400,
            "invalid_request",
        );
        assert!(
            body["error"].as_str().unwrap().contains(&says),
            "{limits}: {body}"
        );
    }
}

#[tokio::test]
async fn files_left_in_outputs_come_back_and_oddities_are_skipped() {
    let server = TestServer::start(&[
        ("PYEXEC_MAX_OUTPUT_FILES", "3"),
        ("PYEXEC_MAX_OUTPUT_FILES_BYTES", "100000"),
    ])
    .await;
    let script = r#"
import os
import pandas as pd
START = sorted(os.listdir('/tmp/outputs'))
def main():
    df = pd.DataFrame({'city': ['Zürich', 'Oslo', 'Lima'], 't': [1.5, -3.0, 22.25]})
    df.to_csv('/tmp/outputs/report.csv', index=False)
    os.makedirs('/tmp/outputs/plots')
    with open('/tmp/outputs/plots/raw.bin', 'wb') as f:
        f.write(bytes(range(256)))
    os.symlink('/etc', '/tmp/outputs/etc')
    os.symlink('/tmp/outputs/report.csv', '/tmp/outputs/link.csv')
    os.mkfifo('/tmp/outputs/fifo')
    return {'start': START, 'csv': df.to_csv(index=False)}
"#;
    let body = expect(&post(&server, &json!({"script": script})).await, 200, "");
    assert_eq!(
        body["result"]["start"],
        json!([]),
        "the folder starts empty"
    );
    let files = body["files"].as_array().unwrap();
    let names: Vec<&str> = files.iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["plots/raw.bin", "report.csv"]);
    let decode = |f: &Value| base64_decode(f["content_base64"].as_str().unwrap());
    let csv = body["result"]["csv"].as_str().unwrap().as_bytes().to_vec();
    assert_eq!(decode(&files[1]), csv, "the CSV round-trips byte for byte");
    assert_eq!(files[1]["media_type"], "text/csv");
    assert_eq!(files[1]["size"], csv.len());
    assert_eq!(decode(&files[0]), (0..=255).collect::<Vec<u8>>());
    assert_eq!(files[0]["media_type"], "application/octet-stream");
    assert_eq!(body["files_truncated"], false);

    // Beyond the caps: left out and named, never a failure.
    let many = "def main():\n    for i in range(5):\n        open(f'/tmp/outputs/{i}.txt', 'w').write('x' * 10)\n    open('/tmp/outputs/big.txt', 'w').write('x' * 200000)\n    return {}\n";
    let body = expect(&post(&server, &json!({"script": many})).await, 200, "");
    let names: Vec<&str> = body["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["0.txt", "1.txt", "2.txt"]);
    assert_eq!(body["files_truncated"], true);
    assert_eq!(body["files_omitted"], json!(["3.txt", "4.txt", "big.txt"]));

    // A job that fails carries no files.
    let failing =
        "def main():\n    open('/tmp/outputs/a.txt', 'w').write('x')\n    raise ValueError('no')\n";
    let body = expect(
        &post(&server, &json!({"script": failing})).await,
        400,
        "script_exception",
    );
    assert!(body.get("files").is_none(), "{body}");
}

#[tokio::test]
async fn usage_is_what_the_job_used() {
    let server = TestServer::start(&[]).await;
    // main() measures its own CPU time; the cgroup's figure must be that plus
    // only the runner's few milliseconds around it (not the interpreter's
    // start and imports in spawn mode). Both clocks count the same CPU, so a
    // busy or slow machine stretches them alike.
    let script = "import time\ndef main():\n    t = time.process_time()\n    b = bytearray(b'x') * (100 << 20)\n    while time.process_time() - t < 0.5:\n        pass\n    return {'n': len(b), 'main_cpu_ms': (time.process_time() - t) * 1000}\n";
    let body = expect(&post(&server, &json!({"script": script})).await, 200, "");
    let usage = &body["usage"];
    let cpu = usage["cpu_ms"].as_f64().unwrap();
    let peak = usage["peak_memory_mb"].as_f64().unwrap();
    let wall = usage["wall_ms"].as_f64().unwrap();
    let main_cpu = body["result"]["main_cpu_ms"].as_f64().unwrap();
    let around_main = 50.0 * time_scale();
    assert!(
        main_cpu >= 500.0 && (main_cpu - 1.0..main_cpu + around_main).contains(&cpu),
        "cgroup cpu {cpu} ms, main() measured {main_cpu} ms"
    );
    // 100 MiB touched; spawn mode's peak also holds the warm interpreter's
    // pages, as they count against the limit too.
    assert!((100.0..200.0).contains(&peak), "peak {peak} MiB");
    assert!(wall >= cpu * 0.9, "wall {wall} ms, cpu {cpu} ms");

    // The job's log line carries the limits and the usage too.
    let mut line = None;
    for _ in 0..100 {
        line = server
            .json_lines()
            .into_iter()
            .find(|l| l["message"] == "job finished");
        if line.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let line = line.expect("a job line");
    assert_eq!(line["cpu_ms"], usage["cpu_ms"]);
    assert_eq!(line["peak_memory_mb"], usage["peak_memory_mb"]);
    assert_eq!(
        (line["timeout_s"].as_f64(), line["memory_mb"].as_u64()),
        (Some(10.0 * time_scale()), Some(256))
    );
    assert_eq!(
        (line["input_bytes"].as_u64(), line["files"].as_u64()),
        (Some(0), Some(0))
    );
}
