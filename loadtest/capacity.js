// Measures the capacity the other scripts scale from: the jobs/s the server
// completes when it is saturated. A closed model (CAPACITY_VUS users, each
// sending hello-world back to back) keeps every worker busy and the queue
// non-empty; the completions inside the measuring window (after a warm-up that
// drains the initially warm pool) divided by its length is the capacity.
//
// Writes CAPACITY_FILE (default loadtest/results/capacity.json):
//   {"jobs_per_second": 5.1, "pool_target_size": 4, ...}
//
//   k6 run loadtest/capacity.js
//   BASE_URL=https://... CAPACITY_VUS=16 k6 run loadtest/capacity.js
import exec from 'k6/execution';
import { check, sleep } from 'k6';
import { Counter } from 'k6/metrics';
import { BASE_URL, CLIENT_TIMEOUT_S, envDuration, envNumber, dur, SUMMARY_TREND_STATS } from './lib/config.js';
import { DEFAULT_CAPACITY_FILE } from './lib/capacity.js';
import { requireReady } from './lib/ready.js';
import { header, jsonBody, postScript } from './lib/contract.js';
import { SCRIPTS } from './lib/scripts.js';
import { poolSnapshot, promValue, scrape } from './lib/prom.js';

const WARMUP_S = envDuration('CAPACITY_WARMUP', '5s');
const MEASURE_S = envDuration('CAPACITY_DURATION', '15s');
const VUS = envNumber('CAPACITY_VUS', 8);

const completed = new Counter('capacity_completed');
const refused = new Counter('capacity_refused');
const failed = new Counter('capacity_failed');

export const options = {
  scenarios: {
    saturate: {
      executor: 'constant-vus',
      vus: VUS,
      duration: dur(WARMUP_S + MEASURE_S),
      // Requests in flight at the end finish (uncounted, the window is over)
      // rather than being cut: a cut request is a client disconnect the server
      // would have to clean up while the next test starts.
      gracefulStop: `${Math.ceil(CLIENT_TIMEOUT_S)}s`,
    },
  },
  summaryTrendStats: SUMMARY_TREND_STATS,
  thresholds: {
    // A measurement with nothing completed, or mostly failures, is no measurement.
    capacity_completed: ['count>0'],
    'checks{check:hello-world answered 200}': ['rate>0.95'],
  },
};

export function setup() {
  requireReady('capacity');
  const { samples } = scrape();
  const snap = poolSnapshot(samples);
  const spawnSum = promValue(samples, 'pyexec_worker_spawn_duration_seconds_sum');
  const spawnCount = promValue(samples, 'pyexec_worker_spawn_duration_seconds_count');
  return {
    pool_target_size: snap.target === undefined ? null : snap.target,
    spawn_mean_seconds_at_start: spawnCount ? spawnSum / spawnCount : null,
  };
}

export default function () {
  const res = postScript(SCRIPTS.hello.source, { type: 'hello' });
  const elapsed = (Date.now() - exec.scenario.startTime) / 1000;
  const inWindow = elapsed >= WARMUP_S && elapsed < WARMUP_S + MEASURE_S;
  const ok = res.status === 200;
  check(res, { 'hello-world answered 200': () => ok || res.status === 503 });
  if (ok) {
    if (inWindow) completed.add(1);
  } else if (res.status === 503) {
    if (inWindow) refused.add(1);
    // Be the polite client the server asks for, and keep k6's CPU low.
    const ra = Number(header(res, 'Retry-After'));
    sleep(Math.min(Number.isFinite(ra) && ra > 0 ? ra : 1, 1));
  } else {
    if (inWindow) failed.add(1);
    const body = jsonBody(res);
    console.warn(`capacity: status ${res.status} kind=${body && body.kind} error=${res.error || '-'}`);
    sleep(0.2);
  }
}

function count(data, name) {
  const m = data.metrics[name];
  return m && m.values && m.values.count ? m.values.count : 0;
}

export function handleSummary(data) {
  const jobs = count(data, 'capacity_completed');
  const setupData = data.setup_data || {};
  const dur = data.metrics.http_req_duration;
  const result = {
    jobs_per_second: Math.round((jobs / MEASURE_S) * 100) / 100,
    completed_in_window: jobs,
    refused_503_in_window: count(data, 'capacity_refused'),
    failed_in_window: count(data, 'capacity_failed'),
    window_seconds: MEASURE_S,
    warmup_seconds: WARMUP_S,
    vus: VUS,
    script: 'hello',
    base_url: BASE_URL,
    pool_target_size: setupData.pool_target_size === undefined ? null : setupData.pool_target_size,
    spawn_mean_seconds_at_start: setupData.spawn_mean_seconds_at_start === undefined ? null : setupData.spawn_mean_seconds_at_start,
    latency_ms_at_saturation: dur ? { med: dur.values.med, 'p(95)': dur.values['p(95)'], 'p(99)': dur.values['p(99)'] } : null,
    measured_at: new Date().toISOString(),
  };
  const file = (__ENV.CAPACITY_FILE || DEFAULT_CAPACITY_FILE).replace(/^file:\/\//, '');
  const out = {};
  out[file] = JSON.stringify(result, null, 2) + '\n';
  if (__ENV.SUMMARY_FILE) out[__ENV.SUMMARY_FILE] = JSON.stringify(data, null, 2);
  const failedThresholds = Object.keys(data.metrics).filter((k) => {
    const t = data.metrics[k].thresholds || {};
    return Object.keys(t).some((e) => !t[e].ok);
  });
  out.stdout =
    `\ncapacity: ${result.jobs_per_second} jobs/s (${jobs} hello-world jobs in ${MEASURE_S}s with ${VUS} VUs; ` +
    `${result.refused_503_in_window} refused, ${result.failed_in_window} failed; pool ${result.pool_target_size})\n` +
    `saturated latency: med ${fmt(result.latency_ms_at_saturation, 'med')} ms, p99 ${fmt(result.latency_ms_at_saturation, 'p(99)')} ms\n` +
    `written to ${file}\n` +
    (failedThresholds.length ? `THRESHOLDS FAILED: ${failedThresholds.join(', ')}\n` : '');
  return out;
}

function fmt(o, k) {
  return o && typeof o[k] === 'number' ? o[k].toFixed(1) : '-';
}
