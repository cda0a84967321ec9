//! pyexec's HTTP front end: runs untrusted Python scripts on a warm pool of
//! nsjail-jailed workers (the `pyexec-worker` crate) and answers over HTTP.
//!
//! ```text
//!  main ─▶ startup: Config::from_env → logging → Spawn/ForkSandbox + self-check
//!                   → AppState::start (Pool + PoolEvents) → bind → run
//!
//!  run: accept loop (≤ max_connections) ──▶ one task per connection (hyper http1)
//!                           └─▶ http::router::serve ─▶ (method, path)
//!                                 POST /execute  ─▶ http::execute: read, check,
//!                                                   pool.checkout → lease.run
//!                                 GET  /healthz /readyz /metrics ─▶ http::health
//!                                 GET  / /s/{id} /assets/{file} ─▶ http::playground
//!       shutdown signal ─▶ drain: /readyz 503, new jobs 503 shutting_down,
//!                                 in-flight requests finish (grace)
//!                          → abort the rest: answered 503 shutting_down
//!                            (dropping leases stops workers)
//!                          → pool.shutdown (bounded: grace + 1 s in all)
//! ```
//!
//! - [`config`]: the environment variables, read once; docs/configuration.md's table.
//! - [`startup`]: the start-up sequence of the real server.
//! - [`state`]: what the handlers share ([`AppState`]).
//! - [`http`]: routing, handlers, and [`http::error::ApiError`] (the status table).
//! - [`kind`]: what can come of a request, for answers, metrics and logs alike.
//! - [`metrics`], [`pool_events`]: Prometheus registry; pool and zygote events into it.
//! - [`readiness`]: the `/readyz` rule.
//! - [`logging`], [`request_id`], [`trace_context`]: log lines and what links them.
//! - [`shutdown`]: the signal that starts the drain, and its phases.

pub mod callers;
pub mod config;
pub mod http;
pub mod keys_cli;
pub mod kind;
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
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use pyexec_worker::Sandbox;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;

pub use state::AppState;

/// A client gets this long to send a request's head; then the connection is
/// closed (slow-loris protection; hyper's own default is the same).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Once the grace period is over, how long hyper gets to write the answers
/// the handlers give at once (503 `shutting_down`) before their connections
/// are dropped.
const ANSWER_FLUSH: Duration = Duration::from_millis(200);
/// How long a connection accepted before the signal, whose first request has
/// not been read yet, is given to send it: the client connected to send one,
/// and closing the connection unread would leave that request unanswered.
const FIRST_REQUEST_WAIT: Duration = Duration::from_millis(500);
/// How far past the grace period the pool's shutdown may run: the whole
/// shutdown, from the signal to the exit, must fit in the grace plus one
/// second (Cloud Run: 8 s + 1 s within its 10 s), and start-up's clean-up and
/// the runtime's exit need the rest.
const POOL_SHUTDOWN_OVERRUN: Duration = Duration::from_millis(700);

