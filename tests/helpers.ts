// Shared test helpers: backends, a toy ViT, and where the optional shared data lives.
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Dataset, VitConfig, installWasmKernels, parseVitConfig } from '../engine';

export async function useBackend(name: 'wasm' | 'cpu' = 'wasm'): Promise<void> {
  if (name === 'wasm') await installWasmKernels();
  await tf.setBackend(name);
  await tf.ready();
}

/** Depth 2, odd sizes everywhere so a transposed or mis-sliced weight cannot pass unnoticed. */
export const TOY: VitConfig = parseVitConfig({
  imageSize: 8, channels: 3, patchSize: 4, dim: 12, depth: 2, heads: 2, headDim: 5, mlpDim: 20,
  activation: 'gelu', qkvBias: true, pool: 'cls', layerNormEps: 1e-6, numClasses: 3,
});

/** n deterministic 8x8x3 images for TOY, three classes in turn. */
export function toyData(n: number): Dataset {
  const px = 8 * 8 * 3;
  const images = Uint8Array.from({ length: n * px }, (_, i) => (i * 131 + Math.floor(i / px) * 17) % 256);
  const labels = Uint8Array.from({ length: n }, (_, i) => i % 3);
  return { name: 'toy', images, labels, count: n, height: 8, width: 8, channels: 3, classes: 3, flipInvariant: true };
}

export const SHARED = join(__dirname, '..', '..', 'shared', 'data');
export const VIT_MNIST = join(SHARED, 'vit-mnist-500k');

/** `describe` that skips, saying why, when a path is absent (fresh clones lack ../shared). */
export function describeIfExists(path: string, title: string, body: () => void): void {
  if (existsSync(path)) {
    describe(title, body);
  } else {
    describe(title, () => {
      it.skip(`skipped: ${path} is absent (shared data is not part of the repository)`, () => undefined);
    });
    process.stderr.write(`[skip] ${title}: ${path} is absent\n`);
  }
}
