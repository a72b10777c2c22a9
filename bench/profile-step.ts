// Where one training step spends its time: backend kernels of a full fine-tuning step (batch
// 32), grouped by kernel and input shapes. Writes bench/results/profile-<model>.json.
// Products on the native BLAS with one thread, with --blas off on XNNPACK (profile-<model>-xnnpack.json)
// or with --blas engine on the engine's GEMM, the browser's path (profile-<model>-gemm.json).
// Run: node dist/bench/profile-step.js [--blas off|engine] [model ...]
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { TrainableVit, initParams, preset, presetStrategy, toHost } from '../engine';
import { selectBackend } from '../node/backend';

async function profile(name: string, backend: string, detail: string, suffix: string): Promise<void> {
  const config = preset(name);
  const m = new TrainableVit(await toHost(initParams(config, 0)), config, presetStrategy('full'));
  const x = tf.randomNormal([32, config.imageSize, config.imageSize, config.channels]) as tf.Tensor4D;
  const y = tf.tensor1d(Array.from({ length: 32 }, (_, i) => i % config.numClasses), 'int32');
  const step = (): void => {
    const { loss, grads } = m.lossAndGrads(x, y, 0.1);
    loss.dataSync();
    tf.dispose([loss, ...grads.values()]);
  };
  step();
  step();
  const t0 = performance.now();
  const info = await tf.profile(step);
  const wall = performance.now() - t0;
  // Only real backend kernels: custom gradients and ops show up as wrappers around them.
  const rows = new Map<string, { kernel: string; shapes: string; ms: number; calls: number }>();
  let total = 0;
  for (const k of info.kernels) {
    if (!tf.getKernel(k.name, backend)) continue;
    const ms = await k.kernelTimeMs;
    if (typeof ms !== 'number') continue;
    const key = `${k.name} ${JSON.stringify(k.inputShapes)}`;
    const row = rows.get(key) ?? { kernel: k.name, shapes: JSON.stringify(k.inputShapes), ms: 0, calls: 0 };
    row.ms += ms;
    row.calls++;
    rows.set(key, row);
    total += ms;
  }
  const byKernel = new Map<string, number>();
  for (const r of rows.values()) byKernel.set(r.kernel, (byKernel.get(r.kernel) ?? 0) + r.ms);
  const top = [...rows.values()].sort((a, b) => b.ms - a.ms).slice(0, 25).map((r) => ({ ...r, share: r.ms / total }));
  const kernels = [...byKernel].sort((a, b) => b[1] - a[1]).map(([kernel, ms]) => ({ kernel, ms, share: ms / total }));
  const dir = join(__dirname, '..', '..', 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `profile-${name}${suffix}.json`);
  writeFileSync(file, `${JSON.stringify({ date: new Date().toISOString(), model: name, strategy: 'full', batch: 32, backend: detail, kernelMs: total, profiledWallMs: wall, kernels, top }, null, 2)}\n`);
  process.stderr.write(`${name}: ${total.toFixed(0)} ms in kernels; ${kernels.slice(0, 6).map((k) => `${k.kernel} ${(100 * k.share).toFixed(0)}%`).join(', ')}\nwrote ${file}\n`);
  tf.dispose([x, y]);
  m.dispose();
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const blas = args[0] === '--blas' ? args[1] : 'auto';
  const models = args[0] === '--blas' ? args.slice(2) : args;
  const { name, detail } = await selectBackend('auto', { blas, threads: 1 });
  const suffix = blas === 'off' ? '-xnnpack' : blas === 'engine' ? '-gemm' : '';
  for (const model of models.length ? models : ['vit_mnist_500k', 'vit_tiny_patch4_32']) await profile(model, name, detail, suffix);
}

main().catch((e: Error) => {
  process.stderr.write(`profile: ${e.message}\n`);
  process.exit(1);
});
