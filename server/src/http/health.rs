//! `GET /healthz` (the process is up), `GET /readyz` (it can take jobs) and
//! `GET /metrics` (the Prometheus exposition).

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use pyexec_worker::Sandbox;
use serde::Serialize;

use super::error::ApiError;
use super::{json_response, Body};
use crate::state::AppState;

pub fn healthz() -> Response<Body> {
    json_response(StatusCode::OK, &serde_json::json!({ "status": "ok" }))
}

#[derive(Serialize)]
struct PoolView {
    target: usize,
    ready: usize,
    spawning: usize,
    busy: usize,
    waiting: usize,
}

#[derive(Serialize)]
struct ReadyBody {
    ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    pool: PoolView,
}

pub fn readyz<S: Sandbox>(state: &AppState<S>) -> Response<Body> {
    let status = state.pool.status();
    let verdict = state.readiness.check(
        &status,
        state.drain.is_draining(),
        state.pool.sandbox().health().map_err(|why| why.to_string()),
    );
    let body = ReadyBody {
        ready: verdict.is_ok(),
        reason: verdict.as_ref().err().cloned(),
        pool: PoolView {
            target: status.target,
            ready: status.ready,
            spawning: status.spawning,
            busy: status.busy,
            waiting: status.waiting,
        },
    };
    let code = if verdict.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(code, &body)
}

pub fn metrics<S: Sandbox>(state: &AppState<S>) -> Result<Response<Body>, ApiError> {
    state.metrics.observe_pool(&state.pool.status());
    observe_callers(state);
    let (text, content_type) = state
        .metrics
        .render()
        .map_err(|e| ApiError::internal(format!("rendering metrics: {e}")))?;
    let mut response = Response::new(Full::new(Bytes::from(text)));
    if let Ok(value) = HeaderValue::from_str(&content_type) {
        response.headers_mut().insert(CONTENT_TYPE, value);
    }
    Ok(response)
}

/// The store's and the meter's gauges, read at scrape time.
fn observe_callers<S: Sandbox>(state: &AppState<S>) {
    let callers = &state.callers;
    let metrics = &state.metrics;
    metrics
        .store_up
        .set(i64::from(callers.store().is_some() && callers.store_up()));
    if let Some(meter) = callers.meter() {
        metrics
            .usage_unwritten
            .set(i64::try_from(meter.pending_jobs()).unwrap_or(i64::MAX));
        let dropped = meter
            .counters
            .dropped_jobs
            .load(std::sync::atomic::Ordering::Relaxed);
        let counted = metrics.usage_dropped.get();
        if dropped > counted {
            metrics.usage_dropped.inc_by(dropped - counted);
        }
    }
}
