//! Budgets: the kernel's per-user counters (queued signals, processes,
//! POSIX message queues) are kept per (user namespace, uid) and checked at
//! every level up the chain of namespaces. Two jobs at once: the first holds
//! every queued signal, process and message queue it can get, the second
//! must still queue a signal and fork. The control runs a runner copy
//! without the jobs' own limits (`JOB_RLIMITS`): there the second job's
//! signal must be refused, or these checks could not see a shared budget.

use std::path::PathBuf;
use std::time::Duration;

use pyexec_worker::Worker;

use crate::common::{job, scaled};
use crate::harness::{
    answer_bound, job_file, wait_until, with_main, Checks, Jail, Kind, Ran, Scratch,
};

const HOLD: &str = include_str!("../probes/budget_hold.py");
const PROBE: &str = include_str!("../probes/budget_probe.py");

/// The jobs' own limits, as `python/confine.py` sets them.
const SIGPENDING: &str = "256";

/// One mode's budgets section at a time: the control's holder (no limits of
/// its own) fills the count its host uid shares with every jail of either
/// mode, so the other mode's holder, run at the same moment, would find no
/// signal left to queue (seen in CI: "queued 0").
static ONE_MODE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub async fn budgets<K: Kind>(jail: &Jail<K>, checks: &mut Checks) {
    let _alone = ONE_MODE_AT_A_TIME.lock().await;
    checks.section("budgets");
    let scratch = Scratch::new(&format!("budgets-{}", K::NAME));
    let shared = scratch.runner_with(
        "shared-budgets",
        "JOB_RLIMITS = {",
        "\n\n# The test's control: no limits of the job's own.\nJOB_RLIMITS = {}\n",
    );

    let (a, b, held) = pair(jail).await;
    checks.context(a.describe("budgets: holder"));
    checks.context(b.describe("budgets: second"));
    checks.check("budgets: the first job got to its HOLD line", held);
    checks.check("budgets: the second job answered", b.answered());
    checks.info(format!(
        "budgets: the first job's hard limits [sigpending, msgqueue, nproc] {}; it queued {} \
         signals, forked {} children, opened {} message queues",
        a.line("LIMITS"),
        a.line("QUEUED"),
        a.line("FORKS"),
        a.line("MQ")
    ));
    checks.check(
        format!(
            "budgets: a job queues at most its own {SIGPENDING} signals ({})",
            a.line("QUEUED")
        ),
        a.line("QUEUED").split(' ').next() == Some(SIGPENDING),
    );
    checks.check(
        format!(
            "budgets: POSIX message queues are refused (ENOSYS; RLIMIT_MSGQUEUE 0 besides): {}",
            a.line("MQ")
        ),
        a.has("MQ 0 ENOSYS"),
    );
    checks.check(
        format!(
            "budgets: while another job holds all it can, a job still queues a signal ({}) and \
             forks ({})",
            b.line("SIGQUEUE"),
            b.line("FORK")
        ),
        b.has("SIGQUEUE OK") && b.has("FORK OK"),
    );
    checks.check(
        format!(
            "budgets: ... and is refused a message queue like every job ({})",
            b.line("MQ")
        ),
        b.has("MQ ENOSYS"),
    );

    let control = control::<K>(shared).await;
    let (a, b, held) = pair(&control).await;
    control.close().await;
    checks.context(a.describe("budgets (control): holder"));
    checks.context(b.describe("budgets (control): second"));
    checks.check(
        format!(
            "budgets (control: no limits of the job's own): the first job held ({} signals \
             queued) and the second answered",
            a.line("QUEUED")
        ),
        held && b.answered(),
    );
    checks.check(
        format!(
            "budgets (control): the second job's sigqueue fails ({}), so the check above can \
             see a shared budget",
            b.line("SIGQUEUE")
        ),
        b.has("SIGQUEUE EAGAIN"),
    );
    checks.info(format!(
        "budgets (control): the second job still forks ({}): each job's processes are counted \
         in a user namespace of its own (spawn: the jail's; fork: the child's), so its \
         RLIMIT_NPROC of 40 is its own",
        b.line("FORK")
    ));
    let sysctl = |path: &str| {
        std::fs::read_to_string(path)
            .map(|t| t.trim().to_string())
            .unwrap_or_else(|_| "?".into())
    };
    checks.info(format!(
        "budgets: per host uid, which no user namespace splits: inotify instances \
         (fs.inotify.max_user_instances {}; refused to jobs), pipe buffers \
         (fs.pipe-user-pages-soft {} pages; F_SETPIPE_SZ refused), epoll watches \
         (fs.epoll.max_user_watches {}; each job's memory cgroup bounds its own)",
        sysctl("/proc/sys/fs/inotify/max_user_instances"),
        sysctl("/proc/sys/fs/pipe-user-pages-soft"),
        sysctl("/proc/sys/fs/epoll/max_user_watches")
    ));
}

async fn control<K: Kind>(runner: PathBuf) -> Jail<K> {
    Jail::<K>::start("budgets-control", |config| config.runner_dir = runner).await
}

/// The holder and the second job on two workers of `jail`, the second run
/// once the first holds; whether it did.
async fn pair<K: Kind>(jail: &Jail<K>) -> (Ran, Ran, bool) {
    let hold = scaled(Duration::from_secs(20)).as_secs().to_string();
    let script_a = job(&with_main(&HOLD.replace("HOLD_S", &hold)));
    let script_b = job(&with_main(PROBE));
    let mut a = jail.worker().await;
    let mut b = jail.worker().await;
    let holding = job_file(a.pid, "/tmp/budget-hold");
    let b_side = async {
        let held = wait_until(answer_bound(), || holding.exists()).await;
        let outcome = tokio::time::timeout(answer_bound(), b.worker.run(&script_b)).await;
        (held, outcome)
    };
    // The holder runs until the second job is done (it holds far longer).
    let (held, b_outcome) = tokio::select! {
        _ = a.worker.run(&script_a) => (None, None),
        (held, b_outcome) = b_side => (held, Some(b_outcome)),
    };
    b.outcome = b_outcome
        .and_then(Result::ok)
        .map(|r| r.map(|r| r.result.get().to_string()));
    let (a, b) = (a.finish().await.ran, b.finish().await.ran);
    let held = held.is_some() && a.has("HOLD");
    (a, b, held)
}
