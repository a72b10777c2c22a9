// Engine throughput and memory: img/s and peak RSS for training (full, attn-only, last-half) and
// inference, each case in its own process so peak memory is that case's alone.
// Writes bench/results/engine-<date>.json. Run: npm run bench [-- --quick]
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { TrainableVit, VitConfig, initParams, loadCheckpoint, parseStrategy, parseVitConfig, preset, toHost, model } from '../engine';
import { selectBackend } from '../cli/backend';

interface Case {
  readonly model: string;
  readonly mode: 'train' | 'inference';
  readonly strategy?: string;
  readonly batch: number;
  readonly steps: number;
}

interface Result extends Case {
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

async function runCase(c: Case): Promise<Result> {
  const backend = await selectBackend('auto');
  const { config, weights } = await weightsFor(c.model);
  const x = tf.randomNormal([c.batch, config.imageSize, config.imageSize, config.channels]) as tf.Tensor4D;
  const y = tf.tensor1d(Array.from({ length: c.batch }, (_, i) => i % config.numClasses), 'int32');
  const counts: number[] = [];
  let step: () => Promise<void>;
  let cleanup: () => void;
  if (c.mode === 'train') {
    const m = new TrainableVit(weights, config, parseStrategy(c.strategy!));
    // Gradients plus a plain SGD update: the optimizer's cost is small next to forward + backward.
    step = async () => {
      const { loss, grads } = m.lossAndGrads(x, y, 0.1);
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
    ...c, backend: backend.name, imagesPerSecond: (c.batch * 1000) / ms, msPerStep: ms,
    peakRssMiB: process.resourceUsage().maxRSS / 1024, numTensorsStable: counts.every((n) => n === counts[0]),
  };
}

function plan(quick: boolean): Case[] {
  const cases: Case[] = [];
  for (const [name, steps] of [['vit_mnist_500k', quick ? 2 : 8], ['vit_tiny_patch4_32', quick ? 1 : 4]] as const) {
    for (const strategy of ['full', 'attn-only', 'last-half']) cases.push({ model: name, mode: 'train', strategy, batch: 32, steps });
    cases.push({ model: name, mode: 'inference', batch: 32, steps: steps * 2 });
  }
  return cases;
}

async function main(): Promise<void> {
  const arg = process.argv.indexOf('--case');
  if (arg > 0) {
    process.stdout.write(`${JSON.stringify(await runCase(JSON.parse(process.argv[arg + 1])))}\n`);
    return;
  }
  const quick = process.argv.includes('--quick');
  const results: Result[] = [];
  for (const c of plan(quick)) {
    const line = execFileSync(process.execPath, [__filename, '--case', JSON.stringify(c)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
    const r = JSON.parse(line.trim().split('\n').pop()!) as Result;
    results.push(r);
    process.stderr.write(`${r.model.padEnd(20)} ${(r.mode === 'train' ? `train ${r.strategy}` : 'inference').padEnd(16)} ${r.imagesPerSecond.toFixed(1).padStart(7)} img/s  ${r.peakRssMiB.toFixed(0).padStart(5)} MiB peak RSS\n`);
  }
  const source = (await weightsFor('vit_mnist_500k')).source;
  const dir = join(__dirname, '..', '..', 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `engine-${new Date().toISOString().slice(0, 10)}${quick ? '-quick' : ''}.json`);
  writeFileSync(file, `${JSON.stringify({ date: new Date().toISOString(), node: process.version, cpus: cpus().length, cpu: cpus()[0]?.model, vitMnistWeights: source, batch: 32, results }, null, 2)}\n`);
  process.stderr.write(`wrote ${file}\n`);
}

main().catch((e: Error) => {
  process.stderr.write(`bench: ${e.message}\n`);
  process.exit(1);
});
