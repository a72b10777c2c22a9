// Whether two updates of the same shard are the same computation. Workers on one kernel class run
// the same float operations in the same order, so their updates are equal bit for bit; across
// classes (XNNPACK vs a BLAS, WebGL, WebGPU) the sums are ordered differently and the updates
// drift apart by rounding, which training then amplifies. The distance is measured relative to
// how far the shard moved its tuned parameters, so it means the same for a large and a small step.
import { TrainingState } from '../weights/state';

/**
 * The largest cross-class distance an honest pair may show. Measured (bench/results/kernel-drift-*):
 * XNNPACK against OpenBLAS (and OpenBLAS on 1 against 2 threads), micro ViT from step 0, at most
 * 5.3e-4 for shards of up to 64 steps of attn-only and 16 of full fine-tuning, 19x below this;
 * every lie the trust bench plays (scaled, reversed, zeroed, noised, replayed) is at 0.75 or more.
 * Full fine-tuning from a random init for 64 steps diverges (0.51): rounding noise in parameters whose
 * true gradient is zero (the key bias) is amplified by Adam and then by training itself.
 */
export const CROSS_CLASS_TOLERANCE = 0.01;

/** Reported losses of the same shard across classes: the same images, rounding apart. */
export const LOSS_TOLERANCE = 0.02;

export interface UpdateDistance {
  /** The relative L2 distance of the two moves of the tuned parameters (0: identical). */
  readonly relative: number;
  /** The tensor contributing most to the difference. */
  readonly tensor: string;
}

/**
 * How far apart two updates of one shard are: the L2 norm of their difference over all tuned
 * parameters, relative to the larger of their moves from the round's `start`. Moments are not
 * compared across classes: a first moment is a recent gradient, not a sum of steps, so its drift is
 * not bounded by the move (the reach check bounds them instead); within a class they are bit-compared.
 */
export function updateDistance(start: TrainingState, a: TrainingState, b: TrainingState): UpdateDistance {
  if (a.optimizer.step !== b.optimizer.step) return { relative: Infinity, tensor: 'optimizer step' };
  let diff = 0;
  let moveA = 0;
  let moveB = 0;
  let worst = { share: -1, tensor: '' };
  for (const [name, s] of start.params) {
    const x = a.params.get(name)!.data;
    const y = b.params.get(name)!.data;
    let d = 0;
    for (let i = 0; i < s.data.length; i++) {
      d += (x[i] - y[i]) ** 2;
      moveA += (x[i] - s.data[i]) ** 2;
      moveB += (y[i] - s.data[i]) ** 2;
    }
    diff += d;
    if (d > worst.share) worst = { share: d, tensor: name };
  }
  const move = Math.sqrt(Math.max(moveA, moveB));
  return { relative: diff === 0 ? 0 : move === 0 ? Infinity : Math.sqrt(diff) / move, tensor: worst.tensor };
}

/** Why two reported losses of one shard cannot both be honest (across classes), or null. */
export function lossesDisagree(a: number, b: number): string | null {
  const gap = Math.abs(a - b) / Math.max(Math.abs(a), Math.abs(b), 1e-6);
  return gap > LOSS_TOLERANCE ? `reported losses ${a.toFixed(4)} and ${b.toFixed(4)} differ by ${(gap * 100).toFixed(1)}%` : null;
}
