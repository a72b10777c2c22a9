// Headless Chromium for the 224x224 bench: bundles bench/vit224-tab.ts and the GEMM's thread
// script with esbuild, serves them cross-origin isolated (wasm threads need SharedArrayBuffer)
// from 127.0.0.1, and runs each case in a fresh browser, so that the renderer's peak RSS
// (VmHWM in /proc) is that case's alone.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { createServer, Server } from 'node:http';
import { AddressInfo } from 'node:net';
import { dirname, join } from 'node:path';
import { BuildOptions, build } from 'esbuild';
import { chromium } from 'playwright-core';
import { CHROMIUM, CHROMIUM_FLAGS, chromiumMissing } from '../node/chromium';
import { TrainCase, TrainMeasurement } from './vit224-case';

const ROOT = join(__dirname, '..', '..');
const WASM_DIR = dirname(require.resolve('@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm'));

export interface TabMeasurement extends TrainMeasurement {
  readonly backend: string;
  readonly threads: number;
  readonly browser: string;
  /** The largest peak RSS of the browser's renderer processes: the tab, its GEMM workers included. */
  readonly rendererPeakRssMiB: number | null;
}

async function bundle(): Promise<{ tab: string; thread: string }> {
  const common: BuildOptions = {
    bundle: true,
    write: false,
    format: 'iife',
    platform: 'browser',
    target: 'es2022',
    minify: true,
    logLevel: 'warning',
    // Node built-ins that tfjs-backend-wasm's Emscripten glue mentions but never loads in a browser.
    external: ['fs', 'path', 'crypto', 'worker_threads', 'os', 'perf_hooks'],
  };
  const [tab, thread] = await Promise.all([
    build({ ...common, entryPoints: [join(ROOT, 'bench', 'vit224-tab.ts')] }),
    build({
      ...common,
      stdin: {
        contents: "import { runGemmThread } from './engine'; self.onmessage = (e) => runGemmThread(e.data, () => self.postMessage('ready'));",
        resolveDir: ROOT,
        loader: 'ts',
      },
    }),
  ]);
  return { tab: tab.outputFiles![0].text, thread: thread.outputFiles![0].text };
}

function serve(files: Record<string, { body: string | Buffer; type: string }>): Promise<Server> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const wasm = path.startsWith('/wasm/') && /^[\w.-]+\.wasm$/.test(path.slice(6)) ? join(WASM_DIR, path.slice(6)) : undefined;
    const file = files[path] ?? (wasm && existsSync(wasm) ? { body: readFileSync(wasm), type: 'application/wasm' } : undefined);
    if (!file) return void res.writeHead(404).end();
    res.writeHead(200, { 'Content-Type': file.type, 'Cross-Origin-Opener-Policy': 'same-origin', 'Cross-Origin-Embedder-Policy': 'require-corp' });
    res.end(file.body);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

const read = (path: string): string => {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return ''; // the process ended meanwhile
  }
};

/** Peak RSS (VmHWM) of the renderer processes below this one (Chromium is our child), in MiB; null where /proc cannot tell. */
function rendererPeakRss(): number | null {
  if (!existsSync('/proc/self/stat')) return null;
  const parent = new Map<number, number>();
  for (const d of readdirSync('/proc').filter((f) => /^\d+$/.test(f))) {
    const stat = read(`/proc/${d}/stat`);
    if (stat) parent.set(Number(d), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
  }
  const below = (pid: number): boolean => {
    for (let p = parent.get(pid); p !== undefined && p > 1; p = parent.get(p)) if (p === process.pid) return true;
    return false;
  };
  let peak: number | null = null;
  for (const pid of parent.keys()) {
    if (!below(pid) || !read(`/proc/${pid}/cmdline`).includes('--type=renderer')) continue;
    const kb = Number(/VmHWM:\s+(\d+)/.exec(read(`/proc/${pid}/status`))?.[1]);
    if (kb) peak = Math.max(peak ?? 0, kb / 1024);
  }
  return peak;
}

export interface BrowserBench {
  run(c: TrainCase, threads: number): Promise<TabMeasurement>;
  close(): Promise<void>;
}

/** The bench's browser, or why there is none. */
export async function openBrowserBench(): Promise<BrowserBench | string> {
  const missing = chromiumMissing();
  if (missing) return missing;
  const { tab, thread } = await bundle();
  const html = '<!doctype html><meta charset="utf-8"><title>Partune 224 bench</title><script src="/tab.js"></script>';
  const server = await serve({
    '/tab.html': { body: html, type: 'text/html' },
    '/tab.js': { body: tab, type: 'text/javascript' },
    '/gemm-thread.js': { body: thread, type: 'text/javascript' },
  });
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    async run(c, threads) {
      const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_FLAGS });
      try {
        const page = await browser.newPage();
        await page.goto(`${origin}/tab.html?${new URLSearchParams({ case: JSON.stringify(c), threads: String(threads) })}`);
        const handle = await page.waitForFunction(() => (window as unknown as { partuneBench?: unknown }).partuneBench, null, {
          timeout: c.budgetMs + 240_000,
          polling: 1000,
        });
        const r = (await handle.jsonValue()) as TabMeasurement & { error?: string };
        if (r.error) throw new Error(`tab (${threads} threads): ${r.error}`);
        return { ...r, browser: `Chromium ${browser.version()} (headless)`, rendererPeakRssMiB: rendererPeakRss() };
      } finally {
        await browser.close();
      }
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
