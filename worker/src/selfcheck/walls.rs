//! The walls the self-check proves, one check each: from the facts seen
//! outside (the first canary's cgroup and processes) and inside (what the two
//! canaries report), each wall is proven (a finding for the log) or named as
//! missing, with what was seen.

use super::canary::{Inside, Outside};
use super::Expected;
use crate::jail::nsjail::TMP_BYTES;

const EPERM: i32 = 1;
const ENOSYS: i32 = 38;
const EAFNOSUPPORT: i32 = 97;
const ENETUNREACH: i32 = 101;

/// The socket families a job must be refused (the job filter's allow-list
/// of families): each could reach past the empty network namespace.
const REFUSED_FAMILIES: [&str; 4] = ["AF_VSOCK", "AF_NETLINK", "AF_PACKET", "AF_ALG"];

/// Everything the walls are judged on.
pub struct Facts<'a> {
    pub expected: &'a Expected,
    pub outside: &'a Outside,
    pub first: &'a Inside,
    pub second: &'a Inside,
    /// The second canary's worker outlived the first canary's kill(-1)/kill(0).
    pub second_survived: bool,
}

/// A wall's verdict: `Ok(what proves it)` or `Err(what was seen instead)`.
type Verdict = Result<String, String>;

/// A wall's check.
type Check = fn(&Facts) -> Verdict;

/// Every wall, by name, in the order they are checked.
const WALLS: &[(&str, Check)] = &[
    ("memory cgroup", memory_cgroup),
    ("pids cgroup", pids_cgroup),
    ("CPU quota", cpu_quota),
    ("cgroup membership", cgroup_membership),
    ("host uid", host_uid),
    ("user namespace", user_namespace),
    ("pid namespace", pid_namespace),
    ("network namespace", network_namespace),
    ("read-only filesystem", read_only_filesystem),
    ("no /proc", no_proc),
    ("jail seccomp policy", jail_seccomp_policy),
    ("job seccomp filter", job_seccomp_filter),
    ("socket families", socket_families),
    ("privileges", privileges),
    ("rlimits", rlimits),
    ("isolation between jobs", isolation_between_jobs),
    ("fresh randomness", fresh_randomness),
];

/// Checks every wall; the error names the first one missing.
pub fn evaluate(facts: &Facts) -> Result<Vec<String>, String> {
    WALLS
        .iter()
        .map(|(name, check)| match check(facts) {
            Ok(proven) => Ok(format!("{name}: {proven}")),
            Err(missing) => Err(format!("the {name} wall is missing: {missing}")),
        })
        .collect()
}

fn verdict(ok: bool, proven: String, missing: String) -> Verdict {
    if ok {
        Ok(proven)
    } else {
        Err(missing)
    }
}

fn memory_cgroup(f: &Facts) -> Verdict {
    let memory = f.outside.memory_limit.unwrap_or(u64::MAX);
    verdict(
        memory <= f.expected.memory_bytes,
        format!("limit {memory} bytes"),
        format!(
            "the job's memory limit is {memory} bytes, wanted {}",
            f.expected.memory_bytes
        ),
    )
}

fn pids_cgroup(f: &Facts) -> Verdict {
    let tasks = f.outside.tasks_limit.unwrap_or(u64::MAX);
    verdict(
        tasks <= f.expected.max_tasks,
        format!("at most {tasks} tasks"),
        format!(
            "the job's pids limit is {tasks}, wanted {}",
            f.expected.max_tasks
        ),
    )
}

fn cpu_quota(f: &Facts) -> Verdict {
    let cpus = f.outside.cpu_limit;
    verdict(
        cpus.is_some_and(|c| (c - f.expected.cpus).abs() < 0.01),
        format!("{:.2} CPU", cpus.unwrap_or(0.0)),
        format!(
            "the job's CPU quota is {cpus:?} cores, wanted {}",
            f.expected.cpus
        ),
    )
}

