// The playground in a real Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core) against a running pyexec with the real sandbox.
//
//   node web/tests/playground.mjs BASE_URL [--snippets] [--keys] [--valid-key=KEY]
//                                 [--out=DIR] [--screenshot=FILE]
//
// By default: the cases that need only POST /execute (and GET /v1/info when
// the server has it). --snippets adds Share → open the link in a fresh
// context (needs POST/GET /v1/snippets). --keys runs the API-key cases
// instead (needs a server with keys on): no key → the page asks; a wrong key
// → the 401 message; with --valid-key=KEY also a run with a good key.
// Screenshots of the main states go to DIR (default target/playground);
// --screenshot=FILE also writes the README's screenshot there. Exits 1 if a
// case failed; the last line says "N passed, N failed".

import { execFile } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { chromium } from 'playwright-core';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const args = process.argv.slice(2);
const base = args.find((a) => !a.startsWith('--'))?.replace(/\/$/, '');
const flag = (name) => args.includes(`--${name}`);
const option = (name) => args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
if (!base) {
  console.error('usage: node web/tests/playground.mjs BASE_URL [--snippets] [--keys] [--valid-key=KEY] [--out=DIR] [--screenshot=FILE]');
  process.exit(2);
}
const outDir = resolve(option('out') ?? join(repo, 'target/playground'));
mkdirSync(outDir, { recursive: true });

const CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
  + "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";
const WEIGHT_BUDGET = 200 * 1000;
// How long a step may wait (a job queued behind a worker's spawn on a busy
// machine included), stretched like the server tests' waits.
const STEP_TIMEOUT = 60_000 * Number(process.env.PYEXEC_TEST_TIME_SCALE || 1);
const axeSource = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  headless: true,
  args: [
    '--headless=new', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run',
  ],
});

// ---------------------------------------------------------------- harness

class Failure extends Error {}
function check(condition, message) {
  if (!condition) throw new Failure(message);
}
function equal(actual, expected, what) {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  check(a === e, `${what}: expected ${e}, got ${a}`);
}

/**
 * A fresh browser context and page, with what the cases check on every
 * page: dialogs (none may open), uncaught errors, CSP violations, and
 * requests to other origins.
 */
async function freshPage(options = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 }, ...options });
  context.setDefaultTimeout(STEP_TIMEOUT);
  const page = await context.newPage();
  const seen = { dialogs: [], errors: [], csp: [], foreign: [], console: [] };
  page.on('dialog', (dialog) => {
    seen.dialogs.push(dialog.message());
    dialog.dismiss().catch(() => {});
  });
  page.on('pageerror', (error) => seen.errors.push(String(error)));
  page.on('console', (message) => {
    seen.console.push(`${message.type()}: ${message.text()}`);
    if (/Content[- ]Security[- ]Policy/i.test(message.text())) seen.csp.push(message.text());
  });
  page.on('request', (request) => {
    const url = request.url();
    if (!url.startsWith(`${base}/`) && !url.startsWith('blob:') && !url.startsWith('data:')) seen.foreign.push(url);
  });
  await context.exposeBinding('__reportViolation', (_source, text) => seen.csp.push(text));
  await page.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (event) => {
      window.__reportViolation(`${event.violatedDirective} blocked ${event.blockedURI}`);
    });
  });
  return { context, page, seen };
}

async function open(page, path = '/') {
  const response = await page.goto(`${base}${path}`);
  await page.waitForSelector('html[data-ready="true"]');
  return response;
}

/** What every case ends with: nothing ran that shouldn't have, nothing was refused by the CSP. */
function clean(seen) {
  check(seen.dialogs.length === 0, `a dialog opened: ${seen.dialogs.join(' | ')}`);
  check(seen.errors.length === 0, `uncaught errors in the page: ${seen.errors.join(' | ')}`);
  check(seen.csp.length === 0, `CSP violations: ${seen.csp.join(' | ')}`);
  check(seen.foreign.length === 0, `requests to other origins: ${seen.foreign.join(' | ')}`);
}

