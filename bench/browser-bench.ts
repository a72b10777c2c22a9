// Training speed in a browser tab (headless Chromium) on WebAssembly: the products on tfjs's
// XNNPACK (one thread, the path tabs had) against the engine's GEMM on 1 and 2 threads, beside
// PyTorch on 1 and 2 threads (bench/torch_reference.py, same model, batch and threads) measured
// in the same run. Each measurement is a fresh tab; the faster of two runs is kept (noise on a
// shared machine only slows a run down). Writes bench/results/browser-<date>.json.
// Run: npm run bench:browser [-- --quick]
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { Browser, chromium } from 'playwright-core';
import { preset } from '../engine';
import { CHROMIUM, CHROMIUM_FLAGS, chromiumMissing } from '../node/chromium';
import { startServer } from '../node/local-platform';

const MODELS: Record<string, string> = {
  vit_tiny_patch4_32: 'width 192, depth 12, 3 heads, MLP 768, 32x32x3, patch 4 (5.4M parameters)',
  vit_mnist_500k: "the shared third-party model's shape: width 64, depth 6, 4 heads of 64, MLP 128, 28x28x1 (0.5M)",
};
const STRATEGIES = ['full', 'attn-only', 'last-half'];
const BATCH = 32;
const PYTHON = '/usr/bin/python3';
const TORCH_SCRIPT = join(__dirname, '..', '..', 'bench', 'torch_reference.py');

interface Tab { products: 'xnnpack' | 'gemm'; threads: number }
interface TabResult { imagesPerSecond: number; detail: string; kernelClass: string }

async function inTab(browser: Browser, origin: string, model: string, strategy: string, tab: Tab, steps: number): Promise<TabResult> {
  const page = await browser.newPage();
  try {
    const q = new URLSearchParams({ config: JSON.stringify(preset(model)), strategy, batch: String(BATCH), steps: String(steps), products: tab.products, threads: String(tab.threads) });
    await page.goto(`${origin}/worker/bench.html?${q}`);
    const handle = await page.waitForFunction(() => (window as unknown as { partuneBench?: unknown }).partuneBench, null, { timeout: 600_000 });
    const r = (await handle.jsonValue()) as TabResult & { error?: string };
    if (r.error) throw new Error(`tab (${tab.products}, ${tab.threads} threads): ${r.error}`);
    return r;
  } finally {
    await page.close();
  }
}

function torch(model: string, strategy: string, threads: number, steps: number): number {
  const c = { model: preset(model), mode: 'train', strategy, batch: BATCH, steps, threads };
  const out = execFileSync(PYTHON, [TORCH_SCRIPT, JSON.stringify(c)], { encoding: 'utf8', env: { ...process.env, OMP_NUM_THREADS: String(threads) } });
  return (JSON.parse(out.trim().split('\n').pop()!) as { imagesPerSecond: number }).imagesPerSecond;
}

