// Engine throughput and memory against PyTorch: img/s and peak RSS for training (full, attn-only,
// ffn-only, last-half) and inference, each case in its own process so peak memory is that case's
// alone, Partune and the PyTorch reference (bench/torch_reference.py, same model, batch, step
// and threads) interleaved. Partune runs its products on the native BLAS (1 and 2 threads) and,
// once per case, on XNNPACK (the browser's path). Writes bench/results/engine-<date>.json.
// Run: npm run bench [-- --quick]
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { PrefixCache, TrainableVit, VitConfig, initParams, loadCheckpoint, parseStrategy, parseVitConfig, preset, toHost, model } from '../engine';
import { selectBackend } from '../node/backend';

interface Case {
  readonly model: string;
  readonly mode: 'train' | 'inference';
  readonly strategy?: string;
  /** Train from the frozen-prefix cache (the steady state of epochs after the first). */
  readonly cached?: boolean;
  readonly batch: number;
  readonly steps: number;
}

/** How Partune's wasm backend runs products: on the native BLAS ('auto') or on XNNPACK ('off'). */
interface Engine {
  readonly blas: 'auto' | 'off';
  readonly threads: number;
}

interface Measurement {
  readonly imagesPerSecond: number;
  readonly msPerStep: number;
  readonly peakRssMiB: number;
}

interface Result extends Case, Measurement {
  readonly backend: string;
  readonly imagesPerSecond: number;
  readonly msPerStep: number;
  readonly peakRssMiB: number;
  readonly numTensorsStable: boolean;
}

const SHARED_MODEL = join(__dirname, '..', '..', '..', 'shared', 'data', 'vit-mnist-500k');

async function weightsFor(name: string): Promise<{ config: VitConfig; weights: Awaited<ReturnType<typeof toHost>>; source: string }> {
  if (name === 'vit_mnist_500k' && existsSync(join(SHARED_MODEL, 'model.safetensors'))) {
    const config = parseVitConfig(JSON.parse(readFileSync(join(SHARED_MODEL, 'config.json'), 'utf8')));
    const ck = await loadCheckpoint(new Uint8Array(readFileSync(join(SHARED_MODEL, 'model.safetensors'))), { config });
    return { config, weights: ck.weights, source: 'shared third-party weights' };
  }
  const config = preset(name);
  return { config, weights: await toHost(initParams(config, 0)), source: 'random init (speed does not depend on values)' };
}

async function runCase(c: Case, e: Engine): Promise<Result> {
  const backend = await selectBackend('auto', e);
  const { config, weights } = await weightsFor(c.model);
  const x = tf.randomNormal([c.batch, config.imageSize, config.imageSize, config.channels]) as tf.Tensor4D;
  const y = tf.tensor1d(Array.from({ length: c.batch }, (_, i) => i % config.numClasses), 'int32');
  const counts: number[] = [];
  let step: () => Promise<void>;
  let cleanup: () => void;
  if (c.mode === 'train') {
    const m = new TrainableVit(weights, config, parseStrategy(c.strategy!));
    const indices = Array.from({ length: c.batch }, (_, i) => i);
    let cache: PrefixCache | undefined;
    if (c.cached) {
      const prefix = m.frozenPrefix(x)!;
      cache = new PrefixCache(c.batch, prefix.shape.slice(1), { maxBytes: 2 ** 31, dtype: 'f32' });
      await cache.store(indices, prefix);
      prefix.dispose();
    }
    // Gradients plus a plain SGD update: the optimizer's cost is small next to forward + backward.
    step = async () => {
      const input = cache?.gather(indices);
      const { loss, grads } = input ? m.lossAndGradsFrom(input, y, 0.1) : m.lossAndGrads(x, y, 0.1);
      input?.dispose();
      tf.tidy(() => grads.forEach((g, k) => m.tuned.get(k)!.assign(tf.sub(m.tuned.get(k)!, tf.mul(g, 1e-4)))));
      await loss.data();
      tf.dispose([loss, ...grads.values()]);
    };
    cleanup = () => m.dispose();
  } else {
    const params = new Map([...weights].map(([k, w]) => [k, tf.tensor(w.data, w.shape)]));
    step = async () => {
      const out = model.forward(params, x, config);
      await out.data();
      out.dispose();
    };
    cleanup = () => tf.dispose([...params.values()]);
  }
  await step(); // warm-up: kernel set-up and the first allocation of every buffer
  await step();
  const t0 = performance.now();
  for (let i = 0; i < c.steps; i++) {
    await step();
    counts.push(tf.memory().numTensors);
  }
  const ms = (performance.now() - t0) / c.steps;
  cleanup();
  return {
    ...c, backend: backend.detail, imagesPerSecond: (c.batch * 1000) / ms, msPerStep: ms,
    peakRssMiB: process.resourceUsage().maxRSS / 1024, numTensorsStable: counts.every((n) => n === counts[0]),
  };
}

