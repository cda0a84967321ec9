// Builds the playground into dist/, which the server embeds (server/build.rs):
//
//   dist/app.<hash>.js, app.<hash>.css, icon.<hash>.svg   the assets (content-hashed names)
//   dist/index.html                                       the page, naming them
//   dist/<file>.gz, dist/<file>.br                        each precompressed
//   dist/manifest.json                                    URL path → file, type, hash, encodings
//
// Usage: node build.mjs   (from anywhere; `make web` runs it when a source changed)

import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { brotliCompressSync, constants, gunzipSync, gzipSync } from 'node:zlib';
import { build } from 'esbuild';

const here = dirname(fileURLToPath(import.meta.url));
const src = join(here, 'src');
const dist = join(here, 'dist');

const TYPES = {
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.html': 'text/html; charset=utf-8',
};

function hashOf(bytes) {
  return createHash('sha256').update(bytes).digest('hex').slice(0, 16);
}

function typeOf(name) {
  const type = TYPES[name.slice(name.lastIndexOf('.'))];
  if (!type) throw new Error(`no content type for ${name}`);
  return type;
}

/** Writes `bytes` as `name` with its precompressed copies; returns its manifest entry. */
function emit(name, bytes) {
  writeFileSync(join(dist, name), bytes);
  const entry = { file: name, content_type: typeOf(name), hash: hashOf(bytes), size: bytes.length };
  const gzip = gzipSync(bytes, { level: 9 });
  if (!gunzipSync(gzip).equals(bytes)) throw new Error(`gzip of ${name} does not round-trip`);
  const brotli = brotliCompressSync(bytes, {
    params: {
      [constants.BROTLI_PARAM_QUALITY]: constants.BROTLI_MAX_QUALITY,
      [constants.BROTLI_PARAM_MODE]: constants.BROTLI_MODE_TEXT,
      [constants.BROTLI_PARAM_SIZE_HINT]: bytes.length,
    },
  });
  // A compressed copy is kept only where it is smaller.
  if (gzip.length < bytes.length) {
    writeFileSync(join(dist, `${name}.gz`), gzip);
    entry.gzip = `${name}.gz`;
    entry.gzip_size = gzip.length;
  }
  if (brotli.length < bytes.length) {
    writeFileSync(join(dist, `${name}.br`), brotli);
    entry.br = `${name}.br`;
    entry.br_size = brotli.length;
  }
  return entry;
}

/** `stem.<hash>.ext` for an asset's bytes. */
function hashedName(stem, ext, bytes) {
  return `${stem}.${hashOf(bytes)}${ext}`;
}

const bundle = await build({
  entryPoints: { app: join(src, 'main.js') },
  bundle: true,
  minify: true,
  format: 'esm',
  target: ['chrome111', 'firefox111', 'safari16.4'],
  legalComments: 'none',
  outdir: dist,
  write: false,
  logLevel: 'warning',
});

rmSync(dist, { recursive: true, force: true });
mkdirSync(dist, { recursive: true });

const files = {};
const names = {};
for (const output of bundle.outputFiles) {
  const ext = output.path.slice(output.path.lastIndexOf('.'));
  const bytes = Buffer.from(output.contents);
  const name = hashedName('app', ext, bytes);
  names[`app${ext}`] = `/assets/${name}`;
  files[`/assets/${name}`] = emit(name, bytes);
}
const icon = readFileSync(join(src, 'icon.svg'));
const iconName = hashedName('icon', '.svg', icon);
names['icon.svg'] = `/assets/${iconName}`;
files[`/assets/${iconName}`] = emit(iconName, icon);

for (const needed of ['app.js', 'app.css']) {
  if (!names[needed]) throw new Error(`esbuild produced no ${needed}`);
}
const html = readFileSync(join(src, 'index.html'), 'utf8').replace(/\{\{([a-z.]+)\}\}/g, (_, key) => {
  if (!names[key]) throw new Error(`index.html names {{${key}}}, which the build does not make`);
  return names[key];
});
files['/'] = emit('index.html', Buffer.from(html));

writeFileSync(join(dist, 'manifest.json'), `${JSON.stringify({ files }, null, 2)}\n`);

const total = (pick) => Object.values(files).reduce((sum, f) => sum + (f[pick] ?? f.size), 0);
console.log(`web: built ${Object.keys(files).length} files into dist/: ${total('size')} bytes, `
  + `${total('gzip_size')} gzip, ${total('br_size')} brotli`);
