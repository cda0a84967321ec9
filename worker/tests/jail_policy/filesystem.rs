//! Filesystem: everything read-only but `/tmp` and `/dev/shm`, which are
//! small tmpfs mounts, noexec; a file stops at `RLIMIT_FSIZE`.

use crate::harness::{answer_bound, Checks, Jail, Kind};

const PROBE: &str = include_str!("../probes/filesystem.py");

pub async fn filesystem<K: Kind>(jail: &Jail<K>, checks: &mut Checks) {
    checks.section("filesystem");
    let ran = jail.probe(PROBE, answer_bound()).await.ran;
    checks.context(ran.describe("filesystem"));
    checks.check("the filesystem probe answered", ran.answered());
    for dir in [
        "/",
        "/usr",
        "/usr/lib/python3.11",
        "/opt",
        "/opt/pyexec/sandbox-venv",
        "/opt/pyexec/sandbox-venv/lib/python3.11/site-packages",
        "/pyexec",
        "/dev",
    ] {
        let file = format!("{}/x", dir.trim_end_matches('/'));
        let got = ran
            .lines("WRITE")
            .find_map(|l| l.strip_prefix(&format!("{file} ")))
            .unwrap_or("nothing")
            .to_string();
        checks.check(
            format!("write to {dir} fails ({got})"),
            got != "nothing" && got != "OK",
        );
    }
    checks.check("mkdir in / fails", ran.line("MKDIR").starts_with("/ E"));
    checks.check("write to /tmp works", ran.has("WRITE /tmp/x OK"));
    checks.check("write to /dev/shm works", ran.has("WRITE /dev/shm/x OK"));
    checks.check("write to /dev/null works", ran.has("WRITE devnull OK"));
    checks.check(
        "/tmp is a 64 MiB tmpfs, /dev/shm 16 MiB",
        ran.has("SIZE /tmp 67108864") && ran.has("SIZE /dev/shm 16777216"),
    );
    checks.check(
        "an 11 MiB write fails with EFBIG, the file stops at 10 MiB",
        ran.has("BIG EFBIG 10485760"),
    );
    checks.check(
        "/tmp fills up (ENOSPC before 64 MiB)",
        ran.line("FILLTMP").starts_with("ENOSPC"),
    );
    checks.check(
        "exec from /tmp is refused (noexec)",
        ran.has("EXECTMP EACCES"),
    );
}
