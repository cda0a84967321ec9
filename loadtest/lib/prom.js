// Reading the server's GET /metrics (Prometheus text exposition format).
import http from 'k6/http';
import { BASE_URL, withAuth } from './config.js';

// Parse the text format into [{name, labels: {k: v}, value}]. Comments, HELP and
// TYPE lines are skipped; label values may contain escaped quotes.
export function parseProm(text) {
  const out = [];
  for (const raw of String(text || '').split('\n')) {
    const line = raw.trim();
    if (line === '' || line[0] === '#') continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\d+)?$/.exec(line);
    if (!m) continue;
    const labels = {};
    if (m[3]) {
      const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
      let l;
      while ((l = re.exec(m[3])) !== null) labels[l[1]] = l[2].replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
    }
    const v = m[4] === '+Inf' ? Infinity : m[4] === '-Inf' ? -Infinity : Number(m[4]);
    out.push({ name: m[1], labels, value: v });
  }
  return out;
}

// Sum of the samples of `name` whose labels include `match`; undefined if none.
export function promValue(samples, name, match) {
  let found = false;
  let sum = 0;
  for (const s of samples) {
    if (s.name !== name) continue;
    let ok = true;
    for (const k of Object.keys(match || {})) if (s.labels[k] !== match[k]) ok = false;
    if (!ok) continue;
    found = true;
    sum += s.value;
  }
  return found ? sum : undefined;
}

export function scrape(tags) {
  const res = http.get(
    `${BASE_URL}/metrics`,
    withAuth({ tags: Object.assign({ name: 'GET /metrics' }, tags || {}), timeout: '10s' }),
  );
  return { res, samples: res.status === 200 ? parseProm(res.body) : [] };
}

// The figures the soak and spike tests watch.
export function poolSnapshot(samples) {
  return {
    rss: promValue(samples, 'process_resident_memory_bytes'),
    fds: promValue(samples, 'process_open_fds'),
    ready: promValue(samples, 'pyexec_workers', { state: 'ready' }),
    busy: promValue(samples, 'pyexec_workers', { state: 'busy' }),
    spawning: promValue(samples, 'pyexec_workers', { state: 'spawning' }),
    target: promValue(samples, 'pyexec_pool_target_size'),
    queue: promValue(samples, 'pyexec_queue_depth'),
    jobs: promValue(samples, 'pyexec_jobs_total'),
    rejected: promValue(samples, 'pyexec_rejected_total'),
  };
}
