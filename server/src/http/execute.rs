//! `POST /execute`: check and read the request, run the script on a leased
//! worker, answer its result and output (or its failure), and log one line
//! per job.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::{Body as _, Incoming};
use hyper::header::CONTENT_TYPE;
use hyper::{HeaderMap, Request, Response, StatusCode};
use pyexec_worker::{Job, Sandbox};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::script_output::{millis, ScriptOutput};
use super::{json_response, Body};
use crate::kind::Kind;
use crate::state::{AppState, Limits};

#[derive(Serialize)]
struct Success<'a> {
    /// Passed through as the runner wrote it, never re-parsed.
    result: &'a RawValue,
    #[serde(flatten)]
    output: &'a ScriptOutput,
}

/// From a shutdown's signal on, a new request is refused with
/// `shutting_down`. At the end of its grace period, one still reading its
/// body, queued or running is answered the same way; a running job is stopped
/// by its lease's drop.
pub async fn handle<S: Sandbox>(
    state: &AppState<S>,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    if state.drain.is_draining() {
        return Err(ApiError::shutting_down());
    }
    let job_started = AtomicBool::new(false);
    match state
        .drain
        .unless_aborted(execute(state, request, &job_started))
        .await
    {
        Some(answer) => answer,
        None if job_started.load(Ordering::Relaxed) => Err(ApiError::cut_off_by_shutdown()),
        None => Err(ApiError::shutting_down()),
    }
}

async fn execute<S: Sandbox>(
    state: &AppState<S>,
    request: Request<Incoming>,
    job_started: &AtomicBool,
) -> Result<Response<Body>, ApiError> {
    check_content_type(request.headers())?;
    let limits = &state.limits;
    // A client that trickles its body would otherwise hold its connection
    // (and what it sent so far) for as long as it likes.
    let body = tokio::time::timeout(limits.body_timeout, read_body(request.into_body(), limits))
        .await
        .map_err(|_| ApiError::request_timeout(limits))??;
    let Script {
        text: script,
        chars: script_chars,
    } = parse_script(&body, &state.limits)?;
    drop(body);
    let script_sha256 = hex(&Sha256::digest(script.as_bytes()));

    let asked = Instant::now();
    let lease = state
        .pool
        .checkout()
        .await
        .map_err(ApiError::from_checkout)?;
    let queue_wait = asked.elapsed();
    let worker_id = lease.worker_id();
    job_started.store(true, Ordering::Relaxed);

    // If the client goes away, hyper drops this future (and so does the
    // shutdown at the end of its grace): the lease's drop stops the worker,
    // and this guard leaves a line in the log saying so.
    let mut abandoned = AbandonedJob {
        worker_id,
        armed: true,
    };
    let job = Job {
        script,
        max_result_bytes: state.limits.max_result_bytes,
    };
    let report = lease.run(&job).await;
    abandoned.armed = false;

    let output = ScriptOutput::of(&report);
    let outcome = Kind::outcome_of(&report.outcome);
    // Never the script or its output: only what identifies and measures it.
    tracing::info!(
        outcome,
        queue_wait_ms = millis(queue_wait),
        run_ms = output.duration_ms,
        worker_id = report.worker_id,
        script_chars,
        script_sha256 = %script_sha256,
        stdout_bytes = report.stdout.bytes.len(),
        stdout_truncated = report.stdout.truncated,
        stderr_bytes = report.stderr.bytes.len(),
        stderr_truncated = report.stderr.truncated,
        "job finished"
    );

    match report.outcome {
        Ok(result) => Ok(json_response(
            StatusCode::OK,
            &Success {
                result: &result,
                output: &output,
            },
        )),
        Err(failure) => Err(ApiError::from_failure(failure, output, &state.limits)),
    }
}

struct AbandonedJob {
    worker_id: u64,
    armed: bool,
}

impl Drop for AbandonedJob {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        tracing::warn!(
            worker_id = self.worker_id,
            "the request ended before its job finished (client gone, or aborted at shutdown); the worker was stopped"
        );
    }
}

/// Accepts `application/json`, with parameters; a charset other than UTF-8
/// is refused because JSON on the wire is UTF-8 (RFC 8259).
fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let value = headers
        .get(CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("(not text)"));
    match value {
        Some(value) if is_json(value) => Ok(()),
        Some(value) => Err(ApiError::new(
            Kind::UnsupportedMediaType,
            format!(
                "the body must be sent as Content-Type: application/json (UTF-8), not {:?}",
                value.chars().take(100).collect::<String>()
            ),
        )),
        None => Err(ApiError::new(
            Kind::UnsupportedMediaType,
            "the request has no Content-Type; send the body as application/json",
        )),
    }
}

pub fn is_json(content_type: &str) -> bool {
    let mut parts = content_type.split(';');
    let essence = parts.next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return false;
    }
    parts.all(|param| match param.split_once('=') {
        Some((name, value)) if name.trim().eq_ignore_ascii_case("charset") => {
            let charset = value.trim().trim_matches('"');
            charset.eq_ignore_ascii_case("utf-8") || charset.eq_ignore_ascii_case("utf8")
        }
        _ => true,
    })
}

