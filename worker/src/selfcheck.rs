//! The start-up proof that the sandbox really confines a script: canary jobs
//! through the real jail policy, the real cgroups and the real job filter,
//! in whichever isolation mode the server runs. If any wall is missing the
//! server must not serve, and the error names the wall and how to fix it.
//!
//! Two workers are made. From outside, the first one's cgroup limits, its
//! membership and its host uid are read. From inside, a canary reports what
//! a script can see and do, without ever sending a packet off the machine
//! even when the jail is broken (a UDP `connect` only looks up a route; TCP
//! goes to loopback only), then tries to kill every process it can reach.
//! The second worker must have survived that, and its canary must draw other
//! random numbers than the first.

use std::time::Duration;

use serde::Deserialize;

use crate::cgroup::{CgroupMode, JobCgroup};
use crate::job::{Job, JobLimits};
use crate::nsjail::{NsjailConfig, SetupError, TMP_BYTES};
use crate::protocol::Versions;
use crate::sandbox::{Sandbox, Worker};

/// Worker ids of the two canaries: far from the pool's, which count from 1.
const CANARY_IDS: [u64; 2] = [u64::MAX - 1, u64::MAX];
const CANARY_TIMEOUT: Duration = Duration::from_secs(20);

/// What a worker lets the self-check see from outside.
pub trait Inspect {
    fn cgroup(&self) -> Option<&JobCgroup>;
    /// The job's first process (PID 1 of its namespace), in the server's namespace.
    fn job_pid(&self) -> Option<i32>;
    /// Processes of the sandbox's own in the job's cgroup (spawn: nsjail).
    fn helper_pids(&self) -> Vec<i32>;
}

/// What the self-check established, for the start-up log.
#[derive(Debug, Clone, Default)]
pub struct SelfCheckReport {
    pub versions: Versions,
    pub isolation: String,
    pub cgroup_mode: String,
    pub nsjail_version: String,
    /// One line per wall proven.
    pub findings: Vec<String>,
}

/// The limits a job must be under, as the configuration states them.
#[derive(Debug, Clone, PartialEq)]
pub struct Expected {
    pub memory_bytes: u64,
    /// pids.max of a job's cgroup.
    pub max_tasks: u64,
    pub cpus: f64,
    pub max_file_bytes: u64,
    pub max_open_files: u64,
    pub cpu_seconds: u64,
}

impl Expected {
    /// `extra_tasks`: the sandbox's own processes in a job's cgroup.
    pub fn of(config: &NsjailConfig, extra_tasks: u32) -> Expected {
        let limits = &config.limits;
        Expected {
            memory_bytes: limits.memory_bytes,
            max_tasks: u64::from(limits.max_processes + extra_tasks),
            cpus: limits.cpus,
            max_file_bytes: limits.max_file_mb << 20,
            max_open_files: u64::from(limits.max_open_files),
            cpu_seconds: limits.cpu_seconds,
        }
    }
}

/// The canary: what a script can see and do from inside. Every probe that
/// could reach a network stays on this machine: `connect` on a UDP socket
/// sends nothing, and the TCP attempt goes to 127.0.0.1.
const CANARY: &str = r#"
import ctypes, os, resource, socket

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

def errno_of(result):
    return 0 if result >= 0 else ctypes.get_errno()

def os_error(action):
    try:
        action()
        return 0
    except OSError as exc:
        return exc.errno or -1

def writable(path):
    try:
        with open(path, "w") as f:
            f.write("x")
        os.unlink(path)
        return True
    except OSError:
        return False

def udp_route():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        return os_error(lambda: s.connect(("192.0.2.1", 9)))
    finally:
        s.close()

def tcp_loopback():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(1)
    try:
        return os_error(lambda: s.connect(("127.0.0.1", 9)))
    finally:
        s.close()

def capabilities():
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)
    data = (ctypes.c_uint32 * 6)()
    libc.syscall(125, header, data)
    return data[0] | (data[3] << 32)

