//! The canary job (`python/canary.py`) and the facts the self-check reads:
//! what the canary reports from inside, and what the server sees of its
//! worker from outside.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The script, run as a job through the real sandbox.
pub const CANARY: &str = include_str!("../../../python/canary.py");

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
    /// {call: errno} of the calls `confine.refusals()` makes.
    pub refusals: BTreeMap<String, i32>,
    /// {call: errno} each must get (`confine.EXPECTED_REFUSALS`).
    pub expected_refusals: BTreeMap<String, i32>,
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