/// Reads the body under the cap: a declared length over it is refused before
/// reading anything, a streamed (chunked) body as soon as it passes it.
async fn read_body(body: Incoming, limits: &Limits) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            Kind::ScriptTooLarge,
            format!(
                "the request body is over {} bytes, too large to hold a script of at most {} characters",
                limits.max_body_bytes, limits.max_script_chars
            ),
        )
    };
    if body.size_hint().lower() > limits.max_body_bytes as u64 {
        return Err(too_large());
    }
    match Limited::new(body, limits.max_body_bytes).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => Err(too_large()),
        Err(error) => Err(ApiError::invalid_request(format!(
            "the request body could not be read: {error}"
        ))),
    }
}

/// A script from a request, with its length in characters (counted once: the
/// limit and the job log line both need it).
#[derive(Debug, PartialEq, Eq)]
pub struct Script {
    pub text: String,
    pub chars: usize,
}

/// The script out of `{"script": "..."}`. Other fields are refused: the API
/// has one field, and silently ignoring one a client believes does something
/// (a per-request timeout, arguments) would hide its bug.
pub fn parse_script(body: &[u8], limits: &Limits) -> Result<Script, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid_request(format!("the body is not valid JSON: {e}")))?;
    let Value::Object(mut fields) = value else {
        return Err(ApiError::invalid_request(format!(
            "the body must be a JSON object like {{\"script\": \"...\"}}, not {}",
            type_name(&value)
        )));
    };
    if let Some(extra) = fields.keys().find(|k| *k != "script") {
        let shown: String = extra.chars().take(50).collect();
        return Err(ApiError::invalid_request(format!(
            "unknown field {shown:?}: the body's only field is \"script\""
        )));
    }
    let script = match fields.remove("script") {
        Some(Value::String(script)) => script,
        Some(other) => {
            return Err(ApiError::invalid_request(format!(
                "\"script\" must be a string of Python source, not {}",
                type_name(&other)
            )))
        }
        None => {
            return Err(ApiError::invalid_request(
                "the body has no \"script\" field",
            ))
        }
    };
    if script.trim().is_empty() {
        return Err(ApiError::invalid_request(
            "\"script\" is empty; send Python source that defines main()",
        ));
    }
    let chars = script.chars().count();
    if chars > limits.max_script_chars {
        return Err(ApiError::new(
            Kind::ScriptTooLarge,
            format!(
                "the script has {chars} characters; the limit is {}",
                limits.max_script_chars
            ),
        ));
    }
    Ok(Script {
        text: script,
        chars,
    })
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;
    use std::time::Duration;

    fn limits() -> Limits {
        Limits {
            max_script_chars: 10,
            max_body_bytes: 1000,
            body_timeout: Duration::from_secs(10),
            max_result_bytes: 1000,
            timeout: Duration::from_secs(10),
            memory_mb: 256,
        }
    }

    #[test]
    fn content_types() {
        for ok in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/json;charset=\"UTF-8\"",
            "application/json; foo=bar",
        ] {
            assert!(is_json(ok), "{ok}");
        }
        for bad in [
            "",
            "text/plain",
            "application/jsonx",
            "application/x-www-form-urlencoded",
            "application/json; charset=latin1",
            "multipart/form-data; boundary=x",
        ] {
            assert!(!is_json(bad), "{bad}");
        }
        let mut headers = HeaderMap::new();
        assert_eq!(
            check_content_type(&headers).unwrap_err().kind,
            Kind::UnsupportedMediaType
        );
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert_eq!(check_content_type(&headers).unwrap_err().status(), 415);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        assert!(check_content_type(&headers).is_ok());
    }

    #[test]
    fn scripts() {
        let parse = |body: &str| parse_script(body.as_bytes(), &limits());
        assert_eq!(parse(r#"{"script": "x = 1"}"#).unwrap().text, "x = 1");
        // Ten characters but more bytes: the limit counts characters.
        assert_eq!(parse(r#"{"script": "ééééééé€€€"}"#).unwrap().chars, 10);
        for (body, kind, says) in [
            ("not json", Kind::InvalidRequest, "not valid JSON"),
            ("[1]", Kind::InvalidRequest, "an array"),
            ("{}", Kind::InvalidRequest, "no \"script\""),
            (r#"{"script": 5}"#, Kind::InvalidRequest, "a number"),
            (r#"{"script": null}"#, Kind::InvalidRequest, "null"),
            (r#"{"script": ""}"#, Kind::InvalidRequest, "empty"),
            (r#"{"script": " \n\t"}"#, Kind::InvalidRequest, "empty"),
            (
                r#"{"script": "x=1", "timeout": 3}"#,
                Kind::InvalidRequest,
                "\"timeout\"",
            ),
            (
                r#"{"script": "12345678901"}"#,
                Kind::ScriptTooLarge,
                "11 characters",
            ),
        ] {
            let error = parse(body).unwrap_err();
            assert_eq!(error.kind, kind, "{body}");
            assert!(error.message.contains(says), "{body}: {}", error.message);
        }
    }

    #[test]
    fn sha256_hex() {
        assert_eq!(
            hex(&Sha256::digest(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(millis(Duration::from_micros(1234)), 1.234);
    }
}
