//! `POST /execute`: check and read the request (script, input, limits), run
//! the script on a leased worker, answer its result, files and output (or
//! its failure), and log one line per job.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};
use hyper::header::CONTENT_TYPE;
use hyper::{HeaderMap, Request, Response, StatusCode};
use pyexec_worker::{Job, JobLimits, JobResult, OutputFile, Sandbox};
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
    /// `[]` when the script left none.
    files: &'a [OutputFile],
    files_truncated: bool,
    files_omitted: &'a [String],
}

/// The smallest `limits.memory_mb` a request may ask for: below it Python
/// itself can hardly start a job.
pub const MIN_MEMORY_MB: u64 = 16;
/// The shortest `limits.timeout_s` a request may ask for.
pub const MIN_TIMEOUT_S: f64 = 0.001;
/// How long a body declared too large is read to tell which field is at
/// fault, at most.
const PEEK_TIME: Duration = Duration::from_millis(200);

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
    let ExecuteRequest {
        script: Script {
            text: script,
            chars: script_chars,
        },
        input,
        limits: job_limits,
    } = parse_request(&body, &state.limits)?;
    // One copy of the input, as sent, for the job frame; the body goes.
    let input = input.map(ToOwned::to_owned);
    drop(body);
    let input_bytes = input.as_ref().map_or(0, |i| i.get().len());
    let script_sha256 = hex(&Sha256::digest(script.as_bytes()));

    let asked = Instant::now();
    let lease = state
        .pool
        .checkout(pyexec_worker::Caller::ANONYMOUS)
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
        input,
        limits: job_limits,
        max_result_bytes: state.limits.max_result_bytes,
        file_caps: state.limits.file_caps,
    };
    let report = lease.run(&job).await;
    abandoned.armed = false;

    let output = ScriptOutput::of(&report);
    let outcome = Kind::outcome_of(&report.outcome);
    let (files, files_bytes) = match &report.outcome {
        Ok(done) => (
            done.files.files.len(),
            done.files.files.iter().map(|f| f.size).sum::<u64>(),
        ),
        Err(_) => (0, 0),
    };
    // Never the script, its input or its output: only what identifies and
    // measures it.
    tracing::info!(
        outcome,
        queue_wait_ms = millis(queue_wait),
        run_ms = output.duration_ms,
        worker_id = report.worker_id,
        script_chars,
        script_sha256 = %script_sha256,
        input_bytes,
        timeout_s = output.limits.timeout_s,
        memory_mb = output.limits.memory_mb,
        cpu_ms = output.usage.cpu_ms,
        peak_memory_mb = output.usage.peak_memory_mb,
        files,
        files_bytes,
        stdout_bytes = report.stdout.bytes.len(),
        stdout_truncated = report.stdout.truncated,
        stderr_bytes = report.stderr.bytes.len(),
        stderr_truncated = report.stderr.truncated,
        "job finished"
    );

    match report.outcome {
        Ok(JobResult { result, files }) => Ok(json_response(
            StatusCode::OK,
            &Success {
                result: &result,
                output: &output,
                files: &files.files,
                files_truncated: files.truncated,
                files_omitted: &files.omitted,
            },
        )),
        Err(failure) => Err(ApiError::from_failure(failure, output)),
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

/// Reads the body under the cap: a declared length over it is refused after
/// a short look at its first bytes (to tell a script from an input that is
/// too large), a streamed (chunked) body as soon as it passes it. Neither is
/// ever read whole.
async fn read_body(mut body: Incoming, limits: &Limits) -> Result<Bytes, ApiError> {
    let cap = limits.max_body_bytes;
    let declared_over = body.size_hint().lower() > cap as u64;
    let mut collected = Vec::with_capacity(body.size_hint().lower().min(cap as u64) as usize);
    let peek_until = tokio::time::Instant::now() + PEEK_TIME;
    loop {
        let frame = if declared_over {
            match tokio::time::timeout_at(peek_until, body.frame()).await {
                Ok(frame) => frame,
                Err(_) => break,
            }
        } else {
            body.frame().await
        };
        let data = match frame {
            None => break,
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue, // trailers
            },
            Some(Err(error)) if declared_over => {
                tracing::debug!(%error, "an oversized body ended while it was peeked at");
                break;
            }
            Some(Err(error)) => {
                return Err(ApiError::invalid_request(format!(
                    "the request body could not be read: {error}"
                )))
            }
        };
        if collected.len() + data.len() > cap {
            collected.extend_from_slice(&data[..cap - collected.len()]);
            return Err(too_large(&collected, limits));
        }
        collected.extend_from_slice(&data);
    }
    if declared_over {
        return Err(too_large(&collected, limits));
    }
    Ok(Bytes::from(collected))
}

