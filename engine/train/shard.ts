// One shard of a distributed run: the base model with the round's tuned tensors in place, trained
// for a window of global steps, returning the new tuned tensors and optimizer moments.
import { VitConfig, parseVitConfig } from '../vit/config';
import { paramSpecs } from '../vit/params';
import { Strategy } from '../tuning/strategy';
import { Dataset } from '../data/dataset';
import { Normalization } from '../data/batches';
import { Checkpoint, HostWeights } from '../weights/checkpoint';
import { StateLabel, TrainingState } from '../weights/state';
import { TrainableVit } from './trainable';
import { TrainEvent, train } from './loop';
import { TrainOptions } from './options';

/** The architecture with the run's head, and the base weights with `tuned` in place of theirs. */
export function withTuned(base: Checkpoint, numClasses: number, tuned: HostWeights): { config: VitConfig; weights: HostWeights } {
  const config = parseVitConfig({ ...base.config, numClasses });
  const weights: HostWeights = new Map(base.weights);
  for (const [name, w] of tuned) weights.set(name, w);
  for (const spec of paramSpecs(config)) {
    const w = weights.get(spec.name);
    if (!w || w.data.length !== spec.shape.reduce((a, b) => a * b, 1)) throw new Error(`no ${spec.name} of shape [${spec.shape}] for ${numClasses} classes`);
  }
  return { config, weights };
}

/** name -> shape of what a strategy tunes: what a state or shard update must hold. */
export function tunedShapes(config: VitConfig, tuned: readonly string[]): Map<string, readonly number[]> {
  const specs = new Map(paramSpecs(config).map((s) => [s.name, s.shape] as const));
  return new Map(tuned.map((n) => [n, specs.get(n)!]));
}

export interface ShardJob {
  readonly base: Checkpoint;
  readonly numClasses: number;
  readonly strategy: Strategy;
  /** The run's selected training images, or the window's pack of them (`packed`). */
  readonly train: Dataset;
  /** `train` is the window's pack (engine/train/window.ts) of a selection of this many images. */
  readonly packed?: { readonly trainImages: number };
  readonly normalization: Normalization;
  /** The run's options (epochs, batch, lr, seed, ...): the schedule spans the whole run. */
  readonly options: TrainOptions;
  readonly window: { readonly from: number; readonly to: number };
  readonly start: TrainingState;
  readonly label: StateLabel;
}

/** Yields the training loop's step events; returns the shard's update. */
export async function* runShard(job: ShardJob): AsyncGenerator<TrainEvent, TrainingState> {
  const { config, weights } = withTuned(job.base, job.numClasses, job.start.params);
  const model = new TrainableVit(weights, config, job.strategy);
  try {
    const summary = yield* train(model, { train: job.train, normalization: job.normalization }, job.options, {
      evalEachEpoch: false, window: job.window, packedWindow: job.packed, optimizerState: job.start.optimizer,
    });
    const all = await model.weights();
    const params: HostWeights = new Map(model.inspection.tuned.map((n) => [n, all.get(n)!]));
    return { label: { ...job.label, samples: summary.images }, params, optimizer: summary.optimizer };
  } finally {
    model.dispose();
  }
}