async function setEditor(page, selector, text) {
  await page.click(`${selector} .cm-content`);
  await page.keyboard.press('Control+A');
  await page.keyboard.press('Delete');
  // insertText is one input event, as a paste: the editor does not
  // auto-indent or close brackets inside it.
  if (text) await page.keyboard.insertText(text);
}

async function editorText(page, selector) {
  return (await page.locator(`${selector} .cm-line`).allTextContents()).join('\n');
}

/** Does `trigger`, then waits for the page to show the answer that follows. */
async function answered(page, trigger) {
  const before = Number(await page.evaluate(() => document.documentElement.dataset.answered ?? 0));
  await trigger();
  await page.waitForFunction((n) => Number(document.documentElement.dataset.answered ?? 0) > n, before);
}

async function run(page, script, input = '') {
  await setEditor(page, '#script-editor', script);
  await setEditor(page, '#input-editor', input);
  await answered(page, () => page.click('#run'));
}

async function statusText(page) {
  return (await page.textContent('#status')).trim();
}

/** The result shown, parsed; fails with what the page shows instead when the run failed. */
async function resultOf(page) {
  if (await page.locator('.part-result pre').count() === 0) {
    const error = await page.locator('.part-error').allTextContents();
    throw new Failure(`no result: ${await statusText(page)} ${error.join(' ')}`);
  }
  return JSON.parse(await page.textContent('.part-result pre'));
}

async function shot(page, name) {
  await page.screenshot({ path: join(outDir, `${name}.png`), fullPage: true });
}

/** axe-core in the page (evaluated over the DevTools protocol, which the CSP does not govern). */
async function accessibility(page, state) {
  await page.evaluate(axeSource);
  const result = await page.evaluate(async () => {
    const { violations } = await window.axe.run(document, { resultTypes: ['violations'] });
    return violations.map((v) => ({
      id: v.id, impact: v.impact, help: v.help, targets: v.nodes.map((n) => JSON.stringify(n.target)),
    }));
  });
  for (const v of result) {
    console.log(`  axe (${state}): ${v.impact} ${v.id}: ${v.help}: ${v.targets.join(', ')}`);
  }
  const bad = result.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  check(bad.length === 0, `axe (${state}): ${bad.map((v) => `${v.impact} ${v.id}`).join(', ')}`);
}

const cases = [];
function test(name, body) {
  cases.push({ name, body });
}

// ---------------------------------------------------------------- cases

const PNG_SCRIPT = `import struct, zlib

def png(width, height):
    rows = b"".join(
        b"\\x00" + bytes(v for x in range(width) for v in (4 * x % 256, 255 - 8 * y % 256, 160))
        for y in range(height))
    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))

SVG = ('<svg xmlns="http://www.w3.org/2000/svg" width="120" height="60">'
       '<rect width="120" height="60" rx="8" fill="#1d4ed8"/>'
       '<circle cx="30" cy="30" r="18" fill="#fbbf24"/></svg>')

def main():
    with open("/tmp/outputs/gradient.png", "wb") as f:
        f.write(png(64, 32))
    with open("/tmp/outputs/badge.svg", "w") as f:
        f.write(SVG)
    return {"files": 2}
`;

