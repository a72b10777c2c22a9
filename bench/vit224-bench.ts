// Vision Transformers at their real size, 224x224: training img/s and peak memory of ViT-S/16 and
// ViT-B/16 (full, attn-only, last-half from the frozen-prefix cache) through the engine's loop on
// Node's wasm backend at 1 and 2 threads and in a headless Chromium tab, beside real timm on
// PyTorch (bench/timm_reference.py) on the same threads in the same run; one micro-batch case
// (ViT-S attn-only, batch 32 in micro-batches of 8, against batch 8); and the bytes a shard
// downloads per step (bench/vit224-packs.ts). Each Node and Python case is its own process, so
// peak RSS is that case's alone. Writes bench/results/vit224-<date>[-quick].json.
// Run: npm run build && node dist/bench/vit224-bench.js [--quick]   (or PARTUNE_BENCH_QUICK=1)
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';
import { join } from 'node:path';
import { inspect, parseStrategy, preset } from '../engine';
import { selectBackend } from '../node/backend';
import type { BrowserBench } from './vit224-browser';
import { TrainCase, runTrainCase } from './vit224-case';

const ROOT = join(__dirname, '..', '..');
const PYTHON = process.env.PARTUNE_PYTHON ?? '/usr/bin/python3';
const TIMM_SCRIPT = join(ROOT, 'bench', 'timm_reference.py');
const TIMM_DIR = process.env.PARTUNE_TIMM_DIR ?? join(ROOT, 'node_modules', '.cache', 'partune-timm');
const WHEELS = process.env.PARTUNE_WHEEL_DIR ?? '/opt/pypi/files';

interface Plan {
  readonly models: readonly string[];
  readonly batch: number;
  readonly steps: number;
  /** Timed-steps budget per case, by model. */
  readonly budgetMs: Readonly<Record<string, number>>;
  /** Tab thread counts, by model (ViT-B's tab runs only at one thread per core, to keep the run short). */
  readonly tabThreads: Readonly<Record<string, readonly number[]>>;
  readonly micro: { readonly model: string; readonly batch: number; readonly microBatch: number };
  readonly packSteps: number;
  /** Cases still waiting when the run has taken this long are skipped (and say so). */
  readonly totalBudgetS: number;
}

const FULL: Plan = {
  models: ['vit_small_patch16_224', 'vit_base_patch16_224'],
  batch: 8,
  steps: 2,
  budgetMs: { vit_small_patch16_224: 30_000, vit_base_patch16_224: 60_000 },
  tabThreads: { vit_small_patch16_224: [1, 2], vit_base_patch16_224: [2] },
  micro: { model: 'vit_small_patch16_224', batch: 32, microBatch: 8 },
  packSteps: 4,
  totalBudgetS: 900,
};
// Every path once, on ViT-Ti/16 (still 224x224), in a minute or two.
const QUICK: Plan = {
  models: ['vit_tiny_patch16_224'],
  batch: 2,
  steps: 1,
  budgetMs: { vit_tiny_patch16_224: 5_000 },
  tabThreads: { vit_tiny_patch16_224: [1, 2] },
  micro: { model: 'vit_tiny_patch16_224', batch: 8, microBatch: 2 },
  packSteps: 1,
  totalBudgetS: 300,
};
const STRATEGIES = [
  { strategy: 'full', cached: false },
  { strategy: 'attn-only', cached: false },
  { strategy: 'last-half', cached: true },
] as const;

type Outcome = Record<string, unknown> & { imagesPerSecond?: number; peakRssMiB?: number };
const failed = (why: string): Outcome => ({ error: why });

/** One case in a fresh Node process (this file with --case), on the wasm backend at `threads` threads. */
function node(c: TrainCase, threads: number): Outcome {
  const r = spawnSync(process.execPath, [__filename, '--case', JSON.stringify(c), String(threads)], { encoding: 'utf8', timeout: c.budgetMs + 240_000 });
  const line = r.stdout?.trim().split('\n').pop();
  if (r.status !== 0 || !line) return failed(`exit ${r.status ?? r.signal}: ${(r.stderr ?? '').trim().split('\n').slice(-3).join(' | ')}`);
  return JSON.parse(line) as Outcome;
}

