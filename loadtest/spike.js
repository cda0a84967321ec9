// Spike: first the issue's burst check, then idle, then a sudden burst at
// SPIKE_FACTOR (4) times capacity (the mix's, see capacity.js) within one
// second, held SPIKE_HOLD (10 s), then idle again; afterwards the pool must be
// full again and a gentle load must meet load.js's budgets.
//
//   concurrent  SPIKE_CONCURRENT_ROUNDS rounds, each on an idle full pool: SPIKE_CONCURRENT
//               (16) hello-world requests at once (http.batch). Fork mode: p50 <= 15 ms,
//               max <= 50 ms, none refused (the issue's target). Spawn mode: reported.
//   idle  SPIKE_IDLE (5 s)  ->  burst 1 s ramp + SPIKE_HOLD  ->  idle SPIKE_IDLE*2
//   pool  one look at /metrics: every worker ready again (pool refilled)
//   after 0.5 x capacity for SPIKE_AFTER (15 s): budgets of load.js, no refusal
//
// During the burst the rules of stress.js apply: expected answers or a fast 503
// with Retry-After; no other 5xx; no client timeout. The burst's rate is
// clamped to MAX_RATE (k6 shares the machine; see config.js).
//
//   k6 run loadtest/spike.js
import http from 'k6/http';
import exec from 'k6/execution';
import { check, sleep } from 'k6';
import { Rate } from 'k6/metrics';
import {
  BASE_URL, CLIENT_TIMEOUT_S, ISOLATION, JOB_TIMEOUT_S, QUEUE_TIMEOUT_S, SUMMARY_TREND_STATS,
  clampNote, dur, envDuration, envNumber, ms, perMinute, vusFor, withAuth,
} from './lib/config.js';
import { loadCapacity } from './lib/capacity.js';
import { requireReady } from './lib/ready.js';
import { SHED_LIMIT_S, judge, postScript, scriptRequest } from './lib/contract.js';
import { SCRIPTS, mixType } from './lib/scripts.js';
import { poolSnapshot, scrape } from './lib/prom.js';
import { latencyThresholds, sheddingThresholds, successThresholds } from './lib/thresholds.js';

const CAP = loadCapacity().mix;
const FACTOR = envNumber('SPIKE_FACTOR', 4);
const IDLE_S = envDuration('SPIKE_IDLE', '5s');
const HOLD_S = envDuration('SPIKE_HOLD', '10s');
const AFTER_S = envDuration('SPIKE_AFTER', '15s');
const MAX_ERROR_RATE = envNumber('LOAD_MAX_ERROR_RATE', 0.01);
// After the burst: the last requests drain (queue deadline + job timeout), then
// the pool refills. SPIKE_IDLE*2 of quiet at least.
const QUIET_S = Math.max(IDLE_S * 2, QUEUE_TIMEOUT_S + JOB_TIMEOUT_S + 3);

// The concurrent burst. A round waits for an idle full pool (fork mode refills
// 16 children in well under a second; spawn mode needs a few seconds for 4
// interpreters), so spawn mode does fewer rounds in a longer budget.
const FORK = ISOLATION === 'fork';
const CONCURRENT = envNumber('SPIKE_CONCURRENT', 16);
const ROUNDS = envNumber('SPIKE_CONCURRENT_ROUNDS', FORK ? 5 : 2);
const ROUND_S = FORK ? 3 : 8;
const CONCURRENT_S = ROUNDS > 0 ? ROUNDS * ROUND_S + 2 : 0;
const CONCURRENT_P50_MS = envNumber('SPIKE_CONCURRENT_P50_MS', 15);
const CONCURRENT_MAX_MS = envNumber('SPIKE_CONCURRENT_MAX_MS', 50);

const peakRate = perMinute(CAP * FACTOR);
const afterRate = perMinute(CAP * 0.5);
const worst = Math.min(QUEUE_TIMEOUT_S + JOB_TIMEOUT_S, CLIENT_TIMEOUT_S) + 1;
const burstStart = CONCURRENT_S;
const burstEnd = burstStart + IDLE_S + 1 + HOLD_S + 1;

const poolRefilled = new Rate('spike_pool_refilled');

// Fork mode holds the issue's target; spawn mode (a spawn per worker, a pool
// of 4) cannot, and reports its figures.
const concurrentThresholds = ROUNDS <= 0 ? {} : FORK
  ? {
      'http_req_duration{scenario:concurrent,type:hello}': [
        `med<=${ms(CONCURRENT_P50_MS)}`,
        `max<=${ms(CONCURRENT_MAX_MS)}`,
      ],
      'job_unexpected{scenario:concurrent}': ['rate==0'],
      'job_shed{scenario:concurrent}': ['count==0'],
      'http_reqs{scenario:concurrent,type:hello}': ['count>=0'],
    }
  : {
      'http_req_duration{scenario:concurrent,type:hello}': ['max>=0'],
      'job_shed{scenario:concurrent}': ['count>=0'],
      'http_reqs{scenario:concurrent,type:hello}': ['count>=0'],
    };

const concurrentScenario = ROUNDS <= 0 ? {} : {
  concurrent: {
    executor: 'per-vu-iterations',
    vus: 1,
    iterations: 1,
    exec: 'concurrentBurst',
    maxDuration: dur(CONCURRENT_S),
    // The burst's first seconds are idle: a last round may finish in them.
    gracefulStop: dur(IDLE_S),
  },
};