/// Serves `listener` until `shutdown` completes, then shuts down within
/// `state.shutdown_grace` + 1 s:
///
/// 1. the signal: `/readyz` answers 503 and a new `POST /execute` 503
///    `shutting_down`; the listener stays open so probes and clients get
///    those answers; idle keep-alive connections close, the others after
///    their current answer (one that has not sent its first request yet gets
///    [`FIRST_REQUEST_WAIT`] to send it, and its answer);
/// 2. once no connection is left, or the grace period is over: the listener
///    closes; requests still reading, queued or running are answered 503
///    `shutting_down` (a running job's lease is dropped, which stops its
///    worker) and their connections closed after [`ANSWER_FLUSH`];
/// 3. the pool shuts down (idle workers stopped, spawns and reaps awaited),
///    for at most [`POOL_SHUTDOWN_OVERRUN`] past the grace period, while the
///    usage of the jobs that ended is written to the store.
pub async fn run<S: Sandbox>(
    listener: TcpListener,
    state: Arc<AppState<S>>,
    shutdown: impl Future<Output = ()>,
) {
    let connections = TaskTracker::new();
    // One permit per open connection, taken before accepting: beyond the cap,
    // new connections wait in the kernel's backlog, not in a task each.
    let slots = Arc::new(Semaphore::new(state.max_connections));
    tokio::pin!(shutdown);

    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = accept(&listener, &slots) => {
                connections.spawn(serve_connection(accepted, state.clone()));
            }
        }
    }

    let signalled = Instant::now();
    state.drain.begin();
    connections.close();
    tracing::info!(
        connections = connections.len(),
        grace_s = state.shutdown_grace.as_secs_f64(),
        "draining: not ready, no new jobs; in-flight requests may finish"
    );
    let grace_over = tokio::time::sleep_until((signalled + state.shutdown_grace).into());
    tokio::pin!(grace_over);
    loop {
        tokio::select! {
            _ = connections.wait() => break,
            _ = &mut grace_over => {
                tracing::warn!(
                    connections = connections.len(),
                    "grace period over; answering and stopping what still runs"
                );
                state.drain.abort();
                break;
            }
            accepted = accept(&listener, &slots) => {
                connections.spawn(serve_connection(accepted, state.clone()));
            }
        }
    }
    drop(listener);
    // Each connection gives up by itself after ANSWER_FLUSH; this only waits.
    connections.wait().await;

    // The pool stops while the usage of the jobs that ended is written.
    let pool_deadline = signalled + state.shutdown_grace + POOL_SHUTDOWN_OVERRUN;
    let within = pool_deadline.saturating_duration_since(Instant::now());
    let (pool, _unwritten) = tokio::join!(
        tokio::time::timeout_at(pool_deadline.into(), state.pool.shutdown()),
        state.callers.close(within),
    );
    if pool.is_err() {
        tracing::warn!(
            "the pool did not stop within the shutdown deadline; exiting without waiting for it"
        );
        return;
    }
    tracing::info!("every worker stopped; shutdown complete");
}

/// The next connection, once a slot is free (the slot travels with it).
async fn accept(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
) -> (TcpStream, SocketAddr, OwnedSemaphorePermit) {
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            // The semaphore is never closed.
            return std::future::pending().await;
        };
        match listener.accept().await {
            Ok((stream, peer)) => {
                // Answers are small and latency matters more than packet count.
                let _ = stream.set_nodelay(true);
                return (stream, peer, slot);
            }
            Err(error) => {
                // Out of file descriptors and the like: pause rather than spin.
                tracing::warn!(error = %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// One connection, through the phases of a shutdown (see [`run`]).
async fn serve_connection<S: Sandbox>(
    (stream, peer, slot): (TcpStream, SocketAddr, OwnedSemaphorePermit),
    state: Arc<AppState<S>>,
) {
    let _slot = slot;
    // Accepted while draining: one answer (a 503, or /readyz), then close.
    let accepted_draining = state.drain.is_draining();
    let service_state = state.clone();
    // Holds a permit from the first request on.
    let request_seen = Arc::new(Notify::new());
    let request_signal = request_seen.clone();
    let service = service_fn(move |request| {
        request_signal.notify_one();
        let state = service_state.clone();
        async move { http::router::serve(&state, request).await }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(!accepted_draining)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    if !accepted_draining {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(peer = %peer, error = %error, "connection ended with an error");
                }
                return;
            }
            _ = state.drain.draining() => {}
        }
        // Nothing read yet: hyper would count the connection idle and close
        // it, though the client's request may be on its way or unread in
        // the socket.
        tokio::select! {
            _ = connection.as_mut() => return,
            _ = request_seen.notified() => {}
            _ = tokio::time::sleep(FIRST_REQUEST_WAIT) => {}
            _ = state.drain.aborted() => {}
        }
        // Finish the request in flight, then close (idle connections close at once).
        connection.as_mut().graceful_shutdown();
    }
    tokio::select! {
        _ = connection.as_mut() => return,
        _ = state.drain.aborted() => {}
    }
    // The handlers answer at once now; let hyper write that out.
    let _ = tokio::time::timeout(ANSWER_FLUSH, connection).await;
}