test('a typed script runs with Ctrl+Enter and its answer is shown', async () => {
  const { context, page, seen } = await freshPage();
  const response = await open(page);
  equal(response.headers()['content-security-policy'], CSP, 'the page\'s CSP header');
  equal(response.headers()['x-content-type-options'], 'nosniff', 'X-Content-Type-Options');
  await page.click('#script-editor .cm-content');
  await page.keyboard.press('Control+A');
  await page.keyboard.press('Delete');
  // Typed key by key: the editor indents after the colon and closes the
  // brackets and quotes (typing the closing ones steps over them).
  await page.keyboard.type('print("hi")\ndef main():\n');
  await page.keyboard.type('return {"sum": 1 + 2}');
  equal(await editorText(page, '#script-editor'), 'print("hi")\ndef main():\n    return {"sum": 1 + 2}', 'the typed script');
  // The cursor sits after the closing brace: both braces are marked.
  equal(await page.locator('#script-editor .cm-matchingBracket').count(), 2, 'matching brackets marked');
  // Highlighting reaches the page through the constructed style sheets.
  const keyword = page.locator('#script-editor .cm-line span', { hasText: /^def$/ });
  equal(await keyword.evaluate((node) => getComputedStyle(node).color), 'rgb(160, 17, 31)', 'the colour of "def"');
  equal(await page.locator('#script-editor .cm-gutterElement', { hasText: /^3$/ }).count(), 1, 'line number 3 shown');
  // Tab indents inside the editor; Escape then Tab leaves it, as the hint says.
  await page.keyboard.press('Escape');
  await page.keyboard.press('Tab');
  equal(await page.evaluate(() => document.activeElement?.id), 'input-editor', 'focus after Escape, Tab');
  await page.click('#script-editor .cm-content');
  await page.keyboard.press('Control+End');
  await answered(page, () => page.keyboard.press('Control+Enter'));
  check((await statusText(page)).startsWith('Ran in'), `status: ${await statusText(page)}`);
  equal(await resultOf(page), { sum: 3 }, 'the result shown');
  equal(await page.textContent('.part-stdout pre'), 'hi\n', 'stdout shown');
  const usage = await page.textContent('.part-usage');
  for (const term of ['CPU time', 'Peak memory', 'Wall time', 'Time limit', 'Memory limit']) {
    check(usage.includes(term), `usage shows ${term}: ${usage}`);
  }
  await shot(page, 'result');
  await accessibility(page, 'a result');
  clean(seen);
  await context.close();
});

test('input and limits are sent; invalid JSON input is refused before sending', async () => {
  const { context, page, seen } = await freshPage();
  await open(page);
  let executes = 0;
  page.on('request', (r) => { if (r.url().endsWith('/execute')) executes += 1; });
  await setEditor(page, '#script-editor', 'def main(data):\n    return {"total": sum(data["values"])}\n');
  await setEditor(page, '#input-editor', '{"values": [1, 2, 3.5]}');
  await page.fill('#timeout', '2');
  await page.fill('#memory', '64');
  await answered(page, () => page.click('#run'));
  equal(await resultOf(page), { total: 6.5 }, 'the result of the input');
  const usage = await page.textContent('.part-usage');
  check(usage.includes('2 s') && usage.includes('64 MB'), `the limits applied are shown: ${usage}`);
  equal(executes, 1, 'requests sent');

  await setEditor(page, '#input-editor', '{"values": [1, 2,');
  await page.click('#run');
  await page.waitForSelector('#input-error:not([hidden])');
  check((await page.textContent('#input-error')).includes('not valid JSON'), 'the input error is shown');
  await page.fill('#memory', '1.5');
  await setEditor(page, '#input-editor', '');
  await page.click('#run');
  await page.waitForSelector('#form-error:not([hidden])');
  await page.waitForTimeout(200);
  equal(executes, 1, 'requests sent after the invalid input and limit');
  clean(seen);
  await context.close();
});

