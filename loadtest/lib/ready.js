import http from 'k6/http';
import { sleep } from 'k6';
import { BASE_URL, withAuth } from './config.js';

// setup(): refuse to start a test against a server that is not ready. /readyz
// is 503 for a moment whenever every warm worker is busy or respawning, so it
// is retried for up to 30 s.
export function requireReady(testName) {
  let r = null;
  for (let i = 0; i < 60; i++) {
    r = http.get(`${BASE_URL}/readyz`, withAuth({ tags: { name: 'GET /readyz' }, timeout: '10s', responseCallback: http.expectedStatuses(200, 503) }));
    if (r.status === 200) return;
    sleep(0.5);
  }
  throw new Error(`${testName}: ${BASE_URL}/readyz answered ${r.status || r.error} for 30 s: is the server up and ready?`);
}