export const options = {
  // The concurrent burst's requests go out at once, not 6 per host.
  batch: CONCURRENT,
  batchPerHost: CONCURRENT,
  scenarios: Object.assign({}, concurrentScenario, {
    burst: Object.assign(
      {
        executor: 'ramping-arrival-rate',
        startTime: dur(burstStart),
        startRate: 0,
        timeUnit: '1m',
        stages: [
          { duration: dur(IDLE_S), target: 0 },
          { duration: '1s', target: peakRate },
          { duration: dur(HOLD_S), target: peakRate },
          { duration: '1s', target: 0 },
        ],
        gracefulStop: `${Math.ceil(CLIENT_TIMEOUT_S)}s`,
      },
      vusFor(peakRate / 60, worst, QUEUE_TIMEOUT_S + 0.5),
    ),
    pool: {
      executor: 'shared-iterations',
      startTime: dur(burstEnd + QUIET_S - 1),
      vus: 1,
      iterations: 1,
      exec: 'poolCheck',
      maxDuration: '30s',
    },
    after: Object.assign(
      {
        executor: 'constant-arrival-rate',
        startTime: dur(burstEnd + QUIET_S),
        rate: afterRate,
        timeUnit: '1m',
        duration: dur(AFTER_S),
        gracefulStop: `${Math.ceil(CLIENT_TIMEOUT_S)}s`,
      },
      vusFor(afterRate / 60, worst),
    ),
  }),
  summaryTrendStats: SUMMARY_TREND_STATS,
  thresholds: Object.assign(
    sheddingThresholds(),
    {
      'job_unexpected{scenario:burst}': [`rate<=${MAX_ERROR_RATE}`],
      'job_shed{scenario:burst}': ['count>=0'],
      'http_reqs{scenario:burst}': ['count>=0'],
      'http_req_duration{scenario:burst,type:hello}': [`max<${Math.round(SHED_LIMIT_S * 1000)}`],
      spike_pool_refilled: ['rate==1'],
      'job_unexpected{scenario:after}': [`rate<=${MAX_ERROR_RATE}`],
      'job_shed{scenario:after}': ['count==0'],
      'http_reqs{scenario:after}': ['count>=0'],
    },
    latencyThresholds('scenario:after'),
    successThresholds(MAX_ERROR_RATE, 'scenario:after'),
    concurrentThresholds,
  ),
};

export function setup() {
  requireReady('spike');
  console.log(
    `spike: capacity ${CAP} jobs/s; ${ROUNDS} rounds of ${CONCURRENT} concurrent hello-world ` +
      `(${FORK ? `p50 <= ${ms(CONCURRENT_P50_MS)} ms, max <= ${ms(CONCURRENT_MAX_MS)} ms, none refused` : 'reported'}); ` +
      `idle ${IDLE_S}s, burst to ${(peakRate / 60).toFixed(2)}/s${clampNote(CAP * FACTOR)} held ${HOLD_S}s, ` +
      `quiet ${QUIET_S}s, then ${(afterRate / 60).toFixed(2)}/s for ${AFTER_S}s`,
  );
  return {};
}

export default function () {
  const type = mixType(exec.scenario.iterationInTest);
  const res = postScript(SCRIPTS[type].source, { type });
  judge(type, res, { allowShed: exec.scenario.name === 'burst' });
}

// After the quiet period every worker of the pool is ready again (waits up to
// 20 s for stragglers): spawns failed or leaked slots would show here.
export function poolCheck() {
  let snap = null;
  for (let i = 0; i < 40; i++) {
    snap = poolSnapshot(scrape({ scenario: 'pool' }).samples);
    if (snap.target !== undefined && snap.ready !== undefined && snap.ready >= snap.target) break;
    sleep(0.5);
  }
  const ok = snap !== null && snap.target !== undefined && snap.ready >= snap.target && (snap.busy || 0) === 0;
  poolRefilled.add(ok);
  check(snap, { 'pool refilled after the spike': () => ok });
  const ready = http.get(`${BASE_URL}/readyz`, withAuth({ tags: { name: 'GET /readyz' } }));
  check(ready, { 'ready after the spike': (r) => r.status === 200 });
  if (!ok) console.warn(`spike: pool not refilled: ${JSON.stringify(snap)}`);
}

// Waits (up to 10 s) until every pool slot is a ready worker and nothing runs.
function waitIdleFull() {
  for (let i = 0; i < 100; i++) {
    const snap = poolSnapshot(scrape({ phase: 'concurrent-wait' }).samples);
    if (snap.target !== undefined && (snap.ready || 0) >= snap.target && (snap.busy || 0) === 0 && (snap.queue || 0) === 0) {
      return true;
    }
    sleep(0.1);
  }
  return false;
}

// The issue's burst: SPIKE_CONCURRENT hello-world requests sent at the same
// moment to an idle server with a full pool, SPIKE_CONCURRENT_ROUNDS times.
export function concurrentBurst() {
  const deadline = Date.now() + (CONCURRENT_S - 1) * 1000;
  for (let round = 0; round < ROUNDS; round++) {
    if (Date.now() > deadline) {
      console.warn(`spike: concurrent: ${round} of ${ROUNDS} rounds in ${CONCURRENT_S}s; the rest skipped`);
      return;
    }
    if (!waitIdleFull()) console.warn(`spike: concurrent round ${round + 1}: pool not full and idle after 10 s; sending anyway`);
    sleep(0.2);
    const batch = [];
    for (let i = 0; i < CONCURRENT; i++) batch.push(scriptRequest(SCRIPTS.hello.source, { type: 'hello' }));
    const answers = http.batch(batch);
    for (const res of answers) judge('hello', res, { allowShed: !FORK });
  }
}