test('a traceback\'s line link moves the editor\'s cursor to that line', async () => {
  const { context, page, seen } = await freshPage();
  await open(page);
  const script = [
    'def helper(x):', '    return 10 / x', '', 'def main():', '    print("before")', '    return {"v": helper(0)}', '',
  ].join('\n');
  await run(page, script);
  equal(await page.textContent('.part-error .kind'), 'script_exception', 'the error kind');
  check((await page.textContent('.part-error .error-message')).includes('ZeroDivisionError'), 'the error message');
  const links = page.locator('.traceback .line-link');
  equal(await links.evaluateAll((bs) => bs.map((b) => b.dataset.line)), ['6', '2'], 'the traceback\'s line links');
  const traceback = await page.textContent('.traceback');
  check(traceback.includes('File "<script>", line 6, in main') && traceback.includes('line 2, in helper'),
    `the traceback reads as Python wrote it: ${traceback}`);
  check((await page.textContent('.part-stdout pre')) === 'before\n', 'stdout up to the failure is shown');
  await links.nth(0).click();
  await page.waitForFunction(() => document.querySelector('#script-editor').shadowRoot.activeElement?.classList.contains('cm-content'));
  equal(await page.textContent('#script-editor .cm-activeLineGutter'), '6', 'the cursor\'s line after the first link');
  await links.nth(1).click();
  await page.waitForFunction(() => document.querySelector('#script-editor').shadowRoot
    .querySelector('.cm-activeLineGutter')?.textContent === '2');
  await shot(page, 'traceback');
  await accessibility(page, 'an error with its traceback');
  clean(seen);
  await context.close();
});

test('a PNG and an SVG the script wrote are shown inline, each with a download link', async () => {
  const { context, page, seen } = await freshPage();
  await open(page);
  await run(page, PNG_SCRIPT);
  equal(await resultOf(page), { files: 2 }, 'the result');
  const images = page.locator('img.preview');
  equal(await images.count(), 2, 'images shown');
  for (let i = 0; i < 2; i += 1) {
    const size = await images.nth(i).evaluate(async (img) => {
      await img.decode();
      return [img.naturalWidth, img.naturalHeight, img.src.slice(0, 5)];
    });
    check(size[0] > 0 && size[1] > 0 && size[2] === 'blob:', `image ${i}: ${size}`);
  }
  const links = await page.locator('a.download').evaluateAll((as) => as.map((a) => [a.getAttribute('download'), a.href.slice(0, 5)]));
  equal(links, [['badge.svg', 'blob:'], ['gradient.png', 'blob:']], 'download links');
  const download = page.waitForEvent('download');
  await page.locator('a.download').nth(1).click();
  equal((await download).suggestedFilename(), 'gradient.png', 'the downloaded file\'s name');
  await shot(page, 'files');
  await accessibility(page, 'files and images');
  clean(seen);
  await context.close();
});

test('a matplotlib figure left open is shown as figure-1.png', async () => {
  const { context, page, seen } = await freshPage();
  await open(page);
  await run(page, 'import matplotlib.pyplot as plt\ndef main():\n    plt.plot([1, 4, 9, 16])\n    return {"points": 4}\n');
  equal(await resultOf(page), { points: 4 }, 'the result');
  const images = page.locator('img.preview');
  equal(await images.count(), 1, 'images shown');
  const size = await images.first().evaluate(async (img) => {
    await img.decode();
    return [img.naturalWidth, img.naturalHeight, img.src.slice(0, 5)];
  });
  equal(size, [640, 480, 'blob:'], 'the figure decodes at its size');
  const links = await page.locator('a.download').evaluateAll((as) => as.map((a) => a.getAttribute('download')));
  equal(links, ['figure-1.png'], 'download links');
  clean(seen);
  await context.close();
});

