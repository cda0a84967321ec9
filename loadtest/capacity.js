// Measures the capacity the other scripts scale from: the jobs/s the server
// completes when it is saturated, in two phases run one after the other:
//
//   hello  CAPACITY_VUS (8) closed-model users sending hello-world back to back:
//          what a job itself costs (fork mode: a fork; spawn mode: a spawn).
//          The figure the targets speak of.
//   mix    CAPACITY_MIX_VUS (16) users sending the mix of load.js: what the
//          mix tests (load, stress, spike, soak) scale from. In fork mode a job
//          that sleeps holds one of PYEXEC_MAX_JOBS slots for its whole run, so
//          with few slots (6 on a 2 GiB Cloud Run instance) the mix's 5% of
//          timeouts (PYEXEC_TIMEOUT each) bound it below hello-world's figure,
//          whatever the CPU; finding that bound needs more users than slots.
//
// Each phase: a warm-up (CAPACITY_WARMUP, 5 s) that drains the initially warm
// pool, then a window (CAPACITY_DURATION, 15 s); the expected answers inside
// the window divided by its length is the capacity. CAPACITY_MIX=0 skips the
// mix phase (the mix tests then scale from hello-world's figure).
//
// Writes CAPACITY_FILE (default loadtest/results/capacity.json):
//   {"jobs_per_second": 210.4, "mix_jobs_per_second": 71.2, "pool_target_size": 16, ...}
//
//   k6 run loadtest/capacity.js
//   BASE_URL=https://... CAPACITY_VUS=16 k6 run loadtest/capacity.js
import exec from 'k6/execution';
import { check, sleep } from 'k6';
import { Counter } from 'k6/metrics';
import { BASE_URL, CLIENT_TIMEOUT_S, ISOLATION, envDuration, envNumber, dur, SUMMARY_TREND_STATS } from './lib/config.js';
import { DEFAULT_CAPACITY_FILE } from './lib/capacity.js';
import { requireReady } from './lib/ready.js';
import { header, judge, jsonBody, postScript } from './lib/contract.js';
import { MIX, SCRIPTS, mixType } from './lib/scripts.js';
import { poolSnapshot, promValue, scrape } from './lib/prom.js';

const WARMUP_S = envDuration('CAPACITY_WARMUP', '5s');
const MEASURE_S = envDuration('CAPACITY_DURATION', '15s');
const VUS = envNumber('CAPACITY_VUS', 8);
const MIX_VUS = envNumber('CAPACITY_MIX_VUS', 16);
const WITH_MIX = envNumber('CAPACITY_MIX', 1) !== 0;
const PHASE_S = WARMUP_S + MEASURE_S;
// The mix phase starts once hello's last requests are answered (they finish
// within the gap at saturated latency).
const MIX_START_S = PHASE_S + 2;

const completed = new Counter('capacity_completed');
const refused = new Counter('capacity_refused');
const failed = new Counter('capacity_failed');
const mixCompleted = new Counter('capacity_mix_completed');
const mixRefused = new Counter('capacity_mix_refused');
const mixFailed = new Counter('capacity_mix_failed');

const scenarios = {
  hello: {
    executor: 'constant-vus',
    exec: 'hello',
    vus: VUS,
    duration: dur(PHASE_S),
    // Requests in flight at the end finish (uncounted, the window is over)
    // rather than being cut: a cut request is a client disconnect the server
    // would have to clean up while the next phase or test starts.
    gracefulStop: `${Math.ceil(CLIENT_TIMEOUT_S)}s`,
  },
};
if (WITH_MIX) {
  scenarios.mix = {
    executor: 'constant-vus',
    exec: 'mix',
    startTime: dur(MIX_START_S),
    vus: MIX_VUS,
    duration: dur(PHASE_S),
    gracefulStop: `${Math.ceil(CLIENT_TIMEOUT_S)}s`,
  };
}

export const options = {
  scenarios,
  summaryTrendStats: SUMMARY_TREND_STATS,
  thresholds: Object.assign(
    {
      // A measurement with nothing completed, or mostly failures, is no measurement.
      capacity_completed: ['count>0'],
      'checks{check:hello-world answered 200}': ['rate>0.95'],
      // Reported: the latency at saturation of each phase.
      'http_req_duration{scenario:hello}': ['max>=0'],
    },
    WITH_MIX ? { capacity_mix_completed: ['count>0'], 'http_req_duration{scenario:mix}': ['max>=0'] } : {},
  ),
};

export function setup() {
  const mode = requireReady('capacity');
  const { samples } = scrape();
  const snap = poolSnapshot(samples);
  const spawnSum = promValue(samples, 'pyexec_worker_spawn_duration_seconds_sum');
  const spawnCount = promValue(samples, 'pyexec_worker_spawn_duration_seconds_count');
  return {
    isolation: mode,
    pool_target_size: snap.target === undefined ? null : snap.target,
    spawn_mean_seconds_at_start: spawnCount ? spawnSum / spawnCount : null,
  };
}

