// A run's schedule: hyper-parameters checked once, then cut into rounds (never across an epoch
// end, so each epoch ends with an evaluation as in a single-process run) and rounds into shards.
import { TrainOptions } from '../../engine';
import { badInput } from '../errors';

export interface Hyper {
  readonly epochs: number;
  readonly maxSteps?: number;
  readonly batchSize: number;
  readonly lr: number;
  readonly minLr: number;
  readonly warmupSteps?: number;
  readonly weightDecay: number;
  readonly labelSmoothing: number;
  readonly clipGrad: number;
  readonly seed: number;
  readonly cropPadding: number;
  readonly flip: boolean;
  /** Optimizer steps per round, split among the round's shards. */
  readonly stepsPerRound: number;
  /** Shards (parallel workers) per round. */
  readonly shardsPerRound: number;
  /** Train on a seeded subset of this many images (as the CLI's --train-limit). */
  readonly trainLimit?: number;
  /** Evaluate on a seeded subset of this many test images (as the CLI's --test-limit). */
  readonly evalLimit?: number;
  readonly normalize: 'auto' | 'model' | 'dataset';
}

export const HYPER_DEFAULTS = {
  epochs: 1, batchSize: 32, lr: 1e-3, minLr: 1e-6, weightDecay: 0.05, labelSmoothing: 0.1, clipGrad: 1, seed: 0,
  cropPadding: 0, flip: false, stepsPerRound: 50, normalize: 'auto',
} as const;

export interface Plan {
  readonly trainImages: number;
  readonly stepsPerEpoch: number;
  readonly totalSteps: number;
  readonly shardsPerRound: number;
  /** [from, to) global steps of each round. */
  readonly rounds: readonly (readonly [number, number])[];
}

export function checkHyper(h: Hyper): Hyper {
  const int = (k: keyof Hyper, min: number, optional = false): void => {
    const v = h[k];
    if (optional && v === undefined) return;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min) throw badInput(`${k} must be an integer >= ${min} (got ${v})`);
  };
  const real = (k: keyof Hyper, min: number, max: number): void => {
    const v = h[k];
    if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max) throw badInput(`${k} must be a number in [${min}, ${max}] (got ${v})`);
  };
  int('epochs', 1); int('maxSteps', 1, true); int('batchSize', 1); int('warmupSteps', 0, true); int('seed', 0); int('cropPadding', 0);
  int('stepsPerRound', 1); int('shardsPerRound', 1); int('trainLimit', 1, true); int('evalLimit', 1, true);
  real('lr', 0, 10); real('minLr', 0, 10); real('weightDecay', 0, 10); real('labelSmoothing', 0, 0.99); real('clipGrad', 0, 1e6);
  if (h.batchSize > 4096) throw badInput('batchSize must be at most 4096');
  if (!['auto', 'model', 'dataset'].includes(h.normalize)) throw badInput('normalize must be auto, model or dataset');
  return h;
}

export function makePlan(h: Hyper, trainCount: number): Plan {
  const trainImages = Math.min(trainCount, h.trainLimit ?? Infinity);
  const stepsPerEpoch = Math.floor(trainImages / h.batchSize);
  if (stepsPerEpoch < 1) throw badInput(`the training split has ${trainImages} images, fewer than one batch of ${h.batchSize}`);
  const totalSteps = Math.min(stepsPerEpoch * h.epochs, h.maxSteps ?? Infinity);
  const rounds: [number, number][] = [];
  for (let from = 0; from < totalSteps; ) {
    const epochEnd = Math.min(totalSteps, (Math.floor(from / stepsPerEpoch) + 1) * stepsPerEpoch);
    const to = Math.min(from + h.stepsPerRound, epochEnd);
    rounds.push([from, to]);
    from = to;
  }
  return { trainImages, stepsPerEpoch, totalSteps, shardsPerRound: h.shardsPerRound, rounds };
}

/** A round's steps as contiguous windows, one per shard (fewer shards than steps never). */
export function shardWindows(round: readonly [number, number], shards: number): [number, number][] {
  const [from, to] = round;
  const n = Math.min(shards, to - from);
  return Array.from({ length: n }, (_, k) => [from + Math.floor(((to - from) * k) / n), from + Math.floor(((to - from) * (k + 1)) / n)]);
}

/** The engine's options for this run: every shard's schedule spans the whole run. */
export function trainOptions(h: Hyper): Partial<TrainOptions> {
  return {
    epochs: h.epochs, maxSteps: h.maxSteps, batchSize: h.batchSize, lr: h.lr, minLr: h.minLr, warmupSteps: h.warmupSteps,
    weightDecay: h.weightDecay, labelSmoothing: h.labelSmoothing, maxGradNorm: h.clipGrad, seed: h.seed,
    augmentation: { cropPadding: h.cropPadding, flip: h.flip },
  };
}

/** Evaluate after a round that ends an epoch or the run. */
export const evaluatesAfter = (plan: Plan, round: number): boolean => {
  const to = plan.rounds[round][1];
  return to === plan.totalSteps || to % plan.stepsPerEpoch === 0;
};
