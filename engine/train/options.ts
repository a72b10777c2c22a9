// The options of a fine-tuning run, in one place for every front end: the recipe (what a delta
// records), which images it sees, and the schedule arithmetic that follows from them. The CLI's
// flags, the GraphQL input, a run's stored hyper-parameters and the dashboard form all map onto
// these names; an error names the option by its meaning and each front end adds its own spelling.
// No TensorFlow.js here: the dashboard bundles this file alone.
import { Preprocessing, VitConfig } from '../vit/config';
import { Dataset, Split, channelStats, limit } from '../data/dataset';

export type Normalize = 'auto' | 'model' | 'dataset';

export interface TrainOptions {
  readonly epochs: number;
  /** Stop after this many optimizer steps (the schedule spans them), e.g. a short probe. */
  readonly maxSteps?: number;
  readonly batchSize: number;
  readonly lr: number;
  /** Where the cosine schedule ends. */
  readonly minLr: number;
  /** Linear warm-up steps; default: 10% of all steps. */
  readonly warmupSteps?: number;
  /** AdamW's decoupled weight decay (none on norms, biases and tokens). */
  readonly weightDecay: number;
  readonly labelSmoothing: number;
  /** Clip the global gradient norm to this (0: off). */
  readonly clipGrad: number;
  readonly seed: number;
  /** Random-crop padding in pixels (0: off). */
  readonly cropPadding: number;
  /** Random horizontal flips (only for flip-invariant data). */
  readonly flip: boolean;
  /** timm's random-resized crop to the model's size; unset: on when the images are stored larger than the model's input. */
  readonly resizedCrop?: boolean;
  /** Split each step's batch into pieces of this many images (gradient accumulation); unset: the whole batch. */
  readonly microBatch?: number;
  /** Train on a seeded subset of this many images. */
  readonly trainLimit?: number;
  /** Test on a seeded subset of this many images. */
  readonly testLimit?: number;
  /** The model's declared normalisation, the training images' statistics, or auto (the first if any). */
  readonly normalize: Normalize;
}

export const TRAIN_DEFAULTS: TrainOptions = {
  epochs: 1, batchSize: 32, lr: 1e-3, minLr: 1e-6, weightDecay: 0.05, labelSmoothing: 0.1, clipGrad: 1, seed: 0,
  cropPadding: 0, flip: false, normalize: 'auto',
};

type Spec =
  | { readonly kind: 'int'; readonly min: number; readonly max: number; readonly meaning: string }
  | { readonly kind: 'real'; readonly min: number; readonly max: number; readonly meaning: string }
  | { readonly kind: 'bool'; readonly meaning: string }
  | { readonly kind: 'choice'; readonly choices: readonly string[]; readonly meaning: string };

/** Every option: its type, bounds and meaning (what errors and help texts call it). */
export const TRAIN_OPTION_SPECS: { readonly [K in keyof TrainOptions]-?: Spec } = {
  epochs: { kind: 'int', min: 1, max: 10_000, meaning: 'the number of epochs' },
  maxSteps: { kind: 'int', min: 1, max: 100_000_000, meaning: 'the step limit' },
  batchSize: { kind: 'int', min: 1, max: 4096, meaning: 'the batch size' },
  lr: { kind: 'real', min: 0, max: 10, meaning: 'the learning rate' },
  minLr: { kind: 'real', min: 0, max: 10, meaning: 'the final learning rate' },
  warmupSteps: { kind: 'int', min: 0, max: 100_000_000, meaning: 'the warm-up length in steps' },
  weightDecay: { kind: 'real', min: 0, max: 10, meaning: 'the weight decay' },
  labelSmoothing: { kind: 'real', min: 0, max: 0.99, meaning: 'the label smoothing' },
  clipGrad: { kind: 'real', min: 0, max: 1e6, meaning: 'the gradient-norm clip' },
  seed: { kind: 'int', min: 0, max: 2 ** 31 - 1, meaning: 'the seed' },
  cropPadding: { kind: 'int', min: 0, max: 64, meaning: 'the random-crop padding' },
  flip: { kind: 'bool', meaning: 'random flipping' },
  resizedCrop: { kind: 'bool', meaning: 'the random-resized crop' },
  microBatch: { kind: 'int', min: 1, max: 4096, meaning: 'the micro-batch size' },
  trainLimit: { kind: 'int', min: 1, max: 2 ** 31 - 1, meaning: 'the number of training images' },
  testLimit: { kind: 'int', min: 1, max: 2 ** 31 - 1, meaning: 'the number of test images' },
  normalize: { kind: 'choice', choices: ['auto', 'model', 'dataset'], meaning: 'the normalisation' },
};

