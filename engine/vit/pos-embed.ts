// Fine-tuning at another resolution: the position embedding's grid resampled the way timm's
// `resample_abs_pos_embed` does it (torch's bicubic interpolate with antialias, a = -0.5, the
// prefix tokens kept as they are), so that a checkpoint timm builds at the new size agrees.
import { VitConfig, numPatches, parseVitConfig } from './config';
import type { Checkpoint, HostWeights } from '../weights/checkpoint';

const cubic = (x: number): number => {
  const a = -0.5;
  const d = Math.abs(x);
  if (d < 1) return ((a + 2) * d - (a + 3)) * d * d + 1;
  if (d < 2) return (((d - 5) * d + 8) * d - 4) * a;
  return 0;
};

/** Separable antialiased weights for inSize -> outSize (torch's _compute_weights_aa). */
function weights(inSize: number, outSize: number): { first: number[]; w: number[][] } {
  const scale = inSize / outSize;
  const support = 2 * Math.max(scale, 1);
  const invScale = scale >= 1 ? 1 / scale : 1;
  const first: number[] = [];
  const w: number[][] = [];
  for (let i = 0; i < outSize; i++) {
    const center = scale * (i + 0.5);
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xsize = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    const row = Array.from({ length: xsize }, (_, j) => cubic((j + xmin - center + 0.5) * invScale));
    const total = row.reduce((s, v) => s + v, 0);
    first.push(xmin);
    w.push(row.map((v) => (total !== 0 ? v / total : 0)));
  }
  return { first, w };
}

/** pos_embed [1, prefix + h*w, D] -> [1, prefix + H*W, D]. */
export function resamplePosEmbed(
  pos: { shape: number[]; data: Float32Array },
  oldGrid: [number, number],
  newGrid: [number, number],
  prefixTokens: number,
): { shape: number[]; data: Float32Array } {
  const D = pos.shape[2];
  const [h, w] = oldGrid;
  const [H, W] = newGrid;
  if (pos.shape[1] !== prefixTokens + h * w) throw new Error(`pos_embed has ${pos.shape[1]} tokens, not ${prefixTokens} + ${h}x${w}`);
  const grid = pos.data.subarray(prefixTokens * D);
  const cols = weights(w, W);
  const rows = weights(h, H);
  // Width first, then height (the order torch's separable pass uses), in doubles.
  const mid = new Float64Array(h * W * D);
  for (let y = 0; y < h; y++)
    for (let x = 0; x < W; x++)
      for (let k = 0; k < cols.w[x].length; k++) {
        const weight = cols.w[x][k];
        const src = (y * w + cols.first[x] + k) * D;
        for (let d = 0; d < D; d++) mid[(y * W + x) * D + d] += weight * grid[src + d];
      }
  const out = new Float32Array((prefixTokens + H * W) * D);
  out.set(pos.data.subarray(0, prefixTokens * D));
  for (let y = 0; y < H; y++)
    for (let x = 0; x < W; x++) {
      const o = (prefixTokens + y * W + x) * D;
      for (let d = 0; d < D; d++) {
        let s = 0;
        for (let k = 0; k < rows.w[y].length; k++) s += rows.w[y][k] * mid[((rows.first[y] + k) * W + x) * D + d];
        out[o + d] = s;
      }
    }
  return { shape: [1, prefixTokens + H * W, D], data: out };
}

/** The checkpoint at another input size: same weights, the position embedding resampled. It keeps the base's digest. */
export function atImageSize(ckpt: Checkpoint, imageSize: number): Checkpoint {
  if (imageSize === ckpt.config.imageSize) return ckpt;
  const config: VitConfig = parseVitConfig({ ...ckpt.config, imageSize });
  const old = ckpt.config.imageSize / ckpt.config.patchSize;
  const side = Math.sqrt(numPatches(config));
  const weights: HostWeights = new Map(ckpt.weights);
  weights.set('pos_embed', resamplePosEmbed(ckpt.weights.get('pos_embed')!, [old, old], [side, side], 1));
  return { ...ckpt, config, weights, resampledFrom: ckpt.resampledFrom ?? ckpt.config.imageSize };
}
