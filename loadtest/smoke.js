// Smoke: one user, once, through every endpoint and every error kind a single
// client can provoke, checking the response contract of issue 2: status, JSON
// body with result/stdout or error/kind, X-Request-Id on every answer, the
// request id echoed, Retry-After-free success, /metrics moving. A few seconds
// (plus one PYEXEC_TIMEOUT for the timeout case); part of CI.
//
//   k6 run loadtest/smoke.js                  # server on 127.0.0.1:8080
//   BASE_URL=https://pyexec-xyz.a.run.app k6 run loadtest/smoke.js
//
// Not covered here (needs concurrency): 503 overloaded, see stress.js/spike.js.
import http from 'k6/http';
import { check, group } from 'k6';
import { BASE_URL, JOB_TIMEOUT_S, CLIENT_TIMEOUT_S, envNumber, withAuth, SUMMARY_TREND_STATS } from './lib/config.js';
import { header, jsonBody, judge, postScript } from './lib/contract.js';
import { SCRIPTS, TYPES } from './lib/scripts.js';
import { promValue, scrape } from './lib/prom.js';

const MAX_SCRIPT_CHARS = envNumber('PYEXEC_MAX_SCRIPT_CHARS', 100000);

export const options = {
  scenarios: {
    smoke: { executor: 'per-vu-iterations', vus: 1, iterations: 1, maxDuration: `${Math.ceil(JOB_TIMEOUT_S * 2 + 60)}s` },
  },
  summaryTrendStats: SUMMARY_TREND_STATS,
  thresholds: {
    // Every single check must pass.
    checks: ['rate==1'],
    job_unexpected: ['rate==0'],
    job_contract: ['rate==1'],
  },
};

// Present from the start (gauges, and the spawns of the initial pool).
const REQUIRED_METRICS = [
  'process_resident_memory_bytes',
  'process_open_fds',
  'pyexec_workers',
  'pyexec_pool_target_size',
  'pyexec_worker_spawn_duration_seconds_bucket',
  'pyexec_queue_depth',
];
// Present once jobs ran (a labelled counter has no series before its first
// increment unless the server pre-creates them).
const REQUIRED_AFTER_JOBS = ['pyexec_jobs_total', 'pyexec_job_duration_seconds_bucket', 'pyexec_rejected_total'];

// Error cases beyond the mix: [name, script, status, kind].
const ERROR_CASES = [
  ['syntax_error', 'def main(:\n    return {}\n', 400, 'syntax_error'],
  ['missing_main', 'x = 1\n', 400, 'missing_main'],
  ['invalid_result', 'def main():\n    return [1, 2, 3]\n', 400, 'invalid_result'],
  [
    'result_too_large',
    'def main():\n    return {"x": "a" * (11 * 1024 * 1024)}\n',
    400,
    'result_too_large',
  ],
  [
    'memory_limit',
    'def main():\n    blob = bytearray(b"x") * (600 * 1024 * 1024)\n    return {"n": len(blob)}\n',
    400,
    'memory_limit',
  ],
  ['worker_exited', 'import os\n\ndef main():\n    os._exit(3)\n', 400, 'worker_exited'],
  ['import_exception', 'print("before")\nraise RuntimeError("at import")\n\ndef main():\n    return {}\n', 400, 'script_exception'],
];

function isJson(res) {
  return String(header(res, 'Content-Type') || '').toLowerCase().indexOf('application/json') === 0;
}

// The common checks on any answer of the API.
function checkAnswer(res, name, status, kind) {
  const body = jsonBody(res);
  const c = {};
  c[`${name}: status ${status}`] = (r) => r.status === status;
  c[`${name}: X-Request-Id`] = (r) => !!header(r, 'X-Request-Id');
  if (kind !== undefined) {
    c[`${name}: JSON body`] = (r) => body !== null && isJson(r);
    c[`${name}: kind ${kind}`] = () => body !== null && body.kind === kind;
    c[`${name}: error sentence`] = () => body !== null && typeof body.error === 'string' && body.error.length > 0;
  }
  check(res, c, { case: name });
  if (res.status !== status || (kind !== undefined && (!body || body.kind !== kind))) {
    console.warn(`${name}: got status ${res.status} body ${String(res.body).slice(0, 300)}`);
  }
  return body;
}

function post(name, rawBody, contentType) {
  const headers = contentType === null ? {} : { 'Content-Type': contentType || 'application/json' };
  return http.post(
    `${BASE_URL}/execute`,
    rawBody,
    withAuth({
      headers,
      tags: { name: 'POST /execute', case: name },
      timeout: `${CLIENT_TIMEOUT_S}s`,
      responseCallback: http.expectedStatuses(200, 400, 408, 413, 415),
    }),
  );
}

