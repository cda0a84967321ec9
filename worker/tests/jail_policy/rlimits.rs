//! rlimits: the descriptor and address-space limits reached from inside, and
//! the CPU-time backstop killing a spinning job with SIGKILL.

use std::time::Duration;

use pyexec_worker::{JobFailure, Sandbox};

use crate::common::scaled;
use crate::harness::{alive, answer_bound, is_fork, shown, Checks, Jail, Kind, SIGKILLED};

const LIMITS: &str = include_str!("../probes/limits.py");
const SPIN: &str = include_str!("../probes/cpu_kill.py");
const KILL_LOGGED: &str = "terminated with signal: SIGKILL (9)";

pub async fn rlimits<K: Kind>(jail: &Jail<K>, checks: &mut Checks) {
    checks.section("rlimits");
    let done = jail.probe(LIMITS, answer_bound()).await;
    let ran = &done.ran;
    checks.context(ran.describe("limits"));
    checks.check("the limits probe answered", ran.answered());
    checks.check(
        format!(
            "open() fails with EMFILE once fd 127 is taken (nofile 128; {})",
            ran.line("NOFILE")
        ),
        ran.has("NOFILE 127 EMFILE"),
    );
    checks.check(
        format!(
            "a 2 GiB allocation fails with MemoryError (address space 1 GiB), no OOM kill \
             (oom_kill {})",
            shown(done.counters.oom_kills)
        ),
        ran.has("ALLOC MemoryError") && done.counters.oom_kills == Some(0),
    );

    // The CPU-time backstop. Spawn mode's limit is nsjail's --rlimit_cpu,
    // whose counter also pays for the interpreter's start and imports: 0.25
    // CPU-s here, 4 to 17 under emulation depending on the host's load. So
    // the limit is 3 x what the limits job's worker took to warm up, plus 1 s
    // (2 s here). Fork mode's zygote has none (inf); each child sets its
    // own, counted from its fork: 1 s.
    let warm_up = done.before.cpu_used;
    let cpu_limit = if is_fork::<K>() {
        1
    } else {
        let warm_up = warm_up.unwrap_or(Duration::from_secs(1)).as_secs_f64();
        (3.0 * warm_up + 1.0).ceil() as u64
    };
    let cpu_jail = Jail::<K>::start("rlimits-cpu", |c| c.limits.cpu_seconds = cpu_limit).await;
    let zygote = cpu_jail.zygote_pid();
    let mut probe = cpu_jail.worker().await;
    let bound = scaled(Duration::from_secs(20 * cpu_limit));
    probe.run(SPIN, bound).await;
    let status = match &probe.outcome {
        Some(Err(JobFailure::Exited { status })) => status.clone(),
        other => format!("{other:?}"),
    };
    let run_time = probe.run_time;
    let log = probe
        .launcher_log(answer_bound(), |log| log.contains(KILL_LOGGED))
        .await;
    let done = probe.finish().await;
    checks.context(done.ran.describe("cpu kill"));
    checks.info(format!(
        "a worker's CPU time when ready: {}",
        warm_up.map_or("?".into(), |d| format!("{} ms", d.as_millis()))
    ));
    checks.check(
        format!(
            "a CPU-time limit of {cpu_limit} s kills the job with SIGKILL (soft = hard; \
             {status} after {} ms)",
            run_time.as_millis()
        ),
        status == SIGKILLED && run_time < scaled(Duration::from_secs(10 * cpu_limit)),
    );
    if is_fork::<K>() {
        let after = cpu_jail.zygote_pid();
        checks.check(
            format!(
                "the zygote outlives its child's CPU-time kill (its own limit is inf; pid {} \
                 then {})",
                shown(zygote),
                shown(after)
            ),
            zygote.is_some()
                && after == zygote
                && zygote.is_some_and(alive)
                && cpu_jail.sandbox.health().is_ok(),
        );
    } else {
        checks.context(format!("  cpu kill, nsjail's log:\n{log}"));
        checks.check(
            format!(
                "the CPU-time kill: {status} (rc 137) and 'terminated with signal: SIGKILL (9)'"
            ),
            status == SIGKILLED && log.contains(KILL_LOGGED),
        );
    }
    cpu_jail.close().await;
}
