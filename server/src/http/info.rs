//! `GET /v1/info`: what a client (the playground) needs to know before it
//! sends anything: the version, whether keys are required, the isolation
//! mode and the server's limits. Needs no key.

use hyper::{Response, StatusCode};
use serde::Serialize;

use super::{json_response, Body};
use crate::state::AppState;
use pyexec_worker::Sandbox;

#[derive(Serialize)]
struct Info<'a> {
    version: &'a str,
    /// `none` or `keys`.
    auth: &'a str,
    isolation: &'a str,
    limits: InfoLimits,
}

#[derive(Serialize)]
struct InfoLimits {
    timeout_s: f64,
    memory_mb: u64,
    max_script_chars: usize,
    max_input_bytes: usize,
}

pub fn handle<S: Sandbox>(state: &AppState<S>) -> Response<Body> {
    let limits = &state.limits;
    json_response(
        StatusCode::OK,
        &Info {
            version: env!("CARGO_PKG_VERSION"),
            auth: state.callers.auth().as_str(),
            isolation: state.isolation.as_str(),
            limits: InfoLimits {
                timeout_s: limits.timeout.as_secs_f64(),
                memory_mb: limits.memory_mb,
                max_script_chars: limits.max_script_chars,
                max_input_bytes: limits.max_input_bytes,
            },
        },
    )
}
