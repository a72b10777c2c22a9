// Bundles the edge-worker page (TypeScript -> one browser script) into dist/edge-worker/.
const { build } = require('esbuild');
const { copyFileSync, mkdirSync } = require('node:fs');
const { join } = require('node:path');

const out = join(__dirname, '..', 'dist', 'edge-worker');
mkdirSync(out, { recursive: true });
copyFileSync(join(__dirname, 'index.html'), join(out, 'index.html'));
build({
  entryPoints: [join(__dirname, 'main.ts')],
  bundle: true, format: 'iife', platform: 'browser', target: 'es2022', minify: true, sourcemap: true,
  outfile: join(out, 'app.js'), logLevel: 'warning',
  // Node built-ins that tfjs-backend-wasm's Emscripten glue mentions but never loads in a browser.
  external: ['fs', 'path', 'crypto', 'worker_threads', 'os', 'perf_hooks'],
}).catch(() => process.exit(1));
