// Settings shared by every k6 script, all from the environment (k6 -e NAME=value,
// or exported variables: k6 passes the process environment through).
//
// The server-side values (PYEXEC_TIMEOUT, PYEXEC_QUEUE_TIMEOUT) must match what
// the server under test was started with: the thresholds are derived from them.

export const BASE_URL = (__ENV.BASE_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');

export function envNumber(name, fallback) {
  const raw = __ENV[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n)) throw new Error(`${name}=${raw} is not a number`);
  return n;
}

// Durations as k6 writes them: "90s", "2m", "1m30s", "1h", "500ms", or a bare
// number of seconds. Returns seconds.
export function parseDuration(text) {
  const s = String(text).trim();
  if (/^\d+(\.\d+)?$/.test(s)) return Number(s);
  const re = /(\d+(?:\.\d+)?)(ms|h|m|s)/g;
  let total = 0;
  let consumed = 0;
  let m;
  while ((m = re.exec(s)) !== null) {
    const v = Number(m[1]);
    total += m[2] === 'h' ? v * 3600 : m[2] === 'm' ? v * 60 : m[2] === 's' ? v : v / 1000;
    consumed += m[0].length;
  }
  if (consumed !== s.length || consumed === 0) throw new Error(`cannot parse duration "${text}"`);
  return total;
}

export function envDuration(name, fallback) {
  const raw = __ENV[name];
  return parseDuration(raw === undefined || raw === '' ? fallback : raw);
}

// k6 wants whole units in scenario durations; milliseconds keep the precision.
export function dur(seconds) {
  return `${Math.max(0, Math.round(seconds * 1000))}ms`;
}

// The server's per-job wall-clock limit (PYEXEC_TIMEOUT, default 10 s) and how
// long a request may wait for a worker before it gets 503 (PYEXEC_QUEUE_TIMEOUT).
export const JOB_TIMEOUT_S = envNumber('PYEXEC_TIMEOUT', 10);
export const QUEUE_TIMEOUT_S = envNumber('PYEXEC_QUEUE_TIMEOUT', 5);

// The longest a correct server can take to answer: wait for a worker, then run
// to the deadline, then the kill. Anything longer is a client-side timeout and a
// failure of the service. Over a WAN raise it with CLIENT_TIMEOUT (seconds).
export const CLIENT_TIMEOUT_S = envNumber('CLIENT_TIMEOUT', QUEUE_TIMEOUT_S + JOB_TIMEOUT_S + 5);

// Latency thresholds are written for the local 2-core machine. Against a remote
// deployment scale them (LATENCY_FACTOR) and add the network round trip
// (LATENCY_OFFSET_MS), e.g. LATENCY_FACTOR=2 LATENCY_OFFSET_MS=60 for Cloud Run.
const LATENCY_FACTOR = envNumber('LATENCY_FACTOR', 1);
const LATENCY_OFFSET_MS = envNumber('LATENCY_OFFSET_MS', 0);
export function ms(localBudget) {
  return Math.round(localBudget * LATENCY_FACTOR + LATENCY_OFFSET_MS);
}

// The isolation mode of the server under test (PYEXEC_ISOLATION, the server's
// default fork): some thresholds hold in one mode only (the burst target of
// fork mode). run.sh sets it per mode; setup() checks it against /metrics.
export const ISOLATION = __ENV.PYEXEC_ISOLATION || 'fork';
if (ISOLATION !== 'fork' && ISOLATION !== 'spawn') {
  throw new Error(`PYEXEC_ISOLATION=${ISOLATION}: fork or spawn`);
}

// Upper bound on VUs any arrival-rate scenario may allocate: keeps k6's own
// memory and CPU modest on a machine it shares with the server.
export const MAX_VUS = envNumber('MAX_VUS', 150);

// Enough VUs to hold `ratePerSecond` when each iteration can take `worstSeconds`;
// `typicalSeconds` of them are allocated before the start (k6 drops iterations
// while it initialises more VUs mid-test).
export function vusFor(ratePerSecond, worstSeconds, typicalSeconds) {
  const max = Math.min(MAX_VUS, Math.ceil(ratePerSecond * worstSeconds) + 5);
  const pre = Math.min(max, Math.ceil(ratePerSecond * (typicalSeconds || 0.5)) + 2);
  return { preAllocatedVUs: pre, maxVUs: max };
}

// The highest arrival rate a script asks of k6 (MAX_RATE, requests/s). k6 runs
// on the cores it measures: here it costs 0.3 to 0.8 CPU-ms per request, so
// 400 req/s takes up to a sixth of a 2-core machine from the server under
// test, and every request waiting in the queue holds one of MAX_VUS. A rate above it is
// clamped, and the script says so.
export const MAX_RATE = envNumber('MAX_RATE', 400);

// Arrival rates are given per minute so that fractions of a few jobs/s stay exact
// (k6 rates are integers per timeUnit). Clamped to MAX_RATE.
export function perMinute(ratePerSecond) {
  return Math.max(1, Math.round(Math.min(ratePerSecond, MAX_RATE) * 60));
}

// A note for setup()'s log line when `ratePerSecond` was clamped.
export function clampNote(ratePerSecond) {
  return ratePerSecond > MAX_RATE ? ` (${ratePerSecond.toFixed(0)}/s asked, clamped to MAX_RATE=${MAX_RATE})` : '';
}

export const SUMMARY_TREND_STATS = ['avg', 'min', 'med', 'max', 'p(90)', 'p(95)', 'p(99)'];

// Against a Cloud Run service that requires authentication:
//   AUTH_TOKEN=$(gcloud auth print-identity-token) BASE_URL=https://... k6 run ...
// adds "Authorization: Bearer <token>" to every request.
export function withAuth(params) {
  const p = Object.assign({}, params || {});
  if (__ENV.AUTH_TOKEN) p.headers = Object.assign({ Authorization: `Bearer ${__ENV.AUTH_TOKEN}` }, p.headers || {});
  return p;
}
