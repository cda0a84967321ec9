// Presents an answer of POST /execute: the status, the error and its
// traceback (line numbers that move the editor's cursor), the result, what
// the script printed, usage and limits, and the files it left (a download
// link each, images shown). Everything that came from the script is text.

import { el } from './dom.js';

const IMAGE_TYPES = new Set(['image/png', 'image/svg+xml', 'image/jpeg', 'image/gif', 'image/webp']);
const SCRIPT_FRAME = /^(\s*File "<script>", line )(\d+)(.*)$/;

/**
 * Fills `container` with the answer. `onLine(n)` is called when a line link
 * is clicked. Returns the blob URLs made for the files (to revoke once the
 * answer is replaced).
 */
export function renderAnswer(container, answer, onLine) {
  const urls = [];
  const body = answer.body ?? {};
  const parts = [];
  if (answer.status === 200) {
    parts.push(section('Result', 'result', pre(JSON.stringify(body.result, null, 2), 'Result, JSON')));
  } else {
    parts.push(errorPart(answer, onLine));
    if (typeof body.traceback === 'string') parts.push(traceback(body.traceback, onLine));
  }
  if (typeof body.stdout === 'string') parts.push(output('stdout', body.stdout, body.stdout_truncated));
  if (typeof body.stderr === 'string') parts.push(output('stderr', body.stderr, body.stderr_truncated));
  if (body.usage || body.limits) parts.push(usage(body));
  if (Array.isArray(body.files)) parts.push(files(body, urls));
  container.replaceChildren(...parts);
  return urls;
}

/** One line saying how the request went, for the status region. */
export function summary(answer) {
  const body = answer.body ?? {};
  if (answer.status === 200) {
    return `Ran in ${formatMs(body.duration_ms)}.`;
  }
  if (answer.status === 0) return 'The server could not be reached.';
  const kind = typeof body.kind === 'string' ? body.kind : 'error';
  return `Failed: ${answer.status} ${kind}.`;
}

function section(title, name, ...children) {
  const id = `answer-${name}`;
  return el('section', { class: `part part-${name}`, 'aria-labelledby': id },
    el('h3', { id }, title), ...children);
}

/** A scrollable block of text, reachable by keyboard (it may scroll). */
function pre(text, label) {
  return el('pre', { tabindex: '0', 'aria-label': label }, text);
}

function lineButton(line, onLine, text = `line ${line}`) {
  const button = el('button', {
    type: 'button', class: 'line-link', 'data-line': line, 'aria-label': `Go to line ${line} of the script`,
  }, text);
  button.addEventListener('click', () => onLine(line));
  return button;
}

function errorPart(answer, onLine) {
  const body = answer.body;
  if (!body || typeof body.error !== 'string') {
    const what = answer.status === 0
      ? `The request did not reach the server (${answer.text}).`
      : `The server answered ${answer.status} with a body that is not an API answer.`;
    const raw = answer.status === 0 ? null : pre(answer.text.slice(0, 2000), 'The answer as received');
    return section('Error', 'error', el('p', { class: 'error-message' }, what), raw);
  }
  const head = el('p', { class: 'error-head' },
    el('span', { class: 'badge badge-error' }, `${answer.status}`), ' ',
    el('code', { class: 'kind' }, String(body.kind)));
  const message = el('p', { class: 'error-message' }, body.error);
  const line = Number.isInteger(body.line)
    ? el('p', {}, 'At ', lineButton(body.line, onLine), ' of the script.')
    : null;
  return section('Error', 'error', head, message, line, advice(answer));
}

/** What to do about an answer that is about the caller or the server, not the script. */
function advice(answer) {
  const kind = answer.body?.kind;
  const wait = answer.retryAfter ? ` Retry after ${answer.retryAfter} s.` : '';
  if (answer.status === 401) {
    return el('p', { class: 'advice' }, 'The server did not accept the API key. Check it and enter it again above.');
  }
  if (answer.status === 429) {
    const what = {
      rate_limited: 'This key sent too many requests.',
      concurrency_limited: 'This key has too many scripts running at once.',
      quota_exceeded: "This key's quota is used up.",
    }[kind] ?? 'Too many requests.';
    return el('p', { class: 'advice' }, `${what}${wait || ' Try again later.'}`);
  }
  if (answer.status === 503 && wait) {
    return el('p', { class: 'advice' }, `The server is busy or restarting.${wait}`);
  }
  return null;
}

