//! `POST /execute`: check the request, read its body ([`body`](super::body))
//! and its fields ([`request`](super::request)), run the script on a leased
//! worker, answer its result, files and output (or its failure), and log one
//! line per job.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use pyexec_worker::{Job, JobResult, OutputFile, Sandbox};
use serde::Serialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use super::body::{check_content_type, read_body, too_large};
use super::error::ApiError;
use super::request::{parse_request, Ceilings, ExecuteRequest, Script};
use super::script_output::{micros, millis, ScriptOutput};
use super::{json_response, Body};
use crate::callers::{Caller, JobUsage};
use crate::kind::Kind;
use crate::state::AppState;

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

/// From a shutdown's signal on, a new request is refused with
/// `shutting_down`. At the end of its grace period, one still reading its
/// body, queued or running is answered the same way; a running job is stopped
/// by its lease's drop.
pub async fn handle<S: Sandbox>(
    state: &AppState<S>,
    request: Request<Incoming>,
    caller: &Caller,
) -> Result<Response<Body>, ApiError> {
    if state.drain.is_draining() {
        return Err(ApiError::shutting_down());
    }
    let job_started = AtomicBool::new(false);
    match state
        .drain
        .unless_aborted(execute(state, request, caller, &job_started))
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
    caller: &Caller,
    job_started: &AtomicBool,
) -> Result<Response<Body>, ApiError> {
    check_content_type(request.headers())?;
    let limits = &state.limits;
    // A client that trickles its body would otherwise hold its connection
    // (and what it sent so far) for as long as it likes.
    let read = read_body(request.into_body(), limits.max_body_bytes, |prefix| {
        too_large(prefix, limits)
    });
    let body = tokio::time::timeout(limits.body_timeout, read)
        .await
        .map_err(|_| ApiError::request_timeout(limits))??;
    let ExecuteRequest {
        script: Script {
            text: script,
            chars: script_chars,
        },
        input,
        limits: job_limits,
    } = parse_request(&body, &state.limits, &ceilings(caller, &state.limits))?;
    // One copy of the input, as sent, for the job frame; the body goes.
    let input = input.map(ToOwned::to_owned);
    drop(body);
    let input_bytes = input.as_ref().map_or(0, |i| i.get().len());
    let script_sha256 = hex(&Sha256::digest(script.as_bytes()));

    // Held until the job's answer: the key's jobs at once.
    let _permit = state
        .callers
        .admit_job(caller)
        .await
        .map_err(|refusal| ApiError::from_refusal(&refusal))?;
    let asked = Instant::now();
    let lease = state
        .pool
        .checkout(caller.pool_caller())
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
    if let Some(key) = caller.key_id() {
        let cpu = report.usage.cpu.unwrap_or_default();
        state.metrics.keys.job(key.as_str(), cpu.as_secs_f64());
        state.callers.meter_job(
            caller,
            JobUsage {
                key,
                at: crate::callers::limits::unix_seconds(),
                outcome,
                cpu_us: micros(cpu),
                wall_us: micros(report.run_time),
                peak_memory_bytes: report.usage.peak_memory_bytes.unwrap_or(0),
            },
        );
    }
    // Never the script, its input or its output: only what identifies and
    // measures it.
    tracing::info!(
        outcome,
        key = caller.key_id().as_ref().map(|k| k.as_str()),
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

/// The ceilings on the request's own limits: its key's, else the server's.
fn ceilings(caller: &Caller, limits: &crate::state::Limits) -> Ceilings {
    match caller.ceilings() {
        Some((timeout, memory_mb)) => Ceilings {
            timeout,
            memory_mb,
            of_key: true,
        },
        None => Ceilings::of_server(limits),
    }
}

/// Lowercase hexadecimal, for the script's digest in the job's log line.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn sha256_hex() {
        assert_eq!(
            hex(&Sha256::digest(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(millis(Duration::from_micros(1234)), 1.234);
    }
}
