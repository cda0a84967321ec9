// The public API, as the page calls it: same origin only, JSON bodies, the
// API key as a Bearer token when one is set. Nothing here interprets an
// answer; the caller presents it.

/**
 * An answer: `status` (0 when the server could not be reached), the parsed
 * JSON `body` (null when it is not JSON), its `text`, and `retryAfter` (the
 * Retry-After header, seconds, or null).
 */
async function call(method, path, { body, key } = {}) {
  const headers = {};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (key) headers.Authorization = `Bearer ${key}`;
  let response;
  try {
    response = await fetch(path, { method, headers, body, cache: 'no-store', credentials: 'same-origin' });
  } catch (error) {
    return { status: 0, body: null, text: String(error), retryAfter: null };
  }
  const text = await response.text();
  let parsed = null;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = null;
  }
  return { status: response.status, body: parsed, text, retryAfter: response.headers.get('Retry-After') };
}

export function info() {
  return call('GET', '/v1/info');
}

export function execute(body, key) {
  return call('POST', '/execute', { body, key });
}

export function createSnippet(body, key) {
  return call('POST', '/v1/snippets', { body, key });
}

export function snippet(id) {
  return call('GET', `/v1/snippets/${encodeURIComponent(id)}`);
}