test('markup a script prints, returns, raises or names a file with runs nothing', async () => {
  const { context, page, seen } = await freshPage();
  await open(page);
  await page.evaluate(() => { window.__pwned = 0; });
  const evil = '<img src=x onerror="window.__pwned=1;alert(1)">';
  await run(page, `import os
print("<script>window.__pwned=1;alert('script')</script>")
print('${evil}')
def main():
    with open("/tmp/outputs/<img src=x onerror=alert(1)>.txt", "w") as f:
        f.write("<b>hi</b>")
    with open("/tmp/outputs/evil.svg", "w") as f:
        f.write('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10" onload="alert(2)">'
                '<script>alert(3)</script><rect width="10" height="10"/></svg>')
    return {"html": "<img src=x onerror=alert(4)>", "<b>key</b>": 1}
`);
  await resultOf(page);
  const stdout = await page.textContent('.part-stdout pre');
  check(stdout.includes("<script>window.__pwned=1;alert('script')</script>") && stdout.includes(evil), `stdout as text: ${stdout}`);
  check((await page.textContent('.part-result pre')).includes('<img src=x onerror=alert(4)>'), 'the result as text');
  check((await page.textContent('.part-files')).includes('<img src=x onerror=alert(1)>.txt'), 'the file name as text');
  await answered(page, async () => {
    await setEditor(page, '#script-editor', 'def main():\n    raise ValueError("<img src=x onerror=alert(5)>")\n');
    await page.click('#run');
  });
  check((await page.textContent('.part-error')).includes('<img src=x onerror=alert(5)>'), 'the error message as text');
  await page.waitForTimeout(300);
  equal(await page.evaluate(() => window.__pwned), 0, 'window.__pwned');
  equal(await page.evaluate(() => document.querySelectorAll('img[src="x"], script:not([src])').length), 0, 'elements made of the output');
  await shot(page, 'xss');
  clean(seen);
  await context.close();
});

test('copy as curl gives the exact request, which curl runs', async () => {
  const { context, page, seen } = await freshPage();
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: base });
  await open(page);
  const script = 'import os\ndef main(data):\n    return {"echo": data, "s": \'it\\\'s "quoted" $HOME `x` \\\\ end\'}\n';
  await setEditor(page, '#script-editor', script);
  await setEditor(page, '#input-editor', '{"a": [1, "two\'s"]}');
  await page.fill('#timeout', '3');
  await page.click('#curl');
  await page.waitForSelector('#copy-panel:not([hidden])');
  const command = await page.inputValue('#copy-text');
  check((await page.textContent('#copy-status')).includes('Copied'), 'the command was copied');
  equal(await page.evaluate(() => navigator.clipboard.readText()), command, 'the clipboard');
  check(!command.includes('Authorization'), 'no Authorization header without a key');
  const { stdout } = await promisify(execFile)('bash', ['-c', command], { maxBuffer: 1 << 20 });
  const answer = JSON.parse(stdout);
  equal(answer.result, { echo: { a: [1, "two's"] }, s: 'it\'s "quoted" $HOME `x` \\ end' }, 'the answer to the curl command');
  equal(answer.limits.timeout_s, 3, 'the limit the curl command sent');
  await shot(page, 'curl');
  clean(seen);
  await context.close();
});

test('the Examples menu loads the original service\'s three examples, which run', async () => {
  const { context, page, seen } = await freshPage();
  await open(page);
  const options = await page.locator('#examples option').allTextContents();
  equal(options.length, 4, 'the menu\'s entries (a prompt and three examples)');
  const expected = [{ message: 'Hello, World!' }, null, { error: 'division by zero' }];
  for (let i = 0; i < 3; i += 1) {
    await page.selectOption('#examples', String(i));
    await answered(page, () => page.click('#run'));
    const result = await resultOf(page);
    if (expected[i]) equal(result, expected[i], `example ${options[i + 1]}`);
    else equal(result.mean, 3, `example ${options[i + 1]}`);
  }
  clean(seen);
  await context.close();
});

test('a link to an unknown snippet says so', async () => {
  const { context, page, seen } = await freshPage();
  const response = await open(page, '/s/AAAAAAAAAAAAAAAAAAAAAA');
  equal(response.headers()['content-security-policy'], CSP, 'the CSP of /s/{id}');
  await page.waitForSelector('html[data-snippet="missing"]');
  check((await statusText(page)).includes('points to no snippet'), `status: ${await statusText(page)}`);
  clean(seen);
  await context.close();
});

