import http from 'k6/http';
import { sleep } from 'k6';
import { BASE_URL, ISOLATION, withAuth } from './config.js';
import { scrape } from './prom.js';

// setup(): refuse to start a test against a server that is not ready. /readyz
// is 503 for a moment whenever every warm worker is busy or respawning, so it
// is retried for up to 30 s. Then checks that the server runs the isolation
// mode the thresholds were chosen for (PYEXEC_ISOLATION; pyexec_build_info's
// `isolation` label), and returns that mode.
export function requireReady(testName) {
  let r = null;
  for (let i = 0; i < 60; i++) {
    r = http.get(`${BASE_URL}/readyz`, withAuth({ tags: { name: 'GET /readyz' }, timeout: '10s', responseCallback: http.expectedStatuses(200, 503) }));
    if (r.status === 200) break;
    sleep(0.5);
  }
  if (r.status !== 200) {
    throw new Error(`${testName}: ${BASE_URL}/readyz answered ${r.status || r.error} for 30 s: is the server up and ready?`);
  }
  const info = scrape().samples.find((s) => s.name === 'pyexec_build_info');
  const mode = info && info.labels.isolation;
  if (mode && mode !== ISOLATION) {
    throw new Error(`${testName}: the server runs in ${mode} mode but PYEXEC_ISOLATION=${ISOLATION}: set it to the server's mode`);
  }
  return mode || ISOLATION;
}