async function caseProcess(c: TrainCase, threads: number): Promise<void> {
  const backend = await selectBackend('wasm', { threads });
  const m = await runTrainCase(c);
  process.stdout.write(`${JSON.stringify({ ...m, backend: backend.detail, threads, peakRssMiB: process.resourceUsage().maxRSS / 1024 })}\n`);
}

/** Real timm on Debian's PyTorch: found, or installed from the local wheel (pip --no-index), or why not. */
function timmEnv(): { env: NodeJS.ProcessEnv } | { missing: string } {
  const env = { ...process.env, PYTHONPATH: TIMM_DIR };
  const probe = (): string | null => {
    const r = spawnSync(PYTHON, ['-c', 'import torch, timm'], { env, encoding: 'utf8' });
    return r.status === 0 ? null : (r.stderr || r.error?.message || 'failed').trim().split('\n').pop()!;
  };
  if (!probe()) return { env };
  const wheels = existsSync(WHEELS) ? readdirSync(WHEELS).filter((f) => /^(timm|safetensors)-.*\.whl$/.test(f)) : [];
  if (!wheels.some((w) => w.startsWith('timm-')))
    return { missing: `${PYTHON} cannot import torch and timm (${probe()}); no timm wheel in ${WHEELS} (PARTUNE_WHEEL_DIR)` };
  spawnSync(PYTHON, ['-m', 'pip', 'install', '--no-index', '--no-deps', '--quiet', '--target', TIMM_DIR, ...wheels.map((w) => join(WHEELS, w))], {
    stdio: 'ignore',
  });
  const still = probe();
  return still
    ? { missing: `${PYTHON} cannot import torch and timm after installing ${wheels.join(', ')}: ${still} (apt-get install python3-torch python3-torchvision)` }
    : { env };
}

function timm(c: TrainCase, threads: number, env: NodeJS.ProcessEnv): Outcome {
  const ins = inspect(parseStrategy(c.strategy), preset(c.model));
  const spec = {
    timm: c.model,
    tuned: ins.tuned,
    cached: c.cached,
    gradientStart: ins.gradientStart,
    batch: c.batch,
    microBatch: c.microBatch ?? null,
    steps: c.steps,
    budgetS: c.budgetMs / 1000,
    threads,
  };
  const r = spawnSync(PYTHON, [TIMM_SCRIPT, JSON.stringify(spec)], {
    encoding: 'utf8',
    env: { ...env, OMP_NUM_THREADS: String(threads) },
    timeout: c.budgetMs + 240_000,
  });
  const line = r.stdout?.trim().split('\n').pop();
  if (r.status !== 0 || !line) return failed(`exit ${r.status ?? r.signal}: ${(r.stderr ?? '').trim().split('\n').slice(-3).join(' | ')}`);
  return JSON.parse(line) as Outcome;
}

const ratio = (a?: Outcome, b?: Outcome, key: 'imagesPerSecond' | 'peakRssMiB' = 'imagesPerSecond'): number | null =>
  a?.[key] !== undefined && b?.[key] !== undefined ? (a[key] as number) / (b[key] as number) : null;

