//! What only fork mode has to prove: the zygote's privileges and the
//! child's, the child's place below the zygote (pid namespace, cgroup,
//! seccomp filters), that nothing of the zygote's loop reaches a job, and
//! that two children of one zygote share nothing a script can reach: not
//! /tmp, /dev/shm, the working directory, abstract sockets, SysV IPC or
//! numpy's random state, and that one can't kill the other or the zygote.

use std::time::Duration;

use pyexec_worker::{Sandbox, Worker};

use crate::common::{job, scaled};
use crate::harness::{
    alive, answer_bound, cgroup_path, job_file, shown, wait_until, with_main, Checks, Fork, Jail,
    Kind, ProcStatus, Ran, Scratch,
};

const PAIR_A: &str = include_str!("../probes/pair_a.py");
const PAIR_B: &str = include_str!("../probes/pair_b.py");
const KILL_A: &str = include_str!("../probes/kill_a.py");
const KILL_B: &str = include_str!("../probes/kill_b.py");
const RESIDUE: &str = include_str!("../probes/residue.py");

pub async fn fork_only<K: Kind>(jail: &Jail<K>, checks: &mut Checks) {
    checks.section("fork_only");
    let zygote = jail.zygote_pid().expect("a live zygote");
    the_zygotes_memory_is_in_huge_pages(zygote, checks);
    the_child_below_the_zygote(jail, zygote, checks).await;
    no_zygote_residue(jail, checks).await;
    a_child_without_its_own_user_namespace_is_refused(checks).await;
    two_children_share_nothing(jail, checks).await;
    one_child_cannot_kill_another(jail, zygote, checks).await;
}

/// The harness's zygote keeps the default, `ZygotePages::Huge`: its heap is
/// collapsed into 2 MiB pages before its first fork (and again every 256).
fn the_zygotes_memory_is_in_huge_pages(zygote: i32, checks: &mut Checks) {
    if !std::path::Path::new("/sys/kernel/mm/transparent_hugepage").exists() {
        checks.info("this kernel has no transparent huge pages: the zygote keeps 4 KiB pages");
        return;
    }
    let rollup =
        std::fs::read_to_string(format!("/proc/{zygote}/smaps_rollup")).unwrap_or_default();
    let huge_kib: u64 = rollup
        .lines()
        .find_map(|l| l.strip_prefix("AnonHugePages:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    checks.check(
        format!(
            "the zygote's anonymous memory is in huge pages ({} MiB AnonHugePages)",
            huge_kib >> 10
        ),
        huge_kib >= 2048,
    );
}

async fn the_child_below_the_zygote<K: Kind>(jail: &Jail<K>, zygote: i32, checks: &mut Checks) {
    let probe = jail.worker().await;
    let z = ProcStatus::of(zygote);
    let child = &probe.before.status;
    let zygote_cgroup = cgroup_path(zygote, "memory");
    checks.check(
        format!(
            "the zygote holds CAP_SYS_ADMIN and nothing else (CapEff {})",
            z.get("CapEff")
        ),
        z.get("CapEff") == "0000000000200000",
    );
    checks.check(
        format!(
            "its job child holds no capability (CapEff {}, CapPrm {})",
            child.get("CapEff"),
            child.get("CapPrm")
        ),
        child.get("CapEff") == "0000000000000000" && child.get("CapPrm") == "0000000000000000",
    );
    let (zp, cp) = (z.nspids(), child.nspids());
    checks.check(
        format!(
            "the child is PID 1 of a pid namespace below the zygote's (NSpid {}, parent {}; \
             the zygote's NSpid {})",
            child.get("NSpid"),
            child.get("PPid"),
            z.get("NSpid")
        ),
        zp == [zygote, 1]
            && cp.len() == 3
            && cp[0] == probe.pid
            && cp[2] == 1
            && child.get("PPid") == zygote.to_string(),
    );
    checks.check(
        format!(
            "the child is moved out of the zygote's cgroup into the job's before the job ({} -> \
             {})",
            shown(zygote_cgroup.as_deref()),
            shown(probe.before.cgroup_path.as_deref())
        ),
        probe.before.in_cgroups
            && zygote_cgroup.is_some()
            && probe.before.cgroup_path.is_some()
            && zygote_cgroup != probe.before.cgroup_path,
    );
    let user_ns = |pid: i32| std::fs::read_link(format!("/proc/{pid}/ns/user")).ok();
    let map = |pid: i32, file: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/{file}"))
            .map(|t| t.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|e| e.to_string())
    };
    let (zygote_ns, child_ns) = (user_ns(zygote), user_ns(probe.pid));
    checks.check(
        format!(
            "the child has a user namespace of its own, below the zygote's ({zygote_ns:?} -> \
             {child_ns:?})"
        ),
        zygote_ns.is_some() && child_ns.is_some() && zygote_ns != child_ns,
    );
    // Read from the host, a map names host ids: the child's 1000 is the
    // zygote's 1000, so both maps read alike.
    let (uid_map, gid_map, setgroups) = (
        map(probe.pid, "uid_map"),
        map(probe.pid, "gid_map"),
        map(probe.pid, "setgroups"),
    );
    let zygote_maps = (map(zygote, "uid_map"), map(zygote, "gid_map"));
    checks.check(
        format!(
            "the server mapped the child's ids to the zygote's before the job: uid_map \
             {uid_map:?}, gid_map {gid_map:?} (the zygote's: {zygote_maps:?}), setgroups \
             {setgroups:?}"
        ),
        uid_map.starts_with("1000 ")
            && (uid_map.clone(), gid_map.clone()) == zygote_maps
            && setgroups == "deny",
    );
    // Each child's namespace caps its siblings' processes together at the
    // zygote's RLIMIT_NPROC (kernel/ucount.c): the server's hard limit, so
    // that only each job's pids cgroup binds.
    let nproc = max_processes(zygote);
    let mut limit = nix::libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct it is given.
    unsafe { nix::libc::getrlimit(nix::libc::RLIMIT_NPROC, &mut limit) };
    let ours = limit.rlim_max.to_string();
    checks.check(
        format!(
            "the zygote's RLIMIT_NPROC, its children's common cap, is the server's hard limit \
             ({nproc:?}; the server's hard limit {ours})"
        ),
        nproc.as_ref().is_some_and(|(soft, hard)| {
            let want = if limit.rlim_max == nix::libc::RLIM_INFINITY {
                "unlimited"
            } else {
                &ours
            };
            soft == want && hard == want
        }),
    );
    let filters = |s: &ProcStatus| s.get("Seccomp_filters").parse::<u32>().ok();
    checks.check(
        format!(
            "the child has one seccomp filter more than the zygote, its own ({} -> {})",
            z.get("Seccomp_filters"),
            child.get("Seccomp_filters")
        ),
        filters(&z).is_some() && filters(child) == filters(&z).map(|n| n + 1),
    );
    probe.finish().await;
}

