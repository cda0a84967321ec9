//! What the sandbox does to scripts, end to end: the real binary, the real
//! nsjail and cgroups, over HTTP. Attacks get their kind and leave nothing
//! behind; the next job always runs on a fresh worker.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{execute, sample, scaled, scrape, TestServer};
use tokio::io::AsyncWriteExt;

/// nsjail processes whose parent is `server`.
fn jails_of(server: u32) -> Vec<i32> {
    let mut jails = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ..."
        let Some((comm, rest)) = stat
            .split_once(") ")
            .map(|(head, rest)| (head.rsplit('(').next().unwrap_or(""), rest))
        else {
            continue;
        };
        let ppid = rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok());
        if comm == "nsjail" && ppid == Some(server) {
            jails.push(pid);
        }
    }
    jails
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + scaled(Duration::from_secs(15));
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn numpy_and_pandas_work() {
    let server = TestServer::start(&[]).await;
    let script = "import numpy as np\nimport pandas as pd\n\ndef main():\n    m = np.arange(9.0).reshape(3, 3)\n    df = pd.DataFrame({'k': ['a', 'b', 'a'], 'v': [1, 2, 3]})\n    return {'trace': float(np.trace(m @ m)), 'sums': df.groupby('k')['v'].sum().to_dict(), 'mean': float(df['v'].mean())}\n";
    let response = execute(server.addr, script).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.json()["result"],
        serde_json::json!({"trace": 180.0, "sums": {"a": 4, "b": 2}, "mean": 2.0})
    );
}

#[tokio::test]
async fn print_and_raw_writes_are_captured_in_order() {
    let server = TestServer::start(&[]).await;
    let script = "import os, sys\nprint('at import')\ndef main():\n    print('from print')\n    os.write(1, b'from os.write\\n')\n    os.write(2, b'to stderr\\n')\n    print('flushed', flush=True)\n    return {}\n";
    let body = execute(server.addr, script).await.json();
    assert_eq!(
        body["stdout"],
        "at import\nfrom print\nfrom os.write\nflushed\n"
    );
    assert_eq!(body["stderr"], "to stderr\n");
}

#[tokio::test]
async fn a_main_guard_does_not_run_main_twice() {
    let server = TestServer::start(&[]).await;
    let script = "calls = []\ndef main():\n    calls.append(1)\n    print('main ran')\n    return {'calls': len(calls), 'name': __name__}\n\nif __name__ == '__main__':\n    main()\n";
    let body = execute(server.addr, script).await.json();
    assert_eq!(body["stdout"], "main ran\n");
    assert_eq!(body["result"]["calls"], 1);
    assert_ne!(body["result"]["name"], "__main__");
}

#[tokio::test]
async fn a_job_cannot_see_what_an_earlier_job_wrote() {
    let server = TestServer::start(&[("PYEXEC_POOL_SIZE", "1")]).await;
    let write = "def main():\n    for p in ('/tmp/secret', '/dev/shm/secret'):\n        open(p, 'w').write('x')\n    return {}\n";
    assert_eq!(execute(server.addr, write).await.status, 200);
    let look = "import os\ndef main():\n    return {'seen': [p for p in ('/tmp/secret', '/dev/shm/secret') if os.path.exists(p)]}\n";
    let body = execute(server.addr, look).await.json();
    assert_eq!(body["result"]["seen"], serde_json::json!([]), "{body}");
}

#[tokio::test]
async fn more_concurrent_requests_than_workers_all_get_answers() {
    let server = TestServer::start(&[
        ("PYEXEC_POOL_SIZE", "2"),
        ("PYEXEC_QUEUE_MAX", "32"),
        ("PYEXEC_QUEUE_TIMEOUT", "30"),
    ])
    .await;
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let addr = server.addr;
            tokio::spawn(async move {
                execute(
                    addr,
                    &format!(
                        "import time\ndef main():\n    time.sleep(0.1)\n    return {{'i': {i}}}\n"
                    ),
                )
                .await
            })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        let response = task.await.unwrap();
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(response.json()["result"]["i"], i);
    }
}