async function main(): Promise<void> {
  const arg = process.argv.indexOf('--case');
  if (arg > 0) return caseProcess(JSON.parse(process.argv[arg + 1]) as TrainCase, Number(process.argv[arg + 2]));
  const quick = process.argv.includes('--quick') || process.env.PARTUNE_BENCH_QUICK === '1';
  const plan = quick ? QUICK : FULL;
  const start = Date.now();
  const load = [loadavg()[0]];
  const left = (): boolean => Date.now() - start < plan.totalBudgetS * 1000;
  const skipped = (): Outcome => failed(`skipped: the run passed its ${plan.totalBudgetS} s budget`);
  const log = (s: string): boolean => process.stderr.write(`[${((Date.now() - start) / 1000).toFixed(0).padStart(4)} s] ${s}\n`);

  // Loaded here, not at the top: a case process must not carry sharp, esbuild or playwright in its RSS.
  const { packBytes } = require('./vit224-packs') as typeof import('./vit224-packs');
  const { openBrowserBench } = require('./vit224-browser') as typeof import('./vit224-browser');
  const packs = await packBytes(plan.packSteps);
  for (const p of packs.results)
    log(
      `pack ${p.input}: ${(p.compressedBytesPerStep / 2 ** 20).toFixed(2)} MiB/step of ${(p.rawBytesPerStep / 2 ** 20).toFixed(2)} raw (x${p.ratio.toFixed(3)})`,
    );
  const ref = timmEnv();
  if ('missing' in ref) log(`no timm reference: ${ref.missing}`);
  const browserOrWhy = await openBrowserBench().catch((e: Error) => `the browser bench failed to start: ${e.message}`);
  const browser: BrowserBench | null = typeof browserOrWhy === 'string' ? null : browserOrWhy;
  if (!browser) log(`no browser: ${browserOrWhy as string}`);
  const ref1 = (c: TrainCase, threads: number): Outcome => ('missing' in ref ? failed(ref.missing) : left() ? timm(c, threads, ref.env) : skipped());
  const ours = (c: TrainCase, threads: number): Outcome => (left() ? node(c, threads) : skipped());
  const tab = async (c: TrainCase, threads: number): Promise<Outcome> => {
    if (!browser) return failed(browserOrWhy as string);
    if (!left()) return skipped();
    return browser.run(c, threads).then(
      (r) => r as unknown as Outcome,
      (e: Error) => failed(e.message),
    );
  };
  const f = (o?: Outcome, key = 'imagesPerSecond', d = 2): string =>
    (typeof o?.[key] === 'number' ? (o[key] as number).toFixed(d) : o?.error ? 'x' : '-').padStart(8);

  // Micro-batches: the batch-32 step's peak memory against batch 8 without them (the model's attn-only case), right after that model's cases.
  const microCase = async (microBase: Outcome | undefined): Promise<Record<string, unknown>> => {
    const { model, batch, microBatch } = plan.micro;
    const mc: TrainCase = { model, strategy: 'attn-only', cached: false, batch, microBatch, steps: plan.steps, budgetMs: plan.budgetMs[model] * 2 };
    const withMicro = ours(mc, 1);
    const timmMicro = ref1(mc, 1);
    // The tab's claim: batch 32 of ViT-S at 224 within a tab's WebAssembly memory, in micro-batches.
    const tabMicro = await tab(mc, 2);
    const perImage = (key: string): number | null =>
      typeof withMicro[key] === 'number' && typeof microBase?.[key] === 'number'
        ? ((withMicro[key] as number) - (microBase[key] as number)) / (batch - microBatch)
        : null;
    const micro = {
      case: `${model} attn-only b${batch} microBatch ${microBatch} vs b${microBatch}`,
      model,
      strategy: 'attn-only',
      batch,
      microBatch,
      node1: withMicro,
      timm1: timmMicro,
      tab2: tabMicro,
      withoutMicroBatches: { batch: microBatch, node1: microBase ?? null },
      extraMiBPerImage: { peakRss: perImage('peakRssMiB'), peakTensor: perImage('peakTensorMiB'), wasmHeap: perImage('wasmHeapMiB') },
      ratios: { node1VsTimm1: ratio(withMicro, timmMicro) },
    };
    log(
      `${micro.case.padEnd(44)} ${f(withMicro)} ${f(timmMicro)}   peak RSS ${f(withMicro, 'peakRssMiB', 0)} vs ${f(microBase, 'peakRssMiB', 0)} MiB, ` +
        `tensors ${f(withMicro, 'peakTensorMiB', 0)} vs ${f(microBase, 'peakTensorMiB', 0)} MiB; tab2 ${f(tabMicro)} img/s`,
    );
    return micro;
  };

  const rows: Record<string, unknown>[] = [];
  let microBase: Outcome | undefined;
  let micro: Record<string, unknown> = { error: `not run: ${plan.micro.model} is not among the models` };
  log(`${'case'.padEnd(44)}   node1t  timm1t   node2t  timm2t   tab1t    tab2t   (img/s; peak RSS node1t/timm1t MiB)`);
  try {
    for (const model of plan.models) {
      for (const s of STRATEGIES) {
        const c: TrainCase = { model, strategy: s.strategy, cached: s.cached, batch: plan.batch, steps: plan.steps, budgetMs: plan.budgetMs[model] };
        const name = `${model} ${s.strategy}${s.cached ? ' (cached)' : ''} b${plan.batch}`;
        // Interleaved, so that a slow spell of the shared machine hits both sides.
        const node1 = ours(c, 1);
        const timm1 = ref1(c, 1);
        const node2 = ours(c, 2);
        const timm2 = ref1(c, 2);
        const tabs: Record<string, Outcome> = {};
        for (const t of plan.tabThreads[model]) tabs[`tab${t}`] = await tab(c, t);
        if (model === plan.micro.model && s.strategy === 'attn-only') microBase = node1;
        rows.push({
          case: name,
          model,
          strategy: s.strategy,
          cached: s.cached,
          batch: plan.batch,
          node1,
          node2,
          timm1,
          timm2,
          ...tabs,
          ratios: {
            node1VsTimm1: ratio(node1, timm1),
            node2VsTimm2: ratio(node2, timm2),
            tab1VsTimm1: ratio(tabs.tab1, timm1),
            tab2VsTimm2: ratio(tabs.tab2, timm2),
            node1RssVsTimm1: ratio(node1, timm1, 'peakRssMiB'),
            node2VsNode1: ratio(node2, node1),
          },
        });
        log(
          `${name.padEnd(44)} ${f(node1)} ${f(timm1)} ${f(node2)} ${f(timm2)} ${f(tabs.tab1)} ${f(tabs.tab2)}   ${f(node1, 'peakRssMiB', 0)}/${f(timm1, 'peakRssMiB', 0)}`,
        );
      }
      if (model === plan.micro.model) micro = await microCase(microBase);
    }
  } finally {
    await browser?.close();
  }

  load.push(loadavg()[0]);

  const dir = join(ROOT, 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `vit224-${new Date().toISOString().slice(0, 10)}${quick ? '-quick' : ''}.json`);
  const meta = {
    date: new Date().toISOString(),
    quick,
    node: process.version,
    cpus: cpus().length,
    cpu: cpus()[0]?.model,
    memoryGiB: totalmem() / 2 ** 30,
    loadAverage1m: { start: load[0], end: load[1] },
    elapsedS: (Date.now() - start) / 1000,
    plan: { ...plan, warmupSteps: 1, strategies: STRATEGIES },
    reference: 'missing' in ref ? { missing: ref.missing } : { python: PYTHON, timmPath: TIMM_DIR },
    browser: browser ? 'headless Chromium (a fresh browser per case)' : { missing: browserOrWhy },
    unit:
      'img/s over the timed steps after 1 warm-up (fewer when a case passed its budget: see stepsTimed); memory in MiB. node1/node2: the engine loop (AdamW, clip 1) on Node wasm at 1/2 threads' +
      ' (products on the native BLAS where built, else the engine GEMM: see backend); tab1/tab2: the same loop in a Chromium tab, engine GEMM on 1/2 threads; timm1/timm2: timm.create_model(model)' +
      ' on PyTorch, same tuned tensors, batch, AdamW and clip, 1/2 threads. peakRssMiB: the process (for tabs rendererPeakRssMiB: the renderer) peak RSS; peakTensorMiB: the most bytes the' +
      " engine's tensors held at once, weights included; wasmHeapMiB: tfjs-wasm's heap high-water mark. cached: the frozen blocks' output comes from the prefix cache (for timm, computed once" +
      ' under no_grad, the same trick).',
  };
  writeFileSync(file, `${JSON.stringify({ ...meta, results: rows, microBatch: micro, packs }, null, 2)}\n`);
  log(`wrote ${file}`);
}

main().catch((e: Error) => {
  process.stderr.write(`bench:vit224: ${e.stack ?? e.message}\n`);
  process.exit(1);
});
