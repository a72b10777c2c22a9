// Bundles the browser pages (edge worker, engine self-test, dashboard, bench, API explorer) and the GEMM's thread script into dist/edge-worker/.
const { build } = require('esbuild');
const { copyFileSync, mkdirSync } = require('node:fs');
const { join } = require('node:path');

const out = join(__dirname, '..', 'dist', 'edge-worker');
mkdirSync(out, { recursive: true });
for (const page of ['index.html', 'selftest.html', 'dashboard.html', 'bench.html', 'explorer.html']) copyFileSync(join(__dirname, page), join(out, page));
const bundle = (entry, outfile) => build({
  entryPoints: [join(__dirname, entry)],
  bundle: true, format: 'iife', platform: 'browser', target: 'es2022', minify: true, sourcemap: true,
  outfile: join(out, outfile), logLevel: 'warning',
  // Node built-ins that tfjs-backend-wasm's Emscripten glue mentions but never loads in a browser.
  external: ['fs', 'path', 'crypto', 'worker_threads', 'os', 'perf_hooks'],
});
Promise.all([bundle('main.ts', 'app.js'), bundle('selftest.ts', 'selftest.js'), bundle('dashboard.ts', 'dashboard.js'), bundle('gemm-thread.ts', 'gemm-thread.js'), bundle('bench.ts', 'bench.js'), bundle('explorer.ts', 'explorer.js')]).catch(() => process.exit(1));
