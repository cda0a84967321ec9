//! Where one worker's life spends its time, phase by phase, for the server
//! to export: the sandboxes time each phase on the monotonic clock and hand
//! the durations to a [`PhaseObserver`], if one is installed.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// A phase of a worker's life, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The server makes the worker's cgroup and writes its limits.
    CgroupMake,
    /// Fork mode: the zygote is asked for a child until it answers with its pid.
    Fork,
    /// The job process sets up its sandbox until it reports ready (fork
    /// mode: from the zygote's answer; spawn mode: from the jail's launch).
    Setup,
    /// Fork mode: the child is held by a pidfd, checked, moved into its
    /// cgroup, and its user namespace's ids mapped.
    CgroupMove,
    /// The job's own limits are written and its usage meter started.
    CgroupLimits,
    /// The job, sent to answered.
    Job,
    /// The job's usage read from its cgroup.
    CgroupUsage,
    /// The job process is killed until its end is known (fork mode: the
    /// zygote reaped it).
    Exit,
    /// The worker's cgroup is removed.
    CgroupRemove,
}

impl Phase {
    pub const ALL: [Phase; 9] = [
        Phase::CgroupMake,
        Phase::Fork,
        Phase::Setup,
        Phase::CgroupMove,
        Phase::CgroupLimits,
        Phase::Job,
        Phase::CgroupUsage,
        Phase::Exit,
        Phase::CgroupRemove,
    ];

    /// Its label value in metrics.
    pub fn name(self) -> &'static str {
        match self {
            Phase::CgroupMake => "cgroup_make",
            Phase::Fork => "fork",
            Phase::Setup => "setup",
            Phase::CgroupMove => "cgroup_move",
            Phase::CgroupLimits => "cgroup_limits",
            Phase::Job => "job",
            Phase::CgroupUsage => "cgroup_usage",
            Phase::Exit => "exit",
            Phase::CgroupRemove => "cgroup_remove",
        }
    }
}

/// Told how long each phase took. Called on the pool's tasks: keep it quick.
pub trait PhaseObserver: Send + Sync + 'static {
    fn phase(&self, phase: Phase, took: Duration);
}

/// A sandbox's handle on its observer, shared by every worker it makes; the
/// observer can be installed after the sandbox has started.
#[derive(Clone, Default)]
pub(crate) struct PhaseClock {
    observer: Arc<OnceLock<Arc<dyn PhaseObserver>>>,
}

impl PhaseClock {
    /// Installs `observer`; a second one is ignored.
    pub(crate) fn observe(&self, observer: Arc<dyn PhaseObserver>) {
        let _ = self.observer.set(observer);
    }

    /// Records `phase` as having taken from `started` until now.
    pub(crate) fn since(&self, phase: Phase, started: Instant) {
        if let Some(observer) = self.observer.get() {
            observer.phase(phase, started.elapsed());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Seen(Mutex<Vec<Phase>>);
    impl PhaseObserver for Seen {
        fn phase(&self, phase: Phase, _took: Duration) {
            self.0.lock().unwrap().push(phase);
        }
    }

    #[test]
    fn clones_made_before_the_observer_report_to_it() {
        let clock = PhaseClock::default();
        let worker_clock = clock.clone();
        worker_clock.since(Phase::Job, Instant::now());
        let seen = Arc::new(Seen(Mutex::new(Vec::new())));
        clock.observe(seen.clone());
        worker_clock.since(Phase::Fork, Instant::now());
        assert_eq!(*seen.0.lock().unwrap(), vec![Phase::Fork]);
    }

    #[test]
    fn names_are_distinct() {
        let names: std::collections::HashSet<_> = Phase::ALL.iter().map(|p| p.name()).collect();
        assert_eq!(names.len(), Phase::ALL.len());
    }
}