function traceback(text, onLine) {
  const block = el('pre', { class: 'traceback', tabindex: '0', 'aria-label': 'Traceback' });
  for (const line of text.split('\n')) {
    const match = SCRIPT_FRAME.exec(line);
    if (match) {
      block.append(match[1], lineButton(Number(match[2]), onLine, match[2]), match[3], '\n');
    } else {
      block.append(`${line}\n`);
    }
  }
  return section('Traceback', 'traceback', block);
}

function output(name, text, truncated) {
  const title = el('h3', { id: `answer-${name}` }, name);
  if (truncated) title.append(' ', el('span', { class: 'badge badge-warn' }, 'truncated'));
  if (text === '') title.append(' ', el('span', { class: 'muted' }, 'empty'));
  const body = text === '' ? null : pre(text, name);
  return el('section', { class: `part part-${name}`, 'aria-labelledby': `answer-${name}` }, title, body);
}

function usage(body) {
  const rows = [];
  const use = body.usage ?? {};
  const limits = body.limits ?? {};
  rows.push(['CPU time', use.cpu_ms == null ? 'not measured' : formatMs(use.cpu_ms)]);
  rows.push(['Peak memory', use.peak_memory_mb == null ? 'not measured' : `${use.peak_memory_mb} MB`]);
  rows.push(['Wall time', formatMs(use.wall_ms ?? body.duration_ms)]);
  if (limits.timeout_s != null) rows.push(['Time limit', `${limits.timeout_s} s`]);
  if (limits.memory_mb != null) rows.push(['Memory limit', `${limits.memory_mb} MB`]);
  const list = el('dl', { class: 'usage' });
  for (const [term, value] of rows) list.append(el('div', {}, el('dt', {}, term), el('dd', {}, value)));
  return section('Usage and limits', 'usage', list);
}

function files(body, urls) {
  const children = [];
  if (body.files.length === 0) children.push(el('p', { class: 'muted' }, 'No files in /tmp/outputs.'));
  const list = el('ul', { class: 'files' });
  for (const file of body.files) list.append(fileItem(file, urls));
  if (body.files.length) children.push(list);
  if (body.files_truncated) {
    const omitted = Array.isArray(body.files_omitted) ? body.files_omitted : [];
    children.push(el('p', { class: 'advice' },
      el('span', { class: 'badge badge-warn' }, 'truncated'),
      ` Files left out (over the caps): ${omitted.length ? omitted.join(', ') : 'some'}.`));
  }
  return section('Files', 'files', ...children);
}

function fileItem(file, urls) {
  const name = String(file.name);
  const type = String(file.content_type || file.media_type || 'application/octet-stream');
  const item = el('li', { class: 'file' });
  let bytes;
  try {
    bytes = Uint8Array.from(atob(file.content_base64), (c) => c.charCodeAt(0));
  } catch {
    item.append(el('code', {}, name), ` ${formatBytes(file.size)}, could not be decoded`);
    return item;
  }
  // The download is always an octet stream: opening it can never render it
  // as a page of this origin.
  const download = URL.createObjectURL(new Blob([bytes], { type: 'application/octet-stream' }));
  urls.push(download);
  const link = el('a', { href: download, download: name.replaceAll('/', '_'), class: 'download' },
    'Download', el('span', { class: 'visually-hidden' }, ` ${name}`));
  item.append(
    el('span', { class: 'file-name' }, el('code', {}, name)),
    el('span', { class: 'file-meta' }, `${formatBytes(file.size)} · ${type}`),
    link,
  );
  if (IMAGE_TYPES.has(type)) {
    // An image (SVG included) goes through <img>, where it can run nothing.
    const src = URL.createObjectURL(new Blob([bytes], { type }));
    urls.push(src);
    item.append(el('figure', {}, el('img', { src, alt: name, class: 'preview' })));
  }
  return item;
}

function formatMs(ms) {
  if (typeof ms !== 'number') return '–';
  return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(1)} ms`;
}

export function formatBytes(n) {
  if (typeof n !== 'number') return '?';
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}