test('first load: weight within the budget, time to interactive', async () => {
  const runs = [];
  for (let i = 0; i < 5; i += 1) {
    const { context, page, seen } = await freshPage();
    await open(page);
    await page.waitForLoadState('load');
    runs.push(await page.evaluate(() => {
      const navigation = performance.getEntriesByType('navigation')[0];
      const resources = performance.getEntriesByType('resource');
      const sum = (key) => resources.reduce((total, r) => total + r[key], navigation[key]);
      return {
        transferred: sum('transferSize'),
        encoded: sum('encodedBodySize'),
        decoded: sum('decodedBodySize'),
        requests: resources.length + 1,
        ready: performance.getEntriesByName('pyexec-ready')[0].startTime,
        boot: performance.getEntriesByName('pyexec-boot')[0].startTime,
        script: resources.find((r) => r.name.endsWith('.js')).responseEnd,
        domContentLoaded: navigation.domContentLoadedEventEnd,
      };
    }));
    clean(seen);
    await context.close();
  }
  const sorted = (key) => runs.map((r) => r[key]).sort((a, b) => a - b);
  const median = (key) => sorted(key)[Math.floor(runs.length / 2)];
  const first = runs[0];
  console.log(`  figure: first load ${first.transferred} bytes transferred in ${first.requests} requests `
    + `(${first.encoded} bytes of bodies as sent, ${first.decoded} decoded)`);
  console.log(`  figure: time to interactive (the page's "pyexec-ready" mark after navigation start), `
    + `${runs.length} cold loads: median ${median('ready').toFixed(1)} ms, `
    + `min ${sorted('ready')[0].toFixed(1)}, max ${sorted('ready').at(-1).toFixed(1)}; `
    + `DOMContentLoaded median ${median('domContentLoaded').toFixed(1)} ms`);
  console.log(`  figure: of which (medians): the script received at ${median('script').toFixed(1)} ms, `
    + `evaluated at ${median('boot').toFixed(1)} ms, the editors mounted by the ready mark `
    + `(machine load average ${loadavg()[0].toFixed(1)})`);
  for (const r of runs) {
    check(r.transferred <= WEIGHT_BUDGET, `first load ${r.transferred} bytes, over the ${WEIGHT_BUDGET} budget`);
  }
});

if (option('screenshot')) {
  test('the screenshot for the docs', async () => {
    const { context, page, seen } = await freshPage({ viewport: { width: 1200, height: 820 } });
    await open(page);
    await page.selectOption('#examples', '1');
    await answered(page, () => page.click('#run'));
    await page.evaluate(() => { document.activeElement?.blur(); window.scrollTo(0, 0); });
    await page.mouse.move(0, 0);
    await page.screenshot({ path: resolve(option('screenshot')) });
    clean(seen);
    await context.close();
  });
}

if (flag('snippets')) {
  test('Share saves a link that opens the same script in a fresh context', async () => {
    const { context, page, seen } = await freshPage();
    await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: base });
    await open(page);
    const script = 'def main(data):\n    return {"shared": data["n"] * 2}\n';
    const input = '{"n": 21}';
    await setEditor(page, '#script-editor', script);
    await setEditor(page, '#input-editor', input);
    await page.fill('#timeout', '4');
    await page.click('#share');
    await page.waitForSelector('#copy-panel:not([hidden])');
    const link = await page.inputValue('#copy-text');
    check(new RegExp(`^${base.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}/s/[^/]+$`).test(link), `the link: ${link}`);
    equal(await page.evaluate(() => navigator.clipboard.readText()), link, 'the clipboard');
    await shot(page, 'share');
    clean(seen);
    await context.close();

    const fresh = await freshPage();
    await open(fresh.page, new URL(link).pathname);
    await fresh.page.waitForSelector('html[data-snippet="loaded"]');
    equal(await editorText(fresh.page, '#script-editor'), script, 'the shared script');
    equal(JSON.parse(await editorText(fresh.page, '#input-editor')), JSON.parse(input), 'the shared input');
    equal(await fresh.page.inputValue('#timeout'), '4', 'the shared time limit');
    await answered(fresh.page, () => fresh.page.keyboard.press('Control+Enter'));
    equal(await resultOf(fresh.page), { shared: 42 }, 'the shared script\'s result');
    await shot(fresh.page, 'shared-open');
    clean(fresh.seen);
    await fresh.context.close();
  });
}