/// The answer for a body over the cap, from what arrived of it: the input
/// is at fault if it is over its own cap or was still arriving at the cut;
/// otherwise the script is (as it was before requests had an input).
fn too_large(prefix: &[u8], limits: &Limits) -> ApiError {
    let input_at_fault = top_level_fields(prefix)
        .iter()
        .any(|field| field.name == "input" && (field.open || field.len > limits.max_input_bytes));
    if input_at_fault {
        ApiError::new(
            Kind::InputTooLarge,
            format!(
                "the request body is over {} bytes: its input is larger than the {}-byte limit",
                limits.max_body_bytes, limits.max_input_bytes
            ),
        )
    } else {
        ApiError::new(
            Kind::ScriptTooLarge,
            format!(
                "the request body is over {} bytes, too large to hold a script of at most {} characters",
                limits.max_body_bytes, limits.max_script_chars
            ),
        )
    }
}

/// A member of a JSON object's prefix, seen without parsing its value.
#[derive(Debug, PartialEq, Eq)]
struct PrefixField {
    name: String,
    /// Bytes of its value that arrived.
    len: usize,
    /// The prefix ends inside the value.
    open: bool,
}

/// The members of the top-level object at the start of `prefix`, which may
/// end anywhere; stops at the first thing that is not JSON.
fn top_level_fields(prefix: &[u8]) -> Vec<PrefixField> {
    let mut fields = Vec::new();
    let skip_ws = |mut i: usize| {
        while i < prefix.len() && prefix[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    let mut i = skip_ws(0);
    if prefix.get(i) != Some(&b'{') {
        return fields;
    }
    i += 1;
    loop {
        i = skip_ws(i);
        if prefix.get(i) == Some(&b',') {
            i = skip_ws(i + 1);
        }
        if prefix.get(i) != Some(&b'"') {
            return fields;
        }
        let Some(key_end) = string_end(prefix, i) else {
            return fields;
        };
        let name = serde_json::from_slice::<String>(&prefix[i..key_end]).unwrap_or_default();
        i = skip_ws(key_end);
        if prefix.get(i) != Some(&b':') {
            return fields;
        }
        let start = skip_ws(i + 1);
        let end = value_end(prefix, start);
        let open = end.is_none();
        let end = end.unwrap_or(prefix.len());
        fields.push(PrefixField {
            name,
            len: end - start,
            open,
        });
        if open {
            return fields;
        }
        i = end;
    }
}

/// The index just past the JSON string starting at `start` (a `"`).
fn string_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// The index just past the JSON value starting at `start`, or `None` if the
/// bytes end first.
fn value_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = start;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i = string_end(bytes, i)?;
                if depth == 0 {
                    return Some(i);
                }
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' if depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            // A number or a literal ends where the object goes on.
            b',' | b'}' | b']' if depth == 0 => return Some(i),
            c if depth == 0 && c.is_ascii_whitespace() => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// A script from a request, with its length in characters (counted once: the
/// limit and the job log line both need it).
#[derive(Debug, PartialEq, Eq)]
pub struct Script {
    pub text: String,
    pub chars: usize,
}

/// A checked request: the script, `main`'s input as sent, and the limits
/// the job runs under.
#[derive(Debug)]
pub struct ExecuteRequest<'a> {
    pub script: Script,
    pub input: Option<&'a RawValue>,
    pub limits: JobLimits,
}

/// The body's fields; any other is refused: silently ignoring a field a
/// client believes does something would hide its bug.
const FIELDS: [&str; 3] = ["script", "input", "limits"];

/// `{"script": "...", "input": <any JSON>, "limits": {...}}`, the last two
/// optional. The input stays raw JSON: it is passed to the runner as sent,
/// and the server never builds a tree of it.
pub fn parse_request<'a>(body: &'a [u8], limits: &Limits) -> Result<ExecuteRequest<'a>, ApiError> {
    let fields: BTreeMap<String, &RawValue> = match serde_json::from_slice(body) {
        Ok(fields) => fields,
        Err(_) => return Err(not_an_object(body)),
    };
    if let Some(extra) = fields.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        let shown: String = extra.chars().take(50).collect();
        return Err(ApiError::invalid_request(format!(
            "unknown field {shown:?}: the body's fields are \"script\", \"input\" and \"limits\""
        )));
    }
    let script = match fields.get("script") {
        Some(raw) => parse_script(raw, limits)?,
        None => {
            return Err(ApiError::invalid_request(
                "the body has no \"script\" field",
            ))
        }
    };
    let input = fields.get("input").copied();
    if let Some(input) = input {
        let bytes = input.get().len();
        if bytes > limits.max_input_bytes {
            return Err(ApiError::new(
                Kind::InputTooLarge,
                format!(
                    "the input is {bytes} bytes of JSON; the limit is {}",
                    limits.max_input_bytes
                ),
            ));
        }
    }
    let limits = match fields.get("limits") {
        Some(raw) => parse_limits(raw, limits)?,
        None => JobLimits {
            timeout: limits.timeout,
            memory_bytes: limits.memory_mb << 20,
        },
    };
    Ok(ExecuteRequest {
        script,
        input,
        limits,
    })
}

