// The playground page: wires the editors, the form and the buttons to the
// public API and shows what it answers. The server decides everything; the
// page only checks that the input is JSON and the limits are numbers in range
// before it sends them.

import './style.css';
import * as api from './api.js';
import * as keys from './keys.js';
import { byId, el } from './dom.js';
import { goToLine, jsonEditor, pythonEditor, setText, textOf } from './editor.js';
import { EXAMPLES } from './examples.js';
import { renderAnswer, summary } from './render.js';
import { curlCommand, requestBody } from './request.js';

const page = {
  script: null,
  input: null,
  info: null,
  running: false,
  urls: [],
};

function boot() {
  // The bundle is evaluated: the browser test reports the time from here to
  // "pyexec-ready" (the editors mounted, the page wired) apart.
  performance.mark('pyexec-boot');
  page.script = pythonEditor(byId('script-editor'), EXAMPLES[0].script, run);
  page.input = jsonEditor(byId('input-editor'), '', run);

  const examples = byId('examples');
  EXAMPLES.forEach((example, index) => examples.append(el('option', { value: index }, example.title)));
  examples.addEventListener('change', () => {
    const example = EXAMPLES[Number(examples.value)];
    if (!example) return;
    setText(page.script, example.script);
    setText(page.input, '');
    examples.value = '';
    page.script.focus();
  });

  byId('run').addEventListener('click', run);
  byId('share').addEventListener('click', share);
  byId('curl').addEventListener('click', copyCurl);
  byId('copy-again').addEventListener('click', () => copyText(byId('copy-text').value));
  byId('copy-close').addEventListener('click', () => { byId('copy-panel').hidden = true; });
  byId('key-form').addEventListener('submit', (event) => {
    event.preventDefault();
    keys.setKey(byId('key').value, byId('remember').checked);
    showKeyState(keys.currentKey() ? 'The key is set. Run a script to use it.' : 'Enter a key.');
  });
  byId('forget').addEventListener('click', () => {
    keys.forget();
    byId('key').value = '';
    byId('remember').checked = false;
    showKeyState('The key is forgotten.');
  });
  // Ctrl/Cmd+Enter anywhere on the page; the editors run it themselves (and
  // mark the event handled).
  document.addEventListener('keydown', (event) => {
    if ((event.ctrlKey || event.metaKey) && event.key === 'Enter' && !event.defaultPrevented) {
      event.preventDefault();
      run();
    }
  });

  if (keys.restore()) {
    byId('key').value = keys.currentKey();
    byId('remember').checked = true;
  }

  performance.mark('pyexec-ready');
  document.documentElement.dataset.ready = 'true';
  loadInfo();
  loadSnippet();
}

/** /v1/info: version, mode, the caps of the limits fields, whether a key is needed. */
async function loadInfo() {
  const answer = await api.info();
  if (answer.status !== 200 || !answer.body) {
    document.documentElement.dataset.info = 'absent';
    return;
  }
  const info = answer.body;
  page.info = info;
  const parts = [];
  if (info.version) parts.push(`version ${info.version}`);
  if (info.isolation) parts.push(`${info.isolation} mode`);
  if (info.auth === 'keys') parts.push('API keys on');
  byId('server-info').textContent = parts.join(' · ');
  const limits = info.limits ?? {};
  if (typeof limits.timeout_s === 'number') {
    byId('timeout').max = String(limits.timeout_s);
    byId('timeout').placeholder = String(limits.timeout_s);
    byId('timeout-cap').textContent = `0.001 to ${limits.timeout_s}`;
  }
  if (typeof limits.memory_mb === 'number') {
    byId('memory').max = String(limits.memory_mb);
    byId('memory').placeholder = String(limits.memory_mb);
    byId('memory-cap').textContent = `16 to ${limits.memory_mb}`;
  }
  if (info.auth === 'keys') {
    byId('key-panel').hidden = false;
    if (!keys.currentKey()) showKeyState('Enter your API key to run scripts.');
  }
  document.documentElement.dataset.info = 'loaded';
}

/** On /s/{id}: the snippet's script, input and limits go into the form. */
async function loadSnippet() {
  const match = /^\/s\/([^/]+)$/.exec(location.pathname);
  if (!match) return;
  const id = decodeURIComponent(match[1]);
  setStatus('Loading the shared snippet…');
  const answer = await api.snippet(id);
  if (answer.status !== 200 || !answer.body || typeof answer.body.script !== 'string') {
    setStatus(answer.status === 404
      ? 'This link points to no snippet: it may have been deleted.'
      : `The snippet could not be loaded (${answer.status || 'no answer'}).`);
    document.documentElement.dataset.snippet = 'missing';
    return;
  }
  const snippet = answer.body;
  setText(page.script, snippet.script);
  setText(page.input, snippet.input === undefined ? '' : JSON.stringify(snippet.input, null, 2));
  byId('timeout').value = snippet.limits?.timeout_s ?? '';
  byId('memory').value = snippet.limits?.memory_mb ?? '';
  setStatus('Shared snippet loaded. Run it with Ctrl+Enter.');
  document.documentElement.dataset.snippet = 'loaded';
}

