// Whether two updates of the same shard are the same computation. Workers on one kernel class run
// the same float operations in the same order, so their updates are equal bit for bit; across
// classes (XNNPACK vs a BLAS, WebGL, WebGPU) the sums are ordered differently and the updates
// drift apart by rounding, which training then amplifies. The distance is measured relative to
// how far the shard moved each tensor, so it means the same for a large and a small step.
import { HostWeights } from '../weights/checkpoint';
import { TrainingState } from '../weights/state';

/**
 * The largest cross-class distance an honest pair may show (bench/results/kernel-drift-*.json:
 * the worst pair measured, 64-step shards, stays about two orders of magnitude below it), while
 * every lie the trust bench plays (scaled, reversed, zeroed, noised, replayed) is at 0.5 or more.
 */
export const CROSS_CLASS_TOLERANCE = 0.05;

/** Reported losses of the same shard across classes: the same images, rounding apart. */
export const LOSS_TOLERANCE = 0.02;

export interface UpdateDistance {
  /** The largest per-tensor relative L2 distance of the two moves (0: identical). */
  readonly relative: number;
  /** Where it is largest, e.g. `exp_avg/blocks.0.attn.qkv.weight`. */
  readonly tensor: string;
}

function groupDistance(prefix: string, start: HostWeights, a: HostWeights, b: HostWeights, worst: { relative: number; tensor: string }): void {
  for (const [name, s] of start) {
    const x = a.get(name)!.data;
    const y = b.get(name)!.data;
    let diff = 0;
    let moveA = 0;
    let moveB = 0;
    for (let i = 0; i < s.data.length; i++) {
      const d = x[i] - y[i];
      const ma = x[i] - s.data[i];
      const mb = y[i] - s.data[i];
      diff += d * d;
      moveA += ma * ma;
      moveB += mb * mb;
    }
    const move = Math.sqrt(Math.max(moveA, moveB));
    const relative = diff === 0 ? 0 : move === 0 ? Infinity : Math.sqrt(diff) / move;
    if (relative > worst.relative) Object.assign(worst, { relative, tensor: prefix + name });
  }
}

/** How far apart two updates of one shard are, relative to their moves from the round's `start`. */
export function updateDistance(start: TrainingState, a: TrainingState, b: TrainingState): UpdateDistance {
  if (a.optimizer.step !== b.optimizer.step) return { relative: Infinity, tensor: 'optimizer step' };
  const worst = { relative: 0, tensor: '' };
  groupDistance('param/', start.params, a.params, b.params, worst);
  groupDistance('exp_avg/', start.optimizer.expAvg, a.optimizer.expAvg, b.optimizer.expAvg, worst);
  groupDistance('exp_avg_sq/', start.optimizer.expAvgSq, a.optimizer.expAvgSq, b.optimizer.expAvgSq, worst);
  return worst;
}

/** Why two reported losses of one shard cannot both be honest (across classes), or null. */
export function lossesDisagree(a: number, b: number): string | null {
  const gap = Math.abs(a - b) / Math.max(Math.abs(a), Math.abs(b), 1e-6);
  return gap > LOSS_TOLERANCE ? `reported losses ${a.toFixed(4)} and ${b.toFixed(4)} differ by ${(gap * 100).toFixed(1)}%` : null;
}
