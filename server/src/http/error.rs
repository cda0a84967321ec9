//! Every error the API answers: one [`ApiError`] type whose [`ApiError::status`]
//! match is the README's status table, rendered as the JSON error body.

use hyper::header::{HeaderName, HeaderValue, ALLOW, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use hyper::{Response, StatusCode};
use pyexec_worker::{CheckoutError, JobFailure};
use serde::Serialize;
use std::time::Duration;

use super::script_output::ScriptOutput;
use super::{json_response, Body};
use crate::callers::{Refusal, CHALLENGE};
pub use crate::kind::Kind;
use crate::state::Limits;

/// An error answer. `detail` is for the log only, never for the client.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub kind: Kind,
    pub message: String,
    pub line: Option<u32>,
    pub traceback: Option<String>,
    /// What the script printed, when it ran.
    pub output: Option<Box<ScriptOutput>>,
    pub detail: Option<String>,
    /// A job ran for this request: the answer is its outcome, not a refusal.
    pub job_ran: bool,
    /// Headers the answer carries besides its own: `Allow` (405), a
    /// `Retry-After` other than the usual 1 s, a key's `RateLimit` fields.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// What a client that got 503 should wait before retrying, in seconds: a
/// worker is replaced within about half a second, and a shutting-down
/// instance gets no new traffic once its readiness probe fails, so one second
/// is plenty.
const RETRY_AFTER_SECONDS: &str = "1";

/// The message a client gets for our own faults; the detail goes to the log.
const INTERNAL_MESSAGE: &str =
    "the service failed to run the script; this is not the script's fault, please retry";

impl ApiError {
    /// The status-code table of the API (README "Status codes").
    pub fn status(&self) -> StatusCode {
        match self.kind {
            Kind::InvalidRequest => StatusCode::BAD_REQUEST,
            Kind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Kind::ScriptTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Kind::InputTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Kind::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Kind::SyntaxError => StatusCode::BAD_REQUEST,
            Kind::MissingMain => StatusCode::BAD_REQUEST,
            Kind::ScriptException => StatusCode::BAD_REQUEST,
            Kind::InvalidResult => StatusCode::BAD_REQUEST,
            Kind::ResultTooLarge => StatusCode::BAD_REQUEST,
            Kind::Timeout => StatusCode::REQUEST_TIMEOUT,
            Kind::MemoryLimit => StatusCode::BAD_REQUEST,
            Kind::WorkerExited => StatusCode::BAD_REQUEST,
            Kind::ProtocolViolation => StatusCode::BAD_REQUEST,
            Kind::WorkerLost => StatusCode::SERVICE_UNAVAILABLE,
            Kind::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            Kind::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Kind::NotFound => StatusCode::NOT_FOUND,
            Kind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Kind::Unauthorized => StatusCode::UNAUTHORIZED,
            Kind::Forbidden => StatusCode::FORBIDDEN,
            Kind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Kind::ConcurrencyLimited => StatusCode::TOO_MANY_REQUESTS,
            Kind::QuotaExceeded => StatusCode::TOO_MANY_REQUESTS,
            Kind::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn new(kind: Kind, message: impl Into<String>) -> ApiError {
        ApiError {
            kind,
            message: message.into(),
            line: None,
            traceback: None,
            output: None,
            detail: None,
            job_ran: false,
            headers: Vec::new(),
        }
    }

    /// A request refused by the callers module: its key, its limits, or
    /// the store behind them.
    pub fn from_refusal(refusal: &Refusal) -> ApiError {
        match refusal {
            Refusal::Unauthorized => ApiError::new(
                Kind::Unauthorized,
                "a valid API key is required: send Authorization: Bearer <token> (pyexec keys create makes one)",
            ),
            Refusal::RateLimited {
                retry_after,
                fields,
            } => ApiError {
                headers: fields
                    .as_ref()
                    .map_or_else(Vec::new, ratelimit_headers)
                    .into_iter()
                    .chain([retry(whole_seconds(*retry_after))])
                    .collect(),
                ..ApiError::new(
                    Kind::RateLimited,
                    format!(
                        "this key sent more requests than its rate allows; retry in {} s",
                        whole_seconds(*retry_after)
                    ),
                )
            },
            Refusal::ConcurrencyLimited { max } => ApiError {
                headers: vec![retry(1)],
                ..ApiError::new(
                    Kind::ConcurrencyLimited,
                    format!("this key already runs its {max} jobs at once; retry when one ends"),
                )
            },
            Refusal::QuotaExceeded {
                quota_s,
                retry_after,
            } => ApiError {
                headers: vec![retry(whole_seconds(*retry_after))],
                ..ApiError::new(
                    Kind::QuotaExceeded,
                    format!(
                        "this key used its {} CPU-seconds for today (UTC); it renews in {} s",
                        seconds(Duration::from_secs_f64(*quota_s)),
                        whole_seconds(*retry_after)
                    ),
                )
            },
            Refusal::StoreUnavailable => ApiError {
                headers: vec![retry(5)],
                ..ApiError::new(
                    Kind::StoreUnavailable,
                    "the service cannot check this key right now (its store is unreachable); retry shortly",
                )
            },
        }
    }

    /// A request's own `limits` above what its key may ask for.
    pub fn over_key_ceiling(what: &str, asked: String, ceiling: String) -> ApiError {
        ApiError::invalid_request(format!(
            "limits.{what} is {asked}, above this key's ceiling of {ceiling}"
        ))
    }

    pub fn invalid_request(message: impl Into<String>) -> ApiError {
        ApiError::new(Kind::InvalidRequest, message)
    }

    pub fn internal(detail: impl Into<String>) -> ApiError {
        ApiError {
            detail: Some(detail.into()),
            ..ApiError::new(Kind::Internal, INTERNAL_MESSAGE)
        }
    }

    pub fn not_found(path: &str) -> ApiError {
        let shown: String = path.chars().take(100).collect();
        ApiError::new(
            Kind::NotFound,
            format!("there is no {shown:?} here; POST /execute runs a script"),
        )
    }

    pub fn method_not_allowed(method: &hyper::Method, path: &str, allow: &'static str) -> ApiError {
        ApiError {
            headers: vec![(ALLOW, HeaderValue::from_static(allow))],
            ..ApiError::new(
                Kind::MethodNotAllowed,
                format!("{path} does not accept {method}; it accepts {allow}"),
            )
        }
    }

    pub fn request_timeout(limits: &Limits) -> ApiError {
        ApiError::new(
            Kind::RequestTimeout,
            format!(
                "the request body did not arrive within {} s",
                seconds(limits.body_timeout)
            ),
        )
    }

    /// No worker for this request: overloaded, or shutting down.
    pub fn from_checkout(reason: CheckoutError) -> ApiError {
        let message = match reason {
            CheckoutError::QueueFull => "every worker is busy and the queue is full; retry shortly",
            CheckoutError::QueueTimeout => "no worker became free in time; retry shortly",
            CheckoutError::ShuttingDown => return ApiError::shutting_down(),
        };
        ApiError {
            detail: Some(reason.as_str().into()),
            ..ApiError::new(Kind::Overloaded, message)
        }
    }

    /// A new job refused, or one still waiting for a worker, while the server
    /// shuts down.
    pub fn shutting_down() -> ApiError {
        ApiError::new(
            Kind::ShuttingDown,
            "the server is shutting down; retry and another instance will answer",
        )
    }

    /// A job still running when the shutdown's grace period ended: stopped,
    /// and answered so that the client can retry elsewhere.
    pub fn cut_off_by_shutdown() -> ApiError {
        ApiError {
            job_ran: true,
            ..ApiError::new(
                Kind::ShuttingDown,
                "the server shut down before the script finished and stopped it; retry and another instance will run it",
            )
        }
    }

    /// The answer for a job that ran and failed, with what it printed; the
    /// messages quote the limits that applied to it.
    pub fn from_failure(failure: JobFailure, output: ScriptOutput) -> ApiError {
        let limits = output.limits;
        let kind = Kind::of_failure(&failure);
        let mut error = match failure {
            JobFailure::Script(script) if kind == Kind::Internal => {
                ApiError::internal(format!("the runner failed: {}", script.message))
            }
            JobFailure::Script(script) => ApiError {
                line: script.line,
                traceback: script.traceback,
                ..ApiError::new(kind, script.message)
            },
            JobFailure::Timeout => ApiError::new(
                kind,
                format!(
                    "the script ran longer than the {} s limit and was stopped",
                    seconds(Duration::from_secs_f64(limits.timeout_s))
                ),
            ),
            JobFailure::MemoryLimit => ApiError::new(
                kind,
                format!("the script used more than the {} MiB memory limit and was killed", limits.memory_mb),
            ),
            JobFailure::MemoryBelowBaseline { in_use_bytes } => ApiError::new(
                kind,
                format!(
                    "the {} MiB memory limit is below the {} MiB the worker's interpreter (with numpy and pandas) already uses, so the script could not run; ask for more memory",
                    limits.memory_mb,
                    in_use_bytes.div_ceil(1 << 20)
                ),
            ),
            JobFailure::Exited { status } => ApiError {
                detail: Some(status.clone()),
                ..ApiError::new(
                    kind,
                    format!("the script's process ended before main() returned ({status})"),
                )
            },
            JobFailure::Protocol(violation) => ApiError {
                detail: Some(violation.to_string()),
                ..ApiError::new(
                    kind,
                    "the script interfered with the channel its result is returned on (e.g. wrote to or closed file descriptor 3)",
                )
            },
            JobFailure::Lost { zygote } => ApiError {
                detail: Some(format!("zygote {zygote} ended while the job ran")),
                ..ApiError::new(
                    kind,
                    "the process running the script was lost to a failure outside the job (its zygote ended); retry and a fresh worker will run it",
                )
            },
            JobFailure::Sandbox(detail) => ApiError::internal(format!("sandbox: {detail}")),
        };
        error.output = Some(Box::new(output));
        error.job_ran = true;
        error
    }

    /// Whether this refused the request before any job ran (counted in
    /// `pyexec_rejected_total`).
    pub fn is_rejection(&self) -> bool {
        !self.job_ran && self.kind.refuses()
    }

    pub fn into_response(self) -> Response<Body> {
        #[derive(Serialize)]
        struct ErrorBody<'a> {
            error: &'a str,
            kind: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            line: Option<u32>,
            #[serde(skip_serializing_if = "Option::is_none")]
            traceback: Option<&'a str>,
            #[serde(flatten)]
            output: Option<&'a ScriptOutput>,
        }
        let status = self.status();
        let body = ErrorBody {
            error: &self.message,
            kind: self.kind.as_str(),
            line: self.line,
            traceback: self.traceback.as_deref(),
            output: self.output.as_deref(),
        };
        let mut response = json_response(status, &body);
        let headers = response.headers_mut();
        if matches!(
            self.kind,
            Kind::Overloaded | Kind::ShuttingDown | Kind::WorkerLost
        ) {
            headers.insert(RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS));
        }
        if self.kind == Kind::Unauthorized {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static(CHALLENGE));
        }
        for (name, value) in self.headers {
            headers.insert(name, value);
        }
        debug_assert!(headers.contains_key(CONTENT_TYPE));
        response
    }
}