export const TRAIN_OPTION_NAMES = Object.keys(TRAIN_OPTION_SPECS) as (keyof TrainOptions)[];

/** A bad option value; `option` is the engine's name, for a front end to translate into its own. */
export class OptionError extends Error {
  constructor(readonly option: string, message: string) {
    super(message);
  }
}

function check(name: keyof TrainOptions, v: unknown): void {
  const s = TRAIN_OPTION_SPECS[name];
  const got = ` (got ${typeof v === 'string' ? `'${v}'` : String(v)})`;
  if (s.kind === 'bool') {
    if (typeof v !== 'boolean') throw new OptionError(name, `${s.meaning} must be true or false${got}`);
  } else if (s.kind === 'choice') {
    if (typeof v !== 'string' || !s.choices.includes(v)) throw new OptionError(name, `${s.meaning} must be one of ${s.choices.join(', ')}${got}`);
  } else {
    const integer = s.kind === 'int';
    if (typeof v !== 'number' || !Number.isFinite(v) || (integer && !Number.isInteger(v)) || v < s.min || v > s.max) {
      throw new OptionError(name, `${s.meaning} must be ${integer ? 'an integer' : 'a number'} from ${s.min} to ${s.max}${got}`);
    }
  }
}

/**
 * Options from a partial record (defaults filled in), checked field by field. Unknown names and
 * bad values throw an OptionError; absent, undefined or null optional fields stay unset.
 */
export function parseTrainOptions(given: unknown = {}): TrainOptions {
  if (typeof given !== 'object' || given === null || Array.isArray(given)) throw new OptionError('', 'training options must be an object of named values');
  const raw = given as Readonly<Record<string, unknown>>;
  const unknown = Object.keys(raw).filter((k) => !(k in TRAIN_OPTION_SPECS));
  if (unknown.length) throw new OptionError(unknown[0], `unknown training option '${unknown[0]}'`);
  const out: Record<string, unknown> = {};
  for (const name of TRAIN_OPTION_NAMES) {
    const given = raw[name];
    const v = given === undefined || given === null ? TRAIN_DEFAULTS[name] : given;
    if (v === undefined) continue;
    check(name, v);
    out[name] = v;
  }
  return Object.freeze(out) as unknown as TrainOptions;
}

/** The arithmetic every front end shares: images seen, steps per epoch, steps in all, warm-up. */
export interface TrainingSchedule {
  readonly trainImages: number;
  readonly stepsPerEpoch: number;
  readonly totalSteps: number;
  /** Epochs the steps touch (the last may be partial under maxSteps). */
  readonly epochs: number;
  readonly warmupSteps: number;
}

/** For a training split of `available` images, before `trainLimit` is applied. */
export function trainingSchedule(o: TrainOptions, available: number): TrainingSchedule {
  const trainImages = Math.min(available, o.trainLimit ?? Infinity);
  const stepsPerEpoch = Math.floor(trainImages / o.batchSize);
  if (stepsPerEpoch < 1) throw new OptionError('batchSize', `the training split has ${trainImages} images, fewer than one batch of ${o.batchSize}`);
  const totalSteps = Math.min(stepsPerEpoch * o.epochs, o.maxSteps ?? Infinity);
  return {
    trainImages, stepsPerEpoch, totalSteps, epochs: Math.ceil(totalSteps / stepsPerEpoch),
    warmupSteps: o.warmupSteps ?? Math.max(1, Math.round(totalSteps * 0.1)),
  };
}

/** The seeded subsets a run sees: trainLimit of the training split, testLimit of the test split. */
export function selectData(split: Split, o: TrainOptions): Split {
  return { train: limit(split.train, o.trainLimit, o.seed), test: limit(split.test, o.testLimit, o.seed + 1) };
}

/** The normalisation a run uses, and where it came from. `train` is the (selected) training split. */
export function resolveNormalization(normalize: Normalize, config: VitConfig, train: Dataset): { normalization: Preprocessing; source: 'model' | 'data' } {
  if (normalize !== 'dataset' && config.preprocessing) return { normalization: config.preprocessing, source: 'model' };
  if (normalize === 'model') throw new OptionError('normalize', "the model declares no normalisation of its own: normalise with the training images' statistics");
  return { normalization: channelStats(train), source: 'data' };
}