/// Why a body that is not a JSON object was refused (the slow path: only
/// refused bodies are parsed twice).
fn not_an_object(body: &[u8]) -> ApiError {
    match serde_json::from_slice::<Value>(body) {
        Err(e) => ApiError::invalid_request(format!("the body is not valid JSON: {e}")),
        Ok(value) => ApiError::invalid_request(format!(
            "the body must be a JSON object like {{\"script\": \"...\"}}, not {}",
            type_name(&value)
        )),
    }
}

fn parse_script(raw: &RawValue, limits: &Limits) -> Result<Script, ApiError> {
    let script: String = serde_json::from_str(raw.get()).map_err(|e| {
        match serde_json::from_str::<Value>(raw.get()) {
            Ok(value) => ApiError::invalid_request(format!(
                "\"script\" must be a string of Python source, not {}",
                type_name(&value)
            )),
            // A string JSON can't turn into text: a lone surrogate escape.
            Err(_) => ApiError::invalid_request(format!("\"script\" is not valid text: {e}")),
        }
    })?;
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

/// `{"timeout_s": 2.5, "memory_mb": 128}`, each optional, each at most the
/// server's own limit: a request may tighten its limits, never loosen them.
fn parse_limits(raw: &RawValue, server: &Limits) -> Result<JobLimits, ApiError> {
    let value: Value = serde_json::from_str(raw.get()).unwrap_or(Value::Null);
    let Value::Object(fields) = value else {
        return Err(ApiError::invalid_request(format!(
            "\"limits\" must be an object like {{\"timeout_s\": 2.5, \"memory_mb\": 128}}, not {}",
            type_name(&value)
        )));
    };
    let mut limits = JobLimits {
        timeout: server.timeout,
        memory_bytes: server.memory_mb << 20,
    };
    for (name, value) in &fields {
        match name.as_str() {
            "timeout_s" => {
                let cap = server.timeout.as_secs_f64();
                match value.as_f64() {
                    Some(s) if (MIN_TIMEOUT_S..=cap).contains(&s) => {
                        limits.timeout = Duration::from_secs_f64(s)
                    }
                    _ => {
                        return Err(ApiError::invalid_request(format!(
                            "limits.timeout_s must be a number of seconds from {MIN_TIMEOUT_S} to {cap} (the server's PYEXEC_TIMEOUT), not {}",
                            shown(value)
                        )))
                    }
                }
            }
            "memory_mb" => {
                let cap = server.memory_mb;
                let whole = value.as_u64().or_else(|| {
                    value
                        .as_f64()
                        .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= u64::MAX as f64)
                        .map(|f| f as u64)
                });
                match whole {
                    Some(mb) if (MIN_MEMORY_MB..=cap).contains(&mb) => {
                        limits.memory_bytes = mb << 20
                    }
                    _ => {
                        return Err(ApiError::invalid_request(format!(
                            "limits.memory_mb must be a whole number of MiB from {MIN_MEMORY_MB} to {cap} (the server's PYEXEC_MEMORY_MB), not {}",
                            shown(value)
                        )))
                    }
                }
            }
            other => {
                let shown: String = other.chars().take(50).collect();
                return Err(ApiError::invalid_request(format!(
                    "unknown field {shown:?} in \"limits\": its fields are \"timeout_s\" and \"memory_mb\""
                )));
            }
        }
    }
    Ok(limits)
}

