// Exported checkpoints load in PyTorch with timm's layout: an independent timm-style forward
// (tests/fixtures/timm_forward.py: conv2d patch embedding, fused qkv) gives our logits.
import * as tf from '@tensorflow/tfjs';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exportCheckpoint, initParams, loadCheckpoint, model, parseVitConfig, toDevice, toHost } from '../engine';
import { TOY, VIT_MNIST, useBackend } from './helpers';
import { describeUnless, itUnless } from './support/skip';

const PYTHON = '/usr/bin/python3';
const hasTorch = spawnSync(PYTHON, ['-c', 'import torch'], { stdio: 'ignore' }).status === 0;
const SCRIPT = join(__dirname, 'fixtures', 'timm_forward.py');
const dir = mkdtempSync(join(tmpdir(), 'partune-timm-'));

function torchLogits(checkpoint: Uint8Array, images: number[][]): number[][] {
  writeFileSync(join(dir, 'model.safetensors'), checkpoint);
  writeFileSync(join(dir, 'images.json'), JSON.stringify({ images }));
  return JSON.parse(execFileSync(PYTHON, [SCRIPT, join(dir, 'model.safetensors'), join(dir, 'images.json')], { encoding: 'utf8' }));
}

const maxDiff = (a: number[][], b: number[][]): number => Math.max(...a.flatMap((row, i) => row.map((v, j) => Math.abs(v - b[i][j]))));

describeUnless(hasTorch ? undefined : `${PYTHON} cannot import torch (apt-get install python3-torch)`)('timm export loads in PyTorch', () => {
  beforeAll(() => useBackend('wasm'));

  it('a random toy ViT (GELU, qkv bias, 3 channels): same logits', async () => {
    const config = parseVitConfig({ ...TOY, preprocessing: { mean: [0.4, 0.5, 0.6], std: [0.2, 0.25, 0.3] } });
    const weights = await toHost(initParams(config, 11));
    for (const w of weights.values()) w.data.forEach((v, i) => (w.data[i] = v * 20)); // make every weight matter
    const images = Array.from({ length: 3 }, (_, n) => Array.from({ length: 8 * 8 * 3 }, (_, i) => ((i * 7 + n * 13) % 17) / 16));
    const x = tf.tensor4d(images.flat().map((v, i) => (v - config.preprocessing!.mean[i % 3]) / config.preprocessing!.std[i % 3]), [3, 8, 8, 3]);
    const params = toDevice(weights);
    const ours = (await model.forward(params, x, config).array()) as number[][];
    expect(maxDiff(torchLogits(exportCheckpoint(weights, config), images), ours)).toBeLessThan(1e-3);
    tf.dispose([x, ...params.values()]);
  });

  itUnless(existsSync(VIT_MNIST) ? undefined : `${VIT_MNIST} is absent (shared data is not part of the repository)`)('the shared vit-mnist-500k, converted from vit-pytorch names: the golden logits', async () => {
    const golden = JSON.parse(readFileSync(join(__dirname, 'fixtures', 'vit-mnist-golden.json'), 'utf8'));
    const bytes = new Uint8Array(readFileSync(join(VIT_MNIST, 'model.safetensors')));
    const config = parseVitConfig(JSON.parse(readFileSync(join(VIT_MNIST, 'config.json'), 'utf8')));
    const ck = await loadCheckpoint(bytes, { config });
    expect(maxDiff(torchLogits(exportCheckpoint(ck.weights, config), golden.images), golden.logits)).toBeLessThan(1e-4);
  });
});

