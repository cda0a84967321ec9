//! Routing by `(method, path)`, and what every request gets whatever its
//! route: a request id, a span carrying it (and the trace) into every log
//! line, the `X-Request-Id` header, and the HTTP metrics.

use std::convert::Infallible;
use std::time::Instant;

use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response};
use pyexec_worker::Sandbox;
use tracing::field::Empty;
use tracing::Instrument;

use super::error::{ratelimit_headers, ApiError};
use super::{execute, health, info, openapi, playground, snippets, usage, Body};
use crate::callers::Caller;
use crate::kind::Kind;
use crate::request_id;
use crate::state::AppState;
use crate::trace_context::TraceContext;

/// The routes, with the methods each allows; a `{name}` segment stands for any
/// one non-empty segment. Their paths are the only values of the metrics'
/// `route` label, besides `unmatched`.
const ROUTES: &[(&str, &str)] = &[
    ("/execute", "POST"),
    ("/v1/info", "GET, HEAD"),
    ("/v1/usage", "GET, HEAD"),
    ("/v1/snippets", "POST"),
    ("/v1/snippets/{id}", "GET, HEAD, DELETE"),
    ("/healthz", "GET, HEAD"),
    ("/readyz", "GET, HEAD"),
    ("/metrics", "GET, HEAD"),
    ("/openapi.json", "GET, HEAD"),
    ("/", "GET, HEAD"),
    ("/s/{id}", "GET, HEAD"),
    ("/assets/{file}", "GET, HEAD"),
];

/// The paths served, for the test that the OpenAPI document describes each.
pub fn route_paths() -> impl Iterator<Item = &'static str> {
    ROUTES.iter().map(|(path, _)| *path)
}

fn route_label(path: &str) -> &'static str {
    ROUTES
        .iter()
        .find(|(route, _)| matches_route(route, path))
        .map_or("unmatched", |(route, _)| route)
}

fn matches_route(route: &str, path: &str) -> bool {
    route.split('/').count() == path.split('/').count()
        && route.split('/').zip(path.split('/')).all(|(want, got)| {
            if want.starts_with('{') && want.ends_with('}') {
                !got.is_empty()
            } else {
                want == got
            }
        })
}

/// hyper's service function. Never fails: an error from hyper's point of view
/// would close the connection instead of answering.
pub async fn serve<S: Sandbox>(
    state: &AppState<S>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let request_id = state.request_ids.for_request(request.headers());
    // At ERROR level so the span, and with it the request id on every line,
    // survives any PYEXEC_LOG_LEVEL.
    let span = tracing::error_span!(
        "request",
        request_id = %request_id,
        trace = Empty,
        span_id = Empty,
        trace_sampled = Empty
    );
    if let (Some(project), Some(trace)) = (
        &state.gcp_project,
        TraceContext::from_headers(request.headers()),
    ) {
        span.record("trace", trace.log_field(project));
        if !trace.span_id.is_empty() {
            span.record("span_id", trace.span_id.as_str());
        }
        span.record("trace_sampled", trace.sampled);
    }
    let method = request.method().clone();
    let route = route_label(request.uri().path());

    let result = dispatch(state, request).instrument(span.clone()).await;
    let mut response = match result {
        Ok(response) => response,
        Err(error) => {
            let _entered = span.enter();
            log_error(&error);
            if error.is_rejection() {
                state
                    .metrics
                    .rejected
                    .with_label_values(&[error.kind.as_str()])
                    .inc();
            }
            error.into_response()
        }
    };
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(request_id::HEADER, value);
    }

    let status = response.status();
    let elapsed = started.elapsed();
    state
        .metrics
        .http_requests
        .with_label_values(&[route, status.as_str()])
        .inc();
    state
        .metrics
        .http_duration
        .with_label_values(&[route])
        .observe(elapsed.as_secs_f64());
    span.in_scope(|| {
        tracing::debug!(
            method = %method,
            route,
            status = status.as_u16(),
            duration_ms = elapsed.as_secs_f64() * 1e3,
            "request answered"
        )
    });
    Ok(response)
}

