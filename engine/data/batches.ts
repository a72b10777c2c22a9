// Mini-batches: gather, augment on the host (cheap for small images, no kernels needed on any
// backend), normalise, upload as (B, H, W, C) float32.
import * as tf from '@tensorflow/tfjs';
import { Preprocessing } from '../vit/config';
import { Dataset } from './dataset';

/** Per-channel mean and std of pixels scaled to [0, 1]: what a model's preprocessing declares. */
export type Normalization = Preprocessing;

export interface Augmentation {
  /** Random crop of the image padded by this many zero pixels on each side (0: off). */
  readonly cropPadding: number;
  /** Random horizontal flip (ignored for datasets that are not flip-invariant). */
  readonly flip: boolean;
}

export const NO_AUGMENTATION: Augmentation = { cropPadding: 0, flip: false };

export function makeBatch(
  ds: Dataset,
  indices: ArrayLike<number>,
  norm: Normalization,
  aug: Augmentation = NO_AUGMENTATION,
  random: () => number = Math.random,
): { images: tf.Tensor4D; labels: tf.Tensor1D } {
  const { height: H, width: W, channels: C } = ds;
  if (norm.mean.length !== C) throw new Error(`normalisation has ${norm.mean.length} channels, ${ds.name} has ${C}`);
  const px = H * W * C;
  const out = new Float32Array(indices.length * px);
  const labels = new Int32Array(indices.length);
  const scale = Array.from({ length: C }, (_, c) => 1 / (255 * norm.std[c]));
  const shift = Array.from({ length: C }, (_, c) => -norm.mean[c] / norm.std[c]);
  const pad = aug.cropPadding;
  for (let b = 0; b < indices.length; b++) {
    const src = indices[b] * px;
    labels[b] = ds.labels[indices[b]];
    const dy = pad ? Math.floor(random() * (2 * pad + 1)) - pad : 0;
    const dx = pad ? Math.floor(random() * (2 * pad + 1)) - pad : 0;
    const flip = aug.flip && ds.flipInvariant && random() < 0.5;
    for (let y = 0; y < H; y++) {
      const sy = y + dy;
      for (let x = 0; x < W; x++) {
        const sxRaw = x + dx;
        const sx = flip ? W - 1 - sxRaw : sxRaw;
        const inside = sy >= 0 && sy < H && sxRaw >= 0 && sxRaw < W;
        const o = b * px + (y * W + x) * C;
        for (let c = 0; c < C; c++) {
          const v = inside ? ds.images[src + (sy * W + sx) * C + c] : 0;
          out[o + c] = v * scale[c] + shift[c];
        }
      }
    }
  }
  return { images: tf.tensor4d(out, [indices.length, H, W, C]), labels: tf.tensor1d(labels, 'int32') };
}

export function makeLabels(ds: Dataset, indices: ArrayLike<number>): tf.Tensor1D {
  return tf.tensor1d(Int32Array.from({ length: indices.length }, (_, i) => ds.labels[indices[i]]), 'int32');
}