/// Each attack gets its kind, and the next job on the same server succeeds.
#[tokio::test]
async fn attacks_get_their_kind_and_the_next_job_succeeds() {
    let server = TestServer::start(&[("PYEXEC_TIMEOUT", "2"), ("PYEXEC_POOL_SIZE", "2")]).await;
    let attacks: [(&str, &str, u16, &str, &str); 6] = [
        ("timeout", "def main():\n    while True:\n        pass\n", 408, "timeout", ""),
        ("memory bomb", "def main():\n    hog = []\n    while True:\n        hog.append(b'x' * (8 << 20))\n", 400, "memory_limit", ""),
        ("fork bomb", "import os\ndef main():\n    while True:\n        os.fork()\n", 400, "script_exception", "Resource temporarily unavailable"),
        ("network", "import socket\ndef main():\n    socket.create_connection(('1.1.1.1', 80), timeout=1)\n", 400, "script_exception", "Network is unreachable"),
        ("loopback", "import socket\ndef main():\n    socket.create_connection(('127.0.0.1', 8080), timeout=1)\n", 400, "script_exception", "Network is unreachable"),
        ("write outside /tmp", "def main():\n    open('/usr/owned', 'w').write('x')\n", 400, "script_exception", "Read-only file system"),
    ];
    for (name, script, status, kind, message) in attacks {
        let response = execute(server.addr, script).await;
        let body = response.json();
        assert_eq!(
            (response.status, body["kind"].as_str().unwrap_or("")),
            (status, kind),
            "{name}: {body}"
        );
        assert!(
            body["error"].as_str().unwrap_or("").contains(message),
            "{name}: {body}"
        );
        let next = execute(server.addr, "def main():\n    return {'ok': True}\n").await;
        assert_eq!(next.status, 200, "after {name}: {}", next.text());
    }
    eventually("only the warm pool's jails remain", || {
        jails_of(server.pid()).len() == 2
    })
    .await;
}

#[tokio::test]
async fn a_client_disconnect_mid_job_frees_and_replaces_the_worker() {
    let server =
        TestServer::start(&[("PYEXEC_POOL_SIZE", "1"), ("PYEXEC_QUEUE_TIMEOUT", "2")]).await;
    let body =
        serde_json::json!({"script": "import time\ndef main():\n    time.sleep(60)\n"}).to_string();
    let mut client = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!("POST /execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len());
    client.write_all(head.as_bytes()).await.unwrap();
    client.write_all(body.as_bytes()).await.unwrap();
    let addr = server.addr;
    let mut busy = 0.0;
    for _ in 0..100 {
        busy = sample(&scrape(addr).await, "pyexec_workers", &[("state", "busy")]);
        if busy == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(busy, 1.0, "the job never started");
    drop(client);

    // The sleeping job is killed and replaced: a new job is served long before
    // the 60 s sleep would have ended, and within the 2 s queue wait.
    let started = Instant::now();
    let response = execute(addr, "def main():\n    return {'after': 'disconnect'}\n").await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(started.elapsed() < scaled(Duration::from_secs(5)));
    eventually("the abandoned jail is gone", || {
        jails_of(server.pid()).len() == 1
    })
    .await;
    assert_eq!(
        sample(&scrape(addr).await, "pyexec_workers", &[("state", "busy")]),
        0.0
    );
}

#[tokio::test]
async fn sigterm_leaves_no_jail_and_no_cgroup_behind() {
    let mut server =
        TestServer::start(&[("PYEXEC_POOL_SIZE", "2"), ("PYEXEC_SHUTDOWN_GRACE", "1")]).await;
    let pid = server.pid();
    let in_flight = tokio::spawn(execute(
        server.addr,
        "import time\ndef main():\n    time.sleep(30)\n",
    ));
    eventually("the pool is full and a job runs", || {
        jails_of(pid).len() >= 3
    })
    .await;
    let jails = jails_of(pid);
    let roots = server_cgroup_roots(pid);
    for root in &roots {
        assert!(
            root.is_dir(),
            "the server's cgroups are not at {}",
            root.display()
        );
    }
    server.sigterm();
    let status = server
        .wait_exit(Duration::from_secs(15))
        .await
        .expect("pyexec exits after SIGTERM");
    assert!(status.success(), "{status}");
    // The job that outlived the grace period was cut off, not left running.
    let _ = in_flight.await;
    for jail in jails {
        assert!(
            !Path::new(&format!("/proc/{jail}")).exists(),
            "nsjail {jail} outlived the server"
        );
    }
    for root in roots {
        assert!(!root.exists(), "{} was left behind", root.display());
    }
}

/// Where the server `pid` makes its workers' cgroups (worker/src/cgroup.rs):
/// one directory on cgroup v2, one per controller on v1.
fn server_cgroup_roots(pid: u32) -> Vec<std::path::PathBuf> {
    let mount = Path::new("/sys/fs/cgroup");
    if mount.join("cgroup.controllers").exists() {
        vec![mount.join("pyexec").join(pid.to_string())]
    } else {
        ["memory", "pids", "cpu"]
            .iter()
            .map(|c| mount.join(c).join("pyexec").join(pid.to_string()))
            .collect()
    }
}
