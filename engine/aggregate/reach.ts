// How far AdamW can move a state in a given number of steps, and a check that an update stays
// within it. Adam's step is bounded whatever the gradients: with m and v the moments,
// |m| <= K sqrt(v) where K = (1 - b1) / sqrt((1 - b2)(1 - b1^2 / b2)) (Cauchy-Schwarz over the
// moments' geometric sums; a sample-weighted mean of states keeps it), so a coordinate moves at
// most lr (K sqrt(1 - b2^t) / (1 - b1^t) + wd |p|) at step t. With the gradient clipped to a
// global norm C, every gradient has ||g|| <= C, so after k steps ||m|| <= b1^k ||m0|| + (1 - b1^k) C
// and sum(v) <= b2^k sum(v0) + (1 - b2^k) C^2 (each coordinate likewise, with |g_i| <= C), and v
// never falls faster than b2^k. An update that moved further, kept a different step count, or whose
// moments could not follow from the start's, was not produced by those steps. These are bounds, not
// a replica: a lie that stays inside them (a reversed, halved or unmoved move, noise smaller than
// the move) passes, and only replication tells it from the truth.
import { ADAMW_DEFAULTS, AdamWOptions } from '../train/adamw';
import { TrainOptions, trainingSchedule } from '../train/options';
import { lrAt } from '../train/schedule';
import { decays } from '../vit/groups';
import { HostWeights } from '../weights/checkpoint';
import { TrainingState } from '../weights/state';

/** Relative slack on every bound, for float rounding in the steps themselves. */
const SLACK = 1.05;

export interface Reach {
  /** The learning rate of each step the update claims to have taken, in order. */
  readonly lrs: readonly number[];
  readonly adamw: AdamWOptions;
  /** The gradient's global-norm clip (0: none, and the moments have no upper bound). */
  readonly clip: number;
}

/** The reach of global steps [from, to) of a run with these options on `trainImages` images. */
export function reachOf(o: TrainOptions, trainImages: number, from: number, to: number): Reach {
  const { warmupSteps, totalSteps } = trainingSchedule(o, trainImages);
  const schedule = { baseLr: o.lr, minLr: o.minLr, warmupSteps, totalSteps };
  return { lrs: Array.from({ length: to - from }, (_, j) => lrAt(schedule, from + j)), adamw: { ...ADAMW_DEFAULTS, weightDecay: o.weightDecay }, clip: o.clipGrad };
}

/** Why `update` cannot be `reach.lrs.length` AdamW steps from `start`, or null when it can. */
export function beyondReach(start: TrainingState, update: TrainingState, reach: Reach): string | null {
  const { beta1, beta2, weightDecay } = reach.adamw;
  const steps = reach.lrs.length;
  if (update.optimizer.step !== start.optimizer.step + steps) {
    return `its optimizer is at step ${update.optimizer.step}; ${steps} steps from ${start.optimizer.step} reach ${start.optimizer.step + steps}`;
  }
  const k = (1 - beta1) / Math.sqrt((1 - beta2) * (1 - (beta1 * beta1) / beta2));
  const b1k = beta1 ** steps;
  const b2k = beta2 ** steps;
  const c = reach.clip > 0 ? reach.clip : Infinity;
  // Per coordinate, from |g_i| <= C; over all tuned tensors, from ||g|| <= C.
  const vCap = (v0: number): number => SLACK * (b2k * v0 + (1 - b2k) * c * c) + 1e-30;
  const mCap = (m0: number): number => SLACK * (b1k * Math.abs(m0) + (1 - b1k) * c) + 1e-30;
  let vSum0 = 0;
  let vSum = 0;
  let mNorm0 = 0;
  let mNorm = 0;
  for (const [name, p0] of start.params) {
    const p = update.params.get(name)!;
    const m0 = start.optimizer.expAvg.get(name)!;
    const v0 = start.optimizer.expAvgSq.get(name)!;
    const m = update.optimizer.expAvg.get(name)!;
    const v = update.optimizer.expAvgSq.get(name)!;
    const ratio = Math.hypot(k, largestRatio(m0, v0));
    const wd = decays(name, p0.shape) ? weightDecay : 0;
    // allowed |p - p0| = a + c |p0|, by the recursion D' = D (1 + lr wd) + lr (wd |p0| + B_t).
    let a = 0;
    let cp = 0;
    reach.lrs.forEach((lr, j) => {
      const t = start.optimizer.step + j + 1;
      const bound = (ratio * Math.sqrt(1 - beta2 ** t)) / (1 - beta1 ** t);
      a = a * (1 + lr * wd) + lr * bound;
      cp = cp * (1 + lr * wd) + lr * wd;
    });
    const vFloor = b2k / SLACK;
    for (let i = 0; i < p0.data.length; i++) {
      const moved = Math.abs(p.data[i] - p0.data[i]);
      const allowed = SLACK * (a + cp * Math.abs(p0.data[i])) + 1e-6 * Math.abs(p0.data[i]);
      if (!(moved <= allowed)) return `${name}[${i}] moved ${moved.toExponential(3)}, more than ${steps} AdamW steps can (${allowed.toExponential(3)})`;
      if (!(v.data[i] >= v0.data[i] * vFloor)) return `exp_avg_sq ${name}[${i}] fell from ${v0.data[i].toExponential(3)} to ${v.data[i].toExponential(3)}, faster than beta2 decays it`;
      if (!(v.data[i] <= vCap(v0.data[i]))) {
        return `exp_avg_sq ${name}[${i}] = ${v.data[i].toExponential(3)} is more than ${steps} steps of gradients clipped to norm ${c} can make (${vCap(v0.data[i]).toExponential(3)})`;
      }
      if (!(Math.abs(m.data[i]) <= SLACK * ratio * Math.sqrt(v.data[i]) + 1e-30)) {
        return `exp_avg ${name}[${i}] = ${m.data[i].toExponential(3)} is larger than its second moment allows`;
      }
      if (!(Math.abs(m.data[i]) <= mCap(m0.data[i]))) {
        return `exp_avg ${name}[${i}] = ${m.data[i].toExponential(3)} is more than ${steps} steps of gradients clipped to norm ${c} can make (${mCap(m0.data[i]).toExponential(3)})`;
      }
      vSum0 += v0.data[i];
      vSum += v.data[i];
      mNorm0 += m0.data[i] ** 2;
      mNorm += m.data[i] ** 2;
    }
  }
  if (c === Infinity) return null;
  const vTotal = SLACK * (b2k * vSum0 + (1 - b2k) * c * c);
  if (!(vSum <= vTotal)) return `the second moments sum to ${vSum.toExponential(3)}, more than ${steps} steps of gradients of norm at most ${c} can make (${vTotal.toExponential(3)})`;
  const mTotal = SLACK * (b1k * Math.sqrt(mNorm0) + (1 - b1k) * c);
  if (!(Math.sqrt(mNorm) <= mTotal)) return `the first moments have norm ${Math.sqrt(mNorm).toExponential(3)}, more than ${steps} steps of gradients of norm at most ${c} can make (${mTotal.toExponential(3)})`;
  return null;
}

/** max |m| / sqrt(v) over a tensor (a zero second moment needs a zero first moment). */
function largestRatio(m: HostWeights extends Map<string, infer W> ? W : never, v: typeof m): number {
  let r = 0;
  for (let i = 0; i < m.data.length; i++) {
    if (v.data[i] > 0) r = Math.max(r, Math.abs(m.data[i]) / Math.sqrt(v.data[i]));
  }
  return r;
}
