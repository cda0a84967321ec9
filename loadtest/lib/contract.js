// Sending a job and judging the answer against the API contract (issue 2).
import http from 'k6/http';
import { check } from 'k6';
import { Counter, Rate, Trend } from 'k6/metrics';
import { BASE_URL, CLIENT_TIMEOUT_S, JOB_TIMEOUT_S, QUEUE_TIMEOUT_S, withAuth } from './config.js';
import { SCRIPTS } from './scripts.js';

// Custom metrics, all tagged with `type` (the script) by the caller's tags.
//  job_unexpected   1 for an answer that is not the one expected for this script
//                   in this phase (a 503 counts as unexpected unless the caller
//                   allows shedding); the main pass/fail signal.
//  job_failed       scripts that should succeed only: 1 unless a correct 200.
//  job_shed         503 overloaded answers that carried Retry-After.
//  job_shed_bad     503 kind "overloaded" without a valid Retry-After.
//  job_shed_duration how long a 503 took (a fast refusal is milliseconds; a queued
//                   request gives up at PYEXEC_QUEUE_TIMEOUT).
//  job_other_5xx    any 5xx but a proper 503 overloaded: never allowed.
//  job_client_timeout  no answer within CLIENT_TIMEOUT or a transport error.
//  job_contract     1 when the body/headers follow the contract, per answer.
//  job_timeout_early 1 for a 408 timeout answered before PYEXEC_TIMEOUT - 50 ms
//                   (a Rate, not min() of the latency: a phase that happens to
//                   send no timeout script has no samples, and min() of none is 0).
export const jobUnexpected = new Rate('job_unexpected');
export const jobFailed = new Rate('job_failed');
export const jobShed = new Counter('job_shed');
export const jobShedBad = new Counter('job_shed_bad');
export const jobShedDuration = new Trend('job_shed_duration', true);
export const jobOther5xx = new Counter('job_other_5xx');
export const jobClientTimeout = new Counter('job_client_timeout');
export const jobContract = new Rate('job_contract');
export const jobTimeoutEarly = new Rate('job_timeout_early');

// A timeout answers at the deadline, not before.
export const TIMEOUT_MIN_MS = Math.round(JOB_TIMEOUT_S * 1000 - 50);

export function header(res, name) {
  const want = name.toLowerCase();
  for (const k of Object.keys(res.headers || {})) {
    if (k.toLowerCase() === want) return res.headers[k];
  }
  return undefined;
}

export function jsonBody(res) {
  try {
    const b = JSON.parse(res.body);
    return b !== null && typeof b === 'object' && !Array.isArray(b) ? b : null;
  } catch (e) {
    return null;
  }
}

// Retry-After is delta-seconds (or an HTTP date): either way it must parse.
export function validRetryAfter(v) {
  if (v === undefined || v === null || v === '') return false;
  if (/^\d+$/.test(String(v).trim())) return true;
  return !Number.isNaN(Date.parse(v));
}

// Every status the mix can legitimately answer: 4xx of the scripts that fail by
// design are not HTTP failures for k6's http_req_failed.
const EXPECTED_STATUSES = http.expectedStatuses(200, 400, 408, 503);

// One script's request as http.batch() takes it. `tags` go onto every k6
// sample of this request.
export function scriptRequest(source, tags, extraHeaders) {
  const headers = Object.assign({ 'Content-Type': 'application/json' }, extraHeaders || {});
  return {
    method: 'POST',
    url: `${BASE_URL}/execute`,
    body: JSON.stringify({ script: source }),
    params: withAuth({
      headers,
      tags: Object.assign({ name: 'POST /execute' }, tags),
      timeout: `${CLIENT_TIMEOUT_S}s`,
      responseCallback: EXPECTED_STATUSES,
    }),
  };
}

// POST one script.
export function postScript(source, tags, extraHeaders) {
  const r = scriptRequest(source, tags, extraHeaders);
  return http.post(r.url, r.body, r.params);
}

// At most this many unexpected answers are logged per VU (LOG_UNEXPECTED=0 to mute).
const LOG_UNEXPECTED_MAX = Number(__ENV.LOG_UNEXPECTED === undefined ? 5 : __ENV.LOG_UNEXPECTED);
let loggedUnexpected = 0;

// Judge one answer to a script of the mix. Returns one of
//   'expected'  the contract's answer for that script,
//   'shed'      503 overloaded with Retry-After (allowed only if allowShed),
//   'unexpected'.
export function judge(type, res, opts) {
  const o = Object.assign({ allowShed: false, tags: {} }, opts || {});
  const spec = SCRIPTS[type];
  const tags = Object.assign({ type }, o.tags);

  if (res.status === 0 || res.error_code === 1050) {
    jobClientTimeout.add(1, tags);
    jobUnexpected.add(1, tags);
    if (spec.expect === 'ok') jobFailed.add(1, tags);
    return 'unexpected';
  }

  const body = jsonBody(res);
  const rid = header(res, 'X-Request-Id');
  const base = !!rid && body !== null;

  let outcome = 'unexpected';
  let contract = base;
  if (res.status === spec.status && body) {
    if (spec.expect === 'ok') {
      contract = base && typeof body.stdout === 'string' && body.result !== undefined;
      outcome = contract && spec.verify(body) ? 'expected' : 'unexpected';
    } else {
      contract = base && typeof body.error === 'string' && body.error.length > 0 && body.kind === spec.expect;
      outcome = contract && spec.verify(body) ? 'expected' : 'unexpected';
    }
  } else if (res.status === 503 && body && body.kind === 'overloaded') {
    const ra = header(res, 'Retry-After');
    jobShedDuration.add(res.timings.duration, tags);
    if (validRetryAfter(ra)) {
      jobShed.add(1, tags);
      outcome = o.allowShed ? 'shed' : 'unexpected';
    } else {
      jobShedBad.add(1, tags);
      contract = false;
    }
  } else if (res.status >= 500) {
    jobOther5xx.add(1, tags);
  }

  jobContract.add(contract, tags);
  if (type === 'timeout' && outcome === 'expected') jobTimeoutEarly.add(res.timings.duration < TIMEOUT_MIN_MS, tags);
  jobUnexpected.add(outcome === 'unexpected', tags);
  if (spec.expect === 'ok' && outcome !== 'shed') jobFailed.add(outcome !== 'expected', tags);

  check(
    res,
    {
      'answer is the expected one (or an allowed 503)': () => outcome !== 'unexpected',
      'X-Request-Id on the answer': () => !!rid,
    },
    tags,
  );
  if (outcome === 'unexpected' && loggedUnexpected < LOG_UNEXPECTED_MAX) {
    loggedUnexpected += 1;
    const snippet = String(res.body || '').slice(0, 300);
    console.warn(
      `unexpected answer to ${type}: status=${res.status} error=${res.error || '-'} ` +
        `request_id=${rid || '-'} duration=${Math.round(res.timings.duration)}ms body=${snippet}`,
    );
  }
  return outcome;
}

// A 503 refusal counts as "fast" when it comes no later than the queue wait
// deadline plus this margin.
export const SHED_MARGIN_S = 1;
export const SHED_LIMIT_S = QUEUE_TIMEOUT_S + SHED_MARGIN_S;
