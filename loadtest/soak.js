// Soak: SOAK_DURATION (default 10m) at SOAK_RATE requests/s, or without it at
// SOAK_FRACTION (0.7) of the mix's capacity, with the soak's mix SOAK_MIX
// (default: the mix with 1% timeouts instead of 5%: a timeout holds one of
// PYEXEC_MAX_JOBS slots for PYEXEC_TIMEOUT, and at the issue's 100 req/s 5%
// would hold 10 slots at once, more than a small instance has (6 in 2 GiB);
// 1% still ends a job child at its deadline once a second). Passes when nothing fails and the server's resident
// memory and open file descriptors stay flat, read from its /metrics:
//
//  * while running, a monitor samples /metrics every SOAK_SCRAPE_INTERVAL (10 s);
//    each sample is compared with the first one taken after SOAK_WARMUP (default
//    a fifth of the run, at most 60 s): growth beyond SOAK_RSS_GROWTH_MB (32 MiB)
//    or SOAK_FD_GROWTH (32 fds, in-flight connections and spawning workers
//    included) fails;
//  * idle against idle: setup() warms the server up and records RSS and fds
//    with the pool full and nothing in flight; teardown() waits for the same
//    state and compares, with the same bounds (idle fds: SOAK_IDLE_FD_GROWTH, 8).
//
// Connections are not reused between iterations, so the server's fd count at
// idle holds no keep-alive connections of k6 (and a per-connection leak shows).
// The figures are per server process: against Cloud Run pin one instance.
//
//   k6 run loadtest/soak.js
//   SOAK_DURATION=2m k6 run loadtest/soak.js
//   SOAK_DURATION=10m SOAK_RATE=100 k6 run loadtest/soak.js   # the issue's soak (fork mode)
import exec from 'k6/execution';
import { check, sleep } from 'k6';
import { Gauge, Rate, Trend } from 'k6/metrics';
import {
  BASE_URL, CLIENT_TIMEOUT_S, JOB_TIMEOUT_S, SUMMARY_TREND_STATS,
  clampNote, dur, envDuration, envNumber, perMinute, vusFor,
} from './lib/config.js';
import { loadCapacity } from './lib/capacity.js';
import { requireReady } from './lib/ready.js';
import { judge, postScript } from './lib/contract.js';
import { SCRIPTS, mixType, mixWheel, TYPES } from './lib/scripts.js';
import { poolSnapshot, scrape } from './lib/prom.js';
import { latencyThresholds, successThresholds } from './lib/thresholds.js';

// A fixed rate needs no capacity measurement.
const FIXED_RATE = envNumber('SOAK_RATE', 0);
const CAP = FIXED_RATE > 0 ? null : loadCapacity().mix;
const FRACTION = envNumber('SOAK_FRACTION', 0.7);
const WHEEL = mixWheel(__ENV.SOAK_MIX || 'hello:40,numpy:15,pandas:15,print:15,raise:14,timeout:1');
const DURATION_S = envDuration('SOAK_DURATION', '10m');
const SCRAPE_S = envDuration('SOAK_SCRAPE_INTERVAL', '10s');
const WARMUP_S = envDuration('SOAK_WARMUP', `${Math.min(60, DURATION_S / 5)}s`);
const RSS_BOUND = envNumber('SOAK_RSS_GROWTH_MB', 32) * 1024 * 1024;
const FD_BOUND = envNumber('SOAK_FD_GROWTH', 32);
const IDLE_FD_BOUND = envNumber('SOAK_IDLE_FD_GROWTH', 8);
const MAX_ERROR_RATE = envNumber('SOAK_MAX_ERROR_RATE', 0);
const ASKED = FIXED_RATE > 0 ? FIXED_RATE : CAP * FRACTION;
const RATE = perMinute(ASKED);

const rssGrowth = new Trend('soak_rss_growth_bytes');
const fdGrowth = new Trend('soak_fd_growth');
const rss = new Trend('soak_server_rss_bytes');
const fds = new Trend('soak_server_open_fds');
const idleRssGrowth = new Gauge('soak_idle_rss_growth_bytes');
const idleFdGrowth = new Gauge('soak_idle_fd_growth');
const scraped = new Rate('soak_metrics_scraped');

