//! The shutdown signal: SIGTERM (Cloud Run, Kubernetes, systemd) or SIGINT
//! (a terminal). What happens after it is in [`crate::run`]: stop accepting,
//! drain with a deadline, stop the pool.

use tokio::signal::unix::{signal, SignalKind};

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