function inWindow() {
  const elapsed = (Date.now() - exec.scenario.startTime) / 1000;
  return elapsed >= WARMUP_S && elapsed < PHASE_S;
}

// Be the polite client the server asks for, and keep k6's CPU low.
function backOff(res) {
  const ra = Number(header(res, 'Retry-After'));
  sleep(Math.min(Number.isFinite(ra) && ra > 0 ? ra : 1, 1));
}

export function hello() {
  const res = postScript(SCRIPTS.hello.source, { type: 'hello' });
  const counted = inWindow();
  const ok = res.status === 200;
  check(res, { 'hello-world answered 200': () => ok || res.status === 503 });
  if (ok) {
    if (counted) completed.add(1);
  } else if (res.status === 503) {
    if (counted) refused.add(1);
    backOff(res);
  } else {
    if (counted) failed.add(1);
    const body = jsonBody(res);
    console.warn(`capacity: status ${res.status} kind=${body && body.kind} error=${res.error || '-'}`);
    sleep(0.2);
  }
}

export function mix() {
  const type = mixType(exec.scenario.iterationInTest);
  const res = postScript(SCRIPTS[type].source, { type });
  const counted = inWindow();
  const outcome = judge(type, res, { allowShed: true });
  if (outcome === 'expected') {
    if (counted) mixCompleted.add(1);
  } else if (outcome === 'shed') {
    if (counted) mixRefused.add(1);
    backOff(res);
  } else {
    if (counted) mixFailed.add(1);
    sleep(0.2);
  }
}

function count(data, name) {
  const m = data.metrics[name];
  return m && m.values && m.values.count ? m.values.count : 0;
}

function latency(data, key) {
  const m = data.metrics[key];
  return m ? { med: m.values.med, 'p(95)': m.values['p(95)'], 'p(99)': m.values['p(99)'], max: m.values.max } : null;
}

export function handleSummary(data) {
  const jobs = count(data, 'capacity_completed');
  const mixJobs = count(data, 'capacity_mix_completed');
  const setupData = data.setup_data || {};
  const rate = (n) => Math.round((n / MEASURE_S) * 100) / 100;
  const result = {
    jobs_per_second: rate(jobs),
    completed_in_window: jobs,
    refused_503_in_window: count(data, 'capacity_refused'),
    failed_in_window: count(data, 'capacity_failed'),
    mix_jobs_per_second: WITH_MIX ? rate(mixJobs) : null,
    mix: WITH_MIX
      ? {
          weights: MIX,
          vus: MIX_VUS,
          completed_in_window: mixJobs,
          refused_503_in_window: count(data, 'capacity_mix_refused'),
          failed_in_window: count(data, 'capacity_mix_failed'),
          latency_ms_at_saturation: latency(data, 'http_req_duration{scenario:mix}'),
        }
      : null,
    window_seconds: MEASURE_S,
    warmup_seconds: WARMUP_S,
    vus: VUS,
    script: 'hello',
    base_url: BASE_URL,
    isolation: setupData.isolation || ISOLATION,
    pool_target_size: setupData.pool_target_size === undefined ? null : setupData.pool_target_size,
    spawn_mean_seconds_at_start: setupData.spawn_mean_seconds_at_start === undefined ? null : setupData.spawn_mean_seconds_at_start,
    latency_ms_at_saturation: latency(data, 'http_req_duration{scenario:hello}'),
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
  const m = result.mix;
  out.stdout =
    `\ncapacity (${result.isolation}): ${result.jobs_per_second} jobs/s hello-world (${jobs} jobs in ${MEASURE_S}s with ${VUS} VUs; ` +
    `${result.refused_503_in_window} refused, ${result.failed_in_window} failed; pool ${result.pool_target_size}), ` +
    `saturated med ${fmt(result.latency_ms_at_saturation, 'med')} ms, p99 ${fmt(result.latency_ms_at_saturation, 'p(99)')} ms\n` +
    (m
      ? `capacity (${result.isolation}): ${result.mix_jobs_per_second} jobs/s the mix (${mixJobs} jobs with ${MIX_VUS} VUs; ` +
        `${m.refused_503_in_window} refused, ${m.failed_in_window} failed), saturated med ${fmt(m.latency_ms_at_saturation, 'med')} ms\n`
      : '') +
    `written to ${file}\n` +
    (failedThresholds.length ? `THRESHOLDS FAILED: ${failedThresholds.join(', ')}\n` : '');
  return out;
}

function fmt(o, k) {
  return o && typeof o[k] === 'number' ? o[k].toFixed(1) : '-';
}