/// Nothing of the zygote's loop reaches the job: no frame of it on the
/// stack, no Zygote, fork request or control socket among the objects.
async fn no_zygote_residue<K: Kind>(jail: &Jail<K>, checks: &mut Checks) {
    let ran = jail.probe(RESIDUE, answer_bound()).await.ran;
    checks.context(ran.describe("residue"));
    checks.check("the residue probe answered", ran.answered());
    checks.check(
        format!(
            "the job's stack holds no frame of the zygote's loop (frames of {}: {})",
            ran.line("ZYGOTE_FILE"),
            ran.line("ZYGOTE_FRAMES")
        ),
        ran.line("ZYGOTE_FILE").ends_with("zygote.py") && ran.has("ZYGOTE_FRAMES [\"<module>\"]"),
    );
    checks.check(
        format!(
            "gc.get_objects() finds no Zygote, JobChild, fork request or control socket ({})",
            ran.line("ZYGOTE_OBJECTS")
        ),
        ran.has("ZYGOTE_OBJECTS []"),
    );
}

/// The server maps only a namespace of the child's own: a child that kept
/// the zygote's (a runner copy whose `unshare` skips CLONE_NEWUSER) fails
/// its spawn, by name, rather than running a job on a shared budget.
async fn a_child_without_its_own_user_namespace_is_refused(checks: &mut Checks) {
    let scratch = Scratch::new("own-userns");
    let runner = scratch.runner_with(
        "python",
        "def unshare(",
        "\n\n_unshare_for_real = unshare\n\n\ndef unshare(flags):\n    \"\"\"The test's control: \
         no user namespace of the child's own.\"\"\"\n    if flags != CLONE_NEWUSER:\n        \
         _unshare_for_real(flags)\n",
    );
    let control = Jail::<Fork>::start("own-userns", |config| config.runner_dir = runner).await;
    let spawned = control.sandbox.spawn(crate::common::next_id()).await;
    let error = match &spawned {
        Ok(_) => "it spawned".to_string(),
        Err(e) => format!("{e:#}"),
    };
    drop(spawned);
    control.close().await;
    checks.check(
        format!(
            "a child that kept the zygote's user namespace fails its spawn, its ids not mapped \
             ({error})"
        ),
        error.contains("cannot map its user namespace's ids"),
    );
}

