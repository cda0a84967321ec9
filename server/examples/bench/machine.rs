//! The whole machine's CPU over a phase: busy time from /proc/stat (every
//! CPU, kernel workers and interrupts included) less the benchmark's own
//! CPU (its clients), so what is left is what the server, its jobs and the
//! kernel work they cause cost.
//!
//! Busy is user + nice + system + irq + softirq (guest time is already in
//! user). Steal is left out and reported apart: it is time this VM's vCPUs
//! waited while the host ran someone else, not work done here, and it
//! swings with the neighbours. Anything else running on the machine (a
//! build, another server) counts too: measure on an idle machine.

/// Cumulative counters at one moment.
#[derive(Clone, Copy)]
pub struct Snapshot {
    busy_s: f64,
    steal_s: f64,
    own_s: f64,
}

/// What a window between two snapshots cost.
#[derive(Clone, Copy, Default)]
pub struct Window {
    /// Busy CPU-seconds of the whole machine, the benchmark's own excluded.
    pub busy_s: f64,
    /// CPU-seconds stolen by the host over the window.
    pub steal_s: f64,
    /// The benchmark process's own CPU-seconds (its clients).
    pub own_s: f64,
}

impl Snapshot {
    pub fn now() -> Snapshot {
        let (busy_s, steal_s) = proc_stat().unwrap_or((f64::NAN, f64::NAN));
        Snapshot {
            busy_s,
            steal_s,
            own_s: own_cpu_seconds(),
        }
    }

    pub fn since(&self, before: &Snapshot) -> Window {
        let own_s = self.own_s - before.own_s;
        Window {
            busy_s: (self.busy_s - before.busy_s) - own_s,
            steal_s: self.steal_s - before.steal_s,
            own_s,
        }
    }
}

/// (busy, steal) CPU-seconds since boot, all CPUs, from /proc/stat's `cpu` line.
fn proc_stat() -> Option<(f64, f64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal [guest guest_nice]
    if ticks.len() < 8 {
        return None;
    }
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) } as f64;
    let busy = ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6];
    Some((busy / hz, ticks[7] / hz))
}

/// This process's user + system CPU-seconds, every thread.
fn own_cpu_seconds() -> f64 {
    // SAFETY: getrusage writes only into the zeroed struct it is given.
    let mut usage: nix::libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { nix::libc::getrusage(nix::libc::RUSAGE_SELF, &mut usage) } != 0 {
        return f64::NAN;
    }
    let seconds = |t: nix::libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}