export const options = {
  noVUConnectionReuse: true,
  setupTimeout: '120s',
  teardownTimeout: '120s',
  scenarios: {
    soak: Object.assign(
      {
        executor: 'constant-arrival-rate',
        rate: RATE,
        timeUnit: '1m',
        duration: dur(DURATION_S),
        gracefulStop: `${Math.ceil(CLIENT_TIMEOUT_S)}s`,
      },
      vusFor(RATE / 60, JOB_TIMEOUT_S + 1),
    ),
    monitor: {
      executor: 'constant-vus',
      vus: 1,
      duration: dur(DURATION_S),
      exec: 'monitor',
      gracefulStop: `${Math.ceil(SCRAPE_S) + 5}s`,
    },
  },
  summaryTrendStats: SUMMARY_TREND_STATS,
  thresholds: Object.assign(
    {
      'job_unexpected{scenario:soak}': [`rate<=${MAX_ERROR_RATE}`],
      job_client_timeout: ['count==0'],
      job_other_5xx: ['count==0'],
      job_shed: ['count==0'],
      job_contract: ['rate==1'],
      dropped_iterations: ['count==0'],
      soak_metrics_scraped: ['rate==1'],
      soak_rss_growth_bytes: [`max<${RSS_BOUND}`],
      soak_fd_growth: [`max<${FD_BOUND}`],
      soak_idle_rss_growth_bytes: [`value<${RSS_BOUND}`],
      soak_idle_fd_growth: [`value<${IDLE_FD_BOUND}`],
      // Reported: the server's RSS and fds over the run.
      soak_server_rss_bytes: ['max>=0'],
      soak_server_open_fds: ['max>=0'],
      'http_reqs{scenario:soak}': ['count>=0'],
    },
    // Latency must not creep up either: load.js's budgets over the whole run.
    latencyThresholds('scenario:soak'),
    successThresholds(MAX_ERROR_RATE, 'scenario:soak'),
  ),
};

// Waits until the pool is full and nothing is in flight; returns the snapshot.
function idleSnapshot(label) {
  let snap = null;
  for (let i = 0; i < 60; i++) {
    const { res, samples } = scrape({ phase: label });
    snap = poolSnapshot(samples);
    if (
      res.status === 200 &&
      snap.rss !== undefined &&
      (snap.busy || 0) === 0 &&
      (snap.spawning || 0) === 0 &&
      (snap.queue || 0) === 0 &&
      (snap.target === undefined || (snap.ready || 0) >= snap.target)
    ) {
      return snap;
    }
    sleep(0.5);
  }
  console.warn(`soak ${label}: server not idle after 30 s: ${JSON.stringify(snap)}`);
  return snap;
}

export function setup() {
  requireReady('soak');
  // Warm-up, sequentially: every type twice, so that one-time allocations
  // (first timeout, first error path) are in the baseline, not in the growth.
  for (let round = 0; round < 2; round++) {
    for (const t of TYPES) postScript(SCRIPTS[t].source, { phase: 'setup' });
  }
  const snap = idleSnapshot('setup');
  scraped.add(snap !== null && snap.rss !== undefined && snap.fds !== undefined);
  console.log(
    `soak: ${(RATE / 60).toFixed(2)} jobs/s (${FIXED_RATE > 0 ? 'SOAK_RATE' : `${FRACTION} of ${CAP}`})${clampNote(ASKED)} ` +
      `for ${DURATION_S}s; idle baseline ` +
      `rss ${mib(snap && snap.rss)} MiB, fds ${snap && snap.fds}; bounds +${mib(RSS_BOUND)} MiB, +${FD_BOUND} fds (+${IDLE_FD_BOUND} idle)`,
  );
  return { rss: snap ? snap.rss : null, fds: snap ? snap.fds : null };
}

export default function () {
  const type = mixType(exec.scenario.iterationInTest, WHEEL);
  const res = postScript(SCRIPTS[type].source, { type });
  judge(type, res);
}

let reference = null;

export function monitor() {
  const elapsed = (Date.now() - exec.scenario.startTime) / 1000;
  const { res, samples } = scrape({ phase: 'monitor' });
  const snap = poolSnapshot(samples);
  const ok = res.status === 200 && snap.rss !== undefined && snap.fds !== undefined;
  scraped.add(ok);
  if (ok) {
    rss.add(snap.rss);
    fds.add(snap.fds);
    if (reference === null && elapsed >= WARMUP_S) reference = snap;
    if (reference !== null) {
      rssGrowth.add(snap.rss - reference.rss);
      fdGrowth.add(snap.fds - reference.fds);
    }
  }
  sleep(SCRAPE_S);
}

export function teardown(base) {
  const snap = idleSnapshot('teardown');
  const ok = snap !== null && snap.rss !== undefined && base.rss !== null;
  scraped.add(ok);
  if (!ok) return;
  idleRssGrowth.add(snap.rss - base.rss);
  idleFdGrowth.add(snap.fds - base.fds);
  check(snap, {
    'idle rss back within bound': (s) => s.rss - base.rss < RSS_BOUND,
    'idle fds back within bound': (s) => s.fds - base.fds < IDLE_FD_BOUND,
  });
  console.log(
    `soak: idle after the run rss ${mib(snap.rss)} MiB (${sign(mib(snap.rss - base.rss))} MiB), ` +
      `fds ${snap.fds} (${sign(snap.fds - base.fds)}); jobs_total ${snap.jobs}`,
  );
}

function mib(b) {
  return b === null || b === undefined ? '?' : (b / 1048576).toFixed(1);
}

function sign(v) {
  return Number(v) >= 0 ? `+${v}` : `${v}`;
}
