//! `GET /v1/usage`: the calling key's own usage (today and this hour, per
//! outcome, as the store counts it for the whole fleet), its limits, and
//! what is left of them.

use std::collections::BTreeMap;

use hyper::{Response, StatusCode};
use pyexec_store::UsageTotal;
use serde::Serialize;

use super::error::ApiError;
use super::{json_response, Body};
use crate::callers::limits::{unix_seconds, utc_day};
use crate::callers::{Caller, Refusal};
use crate::kind::Kind;
use crate::state::AppState;
use pyexec_worker::Sandbox;

#[derive(Serialize)]
struct UsageAnswer {
    key: KeyView,
    limits: LimitsView,
    today: Totals,
    this_hour: Totals,
    remaining: Remaining,
    /// This instance's jobs whose usage is not in the store yet (written
    /// within about a second).
    unwritten_jobs: u64,
}

#[derive(Serialize)]
struct KeyView {
    id: String,
    name: String,
}

#[derive(Serialize)]
struct LimitsView {
    rate_per_s: Option<f64>,
    burst: u32,
    max_concurrent: Option<u32>,
    cpu_s_per_day: Option<f64>,
    max_timeout_s: f64,
    max_memory_mb: u64,
    weight: u32,
}

#[derive(Serialize, Default)]
struct Totals {
    jobs: u64,
    cpu_ms: f64,
    wall_ms: f64,
    peak_memory_mb: f64,
    /// Jobs per outcome: `ok` or the answer's error kind.
    by_outcome: BTreeMap<String, u64>,
}

#[derive(Serialize)]
struct Remaining {
    /// CPU-seconds left today (UTC); null without a quota.
    cpu_s_today: Option<f64>,
    /// Jobs it may still start now; null without a cap of its own.
    jobs_at_once: Option<u32>,
}

pub async fn handle<S: Sandbox>(
    state: &AppState<S>,
    caller: &Caller,
) -> Result<Response<Body>, ApiError> {
    let Some(entry) = caller.key() else {
        return Err(ApiError::new(
            Kind::NotFound,
            "usage is kept per API key, and this server runs without keys (PYEXEC_AUTH=none)",
        ));
    };
    let record = entry.record();
    let policy = entry.policy();
    let today = utc_day() * 86_400;
    let hour = unix_seconds() - unix_seconds().rem_euclid(3600);
    let rows = state
        .callers
        .usage_of(&record.id, today)
        .await
        .map_err(|_| ApiError::from_refusal(&Refusal::StoreUnavailable))?;
    let answer = UsageAnswer {
        key: KeyView {
            id: record.id.to_string(),
            name: record.name.clone(),
        },
        limits: LimitsView {
            rate_per_s: policy.rate_per_s,
            burst: policy.burst,
            max_concurrent: policy.max_concurrent,
            cpu_s_per_day: policy.cpu_s_per_day,
            max_timeout_s: policy.max_timeout.as_secs_f64(),
            max_memory_mb: policy.max_memory_mb,
            weight: policy.weight,
        },
        today: totals(rows.iter()),
        this_hour: totals(rows.iter().filter(|r| r.hour_start == hour)),
        remaining: Remaining {
            cpu_s_today: policy.cpu_s_per_day.map(|q| entry.cpu_left(q).0),
            jobs_at_once: policy
                .max_concurrent
                .map(|max| max.saturating_sub(entry.jobs_in_flight())),
        },
        unwritten_jobs: state
            .callers
            .meter()
            .map_or(0, |meter| meter.pending_jobs()),
    };
    Ok(json_response(StatusCode::OK, &answer))
}

fn totals<'a>(rows: impl Iterator<Item = &'a UsageTotal>) -> Totals {
    let mut totals = Totals::default();
    let (mut cpu_us, mut wall_us, mut peak) = (0u64, 0u64, 0u64);
    for row in rows {
        totals.jobs += row.jobs;
        cpu_us += row.cpu_us;
        wall_us += row.wall_us;
        peak = peak.max(row.peak_memory_bytes);
        *totals.by_outcome.entry(row.outcome.clone()).or_default() += row.jobs;
    }
    totals.cpu_ms = cpu_us as f64 / 1e3;
    totals.wall_ms = wall_us as f64 / 1e3;
    totals.peak_memory_mb = (peak as f64 / f64::from(1 << 20) * 100.0).round() / 100.0;
    totals
}