def main():
    import numpy
    statvfs = os.statvfs("/tmp")
    facts = {
        "uid": os.getuid(),
        "gid": os.getgid(),
        "pid": os.getpid(),
        "proc": os.path.exists("/proc/self"),
        "interfaces": [name for _, name in socket.if_nameindex()],
        "udp_route": udp_route(),
        "tcp_loopback": tcp_loopback(),
        "written": [p for p in ("/canary", "/usr/canary", "/opt/canary", "/pyexec/canary",
                                "/dev/canary") if writable(p)],
        "tmp_writable": writable("/tmp/canary"),
        "tmp_bytes": statvfs.f_blocks * statvfs.f_frsize,
        "unshare": errno_of(libc.unshare(0x10000000)),
        "mount": errno_of(libc.mount(b"none", b"/tmp", b"tmpfs", 0, None)),
        "clone3": errno_of(libc.syscall(435, None, 0)),
        "ptrace": errno_of(libc.ptrace(0, 0, None, None)),
        "bpf": errno_of(libc.syscall(321, 0, None, 0)),
        "capabilities": capabilities(),
        "no_new_privs": libc.prctl(39, 0, 0, 0, 0),
        "rlimit_fsize": resource.getrlimit(resource.RLIMIT_FSIZE)[1],
        "rlimit_nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[1],
        "rlimit_cpu": resource.getrlimit(resource.RLIMIT_CPU)[1],
        "random": float(numpy.random.random()),
    }
    facts["kill_all"] = os_error(lambda: os.kill(-1, 9))
    facts["kill_group"] = os_error(lambda: os.kill(0, 9))
    return facts
"#;

/// What the canary reported.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Inside {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
    pub proc: bool,
    pub interfaces: Vec<String>,
    pub udp_route: i32,
    pub tcp_loopback: i32,
    pub written: Vec<String>,
    pub tmp_writable: bool,
    pub tmp_bytes: u64,
    pub unshare: i32,
    pub mount: i32,
    pub clone3: i32,
    pub ptrace: i32,
    pub bpf: i32,
    pub capabilities: u64,
    pub no_new_privs: i32,
    /// Hard limits; RLIM_INFINITY comes through as -1 or a huge number.
    pub rlimit_fsize: i64,
    pub rlimit_nofile: i64,
    pub rlimit_cpu: i64,
    pub random: f64,
}

/// What the server saw of the first canary's worker from outside.
#[derive(Debug, Clone, PartialEq)]
pub struct Outside {
    pub memory_limit: Option<u64>,
    pub tasks_limit: Option<u64>,
    pub cpu_limit: Option<f64>,
    /// The job's process is a member of its own cgroup.
    pub job_in_cgroup: bool,
    /// Host uids of the cgroup's processes other than the sandbox's helpers.
    pub host_uids: Vec<u32>,
}

const EPERM: i32 = 1;
const ENOSYS: i32 = 38;
const ENETUNREACH: i32 = 101;

