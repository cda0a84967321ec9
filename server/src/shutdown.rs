//! The shutdown: the signal that starts it (SIGTERM from Cloud Run,
//! Kubernetes or systemd; SIGINT from a terminal) and the [`Drain`] phases
//! the request handlers see. The timeline itself is in [`crate::run`].

use std::future::Future;

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// Completes at the first SIGTERM or SIGINT. If the handlers can't be
/// installed it never completes (the process can still be killed).
pub async fn signal_received() {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("could not install the SIGTERM/SIGINT handlers; shutdown will not drain");
        return std::future::pending().await;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "shutdown signal received");
}

/// Where a shutdown is: serving (neither phase begun), draining from the
/// signal on (not ready, no new jobs, in-flight requests finish), aborting
/// once the grace period is over (what still runs is answered and stopped).
#[derive(Default)]
pub struct Drain {
    draining: CancellationToken,
    aborting: CancellationToken,
}

impl Drain {
    pub fn new() -> Drain {
        Drain::default()
    }

    /// The signal came: stop taking new jobs.
    pub fn begin(&self) {
        self.draining.cancel();
    }

    pub fn is_draining(&self) -> bool {
        self.draining.is_cancelled()
    }

    /// Completes once draining has begun.
    pub async fn draining(&self) {
        self.draining.cancelled().await
    }

    /// The grace period is over: whatever still runs must answer now.
    pub fn abort(&self) {
        self.begin();
        self.aborting.cancel();
    }

    /// Runs `work` unless the abort comes first (then `None`, and `work` is
    /// dropped). An answer that is ready at the same moment wins.
    pub async fn unless_aborted<F: Future>(&self, work: F) -> Option<F::Output> {
        tokio::select! {
            biased;
            output = work => Some(output),
            _ = self.aborting.cancelled() => None,
        }
    }

    /// Completes once the abort has come.
    pub async fn aborted(&self) {
        self.aborting.cancelled().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn phases() {
        let drain = Drain::new();
        assert!(!drain.is_draining());
        assert_eq!(drain.unless_aborted(async { 1 }).await, Some(1));
        drain.begin();
        assert!(drain.is_draining());
        // Draining lets running work finish.
        assert_eq!(drain.unless_aborted(async { 2 }).await, Some(2));
        drain.abort();
        let never = std::future::pending::<()>();
        let cut = tokio::time::timeout(Duration::from_secs(1), drain.unless_aborted(never)).await;
        assert_eq!(cut, Ok(None));
        // What has its answer ready still gives it.
        assert_eq!(drain.unless_aborted(async { 3 }).await, Some(3));
    }
}
