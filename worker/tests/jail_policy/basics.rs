//! Basics: what a script is (ids, pid namespace, environment, descriptors,
//! rlimits, privileges), what it sees of the filesystem, that numpy, pandas,
//! multiprocessing and threads work, and what the host sees of its process
//! and cgroup before its job is sent.

use crate::harness::{answer_bound, is_fork, nsjail_logged, shown, Checks, Jail, Kind};

const PROBE: &str = include_str!("../probes/basics.py");

pub async fn basics<K: Kind>(jail: &Jail<K>, checks: &mut Checks) {
    checks.section("basics");
    let mut probe = jail.worker().await;
    probe.run(PROBE, answer_bound()).await;
    // Its end, as the mode learns it: the job answered, then its process
    // exits by itself.
    let status = probe.ended(answer_bound()).await;
    let event = "exited with status: 0, (PIDs left: 0)";
    let log = probe
        .launcher_log(answer_bound(), |log| nsjail_logged(log, event))
        .await;
    let done = probe.finish().await;
    let (ran, host) = (&done.ran, &done.before.status);
    checks.context(ran.describe("basics"));

    checks.check(
        format!("python runs the job and answers ({})", ran.line("PYTHON")),
        ran.answered() && ran.line("PYTHON").starts_with("3."),
    );
    checks.check("numpy matmul works", ran.has("MATMUL True"));
    checks.check("pandas groupby works", ran.has("GROUPBY True"));
    checks.check("pandas tz_convert works (zoneinfo)", ran.has("TZ True"));
    checks.check(
        "multiprocessing.Pool(2).map works (a builtin)",
        ran.has("POOL True"),
    );
    checks.check(
        "multiprocessing.Pool(2).map works (a function the script defines)",
        ran.has("POOLFN True"),
    );
    checks.check(
        "threads work (clone3 gets ENOSYS, glibc falls back to clone)",
        ran.has("THREAD True"),
    );
    checks.check(
        format!(
            "uid/gid inside are 1000/1000, no supplementary groups ({})",
            ran.line("IDS")
        ),
        ran.has("IDS 1000 1000 1000 1000 []") || ran.has("IDS 1000 1000 1000 1000 [1000]"),
    );
    let nobody = "65534 65534 65534 65534";
    checks.check(
        format!(
            "the job process is uid/gid 65534 on the host ({} / {})",
            host.get("Uid"),
            host.get("Gid")
        ),
        host.get("Uid") == nobody && host.get("Gid") == nobody,
    );
    let nspids = host.nspids();
    checks.check(
        format!(
            "the job process is PID 1 of its own pid namespace (inside: {}; NSpid {})",
            ran.line("PID"),
            host.get("NSpid")
        ),
        ran.has("PID 1") && nspids.len() >= 2 && nspids.last() == Some(&1),
    );
    checks.check("hostname is pyexec", ran.has("HOST pyexec"));
    checks.check("cwd is /tmp", ran.has("CWD /tmp"));
    checks.check(
        "the environment holds only the cfg's variables",
        ran.has(
            "ENV ['HOME', 'LANG', 'MKL_NUM_THREADS', 'MPLBACKEND', 'MPLCONFIGDIR', \
             'NUMEXPR_NUM_THREADS', 'OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'PATH', 'TZ']",
        ),
    );
    let fds = ran.line("FDS");
    checks.check(
        format!(
            "the script reaches exactly fd 0 /dev/null, 1+2 the capture pipes, a unix socket \
             and a /dev/null on private fds, and nothing else ({fds})"
        ),
        exactly_the_jobs_fds(&fds),
    );
    checks.check(
        "fd 1 and fd 2 are the job's stdout and stderr capture pipes",
        ran.has("MARK fd1") && ran.stderr.lines().any(|l| l == "MARK fd2"),
    );
    let cpu = jail.config.limits.cpu_seconds;
    let rlimits = ran.line("RLIMITS");
    checks.check(
        format!("rlimits: fsize 10 MiB, nofile 128, cpu {cpu} s (the server's, over the cfg's)"),
        rlimits.contains(&format!(
            "'FSIZE': (10485760, 10485760), 'NOFILE': (128, 128), 'CPU': ({cpu}, {cpu})"
        )),
    );
    checks.check(
        "rlimits: address space 1 GiB, no core, stack 8 MiB",
        rlimits.contains(
            "'AS': (1073741824, 1073741824), 'CORE': (0, 0), 'STACK': (8388608, 8388608)",
        ),
    );
    checks.check("/proc is absent", ran.has("EXISTS /proc False"));
    checks.check(
        "/sys, /etc, /root, /home are absent",
        ["/sys", "/etc", "/root", "/home"]
            .iter()
            .all(|p| ran.has(&format!("EXISTS {p} False"))),
    );
    checks.check(
        "no shell or tools (/bin, /usr/bin/sh, /usr/bin/env absent)",
        ["/bin", "/usr/bin/sh", "/usr/bin/env"]
            .iter()
            .all(|p| ran.has(&format!("EXISTS {p} False"))),
    );
    checks.check(
        "/dev holds only null, random, shm, urandom, zero",
        ran.has("DEV ['null', 'random', 'shm', 'urandom', 'zero']"),
    );
    checks.check(
        format!("no capabilities, inside (capget: {})", ran.line("CAPS")),
        ran.has("CAPS 0 0 0"),
    );
    let none = "0000000000000000";
    checks.check(
        format!(
            "no capabilities, from the host (eff {}, prm {}, inh {}, amb {})",
            host.get("CapEff"),
            host.get("CapPrm"),
            host.get("CapInh"),
            host.get("CapAmb")
        ),
        ["CapEff", "CapPrm", "CapInh", "CapAmb"]
            .iter()
            .all(|k| host.get(k) == none),
    );
    checks.check(
        "no_new_privs is set (inside and from the host)",
        ran.has("NO_NEW_PRIVS 1") && host.get("NoNewPrivs") == "1",
    );
    checks.check(
        format!(
            "seccomp filter mode before the job is sent (host: Seccomp {}, {} filters; inside: \
             mode {})",
            host.get("Seccomp"),
            host.get("Seccomp_filters"),
            ran.line("SECCOMP_MODE")
        ),
        host.get("Seccomp") == "2" && ran.has("SECCOMP_MODE 2"),
    );
    checks.check(
        format!(
            "the job process is in the job's cgroups before the job is sent ({})",
            shown(done.before.cgroup_path.as_deref())
        ),
        done.before.in_cgroups,
    );
    // Spawn mode: nsjail sits in the worker's cgroup too.
    let tasks = if is_fork::<K>() { 128 } else { 129 };
    let c = &done.counters;
    checks.check(
        format!(
            "the job's cgroup limits: memory 256 MiB, {tasks} tasks, 1 CPU ({}, {}, {})",
            shown(c.memory_limit),
            shown(c.pids_max),
            c.cpu_max
        ),
        c.memory_limit == Some(256 << 20)
            && c.pids_max == Some(tasks)
            && c.cpu_max == "100000 100000",
    );
    checks.info(format!(
        "os.cpu_count() {}; bounding set {}; peak memory of this job's cgroup {} MiB; ready {} \
         ms after the spawn request (bound {:?})",
        ran.line("CPUS"),
        host.get("CapBnd"),
        shown(c.memory_peak.map(|b| b >> 20)),
        done.ready_after.as_millis(),
        jail.config.spawn_timeout
    ));
    checks.section("exits");
    if is_fork::<K>() {
        checks.check(
            format!("the zygote reports a finished job's child: exit 0 (got {status})"),
            ran.answered() && status == "exit status 0",
        );
    } else {
        checks.context(format!("  basics, nsjail's log:\n{log}"));
        checks.check(
            format!("nsjail logs a job's normal end: 'exited with status: 0' ({status})"),
            ran.answered() && status == "exit status 0" && nsjail_logged(&log, event),
        );
    }
}

/// Exactly: 0 /dev/null, 1 and 2 two different write-only pipes, one unix
/// stream socket and one /dev/null on private fds >= 10 (the job channel
/// and the runner's copy).
fn exactly_the_jobs_fds(fds: &str) -> bool {
    let fds: Vec<&str> = fds.split(' ').collect();
    let [zero, one, two, a, b] = fds[..] else {
        return false;
    };
    let pipe = |entry: &str, fd: &str| {
        entry
            .strip_prefix(fd)
            .and_then(|rest| rest.strip_prefix("=pipe-w:"))
            .filter(|inode| inode.parse::<u64>().is_ok())
            .map(str::to_string)
    };
    let private = |entry: &str| {
        let (fd, kind) = entry.split_once('=')?;
        let fd: u32 = fd.parse().ok()?;
        (fd >= 10 && (kind == "unix-stream" || kind == "null")).then(|| kind.to_string())
    };
    let (Some(out), Some(err)) = (pipe(one, "1"), pipe(two, "2")) else {
        return false;
    };
    let (Some(a), Some(b)) = (private(a), private(b)) else {
        return false;
    };
    zero == "0=null" && out != err && a != b
}