function plan(quick: boolean): Case[] {
  const cases: Case[] = [];
  for (const [name, steps] of [['vit_mnist_500k', quick ? 2 : 8], ['vit_tiny_patch4_32', quick ? 1 : 4]] as const) {
    for (const strategy of ['full', 'attn-only', 'ffn-only', 'last-half']) cases.push({ model: name, mode: 'train', strategy, batch: 32, steps });
    cases.push({ model: name, mode: 'train', strategy: 'last-half', cached: true, batch: 32, steps });
    cases.push({ model: name, mode: 'train', strategy: 'linear-probe', cached: true, batch: 32, steps: steps * 4 });
    cases.push({ model: name, mode: 'inference', batch: 32, steps: steps * 2 });
  }
  // Batch 64 must train within wasm's 4 GiB.
  if (!quick) cases.push({ model: 'vit_tiny_patch4_32', mode: 'train', strategy: 'full', batch: 64, steps: 2 });
  return cases;
}

const PYTHON = '/usr/bin/python3';
const TORCH_SCRIPT = join(__dirname, '..', '..', 'bench', 'torch_reference.py');
const hasTorch = (): boolean => spawnSync(PYTHON, ['-c', 'import torch'], { stdio: 'ignore' }).status === 0;

function partune(c: Case, e: Engine): Result {
  const line = execFileSync(process.execPath, [__filename, '--case', JSON.stringify(c), JSON.stringify(e)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  return JSON.parse(line.trim().split('\n').pop()!) as Result;
}

/** PyTorch has no prefix cache: compare a cached run with its plain one. */
function torch(c: Case, threads: number): Measurement {
  const config = c.model === 'vit_mnist_500k' && existsSync(join(SHARED_MODEL, 'config.json'))
    ? parseVitConfig(JSON.parse(readFileSync(join(SHARED_MODEL, 'config.json'), 'utf8')))
    : preset(c.model);
  const out = execFileSync(PYTHON, [TORCH_SCRIPT, JSON.stringify({ ...c, model: config, threads })], { encoding: 'utf8', env: { ...process.env, OMP_NUM_THREADS: String(threads) } });
  return JSON.parse(out.trim().split('\n').pop()!) as Measurement;
}

/** The faster of two runs: noise on a shared machine only ever slows a run down. */
const best = <T extends Measurement>(a: T, b: T): T => ({ ...(a.imagesPerSecond >= b.imagesPerSecond ? a : b), peakRssMiB: Math.max(a.peakRssMiB, b.peakRssMiB) });

async function main(): Promise<void> {
  const arg = process.argv.indexOf('--case');
  if (arg > 0) {
    process.stdout.write(`${JSON.stringify(await runCase(JSON.parse(process.argv[arg + 1]), JSON.parse(process.argv[arg + 2])))}\n`);
    return;
  }
  const quick = process.argv.includes('--quick');
  const withTorch = hasTorch();
  if (!withTorch) process.stderr.write(`no PyTorch reference: ${PYTHON} lacks torch (apt-get install python3-torch libopenblas0-openmp)\n`);
  const rows: Record<string, unknown>[] = [];
  const label = (c: Case): string => (c.mode === 'train' ? `train ${c.strategy}${c.cached ? ' (cache)' : ''}` : 'inference');
  const blas1: Engine = { blas: 'auto', threads: 1 };
  const blas2: Engine = { blas: 'auto', threads: 2 };
  const xnnpack: Engine = { blas: 'off', threads: 1 };
  const cols = ['xnnpack', 'blas 1t', 'torch 1t', 'ratio', 'blas 2t', 'torch 2t', 'ratio'];
  process.stderr.write(`${'model'.padEnd(20)} ${'case'.padEnd(18)} ${cols.map((h) => h.padStart(9)).join(' ')}   RSS blas 1t / torch 1t\n`);
  for (const c of plan(quick)) {
    // Interleaved: Partune, PyTorch, Partune, PyTorch; then the XNNPACK path and the 2-thread pair.
    let ours = partune(c, blas1);
    if (!ours.backend.includes('products on') && !rows.length) process.stderr.write(`no native BLAS, so the 'blas' columns ran on XNNPACK: ${ours.backend}\n`);
    const ref1: Measurement[] = [];
    if (withTorch) ref1.push(torch(c, 1));
    ours = best(ours, partune(c, blas1));
    if (withTorch) ref1.push(torch(c, 1));
    const t1 = ref1.length ? best(ref1[0], ref1[1]) : undefined;
    const plain = partune(c, xnnpack);
    const ours2 = quick ? undefined : partune(c, blas2);
    const t2 = withTorch && !quick ? torch(c, 2) : undefined;
    const ratio = t1 ? ours.imagesPerSecond / t1.imagesPerSecond : undefined;
    const ratio2 = t2 && ours2 ? ours2.imagesPerSecond / t2.imagesPerSecond : undefined;
    rows.push({
      ...ours, xnnpack: plain, threads2: ours2, torch1: t1, torch2: t2, ratioVsTorch1: ratio, ratio2VsTorch2: ratio2,
      blasVsXnnpack: ours.imagesPerSecond / plain.imagesPerSecond, rssRatioVsTorch1: t1 ? ours.peakRssMiB / t1.peakRssMiB : undefined,
    });
    const f = (x?: number, d = 1): string => (x === undefined ? '-' : x.toFixed(d));
    const cells = [f(plain.imagesPerSecond), f(ours.imagesPerSecond), f(t1?.imagesPerSecond), f(ratio, 2), f(ours2?.imagesPerSecond), f(t2?.imagesPerSecond), f(ratio2, 2)];
    process.stderr.write(`${c.model.padEnd(20)} ${label(c).padEnd(18)} ${cells.map((x) => x.padStart(9)).join(' ')}   ${f(ours.peakRssMiB, 0)} / ${f(t1?.peakRssMiB, 0)} MiB\n`);
  }
  const source = (await weightsFor('vit_mnist_500k')).source;
  const dir = join(__dirname, '..', '..', 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `engine-${new Date().toISOString().slice(0, 10)}${quick ? '-quick' : ''}.json`);
  const meta = { date: new Date().toISOString(), node: process.version, cpus: cpus().length, cpu: cpus()[0]?.model, vitMnistWeights: source, batch: 32, unit: 'img/s; RSS in MiB; top level = Partune with products on the native BLAS, 1 thread; xnnpack = the same without it (the browser path); threads2 = native BLAS, 2 threads; torch1/torch2 = PyTorch with 1/2 threads' };
  writeFileSync(file, `${JSON.stringify({ ...meta, results: rows }, null, 2)}\n`);
  process.stderr.write(`wrote ${file}\n`);
}

main().catch((e: Error) => {
  process.stderr.write(`bench: ${e.message}\n`);
  process.exit(1);
});