export default function () {
  let before = {};

  group('health and metrics', () => {
    const h = http.get(`${BASE_URL}/healthz`, withAuth({ tags: { name: 'GET /healthz' } }));
    checkAnswer(h, 'healthz', 200);
    const r = http.get(`${BASE_URL}/readyz`, withAuth({ tags: { name: 'GET /readyz' } }));
    checkAnswer(r, 'readyz', 200);

    const { res, samples } = scrape();
    checkAnswer(res, 'metrics', 200);
    const names = {};
    for (const s of samples) names[s.name] = true;
    const c = {
      'metrics: text exposition content type': (x) => String(header(x, 'Content-Type') || '').indexOf('text/plain') === 0,
    };
    for (const n of REQUIRED_METRICS) c[`metrics: has ${n}`] = () => names[n] === true;
    c['metrics: pool target size > 0 (warm pool) or = 0 (baseline)'] = () =>
      (promValue(samples, 'pyexec_pool_target_size') || 0) >= 0;
    check(res, c);
    before = {
      ok: promValue(samples, 'pyexec_jobs_total', { outcome: 'ok' }) || 0,
      exc: promValue(samples, 'pyexec_jobs_total', { outcome: 'script_exception' }) || 0,
      timeout: promValue(samples, 'pyexec_jobs_total', { outcome: 'timeout' }) || 0,
    };
  });

  group('the mix: each script type', () => {
    for (const type of TYPES) {
      const res = postScript(SCRIPTS[type].source, { type });
      judge(type, res);
      check(res, {
        [`${type}: JSON content type`]: (r) => isJson(r),
        [`${type}: no Retry-After on a non-503`]: (r) => header(r, 'Retry-After') === undefined,
      });
    }
  });

  group('script semantics', () => {
    const guard =
      'print("top")\n\ndef main():\n    print("main ran")\n    return {"name": __name__}\n\n' +
      'if __name__ == "__main__":\n    main()\n    print("guard fired")\n';
    const res = post('main_guard', JSON.stringify({ script: guard }));
    const body = checkAnswer(res, 'main_guard', 200);
    check(res, {
      'main_guard: __name__ is not __main__': () => body && body.result && body.result.name !== '__main__',
      'main_guard: main() ran exactly once': () => body && body.stdout === 'top\nmain ran\n',
    });

    const fd = 'import os\n\ndef main():\n    os.write(1, b"raw fd write\\n")\n    print("print")\n    return {}\n';
    const r2 = post('fd_write', JSON.stringify({ script: fd }));
    const b2 = checkAnswer(r2, 'fd_write', 200);
    check(r2, {
      'fd_write: os.write(1) output captured': () => b2 && typeof b2.stdout === 'string' && b2.stdout.indexOf('raw fd write') >= 0 && b2.stdout.indexOf('print') >= 0,
    });
  });

  group('script error kinds', () => {
    for (const [name, script, status, kind] of ERROR_CASES) {
      const res = post(name, JSON.stringify({ script }));
      const body = checkAnswer(res, name, status, kind);
      if (name === 'syntax_error') {
        check(res, { 'syntax_error: message names the line': () => body && /line\s*1/.test(String(body.error)) });
      }
      if (name === 'import_exception') {
        check(res, { 'import_exception: stdout before the failure': () => body && body.stdout === 'before\n' });
      }
    }
  });

  group('request errors', () => {
    checkAnswer(post('not_json', 'this is not json'), 'not_json', 400, 'invalid_request');
    checkAnswer(post('not_object', '[1, 2]'), 'not_object', 400, 'invalid_request');
    checkAnswer(post('script_missing', '{"code": "x"}'), 'script_missing', 400, 'invalid_request');
    checkAnswer(post('script_not_string', '{"script": 42}'), 'script_not_string', 400, 'invalid_request');
    checkAnswer(post('script_blank', '{"script": "  \\n\\t "}'), 'script_blank', 400, 'invalid_request');
    checkAnswer(post('wrong_content_type', JSON.stringify({ script: SCRIPTS.hello.source }), 'text/plain'), 'wrong_content_type', 415, 'unsupported_media_type');
    checkAnswer(post('no_content_type', JSON.stringify({ script: SCRIPTS.hello.source }), null), 'no_content_type', 415, 'unsupported_media_type');
    const big = 'def main():\n    return {}\n' + '#'.repeat(MAX_SCRIPT_CHARS);
    checkAnswer(post('script_too_large', JSON.stringify({ script: big })), 'script_too_large', 413, 'script_too_large');
    // Exactly at the limit is still accepted.
    const edge = 'def main():\n    return {}\n';
    const atLimit = edge + '#'.repeat(Math.max(0, MAX_SCRIPT_CHARS - edge.length));
    checkAnswer(post('script_at_limit', JSON.stringify({ script: atLimit })), 'script_at_limit', 200);
  });

  group('routing and request ids', () => {
    const nf = http.get(`${BASE_URL}/no-such-path`, withAuth({ tags: { name: 'GET /unknown' }, responseCallback: http.expectedStatuses(404) }));
    checkAnswer(nf, 'unknown_path', 404);
    const wm = http.get(`${BASE_URL}/execute`, withAuth({ tags: { name: 'GET /execute' }, responseCallback: http.expectedStatuses(405) }));
    checkAnswer(wm, 'wrong_method', 405);

    const rid = `k6-smoke-${Date.now()}`;
    const res = postScript(SCRIPTS.hello.source, { type: 'hello' }, { 'X-Request-Id': rid });
    check(res, { 'request id: the one sent is echoed': (r) => header(r, 'X-Request-Id') === rid });
    const other = postScript(SCRIPTS.hello.source, { type: 'hello' });
    check(other, { 'request id: generated ids differ': (r) => !!header(r, 'X-Request-Id') && header(r, 'X-Request-Id') !== rid });
  });

  group('metrics moved', () => {
    const { samples } = scrape();
    const ok = promValue(samples, 'pyexec_jobs_total', { outcome: 'ok' }) || 0;
    const exc = promValue(samples, 'pyexec_jobs_total', { outcome: 'script_exception' }) || 0;
    const to = promValue(samples, 'pyexec_jobs_total', { outcome: 'timeout' }) || 0;
    const names = {};
    for (const s of samples) names[s.name] = true;
    const c = {};
    for (const n of REQUIRED_AFTER_JOBS) c[`metrics: has ${n} after jobs`] = () => names[n] === true;
    check(null, c);
    check(null, {
      'metrics: jobs_total{outcome="ok"} grew': () => ok > before.ok,
      'metrics: jobs_total{outcome="script_exception"} grew': () => exc > before.exc,
      'metrics: jobs_total{outcome="timeout"} grew': () => to > before.timeout,
    });
  });
}