fn cgroup_membership(f: &Facts) -> Verdict {
    verdict(
        f.outside.job_in_cgroup,
        "the job's process is in its own cgroup".into(),
        "the job's process is not in the cgroup made for it".into(),
    )
}

fn host_uid(f: &Facts) -> Verdict {
    let uids = &f.outside.host_uids;
    verdict(
        !uids.is_empty() && uids.iter().all(|&u| u != 0),
        format!("jailed processes run as host uid {uids:?}"),
        format!("jailed processes run as host uids {uids:?} (0 is root)"),
    )
}

fn user_namespace(f: &Facts) -> Verdict {
    let inside = f.first;
    verdict(
        inside.uid != 0 && inside.gid != 0,
        format!("uid {} gid {} inside", inside.uid, inside.gid),
        format!(
            "scripts run as uid {} gid {} inside the jail",
            inside.uid, inside.gid
        ),
    )
}

fn pid_namespace(f: &Facts) -> Verdict {
    verdict(
        f.first.pid == 1,
        "the job is PID 1 of a namespace of its own".into(),
        format!(
            "the job is pid {} in its namespace, not 1: it shares it",
            f.first.pid
        ),
    )
}

fn network_namespace(f: &Facts) -> Verdict {
    let inside = f.first;
    verdict(
        inside.udp_route == ENETUNREACH
            && inside.tcp_loopback == ENETUNREACH
            && inside.interfaces.iter().all(|i| i == "lo"),
        format!("no route anywhere, interfaces {:?}", inside.interfaces),
        format!(
            "a script sees interfaces {:?}, a UDP route lookup gave errno {} and TCP to loopback \
             errno {} (wanted no route)",
            inside.interfaces, inside.udp_route, inside.tcp_loopback
        ),
    )
}

fn socket_families(f: &Facts) -> Verdict {
    let got = |family: &str| f.first.refusals.get(&format!("socket({family})")).copied();
    let wrong: Vec<String> = REFUSED_FAMILIES
        .iter()
        .filter(|family| got(family) != Some(EAFNOSUPPORT))
        .map(|family| format!("{family}: {:?}", got(family)))
        .collect();
    verdict(
        wrong.is_empty(),
        format!("{} refused (EAFNOSUPPORT)", REFUSED_FAMILIES.join(", ")),
        format!(
            "a socket of these families gave another answer than EAFNOSUPPORT (None: not \
             tried): {}",
            wrong.join(", ")
        ),
    )
}

fn read_only_filesystem(f: &Facts) -> Verdict {
    let inside = f.first;
    verdict(
        inside.written.is_empty() && inside.tmp_writable && inside.tmp_bytes <= TMP_BYTES,
        format!("only /tmp ({} MiB) is writable", inside.tmp_bytes >> 20),
        format!(
            "a script can write to {:?}, /tmp writable: {}, /tmp size {} bytes",
            inside.written, inside.tmp_writable, inside.tmp_bytes
        ),
    )
}

fn no_proc(f: &Facts) -> Verdict {
    verdict(
        !f.first.proc,
        "/proc is absent".into(),
        "/proc is mounted inside the jail".into(),
    )
}

fn jail_seccomp_policy(f: &Facts) -> Verdict {
    let inside = f.first;
    verdict(
        inside.ptrace == EPERM && inside.bpf == EPERM,
        "ptrace and bpf refused".into(),
        format!(
            "ptrace gave errno {} and bpf errno {}, wanted EPERM (nsjail.cfg's seccomp policy)",
            inside.ptrace, inside.bpf
        ),
    )
}