/// Two children, both forked and waiting; A leaves its traces and holds
/// them, then B, which was waiting all along, looks for them.
async fn two_children_share_nothing<K: Kind>(jail: &Jail<K>, checks: &mut Checks) {
    let token = format!("{}{}", std::process::id(), crate::common::next_id());
    let hold = scaled(Duration::from_secs(20)).as_secs().to_string();
    let script_a = job(&with_main(
        &PAIR_A.replace("TOKEN", &token).replace("HOLD_S", &hold),
    ));
    let script_b = job(&with_main(&PAIR_B.replace("TOKEN", &token)));
    let mut a = jail.worker().await;
    let mut b = jail.worker().await;
    let holding = job_file(a.pid, "/tmp/probe-a-hold");
    let b_side = async {
        let held = wait_until(answer_bound(), || holding.exists()).await;
        let outcome = tokio::time::timeout(answer_bound(), b.worker.run(&script_b)).await;
        (held, outcome)
    };
    // A's job runs until B's is done (it holds far longer), then A is stopped.
    let (held, b_outcome) = tokio::select! {
        a_outcome = a.worker.run(&script_a) => {
            checks.context(format!("  pair A ended first: {a_outcome:?}"));
            (None, None)
        }
        (held, b_outcome) = b_side => (held, Some(b_outcome)),
    };
    let answered = matches!(b_outcome, Some(Ok(Ok(_))));
    let (a, b) = (a.finish().await.ran, b.finish().await.ran);
    checks.context(a.describe("pair A"));
    checks.context(b.describe("pair B"));
    checks.check(
        "the first child of the pair got to its HOLD line",
        held.is_some() && a.has("HOLD"),
    );
    checks.check("the second child of the pair answered", answered);
    // /tmp holds only the empty folder the runner makes for output files.
    checks.check(
        format!(
            "two children don't share /tmp (the second sees {})",
            b.line("TMP")
        ),
        b.has("TMP ['outputs']"),
    );
    checks.check(
        format!(
            "the second's /tmp/outputs is its own, empty (it sees {})",
            b.line("OUTPUTS")
        ),
        b.has("OUTPUTS []"),
    );
    checks.check(
        format!(
            "two children don't share /dev/shm (the second sees {})",
            b.line("DEVSHM")
        ),
        b.has("DEVSHM []"),
    );
    checks.check(
        format!(
            "two children don't share their working directory (the second's holds {})",
            b.line("CWDLIST")
        ),
        b.has("CWDLIST ['outputs']"),
    );
    checks.check(
        format!(
            "two children don't share abstract unix sockets (connect: {})",
            b.line("ABSTRACT")
        ),
        b.has("ABSTRACT ECONNREFUSED"),
    );
    checks.check(
        format!(
            "two children don't share SysV IPC (shmget of the first's key: {})",
            b.line("SHM")
        ),
        b.has("SHM ENOENT"),
    );
    let (rng_a, rng_b) = (a.line("RNG"), b.line("RNG"));
    checks.check(
        format!("numpy's global RNG differs between two children ({rng_a}, {rng_b})"),
        rng_a != "?" && rng_b != "?" && rng_a != rng_b,
    );
    hash_secret(&a, &b, checks);
}

fn hash_secret(a: &Ran, b: &Ran, checks: &Checks) {
    let (hash_a, hash_b) = (a.line("HASH"), b.line("HASH"));
    if hash_a != "?" && hash_a == hash_b {
        checks.info(format!(
            "Python's hash secret is the zygote's, shared by its children (hash alike: \
             {hash_a}): the documented trade-off (docs/architecture.md), bounded by recycling"
        ));
    } else {
        checks.info(format!(
            "Python's hash secret differs between two children ({hash_a}, {hash_b})"
        ));
    }
}

/// One child kills what it can reach while another waits for its job.
async fn one_child_cannot_kill_another<K: Kind>(jail: &Jail<K>, zygote: i32, checks: &mut Checks) {
    let mut a = jail.worker().await;
    let mut b = jail.worker().await;
    a.run(KILL_A, answer_bound()).await;
    let zygote_alive_before = alive(zygote) && jail.sandbox.health().is_ok();
    let b_alive_before = b.worker.is_alive();
    b.run(KILL_B, answer_bound()).await;
    let (a, b) = (a.finish().await, b.finish().await);
    let zygote_after = jail.zygote_pid();
    checks.context(a.ran.describe("kill A"));
    checks.context(b.ran.describe("kill B"));
    checks.info(format!(
        "the first child: kill(-1, 9) -> {}, kill(0, 9) -> {}; session and group {}",
        a.ran.line("KILLALL"),
        a.ran.line("KILLGROUP"),
        a.ran.line("SESSION")
    ));
    checks.check(
        format!(
            "a child sees no process but itself (kill(pid, 0) for 2..65535: {})",
            a.ran.line("SEES")
        ),
        a.ran.has("SEES []"),
    );
    checks.check(
        "kill(-1, 9) and kill(0, 9) from one child leave a waiting second child alive",
        a.ran.answered() && b_alive_before && b.ran.answered() && b.ran.has("ALIVE"),
    );
    checks.check(
        format!(
            "... and the zygote (still pid {zygote}, alive after both: {})",
            shown(zygote_after)
        ),
        zygote_alive_before && zygote_after == Some(zygote) && alive(zygote),
    );
}

/// (soft, hard) of "Max processes" in `/proc/<pid>/limits`.
fn max_processes(pid: i32) -> Option<(String, String)> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max processes"))?;
    let mut values = line["Max processes".len()..].split_whitespace();
    Some((values.next()?.to_string(), values.next()?.to_string()))
}