/// The `RateLimit-Policy` and `RateLimit` fields, as headers.
pub fn ratelimit_headers((policy, standing): &(String, String)) -> Vec<(HeaderName, HeaderValue)> {
    let mut headers = Vec::new();
    for (name, value) in [("ratelimit-policy", policy), ("ratelimit", standing)] {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.push((HeaderName::from_static(name), value));
        }
    }
    headers
}

/// `Retry-After: <seconds>`.
fn retry(seconds: u64) -> (HeaderName, HeaderValue) {
    (RETRY_AFTER, HeaderValue::from(seconds))
}

/// A wait in whole seconds, rounded up, at least 1 (Retry-After's unit).
fn whole_seconds(d: Duration) -> u64 {
    (d.as_secs_f64().ceil() as u64).max(1)
}

/// `10` or `2.5`, for messages.
fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0}")
    } else {
        format!("{s}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::script_output::{AppliedLimits, UsageFigures};
    use http_body_util::BodyExt;
    use pyexec_worker::ScriptError;
    use pyexec_worker::ScriptErrorKind;

    #[test]
    fn metric_labels_cover_every_outcome_and_rejection() {
        let outcomes = Kind::job_outcomes();
        for expected in [
            "ok",
            "timeout",
            "memory_limit",
            "script_exception",
            "internal",
        ] {
            assert!(outcomes.contains(&expected), "{outcomes:?}");
        }
        assert!(!outcomes.contains(&"overloaded") && !outcomes.contains(&"not_found"));
        // A job whose main can't take the request's input ends as the
        // request's fault, after the script was loaded.
        assert!(outcomes.contains(&"invalid_request"));
        assert_eq!(
            Kind::rejection_reasons(),
            [
                "invalid_request",
                "unsupported_media_type",
                "script_too_large",
                "input_too_large",
                "request_timeout",
                "overloaded",
                "shutting_down",
                "unauthorized",
                "rate_limited",
                "concurrency_limited",
                "quota_exceeded",
                "store_unavailable"
            ]
        );
    }

    /// The README's status table, row by row.
    #[test]
    fn status_table() {
        let table = [
            ("invalid_request", 400),
            ("unsupported_media_type", 415),
            ("script_too_large", 413),
            ("input_too_large", 413),
            ("request_timeout", 408),
            ("syntax_error", 400),
            ("missing_main", 400),
            ("script_exception", 400),
            ("invalid_result", 400),
            ("result_too_large", 400),
            ("timeout", 408),
            ("memory_limit", 400),
            ("worker_exited", 400),
            ("protocol_violation", 400),
            ("worker_lost", 503),
            ("overloaded", 503),
            ("shutting_down", 503),
            ("not_found", 404),
            ("method_not_allowed", 405),
            ("unauthorized", 401),
            ("forbidden", 403),
            ("rate_limited", 429),
            ("concurrency_limited", 429),
            ("quota_exceeded", 429),
            ("store_unavailable", 503),
            ("internal", 500),
        ];
        assert_eq!(table.len(), Kind::ALL.len());
        for ((name, status), kind) in table.iter().zip(Kind::ALL) {
            assert_eq!(kind.as_str(), *name);
            assert_eq!(
                ApiError::new(kind, "x").status().as_u16(),
                *status,
                "{name}"
            );
        }
    }

    fn output() -> ScriptOutput {
        ScriptOutput {
            stdout: "printed\n".into(),
            stderr: String::new(),
            stdout_truncated: false,
            stderr_truncated: false,
            duration_ms: 1.0,
            limits: AppliedLimits {
                timeout_s: 2.5,
                memory_mb: 96,
            },
            usage: UsageFigures {
                cpu_ms: Some(0.5),
                peak_memory_mb: None,
                wall_ms: 1.0,
            },
        }
    }

    #[test]
    fn job_failures_map_to_kinds() {
        let script = |kind| {
            JobFailure::Script(ScriptError {
                kind,
                message: "m".into(),
                line: Some(2),
                traceback: Some("tb".into()),
            })
        };
        let cases = [
            (
                script(ScriptErrorKind::InvalidRequest),
                "invalid_request",
                400,
            ),
            (script(ScriptErrorKind::SyntaxError), "syntax_error", 400),
            (script(ScriptErrorKind::MissingMain), "missing_main", 400),
            (
                script(ScriptErrorKind::ScriptException),
                "script_exception",
                400,
            ),
            (
                script(ScriptErrorKind::InvalidResult),
                "invalid_result",
                400,
            ),
            (
                script(ScriptErrorKind::ResultTooLarge),
                "result_too_large",
                400,
            ),
            (script(ScriptErrorKind::WorkerExited), "worker_exited", 400),
            (script(ScriptErrorKind::MemoryLimit), "memory_limit", 400),
            (script(ScriptErrorKind::Internal), "internal", 500),
            (JobFailure::Timeout, "timeout", 408),
            (JobFailure::MemoryLimit, "memory_limit", 400),
            (
                JobFailure::Exited {
                    status: "signal 9".into(),
                },
                "worker_exited",
                400,
            ),
            (
                JobFailure::Protocol(pyexec_worker::ProtocolViolation::SecondReady),
                "protocol_violation",
                400,
            ),
            (
                JobFailure::Sandbox(pyexec_worker::SandboxFault::Runner("io".into())),
                "internal",
                500,
            ),
        ];
        for (failure, kind, status) in cases {
            let e = ApiError::from_failure(failure, output());
            assert_eq!((e.kind.as_str(), e.status().as_u16()), (kind, status));
            assert!(
                e.output.is_some(),
                "{kind}: the script ran, its output belongs in the answer"
            );
        }
        let timeout = ApiError::from_failure(JobFailure::Timeout, output());
        assert!(timeout.message.contains("2.5 s"), "{}", timeout.message);
        let memory = ApiError::from_failure(JobFailure::MemoryLimit, output());
        assert!(memory.message.contains(" 96 MiB"), "{}", memory.message);
        let below = JobFailure::MemoryBelowBaseline {
            in_use_bytes: (70 << 20) + 1,
        };
        let below = ApiError::from_failure(below, output());
        assert_eq!(below.kind, Kind::MemoryLimit);
        assert!(
            below.message.contains("96 MiB") && below.message.contains("71 MiB"),
            "{}",
            below.message
        );
    }

    #[tokio::test]
    async fn internal_errors_hide_their_detail() {
        let e = ApiError::from_failure(
            JobFailure::Sandbox(pyexec_worker::SandboxFault::Runner("secret path /x".into())),
            output(),
        );
        let body = e
            .into_response()
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(!text.contains("secret"), "{text}");
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["kind"], "internal");
    }

    #[tokio::test]
    async fn error_bodies_carry_output_traceback_and_headers() {
        let failure = JobFailure::Script(ScriptError {
            kind: ScriptErrorKind::ScriptException,
            message: "ZeroDivisionError: division by zero".into(),
            line: Some(2),
            traceback: Some("Traceback ...".into()),
        });
        let response = ApiError::from_failure(failure, output()).into_response();
        assert_eq!(response.status(), 400);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["error"], "ZeroDivisionError: division by zero");
        assert_eq!(json["kind"], "script_exception");
        assert_eq!(json["line"], 2);
        assert_eq!(json["traceback"], "Traceback ...");
        assert_eq!(json["stdout"], "printed\n");
        assert_eq!(json["stdout_truncated"], false);
        assert_eq!(
            json["limits"],
            serde_json::json!({"timeout_s": 2.5, "memory_mb": 96})
        );
        assert_eq!(
            json["usage"],
            serde_json::json!({"cpu_ms": 0.5, "peak_memory_mb": null, "wall_ms": 1.0})
        );
        assert!(json.get("files").is_none(), "an error carries no files");

        let overloaded = ApiError::from_checkout(CheckoutError::QueueFull).into_response();
        assert_eq!(overloaded.status(), 503);
        assert_eq!(overloaded.headers()[RETRY_AFTER], "1");
        let body = overloaded.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(json.get("stdout").is_none(), "no script ran");

        // Refused at shutdown (new, or still queued) vs cut off at its end:
        // both 503 with Retry-After, only the first a refusal.
        let refused = ApiError::from_checkout(CheckoutError::ShuttingDown);
        let cut_off = ApiError::cut_off_by_shutdown();
        assert!(refused.is_rejection() && !cut_off.is_rejection());
        for error in [refused, cut_off] {
            assert_eq!(error.kind, Kind::ShuttingDown);
            let response = error.into_response();
            assert_eq!(response.status(), 503);
            assert_eq!(response.headers()[RETRY_AFTER], "1");
        }

        let allow =
            ApiError::method_not_allowed(&hyper::Method::GET, "/execute", "POST").into_response();
        assert_eq!(allow.status(), 405);
        assert_eq!(allow.headers()[ALLOW], "POST");
    }
}
