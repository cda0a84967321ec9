// Latency budgets per script type (ms) for a warm pool below capacity on the
// local 2-core machine, end to end as k6 sees it (http_req_duration). They are
// scaled by LATENCY_FACTOR and offset by LATENCY_OFFSET_MS (see config.js) for
// remote deployments. The timeout script is judged against PYEXEC_TIMEOUT.
import { JOB_TIMEOUT_S, ms } from './config.js';
import { SHED_LIMIT_S, TIMEOUT_MIN_MS } from './contract.js';
import { SUCCESS_TYPES, TYPES } from './scripts.js';

export const BUDGET_MS = {
  hello: { p95: 25, p99: 50 },
  print: { p95: 25, p99: 50 },
  raise: { p95: 25, p99: 50 },
  numpy: { p95: 60, p99: 120 },
  pandas: { p95: 80, p99: 150 },
};

// A timeout answers at the deadline: not before, and not much after (the kill
// of the jail plus the answer).
export function timeoutBudget() {
  return { min: TIMEOUT_MIN_MS, max: ms(JOB_TIMEOUT_S * 1000 + 1500) };
}

// thresholds on http_req_duration{type:T[,extra]} for every type of the mix.
// `extra` is a tag filter string such as "scenario:recovery"; `types` limits it.
export function latencyThresholds(extra, types) {
  const out = {};
  const suffix = extra ? `,${extra}` : '';
  for (const t of types || TYPES) {
    const key = `http_req_duration{type:${t}${suffix}}`;
    if (t === 'timeout') {
      // Not before the deadline: job_timeout_early; not much after: max.
      out[extra ? `job_timeout_early{${extra}}` : 'job_timeout_early'] = ['rate==0'];
      out[key] = [`max<${timeoutBudget().max}`];
    } else {
      out[key] = [`p(95)<${ms(BUDGET_MS[t].p95)}`, `p(99)<${ms(BUDGET_MS[t].p99)}`];
    }
  }
  return out;
}

// job_failed per type that should succeed, plus the total.
export function successThresholds(maxRate, extra) {
  const suffix = extra ? `,${extra}` : '';
  const out = {};
  out[extra ? `job_failed{${extra}}` : 'job_failed'] = [`rate<=${maxRate}`];
  for (const t of SUCCESS_TYPES) out[`job_failed{type:${t}${suffix}}`] = [`rate<=${maxRate}`];
  return out;
}

// What must hold in every phase of a test that overloads the server: no client
// timeout, no 5xx but 503 overloaded, no 503 without Retry-After, every answer
// in the contract's shape, and a refusal at worst after the queue deadline.
export function sheddingThresholds() {
  return {
    job_client_timeout: ['count==0'],
    job_other_5xx: ['count==0'],
    job_shed_bad: ['count==0'],
    job_contract: ['rate==1'],
    job_shed_duration: [`max<${Math.round(SHED_LIMIT_S * 1000)}`],
  };
}