/// A client's value in a message: numbers as they are, other types by name.
fn shown(value: &Value) -> String {
    match value {
        Value::Number(n) => n.to_string(),
        other => type_name(other).to_string(),
    }
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
            max_input_bytes: 20,
            max_body_bytes: 1000,
            body_timeout: Duration::from_secs(10),
            max_result_bytes: 1000,
            timeout: Duration::from_secs(10),
            memory_mb: 256,
            file_caps: pyexec_worker::FileCaps {
                max_files: 32,
                max_bytes: 1 << 20,
            },
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

    fn parse(body: &str) -> Result<ExecuteRequest<'_>, ApiError> {
        parse_request(body.as_bytes(), &limits())
    }

    #[test]
    fn scripts() {
        let request = parse(r#"{"script": "x = 1"}"#).unwrap();
        assert_eq!(request.script.text, "x = 1");
        assert!(request.input.is_none());
        assert_eq!(
            request.limits,
            JobLimits {
                timeout: Duration::from_secs(10),
                memory_bytes: 256 << 20
            }
        );
        // Ten characters but more bytes: the limit counts characters.
        assert_eq!(
            parse(r#"{"script": "ééééééé€€€"}"#).unwrap().script.chars,
            10
        );
        for (body, kind, says) in [
            ("not json", Kind::InvalidRequest, "not valid JSON"),
            ("[1]", Kind::InvalidRequest, "an array"),
            ("{}", Kind::InvalidRequest, "no \"script\""),
            (r#"{"script": 5}"#, Kind::InvalidRequest, "a number"),
            (r#"{"script": null}"#, Kind::InvalidRequest, "null"),
            (
                r#"{"script": "\ud800"}"#,
                Kind::InvalidRequest,
                "is not valid text",
            ),
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
    fn inputs_stay_as_sent_and_have_their_own_cap() {
        let request = parse(r#"{"script": "x", "input": {"a" : [1, 2.50]}}"#).unwrap();
        assert_eq!(request.input.unwrap().get(), r#"{"a" : [1, 2.50]}"#);
        // null is an input like any other: main(None).
        let request = parse(r#"{"input": null, "script": "x"}"#).unwrap();
        assert_eq!(request.input.unwrap().get(), "null");
        // The cap counts the input's bytes as sent: 20 pass, 21 don't.
        assert!(parse(r#"{"script": "x", "input": "123456789012345678"}"#).is_ok());
        let error = parse(r#"{"script": "x", "input": "1234567890123456789"}"#).unwrap_err();
        assert_eq!(error.kind, Kind::InputTooLarge);
        assert_eq!(error.status(), 413);
        assert!(error.message.contains("21 bytes"), "{}", error.message);
        assert!(parse(r#"{"script": "x", "input": [1,}"#).is_err());
    }

    #[test]
    fn limits_may_tighten_never_loosen() {
        let request =
            parse(r#"{"script": "x", "limits": {"timeout_s": 2.5, "memory_mb": 64}}"#).unwrap();
        assert_eq!(
            request.limits,
            JobLimits {
                timeout: Duration::from_millis(2500),
                memory_bytes: 64 << 20
            }
        );
        let request = parse(r#"{"script": "x", "limits": {"memory_mb": 16.0}}"#).unwrap();
        assert_eq!(request.limits.memory_bytes, 16 << 20);
        assert_eq!(request.limits.timeout, Duration::from_secs(10));
        let request = parse(r#"{"script": "x", "limits": {}}"#).unwrap();
        assert_eq!(request.limits.memory_bytes, 256 << 20);
        for (limits, says) in [
            (
                r#"{"timeout_s": 10.5}"#,
                "from 0.001 to 10 (the server's PYEXEC_TIMEOUT), not 10.5",
            ),
            (r#"{"timeout_s": 0}"#, "not 0"),
            (r#"{"timeout_s": -1}"#, "not -1"),
            (r#"{"timeout_s": "2"}"#, "not a string"),
            (r#"{"timeout_s": null}"#, "not null"),
            (
                r#"{"memory_mb": 257}"#,
                "from 16 to 256 (the server's PYEXEC_MEMORY_MB), not 257",
            ),
            (r#"{"memory_mb": 15}"#, "not 15"),
            (r#"{"memory_mb": 64.5}"#, "not 64.5"),
            (r#"{"memory_mb": true}"#, "not a boolean"),
            (r#"{"cpus": 1}"#, "unknown field \"cpus\" in \"limits\""),
            (r#"null"#, "\"limits\" must be an object"),
            (r#"[1]"#, "not an array"),
        ] {
            let body = format!(r#"{{"script": "x", "limits": {limits}}}"#);
            let error = parse(&body).unwrap_err();
            assert_eq!(error.kind, Kind::InvalidRequest, "{limits}");
            assert!(error.message.contains(says), "{limits}: {}", error.message);
        }
    }

    #[test]
    fn an_oversized_body_blames_the_field_it_was_cut_in() {
        let fields = top_level_fields(br#" { "script" : "a\"b}", "input": {"x": [1, "]"], "y": 2}, "limits": 7 , "input": [1, 2"#);
        let summary: Vec<_> = fields
            .iter()
            .map(|f| (f.name.as_str(), f.len, f.open))
            .collect();
        assert_eq!(
            summary,
            [
                ("script", 7, false),
                ("input", 23, false),
                ("limits", 1, false),
                ("input", 5, true)
            ]
        );
        let limits = limits();
        let kind = |prefix: &str| too_large(prefix.as_bytes(), &limits).kind;
        assert_eq!(
            kind(r#"{"script": "def main(x): ...", "input": [1, 2, 3"#),
            Kind::InputTooLarge
        );
        assert_eq!(
            kind(r#"{"input": "123456789012345678901234", "script": "x"#),
            Kind::InputTooLarge
        );
        assert_eq!(
            kind(r#"{"input": 1, "script": "def main(x): ...     "#),
            Kind::ScriptTooLarge
        );
        assert_eq!(kind(r#"{"script": "#), Kind::ScriptTooLarge);
        assert_eq!(kind(""), Kind::ScriptTooLarge);
        assert_eq!(kind("          "), Kind::ScriptTooLarge);
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