/// Checks every wall; the error names the first one missing.
pub fn evaluate(
    expected: &Expected,
    outside: &Outside,
    first: &Inside,
    second: &Inside,
    second_survived: bool,
) -> Result<Vec<String>, String> {
    let mut findings = Vec::new();
    let mut wall = |ok: bool, name: &str, proven: String, missing: String| {
        if ok {
            findings.push(format!("{name}: {proven}"));
            Ok(())
        } else {
            Err(format!("the {name} wall is missing: {missing}"))
        }
    };

    let memory = outside.memory_limit.unwrap_or(u64::MAX);
    wall(
        memory <= expected.memory_bytes,
        "memory cgroup",
        format!("limit {memory} bytes"),
        format!(
            "the job's memory limit is {memory} bytes, wanted {}",
            expected.memory_bytes
        ),
    )?;
    let tasks = outside.tasks_limit.unwrap_or(u64::MAX);
    wall(
        tasks <= expected.max_tasks,
        "pids cgroup",
        format!("at most {tasks} tasks"),
        format!(
            "the job's pids limit is {tasks}, wanted {}",
            expected.max_tasks
        ),
    )?;
    let cpus = outside.cpu_limit;
    wall(
        cpus.is_some_and(|c| (c - expected.cpus).abs() < 0.01),
        "CPU quota",
        format!("{:.2} CPU", cpus.unwrap_or(0.0)),
        format!(
            "the job's CPU quota is {cpus:?} cores, wanted {}",
            expected.cpus
        ),
    )?;
    wall(
        outside.job_in_cgroup,
        "cgroup membership",
        "the job's process is in its own cgroup".into(),
        "the job's process is not in the cgroup made for it".into(),
    )?;
    wall(
        !outside.host_uids.is_empty() && outside.host_uids.iter().all(|&u| u != 0),
        "host uid",
        format!("jailed processes run as host uid {:?}", outside.host_uids),
        format!(
            "jailed processes run as host uids {:?} (0 is root)",
            outside.host_uids
        ),
    )?;

    let inside = first;
    wall(
        inside.uid != 0 && inside.gid != 0,
        "user namespace",
        format!("uid {} gid {} inside", inside.uid, inside.gid),
        format!(
            "scripts run as uid {} gid {} inside the jail",
            inside.uid, inside.gid
        ),
    )?;
    wall(
        inside.pid == 1,
        "pid namespace",
        "the job is PID 1 of a namespace of its own".into(),
        format!(
            "the job is pid {} in its namespace, not 1: it shares it",
            inside.pid
        ),
    )?;
    wall(
        inside.udp_route == ENETUNREACH
            && inside.tcp_loopback == ENETUNREACH
            && inside.interfaces.iter().all(|i| i == "lo"),
        "network namespace",
        format!("no route anywhere, interfaces {:?}", inside.interfaces),
        format!(
            "a script sees interfaces {:?}, a UDP route lookup gave errno {} and TCP to loopback errno {} (wanted no route)",
            inside.interfaces, inside.udp_route, inside.tcp_loopback
        ),
    )?;
    wall(
        inside.written.is_empty() && inside.tmp_writable && inside.tmp_bytes <= TMP_BYTES,
        "read-only filesystem",
        format!("only /tmp ({} MiB) is writable", inside.tmp_bytes >> 20),
        format!(
            "a script can write to {:?}, /tmp writable: {}, /tmp size {} bytes",
            inside.written, inside.tmp_writable, inside.tmp_bytes
        ),
    )?;
    wall(
        !inside.proc,
        "no /proc",
        "/proc is absent".into(),
        "/proc is mounted inside the jail".into(),
    )?;
    wall(
        inside.ptrace == EPERM && inside.bpf == EPERM,
        "jail seccomp policy",
        "ptrace and bpf refused".into(),
        format!(
            "ptrace gave errno {} and bpf errno {}, wanted EPERM (nsjail.cfg's seccomp policy)",
            inside.ptrace, inside.bpf
        ),
    )?;
    wall(
        inside.unshare == EPERM && inside.mount == EPERM && inside.clone3 == ENOSYS,
        "job seccomp filter",
        "unshare and mount refused, clone3 ENOSYS".into(),
        format!(
            "unshare gave errno {}, mount errno {}, clone3 errno {} (wanted EPERM, EPERM, ENOSYS: python/confine.py)",
            inside.unshare, inside.mount, inside.clone3
        ),
    )?;
    wall(
        inside.capabilities == 0 && inside.no_new_privs == 1,
        "privileges",
        "no capabilities, no_new_privs".into(),
        format!(
            "effective capabilities {:#x}, no_new_privs {}",
            inside.capabilities, inside.no_new_privs
        ),
    )?;
    let limited = |value: i64, wanted: u64| value >= 0 && (value as u64) <= wanted;
    wall(
        limited(inside.rlimit_fsize, expected.max_file_bytes)
            && limited(inside.rlimit_nofile, expected.max_open_files)
            && limited(inside.rlimit_cpu, expected.cpu_seconds),
        "rlimits",
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
    )?;
    wall(
        second_survived,
        "isolation between jobs",
        "kill(-1) and kill(0) from one job reached no other".into(),
        "a job's kill(-1, SIGKILL) or kill(0, SIGKILL) killed another waiting job".into(),
    )?;
    wall(
        first.random != second.random,
        "fresh randomness",
        "two jobs draw different numpy random numbers".into(),
        format!(
            "two jobs drew the same numpy random number {}",
            first.random
        ),
    )?;
    Ok(findings)
}

/// Runs the self-check on `sandbox`. Errors say which wall is missing.
pub async fn run<S>(
    sandbox: &S,
    expected: &Expected,
    cgroup_mode: CgroupMode,
    nsjail_version: String,
    isolation: &str,
) -> Result<SelfCheckReport, SetupError>
where
    S: Sandbox,
    S::Worker: Inspect,
{
    let fail = |what: String| SetupError::new(format!("sandbox self-check failed: {what}"));
    let mut workers = Vec::new();
    for id in CANARY_IDS {
        let worker = sandbox
            .spawn(id)
            .await
            .map_err(|e| SetupError::new(explain_spawn_failure(&e.message)))?;
        workers.push(worker);
    }
    let mut second = workers.pop().expect("two canaries");
    let mut first = workers.pop().expect("two canaries");
    let versions = first.versions().clone();

    let outside = look_from_outside(&first).await;
    let memory = expected.memory_bytes;
    let first_inside = run_canary(&mut first, memory).await.map_err(&fail);
    let second_survived = second.is_alive();
    let second_inside = run_canary(&mut second, memory).await.map_err(&fail);
    for worker in [first, second] {
        worker.reap().await;
    }
    let findings = evaluate(
        expected,
        &outside,
        &first_inside?,
        &second_inside?,
        second_survived,
    )
    .map_err(fail)?;
    Ok(SelfCheckReport {
        versions,
        isolation: isolation.into(),
        cgroup_mode: cgroup_mode.as_str().into(),
        nsjail_version,
        findings,
    })
}

