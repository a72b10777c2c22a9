// The end of a fine-tuning, wherever it ran (the CLI, a platform run, the study): the tuned
// tensors rounded onto exactly what base + delta gives, scored there, and the delta that records
// them. The accuracy reported is that of the model a user deploys, bit for bit.
import * as tf from '@tensorflow/tfjs';
import { VitConfig } from '../vit/config';
import { Strategy, inspect } from '../tuning/strategy';
import { Dataset } from '../data/dataset';
import { Normalization } from '../data/batches';
import { Checkpoint, HostWeights, toDevice } from '../weights/checkpoint';
import { Delta, applyDelta, makeDelta, roundToDelta } from '../weights/delta';
import { WriteDtype } from '../weights/safetensors';
import { EvalResult, evaluate } from './loop';

/** Top-1 and loss of complete host weights on a split. */
export async function evaluateWeights(weights: HostWeights, config: VitConfig, ds: Dataset, normalization: Normalization, batchSize = 64): Promise<EvalResult> {
  const params = toDevice(weights);
  try {
    return await evaluate(params, config, ds, normalization, batchSize);
  } finally {
    tf.dispose([...params.values()]);
  }
}

/** Top-1 and loss of base + delta on a split. */
export function scoreDelta(base: Checkpoint, delta: Delta, ds: Dataset, normalization: Normalization, batchSize = 64): Promise<EvalResult> {
  return evaluateWeights(applyDelta(base, delta), delta.manifest.architecture, ds, normalization, batchSize);
}

export interface FinishInput {
  /** The run's starting point (with its new head, if it got one). */
  readonly base: Checkpoint;
  /** The trained tensors: at least the tuned ones (the rest are the base's). */
  readonly fineTuned: HostWeights;
  readonly strategy: Strategy;
  readonly normalization: Normalization;
  /** Splits to score; `test` is the one the delta records. */
  readonly splits: { readonly test: Dataset } & Readonly<Record<string, Dataset>>;
  readonly dtype?: WriteDtype;
  /** What the delta's manifest records of the training (the test scores are added). */
  readonly training?: Readonly<Record<string, unknown>>;
  readonly batchSize?: number;
  /** The training data's class names, recorded in the delta. */
  readonly classNames?: readonly string[];
}

export interface Finished {
  readonly delta: Delta;
  /** Exactly base + delta, every tensor. */
  readonly weights: HostWeights;
  readonly scores: { readonly test: EvalResult } & Readonly<Record<string, EvalResult>>;
}

/** The architecture with the normalisation trained with, keeping the model's interpolation and crop. */
export function withNormalization(config: VitConfig, n: Normalization): VitConfig {
  return { ...config, preprocessing: { ...config.preprocessing, mean: [...n.mean], std: [...n.std] } };
}

export async function finishFineTuning(input: FinishInput): Promise<Finished> {
  const { base, strategy, normalization } = input;
  const inspected = inspect(strategy, base.config).tuned;
  // A resampled position embedding travels with the delta even when it is not tuned.
  const tuned = base.resampledFrom !== undefined && !inspected.includes('pos_embed') ? [...inspected, 'pos_embed'] : inspected;
  const complete: HostWeights = new Map([...base.weights, ...input.fineTuned]);
  const { weights } = roundToDelta(base, complete, tuned, input.dtype ?? 'F32');
  const scores: Record<string, EvalResult> = {};
  for (const [name, ds] of Object.entries(input.splits)) scores[name] = await evaluateWeights(weights, base.config, ds, normalization, input.batchSize);
  const test = scores.test;
  const extra = Object.fromEntries(Object.entries(scores).filter(([name]) => name !== 'test').map(([name, r]) => [`${name}Accuracy`, r.accuracy]));
  const delta = makeDelta({
    base, fineTuned: weights, tuned, architecture: withNormalization(base.config, normalization), strategy, dtype: input.dtype ?? 'F32',
    classNames: input.classNames,
    carried: tuned === inspected ? undefined : ['pos_embed'],
    training: {
      ...input.training, ...extra, testAccuracy: test.accuracy, testLoss: test.loss, testImages: test.count,
      ...(test.confusion && { testConfusion: test.confusion }),
    },
  });
  return { delta, weights, scores: scores as Finished['scores'] };
}
