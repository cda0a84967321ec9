//! pyexec's HTTP front end: runs untrusted Python scripts on a warm pool of
//! nsjail-jailed workers (the `pyexec-worker` crate) and answers over HTTP.
//!
//! ```text
//!  main ─▶ startup: Config::from_env → logging → NsjailSandbox + self-check
//!                   → AppState::start (Pool + PoolEvents) → bind → run
//!
//!  run: accept loop (≤ max_connections) ──▶ one task per connection (hyper http1)
//!                           └─▶ http::router::serve ─▶ (method, path)
//!                                 POST /execute  ─▶ http::execute: read, check,
//!                                                   pool.checkout → lease.run
//!                                 GET  /healthz /readyz /metrics ─▶ http::health
//!       shutdown signal ─▶ stop accepting → drain connections (grace)
//!                          → abort the rest (dropping leases stops workers)
//!                          → pool.shutdown
//! ```
//!
//! - [`config`]: the environment variables, read once; the README table.
//! - [`startup`]: the start-up sequence of the real server.
//! - [`state`]: what the handlers share ([`AppState`]).
//! - [`http`]: routing, handlers, and [`http::error::ApiError`] (the status table).
//! - [`metrics`], [`pool_events`]: Prometheus registry; pool events into it.
//! - [`readiness`]: the `/readyz` rule.
//! - [`logging`], [`request_id`], [`trace_context`]: log lines and what links them.
//! - [`shutdown`]: the signal that starts the drain.

pub mod config;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod pool_events;
pub mod readiness;
pub mod request_id;
pub mod shutdown;
pub mod startup;
pub mod state;
pub mod trace_context;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use pyexec_worker::Sandbox;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use state::AppState;

/// A client gets this long to send a request's head; then the connection is
/// closed (slow-loris protection; hyper's own default is the same).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `listener` until `shutdown` completes, then drains: no new
/// connections, in-flight requests get `state.shutdown_grace` to finish, the
/// rest are aborted (their leases dropped, which stops their workers), and
/// the pool is shut down. Returns when every worker is gone.
pub async fn run<S: Sandbox>(
    listener: TcpListener,
    state: Arc<AppState<S>>,
    shutdown: impl Future<Output = ()>,
) {
    let drain = CancellationToken::new();
    let abort = CancellationToken::new();
    let connections = TaskTracker::new();
    // One permit per open connection, taken before accepting: beyond the cap,
    // new connections wait in the kernel's backlog, not in a task each.
    let slots = Arc::new(Semaphore::new(state.max_connections));
    tokio::pin!(shutdown);

    loop {
        let slot = tokio::select! {
            _ = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break, // never closed
            },
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Answers are small and latency matters more than packet count.
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let (drain, abort) = (drain.clone(), abort.clone());
        connections.spawn(async move {
            let _slot = slot;
            let service = service_fn(move |request| {
                let state = state.clone();
                async move { http::router::serve(&state, request).await }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(peer = %peer, error = %error, "connection ended with an error");
                    }
                    return;
                }
                _ = drain.cancelled() => {}
            }
            // Finish the request in flight, then close (idle connections close at once).
            connection.as_mut().graceful_shutdown();
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = abort.cancelled() => {}
            }
        });
    }

    drop(listener);
    state.readiness.start_draining();
    let in_flight = connections.len();
    tracing::info!(
        connections = in_flight,
        grace_s = state.shutdown_grace.as_secs_f64(),
        "stopped accepting; draining"
    );
    drain.cancel();
    connections.close();
    if tokio::time::timeout(state.shutdown_grace, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            connections = connections.len(),
            "grace period over; aborting the requests still running"
        );
        abort.cancel();
        connections.wait().await;
    }
    state.pool.shutdown().await;
    tracing::info!("every worker stopped; shutdown complete");
}