async fn look_from_outside<W: Inspect>(worker: &W) -> Outside {
    let cgroup = worker.cgroup().cloned();
    let job_pid = worker.job_pid();
    let helpers = worker.helper_pids();
    tokio::task::spawn_blocking(move || {
        let Some(cgroup) = cgroup else {
            return Outside {
                memory_limit: None,
                tasks_limit: None,
                cpu_limit: None,
                job_in_cgroup: false,
                host_uids: Vec::new(),
            };
        };
        let members = cgroup.processes();
        Outside {
            memory_limit: cgroup.memory_limit(),
            tasks_limit: cgroup.tasks_limit(),
            cpu_limit: cgroup.cpu_limit(),
            job_in_cgroup: job_pid.is_some_and(|p| members.contains(&p)),
            host_uids: members
                .iter()
                .filter(|p| !helpers.contains(p))
                .filter_map(|&p| host_uid(p))
                .collect(),
        }
    })
    .await
    .unwrap_or_else(|_| Outside {
        memory_limit: None,
        tasks_limit: None,
        cpu_limit: None,
        job_in_cgroup: false,
        host_uids: Vec::new(),
    })
}

async fn run_canary<W: Worker>(worker: &mut W, memory_bytes: u64) -> Result<Inside, String> {
    let limits = JobLimits {
        timeout: CANARY_TIMEOUT,
        memory_bytes,
    };
    let job = Job::new(CANARY, limits, 1 << 16);
    let result = tokio::time::timeout(CANARY_TIMEOUT, worker.run(&job))
        .await
        .map_err(|_| format!("the canary job did not answer within {CANARY_TIMEOUT:?}"))?
        .map_err(|e| format!("the canary job failed: {e:?}"));
    worker.stop();
    let _ = worker.output().await;
    let result = result?;
    serde_json::from_str(result.result.get())
        .map_err(|e| format!("the canary's report is unreadable: {e}"))
}

fn host_uid(pid: i32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Adds the likely cause and its fix to a spawn failure seen at start-up.
pub(crate) fn explain_spawn_failure(message: &str) -> String {
    let gvisor = std::fs::read_to_string("/proc/version").is_ok_and(|v| v.contains("gVisor"));
    let hint = if gvisor || message.contains("PR_SET_SECUREBITS") {
        "this looks like gVisor (Cloud Run's first generation), where nsjail cannot work: \
         deploy with --execution-environment=gen2"
    } else if message.contains("Operation not permitted") || message.contains("EPERM") {
        "the kernel refused to create namespaces or mounts: run as root with user \
         namespaces enabled; in Docker add --cap-add SYS_ADMIN --security-opt seccomp=unconfined \
         --cgroupns private (on AppArmor hosts also --security-opt apparmor=unconfined)"
    } else if message.contains("No such file") {
        "a path in nsjail.cfg or the sandbox Python is missing: run `make setup`"
    } else {
        "see nsjail's messages above"
    };
    format!("the sandbox cannot start a worker, so pyexec will not serve.\n{message}\nLikely fix: {hint}")
}

#[cfg(test)]
mod tests {
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
            capabilities: 0,
            no_new_privs: 1,
            rlimit_fsize: 10 << 20,
            rlimit_nofile: 128,
            rlimit_cpu: 11,
            random,
        }
    }

    #[test]
    fn a_sound_sandbox_passes_and_every_wall_is_named() {
        let findings = evaluate(&expected(), &outside(), &inside(0.1), &inside(0.2), true).unwrap();
        assert_eq!(findings.len(), 16, "{findings:#?}");
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
            ("read-only filesystem", |_, i, _| {
                i.written = vec!["/usr/canary".into()]
            }),
            ("read-only filesystem", |_, i, _| i.tmp_bytes = 1 << 40),
            ("no /proc", |_, i, _| i.proc = true),
            ("jail seccomp policy", |_, i, _| i.ptrace = 0),
            ("job seccomp filter", |_, i, _| i.unshare = 0),
            ("job seccomp filter", |_, i, _| i.clone3 = 14),
            ("privileges", |_, i, _| i.capabilities = 1 << 21),
            ("privileges", |_, i, _| i.no_new_privs = 0),
            ("rlimits", |_, i, _| i.rlimit_fsize = -1),
            ("rlimits", |_, i, _| i.rlimit_cpu = 600),
            ("isolation between jobs", |_, _, survived| *survived = false),
        ];
        for (name, broken) in breaks {
            let (mut outside, mut first, mut survived) = (outside(), inside(0.1), true);
            broken(&mut outside, &mut first, &mut survived);
            let error =
                evaluate(&expected(), &outside, &first, &inside(0.2), survived).unwrap_err();
            assert!(
                error.starts_with(&format!("the {name} wall is missing")),
                "{name}: {error}"
            );
        }
        let same = evaluate(&expected(), &outside(), &inside(0.5), &inside(0.5), true).unwrap_err();
        assert!(same.starts_with("the fresh randomness wall"), "{same}");
    }
}