async function main(): Promise<void> {
  const missing = chromiumMissing();
  if (missing) throw new Error(missing);
  const quick = process.argv.includes('--quick');
  const withTorch = spawnSync(PYTHON, ['-c', 'import torch'], { stdio: 'ignore' }).status === 0;
  if (!withTorch) process.stderr.write(`no PyTorch reference: ${PYTHON} lacks torch (apt-get install python3-torch libopenblas0-openmp)\n`);
  const server = await startServer({ PARTUNE_BLAS: 'off' });
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_FLAGS });
  const origin = server.url.replace('/graphql', '');
  const rows: Record<string, unknown>[] = [];
  const tabs: Record<string, Tab> = { xnnpack1: { products: 'xnnpack', threads: 1 }, gemm1: { products: 'gemm', threads: 1 }, gemm2: { products: 'gemm', threads: 2 } };
  const f = (x?: number, d = 1): string => (x === undefined ? '-' : x.toFixed(d)).padStart(9);
  process.stderr.write(`${'model'.padEnd(20)} ${'strategy'.padEnd(10)} ${['xnnpack 1t', 'gemm 1t', 'gemm 2t', 'torch 1t', 'torch 2t', 'vs xnn', 'vs torch1', '2t/1t'].map((h) => h.padStart(9)).join(' ')}\n`);
  try {
    for (const model of Object.keys(MODELS)) {
      for (const strategy of quick && model !== 'vit_tiny_patch4_32' ? [] : STRATEGIES) {
        const steps = model === 'vit_tiny_patch4_32' ? 3 : 8;
        const measured: Record<string, TabResult> = {};
        for (let round = 0; round < (quick ? 1 : 2); round++) {
          for (const [name, tab] of Object.entries(tabs)) {
            const r = await inTab(browser, origin, model, strategy, tab, steps);
            if (!measured[name] || r.imagesPerSecond > measured[name].imagesPerSecond) measured[name] = r;
          }
        }
        const torch1 = withTorch ? Math.max(...(quick ? [0] : [0, 1]).map(() => torch(model, strategy, 1, steps))) : undefined;
        const torch2 = withTorch ? torch(model, strategy, 2, steps) : undefined;
        const [x1, g1, g2] = [measured.xnnpack1.imagesPerSecond, measured.gemm1.imagesPerSecond, measured.gemm2.imagesPerSecond];
        const row = {
          model, strategy, batch: BATCH, steps,
          xnnpack1: measured.xnnpack1, gemm1: measured.gemm1, gemm2: measured.gemm2, torch1, torch2,
          speedupVsXnnpack: g1 / x1, perThreadRatioVsTorch1: torch1 ? g1 / torch1 : undefined,
          twoThreadSpeedup: g2 / g1, ratio2VsTorch2: torch2 ? g2 / torch2 : undefined,
        };
        rows.push(row);
        process.stderr.write(`${model.padEnd(20)} ${strategy.padEnd(10)} ${[x1, g1, g2, torch1, torch2].map((x) => f(x)).join(' ')} ${f(row.speedupVsXnnpack, 2)} ${f(row.perThreadRatioVsTorch1, 2)} ${f(row.twoThreadSpeedup, 2)}\n`);
      }
    }
  } finally {
    await browser.close();
    await server.stop();
  }
  const headline = rows.find((r) => r.model === 'vit_tiny_patch4_32' && r.strategy === 'full') as Record<string, number> | undefined;
  const targets = headline && {
    case: 'vit_tiny_patch4_32 full fine-tuning',
    perThreadRatioVsTorch1: { value: headline.perThreadRatioVsTorch1, target: 0.5, met: headline.perThreadRatioVsTorch1 >= 0.5 },
    speedupVsXnnpack: { value: headline.speedupVsXnnpack, target: 1.8, met: headline.speedupVsXnnpack >= 1.8 },
    twoThreadSpeedup: { value: headline.twoThreadSpeedup, target: 1.6, met: headline.twoThreadSpeedup >= 1.6 },
  };
  const dir = join(__dirname, '..', '..', 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `browser-${new Date().toISOString().slice(0, 10)}${quick ? '-quick' : ''}.json`);
  const meta = {
    date: new Date().toISOString(), node: process.version, cpus: cpus().length, cpu: cpus()[0]?.model, browser: `Chromium ${browser.version()} (headless)`,
    models: MODELS, batch: BATCH,
    unit: 'training img/s at batch 32 (AdamW in the tab; PyTorch steps with SGD, a little less work); xnnpack1 = products on tfjs XNNPACK, 1 thread; gemm1/gemm2 = the engine GEMM on 1/2 threads; torch1/torch2 = PyTorch (OpenBLAS) on 1/2 threads',
  };
  writeFileSync(file, `${JSON.stringify({ ...meta, targets, results: rows }, null, 2)}\n`);
  process.stderr.write(`wrote ${file}\n`);
}

main().catch((e: Error) => {
  process.stderr.write(`bench:browser: ${e.message}\n`);
  process.exit(1);
});
