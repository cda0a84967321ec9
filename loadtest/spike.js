// Spike: idle, then a sudden burst at SPIKE_FACTOR (4) times capacity within one
// second, held SPIKE_HOLD (10 s), then idle again; afterwards the pool must be
// full again and a gentle load must meet load.js's budgets.
//
//   idle  SPIKE_IDLE (5 s)  ->  burst 1 s ramp + SPIKE_HOLD  ->  idle SPIKE_IDLE*2
//   pool  one look at /metrics: every worker ready again (pool refilled)
//   after 0.5 x capacity for SPIKE_AFTER (15 s): budgets of load.js, no refusal
//
// During the burst the rules of stress.js apply: expected answers or a fast 503
// with Retry-After; no other 5xx; no client timeout.
//
//   k6 run loadtest/spike.js
import http from 'k6/http';
import exec from 'k6/execution';
import { check, sleep } from 'k6';
import { Rate } from 'k6/metrics';
import {
  BASE_URL, CLIENT_TIMEOUT_S, JOB_TIMEOUT_S, QUEUE_TIMEOUT_S, SUMMARY_TREND_STATS,
  dur, envDuration, envNumber, perMinute, vusFor, withAuth,
} from './lib/config.js';
import { loadCapacity } from './lib/capacity.js';
import { requireReady } from './lib/ready.js';
import { SHED_LIMIT_S, judge, postScript } from './lib/contract.js';
import { SCRIPTS, mixType } from './lib/scripts.js';
import { poolSnapshot, scrape } from './lib/prom.js';
import { latencyThresholds, sheddingThresholds, successThresholds } from './lib/thresholds.js';

const CAP = loadCapacity().jobs_per_second;
const FACTOR = envNumber('SPIKE_FACTOR', 4);
const IDLE_S = envDuration('SPIKE_IDLE', '5s');
const HOLD_S = envDuration('SPIKE_HOLD', '10s');
const AFTER_S = envDuration('SPIKE_AFTER', '15s');
const MAX_ERROR_RATE = envNumber('LOAD_MAX_ERROR_RATE', 0.01);
// After the burst: the last requests drain (queue deadline + job timeout), then
// the pool refills. SPIKE_IDLE*2 of quiet at least.
const QUIET_S = Math.max(IDLE_S * 2, QUEUE_TIMEOUT_S + JOB_TIMEOUT_S + 3);

const peakRate = perMinute(CAP * FACTOR);
const afterRate = perMinute(CAP * 0.5);
const worst = Math.min(QUEUE_TIMEOUT_S + JOB_TIMEOUT_S, CLIENT_TIMEOUT_S) + 1;
const burstEnd = IDLE_S + 1 + HOLD_S + 1;

const poolRefilled = new Rate('spike_pool_refilled');

export const options = {
  scenarios: {
    burst: Object.assign(
      {
        executor: 'ramping-arrival-rate',
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
  },
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
  ),
};

export function setup() {
  requireReady('spike');
  console.log(
    `spike: capacity ${CAP} jobs/s; idle ${IDLE_S}s, burst to ${(peakRate / 60).toFixed(2)}/s held ${HOLD_S}s, ` +
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