/**
 * The form as a request body, or null when the input or a limit is not
 * valid (the reason is shown beside the field).
 */
function composeRequest() {
  const inputError = byId('input-error');
  const formError = byId('form-error');
  inputError.hidden = true;
  formError.hidden = true;
  const rawInput = textOf(page.input).trim();
  if (rawInput !== '') {
    try {
      JSON.parse(rawInput);
    } catch (error) {
      inputError.textContent = `The input is not valid JSON: ${error.message}`;
      inputError.hidden = false;
      return null;
    }
  }
  const limits = {};
  for (const [id, field, name] of [['timeout', 'timeout_s', 'time limit'], ['memory', 'memory_mb', 'memory limit']]) {
    const box = byId(id);
    if (box.value === '' && box.validity.valid) continue;
    if (!box.validity.valid) {
      const range = box.max ? `from ${box.min} to ${box.max}` : `at least ${box.min}`;
      formError.textContent = `The ${name} must be a number ${range}${field === 'memory_mb' ? ', whole' : ''}.`;
      formError.hidden = false;
      box.focus();
      return null;
    }
    limits[field] = Number(box.value);
  }
  return requestBody({
    script: textOf(page.script),
    input: rawInput === '' ? null : rawInput,
    limits: Object.keys(limits).length ? limits : null,
  });
}

/** With keys on and none given: says so, moves focus to the key field, and answers true. */
function keyMissing() {
  if (page.info?.auth !== 'keys' || keys.currentKey()) return false;
  byId('key-panel').hidden = false;
  showKeyState('This server needs an API key: enter it first.');
  byId('key').focus();
  return true;
}

async function run() {
  if (page.running) return;
  const body = composeRequest();
  if (body === null || keyMissing()) return;
  page.running = true;
  const button = byId('run');
  const output = byId('output');
  button.disabled = true;
  button.textContent = 'Running…';
  output.setAttribute('aria-busy', 'true');
  setStatus('Running…');
  try {
    const answer = await api.execute(body, keys.currentKey());
    for (const url of page.urls) URL.revokeObjectURL(url);
    page.urls = renderAnswer(output, answer, (line) => goToLine(page.script, line));
    setStatus(summary(answer));
    noteAuthAnswer(answer);
    document.documentElement.dataset.answered = String((Number(document.documentElement.dataset.answered) || 0) + 1);
  } finally {
    page.running = false;
    button.disabled = false;
    button.textContent = 'Run';
    output.removeAttribute('aria-busy');
  }
}

/** A 401 opens the key panel with the server's reason; a 429 says when to retry. */
function noteAuthAnswer(answer) {
  if (answer.status === 401) {
    byId('key-panel').hidden = false;
    const reason = answer.body?.error ? `: ${answer.body.error}` : '';
    showKeyState(`The server refused the key (401${reason}). Enter a valid key.`);
  } else if (answer.status === 429) {
    const wait = answer.retryAfter ? ` Try again in ${answer.retryAfter} s.` : '';
    setStatus(`Too many requests (429 ${answer.body?.kind ?? ''}).${wait}`);
  }
}

async function share() {
  const body = composeRequest();
  if (body === null || keyMissing()) return;
  setStatus('Saving a link…');
  const answer = await api.createSnippet(body, keys.currentKey());
  if (answer.status === 201 && typeof answer.body?.url === 'string') {
    const link = new URL(answer.body.url, location.origin).href;
    setStatus('Link saved.');
    await showCopyPanel('Link to this script', link);
    return;
  }
  noteAuthAnswer(answer);
  if (answer.status === 401 || answer.status === 429) return;
  if (answer.status === 404 || answer.status === 405) {
    setStatus('This server does not save snippets.');
  } else {
    setStatus(`The link could not be saved (${answer.status || 'no answer'}${answer.body?.error ? `: ${answer.body.error}` : ''}).`);
  }
}

async function copyCurl() {
  const body = composeRequest();
  if (body === null) return;
  const url = new URL('/execute', location.origin).href;
  await showCopyPanel('This request as a curl command', curlCommand(url, body, keys.currentKey()));
}

async function showCopyPanel(title, text) {
  byId('copy-title').textContent = title;
  const box = byId('copy-text');
  box.value = text;
  box.rows = Math.min(12, text.split('\n').length + 1);
  byId('copy-panel').hidden = false;
  await copyText(text);
}

/** Copies to the clipboard where the browser lets the page; else leaves the text selected. */
async function copyText(text) {
  const status = byId('copy-status');
  const box = byId('copy-text');
  try {
    await navigator.clipboard.writeText(text);
    status.textContent = 'Copied to the clipboard.';
  } catch {
    box.focus();
    box.select();
    status.textContent = 'Selected: press Ctrl+C (⌘+C) to copy.';
  }
}

function setStatus(text) {
  byId('status').textContent = text;
}

function showKeyState(text) {
  byId('key-status').textContent = text;
}

boot();