async fn dispatch<S: Sandbox>(
    state: &AppState<S>,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let path = request.uri().path().to_owned();
    let path = path.as_str();
    match (request.method(), route_label(path)) {
        (&Method::POST, "/execute") => {
            let caller = authenticate(state, &request).await?;
            answered_as(&caller, execute::handle(state, request, &caller).await)
        }
        (&Method::GET | &Method::HEAD, "/v1/info") => Ok(info::handle(state)),
        (&Method::GET | &Method::HEAD, "/v1/usage") => {
            let caller = authenticate(state, &request).await?;
            answered_as(&caller, usage::handle(state, &caller).await)
        }
        (&Method::POST, "/v1/snippets") => {
            let caller = authenticate(state, &request).await?;
            answered_as(&caller, snippets::create(state, request, &caller).await)
        }
        (&Method::GET | &Method::HEAD, "/v1/snippets/{id}") => {
            snippets::read(state, &path["/v1/snippets/".len()..]).await
        }
        (&Method::DELETE, "/v1/snippets/{id}") => {
            let caller = authenticate(state, &request).await?;
            let id = &path["/v1/snippets/".len()..];
            answered_as(&caller, snippets::delete(state, id, &caller).await)
        }
        (&Method::GET | &Method::HEAD, "/healthz") => Ok(health::healthz()),
        (&Method::GET | &Method::HEAD, "/readyz") => Ok(health::readyz(state)),
        (&Method::GET | &Method::HEAD, "/metrics") => health::metrics(state),
        (&Method::GET | &Method::HEAD, "/openapi.json") => Ok(openapi::openapi()),
        (&Method::GET | &Method::HEAD, "/" | "/s/{id}") => Ok(playground::page(request.headers())),
        (&Method::GET | &Method::HEAD, "/assets/{file}") => {
            playground::asset(&path["/assets/".len()..], request.headers())
        }
        (method, route) => match ROUTES.iter().find(|(known, _)| *known == route) {
            Some((_, allow)) => Err(ApiError::method_not_allowed(method, path, allow)),
            None => Err(ApiError::not_found(path)),
        },
    }
}

/// Who sent `request`: a refusal (401, 429 rate_limited, 503) if nobody
/// the server accepts.
async fn authenticate<S: Sandbox>(
    state: &AppState<S>,
    request: &Request<Incoming>,
) -> Result<Caller, ApiError> {
    state
        .callers
        .authenticate(request.headers())
        .await
        .map_err(|refusal| ApiError::from_refusal(&refusal))
}

/// A key's answer, whatever it is, says where the key stands against its
/// limits (`RateLimit-Policy`, `RateLimit`).
fn answered_as(
    caller: &Caller,
    answer: Result<Response<Body>, ApiError>,
) -> Result<Response<Body>, ApiError> {
    let Some(fields) = caller.ratelimit_fields() else {
        return answer;
    };
    let headers = ratelimit_headers(&fields);
    match answer {
        Ok(mut response) => {
            for (name, value) in headers {
                response.headers_mut().insert(name, value);
            }
            Ok(response)
        }
        Err(mut error) => {
            error.headers.extend(headers);
            Err(error)
        }
    }
}

/// A refused request at info; our own faults at error level with their
/// detail; a job's failure is already in its "job finished" line, and a job
/// cut off by the shutdown in the line its request's end leaves.
fn log_error(error: &ApiError) {
    let kind = error.kind.as_str();
    let detail = error.detail.as_deref().unwrap_or("");
    if error.is_rejection() {
        tracing::info!(kind, detail, "request refused: {}", error.message);
    } else if error.status().is_server_error() && error.kind != Kind::ShuttingDown {
        tracing::error!(kind, detail, "request failed: {}", error.message);
    } else if !error.job_ran {
        tracing::debug!(kind, "request refused: {}", error.message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_labels_are_a_fixed_set() {
        assert_eq!(route_label("/execute"), "/execute");
        assert_eq!(route_label("/metrics"), "/metrics");
        assert_eq!(route_label("/execute/"), "unmatched");
        assert_eq!(route_label("/random/path/123"), "unmatched");
        assert_eq!(route_label("/"), "/");
        assert_eq!(route_label("/s/9fQx-2_a"), "/s/{id}");
        assert_eq!(route_label("/assets/app.0123abcd.js"), "/assets/{file}");
        assert_eq!(route_label("/s/"), "unmatched");
        assert_eq!(route_label("/s/a/b"), "unmatched");
        assert_eq!(route_label("/assets"), "unmatched");
    }
}
