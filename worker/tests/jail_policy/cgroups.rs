//! cgroups: the worker's own cgroup holds a memory bomb (an OOM kill it
//! counts), a fork bomb (at pids.max, every refused fork EAGAIN) and two CPU
//! burners (at one CPU); SIGKILL to the job's PID 1 empties it.

use std::time::{Duration, Instant};

use pyexec_worker::{JobFailure, Worker};

use crate::common::{job, scaled};
use crate::harness::{
    alive, answer_bound, is_fork, job_file, shown, wait_until, with_main, Checks, Jail, Kind,
    SIGKILLED,
};

const MEMORY_BOMB: &str = include_str!("../probes/memory_bomb.py");
const FORK_BOMB: &str = include_str!("../probes/fork_bomb.py");
const CPU_BURNERS: &str = include_str!("../probes/cpu_quota.py");

pub async fn cgroups<K: Kind>(jail: &Jail<K>, checks: &mut Checks) {
    checks.section("cgroups");
    let zygote = jail.zygote_pid();
    memory_bomb(jail, checks).await;
    if is_fork::<K>() {
        let after = jail.zygote_pid();
        checks.check(
            format!(
                "the zygote outlives its child's OOM kill (pid {} then {})",
                shown(zygote),
                shown(after)
            ),
            zygote.is_some() && after == zygote && zygote.is_some_and(alive),
        );
    }
    fork_bomb(jail, checks).await;
    cpu_quota(jail, checks).await;
}

async fn memory_bomb<K: Kind>(jail: &Jail<K>, checks: &mut Checks) {
    let mut probe = jail.worker().await;
    probe.run(MEMORY_BOMB, answer_bound()).await;
    let memory_limit = matches!(probe.outcome, Some(Err(JobFailure::MemoryLimit)));
    let outcome = format!("{:?}", probe.outcome);
    let status = probe.ended(answer_bound()).await;
    let done = probe.finish().await;
    let (ran, c) = (&done.ran, &done.counters);
    checks.context(ran.describe("memory bomb"));
    checks.info(format!(
        "memory bomb: {}; cgroup: oom_kill {}, peak {}",
        ran.stdout.lines().last().unwrap_or("nothing"),
        shown(c.oom_kills),
        shown(c.memory_peak)
    ));
    checks.check(
        format!("a memory bomb is SIGKILLed ({status}), a memory_limit ({outcome})"),
        status == SIGKILLED && memory_limit && !ran.has("survived"),
    );
    checks.check(
        format!(
            "the OOM kill is counted in the job's own cgroup (oom_kill {})",
            shown(c.oom_kills)
        ),
        c.oom_kills == Some(1),
    );
}

