//! What can come of a request: the `kind` of every error answer and the
//! `outcome` of every job, one vocabulary for the HTTP answers, the metrics
//! and the logs. Not an HTTP type: the metrics take their labels from here
//! without knowing about responses.

use pyexec_worker::{JobFailure, ScriptErrorKind};

/// The machine-readable `kind` of an error body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    InvalidRequest,
    UnsupportedMediaType,
    ScriptTooLarge,
    /// The request's `input` is over its own byte cap.
    InputTooLarge,
    /// The client did not send its whole body within the body deadline.
    RequestTimeout,
    SyntaxError,
    MissingMain,
    ScriptException,
    InvalidResult,
    ResultTooLarge,
    Timeout,
    MemoryLimit,
    WorkerExited,
    /// The script wrote into the runner's result channel (or otherwise broke
    /// the framing): the job's answer can't be trusted.
    ProtocolViolation,
    /// Fork mode: the zygote the job's process came from ended while the job
    /// ran, taking the job with it. Not the script's fault; retry.
    WorkerLost,
    Overloaded,
    /// The server is shutting down: a new job is refused, or a job still
    /// running at the end of the grace period was stopped.
    ShuttingDown,
    NotFound,
    MethodNotAllowed,
    /// No API key, or one the server does not accept (with keys on).
    Unauthorized,
    /// The key may not do this (delete another key's snippet).
    Forbidden,
    /// The key's requests per second.
    RateLimited,
    /// The key's jobs at once.
    ConcurrencyLimited,
    /// The key's CPU-seconds for today.
    QuotaExceeded,
    /// The store (keys, usage, snippets) can't be reached right now.
    StoreUnavailable,
    Internal,
}

impl Kind {
    pub const ALL: [Kind; 26] = [
        Kind::InvalidRequest,
        Kind::UnsupportedMediaType,
        Kind::ScriptTooLarge,
        Kind::InputTooLarge,
        Kind::RequestTimeout,
        Kind::SyntaxError,
        Kind::MissingMain,
        Kind::ScriptException,
        Kind::InvalidResult,
        Kind::ResultTooLarge,
        Kind::Timeout,
        Kind::MemoryLimit,
        Kind::WorkerExited,
        Kind::ProtocolViolation,
        Kind::WorkerLost,
        Kind::Overloaded,
        Kind::ShuttingDown,
        Kind::NotFound,
        Kind::MethodNotAllowed,
        Kind::Unauthorized,
        Kind::Forbidden,
        Kind::RateLimited,
        Kind::ConcurrencyLimited,
        Kind::QuotaExceeded,
        Kind::StoreUnavailable,
        Kind::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::InvalidRequest => "invalid_request",
            Kind::UnsupportedMediaType => "unsupported_media_type",
            Kind::ScriptTooLarge => "script_too_large",
            Kind::InputTooLarge => "input_too_large",
            Kind::RequestTimeout => "request_timeout",
            Kind::SyntaxError => "syntax_error",
            Kind::MissingMain => "missing_main",
            Kind::ScriptException => "script_exception",
            Kind::InvalidResult => "invalid_result",
            Kind::ResultTooLarge => "result_too_large",
            Kind::Timeout => "timeout",
            Kind::MemoryLimit => "memory_limit",
            Kind::WorkerExited => "worker_exited",
            Kind::ProtocolViolation => "protocol_violation",
            Kind::WorkerLost => "worker_lost",
            Kind::Overloaded => "overloaded",
            Kind::ShuttingDown => "shutting_down",
            Kind::NotFound => "not_found",
            Kind::MethodNotAllowed => "method_not_allowed",
            Kind::Unauthorized => "unauthorized",
            Kind::Forbidden => "forbidden",
            Kind::RateLimited => "rate_limited",
            Kind::ConcurrencyLimited => "concurrency_limited",
            Kind::QuotaExceeded => "quota_exceeded",
            Kind::StoreUnavailable => "store_unavailable",
            Kind::Internal => "internal",
        }
    }

    /// The kinds that refuse a request before any job runs for it (counted
    /// in `pyexec_rejected_total`; `shutting_down` also ends a job that was
    /// cut off, which is then no refusal).
    pub fn refuses(self) -> bool {
        matches!(
            self,
            Kind::InvalidRequest
                | Kind::UnsupportedMediaType
                | Kind::ScriptTooLarge
                | Kind::InputTooLarge
                | Kind::RequestTimeout
                | Kind::Overloaded
                | Kind::ShuttingDown
                | Kind::Unauthorized
                | Kind::RateLimited
                | Kind::ConcurrencyLimited
                | Kind::QuotaExceeded
                | Kind::StoreUnavailable
        )
    }

    /// Every `outcome` label of `pyexec_jobs_total`: "ok" and the kinds a job
    /// that ran can fail with: `invalid_request` among them, for an input
    /// `main` can't take (the runner finds that out).
    pub fn job_outcomes() -> Vec<&'static str> {
        let failures = Kind::ALL.into_iter().filter(|k| {
            *k == Kind::InvalidRequest
                || !k.refuses()
                    && !matches!(k, Kind::NotFound | Kind::MethodNotAllowed | Kind::Forbidden)
        });
        std::iter::once("ok")
            .chain(failures.map(Kind::as_str))
            .collect()
    }

    /// Every `reason` label of `pyexec_rejected_total`.
    pub fn rejection_reasons() -> Vec<&'static str> {
        Kind::ALL
            .into_iter()
            .filter(|k| k.refuses())
            .map(Kind::as_str)
            .collect()
    }

    /// A job's `pyexec_jobs_total` outcome: "ok" or the kind it failed with.
    pub fn outcome_of(outcome: &Result<impl Sized, JobFailure>) -> &'static str {
        match outcome {
            Ok(_) => "ok",
            Err(failure) => Kind::of_failure(failure).as_str(),
        }
    }

    /// The kind a failed job answers with; also its `pyexec_jobs_total` outcome.
    pub fn of_failure(failure: &JobFailure) -> Kind {
        match failure {
            JobFailure::Script(error) => match error.kind {
                ScriptErrorKind::InvalidRequest => Kind::InvalidRequest,
                ScriptErrorKind::SyntaxError => Kind::SyntaxError,
                ScriptErrorKind::MissingMain => Kind::MissingMain,
                ScriptErrorKind::ScriptException => Kind::ScriptException,
                ScriptErrorKind::InvalidResult => Kind::InvalidResult,
                ScriptErrorKind::ResultTooLarge => Kind::ResultTooLarge,
                ScriptErrorKind::WorkerExited => Kind::WorkerExited,
                ScriptErrorKind::MemoryLimit => Kind::MemoryLimit,
                ScriptErrorKind::Internal => Kind::Internal,
            },
            JobFailure::Timeout => Kind::Timeout,
            JobFailure::MemoryLimit | JobFailure::MemoryBelowBaseline { .. } => Kind::MemoryLimit,
            JobFailure::Exited { .. } => Kind::WorkerExited,
            JobFailure::Protocol(_) => Kind::ProtocolViolation,
            JobFailure::Lost { .. } => Kind::WorkerLost,
            JobFailure::Sandbox(_) => Kind::Internal,
        }
    }
}