if (flag('keys')) {
  // With keys on, the default cases can't run without a key: these replace them.
  cases.length = 0;
  test('keys on: with no key the page asks for one', async () => {
    const { context, page, seen } = await freshPage();
    await open(page);
    await page.waitForSelector('html[data-info="loaded"]');
    check(await page.isVisible('#key-panel'), 'the key panel is shown');
    let executes = 0;
    page.on('request', (r) => { if (r.url().endsWith('/execute')) executes += 1; });
    await page.click('#run');
    check((await page.textContent('#key-status')).includes('needs an API key'), 'the page asks for a key');
    equal(await page.evaluate(() => document.activeElement?.id), 'key', 'focus moved to the key field');
    equal(executes, 0, 'requests sent without a key');
    await shot(page, 'key-asked');
    await accessibility(page, 'the key panel');
    clean(seen);
    await context.close();
  });
  test('keys on: a wrong key gets the 401 message', async () => {
    const { context, page, seen } = await freshPage();
    await open(page);
    await page.waitForSelector('html[data-info="loaded"]');
    await page.fill('#key', 'pyx_wrong_notasecret');
    await page.click('#key-form button[type="submit"]');
    await answered(page, () => page.click('#run'));
    check((await statusText(page)).includes('401'), `status: ${await statusText(page)}`);
    check((await page.textContent('#key-status')).includes('refused the key (401'), 'the key panel says the key was refused');
    equal(await page.textContent('.part-error .kind'), 'unauthorized', 'the error kind');
    equal(await page.evaluate(() => localStorage.getItem('pyexec.apiKey')), null, 'a key not to remember is not stored');
    await shot(page, 'key-refused');
    clean(seen);
    await context.close();
  });
  if (option('valid-key')) {
    test('keys on: a good key runs, is remembered when asked, and goes into the curl command', async () => {
      const key = option('valid-key');
      const { context, page, seen } = await freshPage();
      await open(page);
      await page.waitForSelector('html[data-info="loaded"]');
      await page.fill('#key', key);
      await page.check('#remember');
      await page.click('#key-form button[type="submit"]');
      await answered(page, () => page.click('#run'));
      check((await statusText(page)).startsWith('Ran in'), `status: ${await statusText(page)}`);
      await page.reload();
      await page.waitForSelector('html[data-ready="true"]');
      equal(await page.inputValue('#key'), key, 'the remembered key');
      await page.click('#curl');
      const command = await page.inputValue('#copy-text');
      check(command.includes(`Authorization: Bearer ${key}`), 'the curl command carries the key');
      const { stdout } = await promisify(execFile)('bash', ['-c', command], { maxBuffer: 1 << 20 });
      equal(JSON.parse(stdout).result, { message: 'Hello, World!' }, 'the curl command\'s answer');
      clean(seen);
      await context.close();
    });
  }
}

// ---------------------------------------------------------------- run

let passed = 0;
let failed = 0;
for (const { name, body } of cases) {
  const started = Date.now();
  try {
    await body();
    passed += 1;
    console.log(`ok   ${name} (${Date.now() - started} ms)`);
  } catch (error) {
    failed += 1;
    console.log(`FAIL ${name}\n     ${error instanceof Failure ? error.message : error.stack}`);
  }
}
await browser.close();
console.log(`screenshots: ${outDir}`);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