/// The bomb runs for 3 s (stretched on a slow machine) while pids.current is
/// sampled, and on until it is held at pids.max and a process has reported
/// a refused fork (bounded); then the test stops the worker, as the pool
/// does at a deadline. On a loaded or emulated machine the bomb may take
/// longer than 3 s to reach the limit, and a refused process longer still
/// to report it.
async fn fork_bomb<K: Kind>(jail: &Jail<K>, checks: &mut Checks) {
    let mut probe = jail.worker().await;
    let (at_least, at_most) = (
        scaled(Duration::from_secs(3)),
        scaled(Duration::from_secs(60)),
    );
    let script = FORK_BOMB.replace("BOMB_S", &(2 * at_most.as_secs()).to_string());
    let max = probe.cgroup.counters().pids_max.unwrap_or(0);
    let reports = job_file(probe.pid, "/tmp/refused");
    let cgroup = &probe.cgroup;
    let mut most = 0;
    let started = Instant::now();
    let sample = async {
        loop {
            most = most.max(cgroup.pids_current().unwrap_or(0));
            let reported = std::fs::metadata(&reports).is_ok_and(|m| m.len() > 0);
            let held = max > 0 && most + 2 >= max;
            let ran = started.elapsed();
            if (ran >= at_least && held && reported) || ran >= at_most {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let bomb = job(&with_main(&script));
    tokio::select! {
        () = sample => {}
        // Every process of the bomb runs until killed: an answer is a failure.
        outcome = probe.worker.run(&bomb) => checks.context(format!("  fork bomb answered: {outcome:?}")),
    }
    let ran_for = started.elapsed();
    probe.run_time = ran_for;
    probe.worker.stop();
    let killed = Instant::now();
    // The mode learns the end (spawn: nsjail, reaped; fork: the zygote's
    // report), as a worker's reap does; a zombie stays charged to pids.current.
    let status = probe.ended(scaled(Duration::from_secs(60))).await;
    let emptied = wait_until(scaled(Duration::from_secs(60)), || probe.cgroup.is_empty())
        .await
        .map(|_| killed.elapsed());
    let done = probe.finish().await;
    let (ran, c) = (&done.ran, &done.counters);
    checks.context(ran.describe("fork bomb"));

    let mut errnos = std::collections::BTreeMap::<&str, usize>::new();
    for line in ran.stdout.lines() {
        if let Some((_, errno)) = line.rsplit_once(" refused ") {
            *errnos.entry(errno).or_default() += 1;
        }
    }
    let seen = errnos
        .iter()
        .map(|(e, n)| format!("{e} x{n}"))
        .collect::<Vec<_>>()
        .join(", ");
    let seen = if seen.is_empty() { "none".into() } else { seen };
    checks.info(format!(
        "fork bomb: killed after {} ms; most tasks seen {most}, pids.peak {}, pids.max {max}, \
         refused forks (pids.events max) {}; errnos the processes saw: {seen}",
        ran_for.as_millis(),
        shown(c.pids_peak),
        shown(c.pids_refused)
    ));
    checks.check(
        format!("a fork bomb is held at pids.max (most seen {most} of {max})"),
        max > 0 && most <= max && most + 2 >= max,
    );
    checks.check(
        format!(
            "the fork bomb's forks fail, and only with EAGAIN (seen: {seen}; pids.events max {})",
            shown(c.pids_refused)
        ),
        errnos.contains_key("EAGAIN") && errnos.len() == 1 && c.pids_refused >= Some(1),
    );
    checks.check(
        format!(
            "SIGKILL to the job's PID 1 empties its cgroup, pids.current 0 ({}; {status})",
            emptied.map_or("never".into(), |d| format!("{} ms", d.as_millis()))
        ),
        emptied.is_some(),
    );
}

async fn cpu_quota<K: Kind>(jail: &Jail<K>, checks: &mut Checks) {
    let done = jail.probe(CPU_BURNERS, answer_bound()).await;
    let (ran, c) = (&done.ran, &done.counters);
    checks.context(ran.describe("cpu burners"));
    let ratio: Option<f64> = ran
        .line("CPU")
        .rsplit_once("ratio=")
        .and_then(|(_, r)| r.parse().ok());
    // Throttling needs the burners to reach the quota, which other load on a
    // shared machine can prevent: a measurement, not a check.
    checks.info(format!(
        "2 burners for 2 s: {}; throttled in {} of {} periods",
        ran.line("CPU"),
        shown(c.cpu_throttled),
        shown(c.cpu_periods)
    ));
    // The kernel counts bandwidth periods (100 ms) only for a cgroup that has
    // a quota and runnable tasks: 2 s of burning is about 20 of them.
    checks.check(
        format!(
            "the kernel enforces a CPU quota on the burners' cgroup ({} bandwidth periods \
             counted, want >= 10)",
            shown(c.cpu_periods)
        ),
        c.cpu_periods >= Some(10),
    );
    checks.check(
        format!("2 CPU burners get at most ~1 CPU (ratio {})", shown(ratio)),
        ratio.is_some_and(|r| r <= 1.15),
    );
}