fn job_seccomp_filter(f: &Facts) -> Verdict {
    let inside = f.first;
    // Every call confine.refusals() made got the errno EXPECTED_REFUSALS
    // names for it, and it made every one named there; sockets are the
    // socket families' wall.
    let unexpected: Vec<String> = inside
        .expected_refusals
        .iter()
        .filter(|(call, _)| !call.starts_with("socket("))
        .filter(|(call, want)| inside.refusals.get(*call) != Some(want))
        .map(|(call, want)| format!("{call}: {:?}, wanted {want}", inside.refusals.get(call)))
        .collect();
    verdict(
        inside.unshare == EPERM
            && inside.mount == EPERM
            && inside.clone3 == ENOSYS
            && !inside.expected_refusals.is_empty()
            && unexpected.is_empty(),
        format!(
            "unshare and mount refused, clone3 ENOSYS; {} calls refused as confine.py expects",
            inside.expected_refusals.len()
        ),
        format!(
            "unshare gave errno {}, mount errno {}, clone3 errno {} (wanted EPERM, EPERM, ENOSYS: \
             python/confine.py); against EXPECTED_REFUSALS ({} calls): {}",
            inside.unshare,
            inside.mount,
            inside.clone3,
            inside.expected_refusals.len(),
            unexpected.join("; ")
        ),
    )
}

fn privileges(f: &Facts) -> Verdict {
    let inside = f.first;
    verdict(
        inside.capabilities == 0 && inside.no_new_privs == 1,
        "no capabilities, no_new_privs".into(),
        format!(
            "effective capabilities {:#x}, no_new_privs {}",
            inside.capabilities, inside.no_new_privs
        ),
    )
}

fn rlimits(f: &Facts) -> Verdict {
    let (inside, expected) = (f.first, f.expected);
    let limited = |value: i64, wanted: u64| value >= 0 && (value as u64) <= wanted;
    verdict(
        limited(inside.rlimit_fsize, expected.max_file_bytes)
            && limited(inside.rlimit_nofile, expected.max_open_files)
            && limited(inside.rlimit_cpu, expected.cpu_seconds),
        format!(
            "file size {} bytes, {} open files, {} CPU-seconds",
            inside.rlimit_fsize, inside.rlimit_nofile, inside.rlimit_cpu
        ),
        format!(
            "file size {}, open files {}, CPU-seconds {} (wanted at most {}, {}, {})",
            inside.rlimit_fsize,
            inside.rlimit_nofile,
            inside.rlimit_cpu,
            expected.max_file_bytes,
            expected.max_open_files,
            expected.cpu_seconds
        ),
    )
}

fn isolation_between_jobs(f: &Facts) -> Verdict {
    verdict(
        f.second_survived,
        "kill(-1) and kill(0) from one job reached no other".into(),
        "a job's kill(-1, SIGKILL) or kill(0, SIGKILL) killed another waiting job".into(),
    )
}

