// Stress: the arrival rate ramped to STRESS_FACTOR (3) times capacity (the mix's,
// see capacity.js), then a recovery phase at half capacity. Four scenarios, one
// per phase, so that the thresholds can be put on each phase through the
// `scenario` tag:
//
//   warm      0.5 x capacity                          10% of STRESS_DURATION
//   overload  capacity -> 3 x capacity, then held     35% + 25%
//   (settle)  nothing new for PYEXEC_QUEUE_TIMEOUT + PYEXEC_TIMEOUT + 1 s
//   recovery  0.5 x capacity                          30%
//
// While overloaded the service may refuse, but only properly: every answer is
// the mix's expected one (200, 400 script_exception, 408 timeout) or a 503
// kind=overloaded with Retry-After that comes no later than the queue wait
// deadline (+1 s). No other 5xx, no client-side timeout, no 503 without
// Retry-After. In recovery the same latency budgets as load.js apply and
// nothing may be refused.
//
//   k6 run loadtest/stress.js                        # 90 s
//   STRESS_DURATION=5m STRESS_FACTOR=4 k6 run loadtest/stress.js
import exec from 'k6/execution';
import {
  BASE_URL, CLIENT_TIMEOUT_S, JOB_TIMEOUT_S, QUEUE_TIMEOUT_S, SUMMARY_TREND_STATS,
  clampNote, dur, envDuration, envNumber, perMinute, vusFor,
} from './lib/config.js';
import { loadCapacity } from './lib/capacity.js';
import { requireReady } from './lib/ready.js';
import { SHED_LIMIT_S, judge, postScript } from './lib/contract.js';
import { SCRIPTS, mixType } from './lib/scripts.js';
import { latencyThresholds, sheddingThresholds, successThresholds } from './lib/thresholds.js';

const CAP = loadCapacity().mix;
const FACTOR = envNumber('STRESS_FACTOR', 3);
const BASE_FRACTION = envNumber('STRESS_BASE_FRACTION', 0.5);
const TOTAL_S = envDuration('STRESS_DURATION', '85s');
const WARM_S = TOTAL_S * 0.1;
const RAMP_S = TOTAL_S * 0.35;
const HOLD_S = TOTAL_S * 0.25;
const SETTLE_S = envDuration('STRESS_SETTLE', `${QUEUE_TIMEOUT_S + JOB_TIMEOUT_S + 1}s`);
const RECOVERY_S = TOTAL_S * 0.3;
const MAX_ERROR_RATE = envNumber('LOAD_MAX_ERROR_RATE', 0.01);

const baseRate = perMinute(CAP * BASE_FRACTION);
const capRate = perMinute(CAP);
const peakRate = perMinute(CAP * FACTOR);
const worst = Math.min(QUEUE_TIMEOUT_S + JOB_TIMEOUT_S, CLIENT_TIMEOUT_S) + 1;

export const options = {
  scenarios: {
    warm: Object.assign(
      {
        executor: 'constant-arrival-rate',
        rate: baseRate,
        timeUnit: '1m',
        duration: dur(WARM_S),
        gracefulStop: `${Math.ceil(CLIENT_TIMEOUT_S)}s`,
      },
      vusFor(baseRate / 60, worst),
    ),
    overload: Object.assign(
      {
        executor: 'ramping-arrival-rate',
        startTime: dur(WARM_S),
        startRate: capRate,
        timeUnit: '1m',
        stages: [
          { duration: dur(RAMP_S), target: peakRate },
          { duration: dur(HOLD_S), target: peakRate },
        ],
        // Let the requests in flight at the end get their answers: a request
        // cut by k6 would hide a slow one.
        gracefulStop: `${Math.ceil(CLIENT_TIMEOUT_S)}s`,
      },
      // Under overload most requests wait up to the queue deadline.
      vusFor(peakRate / 60, worst, QUEUE_TIMEOUT_S + 0.5),
    ),
    recovery: Object.assign(
      {
        executor: 'constant-arrival-rate',
        startTime: dur(WARM_S + RAMP_S + HOLD_S + SETTLE_S),
        rate: baseRate,
        timeUnit: '1m',
        duration: dur(RECOVERY_S),
        gracefulStop: `${Math.ceil(CLIENT_TIMEOUT_S)}s`,
      },
      vusFor(baseRate / 60, worst),
    ),
  },
  summaryTrendStats: SUMMARY_TREND_STATS,
  thresholds: Object.assign(
    sheddingThresholds(),
    {
      // While overloaded: every answer expected or a proper 503; an accepted
      // hello-world waited at most the queue deadline before it ran.
      'job_unexpected{scenario:overload}': [`rate<=${MAX_ERROR_RATE}`],
      'http_req_duration{scenario:overload,type:hello}': [`max<${Math.round(SHED_LIMIT_S * 1000)}`],
      // Reported, not judged (always true): how much was refused, and when.
      'job_shed{scenario:overload}': ['count>=0'],
      'job_shed{scenario:warm}': ['count==0'],
      'http_reqs{scenario:overload}': ['count>=0'],
      'http_reqs{scenario:recovery}': ['count>=0'],
      'dropped_iterations{scenario:overload}': ['count>=0'],
      // Recovery: back to load.js's budgets, nothing refused.
      'job_unexpected{scenario:recovery}': [`rate<=${MAX_ERROR_RATE}`],
      'job_shed{scenario:recovery}': ['count==0'],
      'job_unexpected{scenario:warm}': [`rate<=${MAX_ERROR_RATE}`],
    },
    latencyThresholds('scenario:recovery'),
    successThresholds(MAX_ERROR_RATE, 'scenario:recovery'),
  ),
};

export function setup() {
  requireReady('stress');
  console.log(
    `stress: capacity ${CAP} jobs/s; warm ${(baseRate / 60).toFixed(2)}/s for ${WARM_S.toFixed(0)}s, ` +
      `overload ${(capRate / 60).toFixed(2)} -> ${(peakRate / 60).toFixed(2)}/s${clampNote(CAP * FACTOR)} over ${RAMP_S.toFixed(0)}s, held ${HOLD_S.toFixed(0)}s, ` +
      `settle ${SETTLE_S}s, recovery ${(baseRate / 60).toFixed(2)}/s for ${RECOVERY_S.toFixed(0)}s; ` +
      `a 503 must come within ${SHED_LIMIT_S}s`,
  );
  return {};
}

export default function () {
  const type = mixType(exec.scenario.iterationInTest);
  const res = postScript(SCRIPTS[type].source, { type });
  judge(type, res, { allowShed: exec.scenario.name === 'overload' });
}
