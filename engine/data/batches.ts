// Mini-batches: gather, transform and augment on the host (integer arithmetic, no kernels needed on
// any backend, the same pixels everywhere), normalise, upload as (B, H, W, C) float32.
import * as tf from '@tensorflow/tfjs';
import { Preprocessing } from '../vit/config';
import { Dataset } from './dataset';
import { Image8 } from './resample';
import { InputTransform, evalTransform, randomResizedCrop } from './transforms';

/** Per-channel mean and std of pixels scaled to [0, 1]: what a model's preprocessing declares. */
export type Normalization = Preprocessing;

export interface Augmentation {
  /** timm's random-resized crop to the model's size (else the eval transform when sizes differ). */
  readonly resizedCrop?: boolean;
  /** Random crop of the image padded by this many zero pixels on each side (0: off). */
  readonly cropPadding: number;
  /** Random horizontal flip (ignored for datasets that are not flip-invariant). */
  readonly flip: boolean;
}

export const NO_AUGMENTATION: Augmentation = { cropPadding: 0, flip: false };

/** The stored image `i` of `ds` as an Image8 view. */
export function imageAt(ds: Dataset, i: number): Image8 {
  const px = ds.height * ds.width * ds.channels;
  return { data: ds.images.subarray(i * px, (i + 1) * px), width: ds.width, height: ds.height, channels: ds.channels };
}

const transformed = new WeakMap<Dataset, Map<string, Dataset>>();

/**
 * The whole dataset through the eval transform, once (cached per dataset and transform): what
 * evaluation and un-cropped training read at every epoch. The dataset itself when nothing changes.
 */
export function atInputSize(ds: Dataset, t: InputTransform): Dataset {
  if (ds.height === t.size && ds.width === t.size && t.cropPct === 1) return ds;
  const key = `${t.size}/${t.interpolation}/${t.cropPct}`;
  const byTransform = transformed.get(ds) ?? new Map<string, Dataset>();
  transformed.set(ds, byTransform);
  const hit = byTransform.get(key);
  if (hit) return hit;
  const px = t.size * t.size * ds.channels;
  const images = new Uint8Array(ds.count * px);
  for (let i = 0; i < ds.count; i++) images.set(evalTransform(imageAt(ds, i), t).data, i * px);
  const out: Dataset = { ...ds, images, height: t.size, width: t.size };
  byTransform.set(key, out);
  return out;
}

/**
 * `input` is the model's transform; without it the images go in at their stored size. Per image,
 * `random` is drawn in a fixed order (crop box, then padding offsets, then flip).
 */
export function makeBatch(
  ds: Dataset,
  indices: ArrayLike<number>,
  norm: Normalization,
  aug: Augmentation = NO_AUGMENTATION,
  random: () => number = Math.random,
  input?: InputTransform,
): { images: tf.Tensor4D; labels: tf.Tensor1D } {
  const C = ds.channels;
  const [H, W] = input ? [input.size, input.size] : [ds.height, ds.width];
  if (norm.mean.length !== C) throw new Error(`normalisation has ${norm.mean.length} channels, ${ds.name} has ${C}`);
  const px = H * W * C;
  const out = new Float32Array(indices.length * px);
  const labels = new Int32Array(indices.length);
  const scale = Array.from({ length: C }, (_, c) => 1 / (255 * norm.std[c]));
  const shift = Array.from({ length: C }, (_, c) => -norm.mean[c] / norm.std[c]);
  const pad = aug.cropPadding;
  for (let b = 0; b < indices.length; b++) {
    labels[b] = ds.labels[indices[b]];
    const stored = imageAt(ds, indices[b]);
    const img = !input ? stored : aug.resizedCrop ? randomResizedCrop(stored, input, random) : evalTransform(stored, input);
    const src = img.data;
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
          const v = inside ? src[(sy * W + sx) * C + c] : 0;
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