fn fresh_randomness(f: &Facts) -> Verdict {
    verdict(
        f.first.random != f.second.random,
        "two jobs draw different numpy random numbers".into(),
        format!(
            "two jobs drew the same numpy random number {}",
            f.first.random
        ),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn expected() -> Expected {
        Expected {
            memory_bytes: 256 << 20,
            max_tasks: 129,
            cpus: 1.0,
            max_file_bytes: 10 << 20,
            max_open_files: 128,
            cpu_seconds: 11,
        }
    }

    fn outside() -> Outside {
        Outside {
            memory_limit: Some(256 << 20),
            tasks_limit: Some(129),
            cpu_limit: Some(1.0),
            job_in_cgroup: true,
            host_uids: vec![65534],
        }
    }

    fn inside(random: f64) -> Inside {
        Inside {
            uid: 1000,
            gid: 1000,
            pid: 1,
            proc: false,
            interfaces: vec!["lo".into()],
            udp_route: ENETUNREACH,
            tcp_loopback: ENETUNREACH,
            written: vec![],
            tmp_writable: true,
            tmp_bytes: TMP_BYTES,
            unshare: EPERM,
            mount: EPERM,
            clone3: ENOSYS,
            ptrace: EPERM,
            bpf: EPERM,
            refusals: refusals(),
            expected_refusals: refusals(),
            capabilities: 0,
            no_new_privs: 1,
            rlimit_fsize: 10 << 20,
            rlimit_nofile: 128,
            rlimit_cpu: 11,
            random,
        }
    }

    fn refusals() -> BTreeMap<String, i32> {
        let mut calls: BTreeMap<String, i32> = REFUSED_FAMILIES
            .iter()
            .map(|family| (format!("socket({family})"), EAFNOSUPPORT))
            .collect();
        calls.insert("mq_open".into(), ENOSYS);
        calls
    }

    fn judge(
        outside: &Outside,
        first: &Inside,
        second: &Inside,
        survived: bool,
    ) -> Result<Vec<String>, String> {
        evaluate(&Facts {
            expected: &expected(),
            outside,
            first,
            second,
            second_survived: survived,
        })
    }

    #[test]
    fn a_sound_sandbox_passes_and_every_wall_is_named() {
        let findings = judge(&outside(), &inside(0.1), &inside(0.2), true).unwrap();
        assert_eq!(findings.len(), WALLS.len(), "{findings:#?}");
        for ((name, _), finding) in WALLS.iter().zip(&findings) {
            assert!(finding.starts_with(&format!("{name}: ")), "{finding}");
        }
    }

    /// Each wall, broken alone, is refused with a message naming it.
    #[test]
    fn each_missing_wall_is_refused_by_name() {
        type Break = fn(&mut Outside, &mut Inside, &mut bool);
        let breaks: &[(&str, Break)] = &[
            ("memory cgroup", |o, _, _| o.memory_limit = None),
            ("pids cgroup", |o, _, _| o.tasks_limit = Some(u64::MAX)),
            ("CPU quota", |o, _, _| o.cpu_limit = None),
            ("cgroup membership", |o, _, _| o.job_in_cgroup = false),
            ("host uid", |o, _, _| o.host_uids = vec![0]),
            ("user namespace", |_, i, _| i.uid = 0),
            ("pid namespace", |_, i, _| i.pid = 7),
            ("network namespace", |_, i, _| i.udp_route = 0),
            ("network namespace", |_, i, _| i.tcp_loopback = 111),
            ("network namespace", |_, i, _| {
                i.interfaces.push("eth0".into())
            }),
            ("socket families", |_, i, _| {
                i.refusals.insert("socket(AF_VSOCK)".into(), 0);
            }),
            ("socket families", |_, i, _| {
                i.refusals.remove("socket(AF_NETLINK)");
            }),
            ("read-only filesystem", |_, i, _| {
                i.written = vec!["/usr/canary".into()]
            }),
            ("read-only filesystem", |_, i, _| i.tmp_bytes = 1 << 40),
            ("no /proc", |_, i, _| i.proc = true),
            ("jail seccomp policy", |_, i, _| i.ptrace = 0),
            ("job seccomp filter", |_, i, _| i.unshare = 0),
            ("job seccomp filter", |_, i, _| i.clone3 = 14),
            ("job seccomp filter", |_, i, _| {
                i.refusals.insert("mq_open".into(), 0);
            }),
            ("job seccomp filter", |_, i, _| i.expected_refusals.clear()),
            ("privileges", |_, i, _| i.capabilities = 1 << 21),
            ("privileges", |_, i, _| i.no_new_privs = 0),
            ("rlimits", |_, i, _| i.rlimit_fsize = -1),
            ("rlimits", |_, i, _| i.rlimit_cpu = 600),
            ("isolation between jobs", |_, _, survived| *survived = false),
        ];
        for (name, broken) in breaks {
            let (mut outside, mut first, mut survived) = (outside(), inside(0.1), true);
            broken(&mut outside, &mut first, &mut survived);
            let error = judge(&outside, &first, &inside(0.2), survived).unwrap_err();
            assert!(
                error.starts_with(&format!("the {name} wall is missing")),
                "{name}: {error}"
            );
        }
        let same = judge(&outside(), &inside(0.5), &inside(0.5), true).unwrap_err();
        assert!(same.starts_with("the fresh randomness wall"), "{same}");
    }
}
