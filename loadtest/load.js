// Load: an open model (constant-arrival-rate) below capacity with the realistic
// mix (hello 40%, numpy 15%, pandas 15%, print 15%, raise 10%, timeout 5%), at
// LOAD_FRACTION of the mix's measured capacity (see capacity.js).
// Passes when every script type meets its latency budget (p95/p99, tagged by
// `type`), the scripts that should succeed do (job_failed), and nothing else
// goes wrong: no 503, no other 5xx, no client timeout, no dropped iteration.
//
//   k6 run loadtest/load.js                          # LOAD_FRACTION=0.5 of capacity, 60 s
//   CAPACITY=5 LOAD_FRACTION=0.7 LOAD_DURATION=5m k6 run loadtest/load.js
import exec from 'k6/execution';
import {
  BASE_URL, CLIENT_TIMEOUT_S, JOB_TIMEOUT_S, QUEUE_TIMEOUT_S, SUMMARY_TREND_STATS,
  clampNote, dur, envDuration, envNumber, perMinute, vusFor,
} from './lib/config.js';
import { loadCapacity } from './lib/capacity.js';
import { requireReady } from './lib/ready.js';
import { judge, postScript } from './lib/contract.js';
import { SCRIPTS, mixType } from './lib/scripts.js';
import { latencyThresholds, successThresholds } from './lib/thresholds.js';

const CAP = loadCapacity();
const FRACTION = envNumber('LOAD_FRACTION', 0.5);
const DURATION_S = envDuration('LOAD_DURATION', '60s');
const RATE_PER_MIN = perMinute(CAP.mix * FRACTION);
const MAX_ERROR_RATE = envNumber('LOAD_MAX_ERROR_RATE', 0.01);

export const options = {
  scenarios: {
    load: Object.assign(
      {
        executor: 'constant-arrival-rate',
        rate: RATE_PER_MIN,
        timeUnit: '1m',
        duration: dur(DURATION_S),
        gracefulStop: `${Math.ceil(CLIENT_TIMEOUT_S)}s`,
      },
      vusFor(RATE_PER_MIN / 60, JOB_TIMEOUT_S + 1),
    ),
  },
  summaryTrendStats: SUMMARY_TREND_STATS,
  thresholds: Object.assign(
    {
      job_unexpected: [`rate<=${MAX_ERROR_RATE}`],
      job_client_timeout: ['count==0'],
      job_other_5xx: ['count==0'],
      job_shed: ['count==0'],
      job_contract: ['rate==1'],
      // k6 could not start an iteration on time: the server held VUs too long.
      dropped_iterations: ['count==0'],
    },
    latencyThresholds(),
    successThresholds(MAX_ERROR_RATE),
  ),
};

export function setup() {
  requireReady('load');
  console.log(
    `load: capacity ${CAP.mix} jobs/s (${CAP.source}), arrival rate ${(RATE_PER_MIN / 60).toFixed(2)}/s ` +
      `(${FRACTION} of capacity)${clampNote(CAP.mix * FRACTION)} for ${DURATION_S}s; job timeout ${JOB_TIMEOUT_S}s, queue timeout ${QUEUE_TIMEOUT_S}s`,
  );
  return { capacity: CAP.mix, rate_per_second: RATE_PER_MIN / 60, fraction: FRACTION };
}

export default function () {
  const type = mixType(exec.scenario.iterationInTest);
  const res = postScript(SCRIPTS[type].source, { type });
  judge(type, res);
}
