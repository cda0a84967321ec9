// A request body as the page sends it, and the same request as a curl command.

/**
 * The JSON body of `POST /execute` (and of `POST /v1/snippets`): the script,
 * the input exactly as typed (already checked to be JSON; null: none), the
 * limits the person set (null: none).
 */
export function requestBody({ script, input, limits }) {
  const fields = [`"script":${JSON.stringify(script)}`];
  if (input !== null) fields.push(`"input":${input}`);
  if (limits !== null) fields.push(`"limits":${JSON.stringify(limits)}`);
  return `{${fields.join(',')}}`;
}

/** `text` as one word for a POSIX shell: single quotes, each ' written as '\''. */
export function shellQuote(text) {
  return `'${text.replaceAll("'", "'\\''")}'`;
}

/** The exact request as a curl command line (with the key's header when there is one). */
export function curlCommand(url, body, key) {
  const words = [
    `curl -sS -X POST ${shellQuote(url)}`,
    `-H ${shellQuote('Content-Type: application/json')}`,
  ];
  if (key) words.push(`-H ${shellQuote(`Authorization: Bearer ${key}`)}`);
  words.push(`--data-binary ${shellQuote(body)}`);
  return words.join(' \\\n  ');
}
