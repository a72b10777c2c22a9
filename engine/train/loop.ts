// The fine-tuning loop: an async generator of logs (as in DISCO). It computes; callers print,
// store or send what it yields.
import * as tf from '@tensorflow/tfjs';
import { VitConfig, inputTransform } from '../vit/config';
import { NamedTensors } from '../vit/params';
import { forward } from '../vit/model';
import { Dataset, permutation, rng } from '../data/dataset';
import { Augmentation, Normalization, atInputSize, makeBatch, makeLabels } from '../data/batches';
import { PrefixCache, PrefixCacheOptions } from './prefix-cache';
import { AdamW, ADAMW_DEFAULTS, AdamWState } from './adamw';
import { Schedule, lrAt } from './schedule';
import { OptionError, TrainOptions, parseTrainOptions, trainingSchedule } from './options';
import { TrainableVit, crossEntropy } from './trainable';

/** How a call runs the loop (not part of the recipe): evaluation, the prefix cache, a window of steps. */
export interface LoopControls {
  /** Evaluate on the test set after each epoch (default: when a test set is given). */
  readonly evalEachEpoch?: boolean;
  /**
   * Cache what the frozen blocks compute (used when the strategy freezes a prefix and nothing
   * is augmented); undefined: off.
   */
  readonly prefixCache?: PrefixCacheOptions;
  /**
   * Run only global steps [from, to) of the schedule (a shard of a distributed run). Batches,
   * learning rates and augmentation are those the same steps get in one uninterrupted run.
   */
  readonly window?: { readonly from: number; readonly to: number };
  /**
   * `data.train` is a window pack (engine/train/window.ts): exactly the window's batches in step
   * order, drawn from a selection of `trainImages` images, which the schedule is computed from.
   */
  readonly packedWindow?: { readonly trainImages: number };
  /** Optimizer moments to start from (those a previous window ended with). */
  readonly optimizerState?: AdamWState;
}

export interface EvalResult {
  readonly accuracy: number;
  readonly loss: number;
  readonly count: number;
  readonly imagesPerSecond: number;
  /** Counts by [true class][predicted class], for heads of at most CONFUSION_MAX_CLASSES. */
  readonly confusion?: number[][];
}

/** Above this many classes a confusion matrix is not kept (ImageNet's would be a million cells). */
export const CONFUSION_MAX_CLASSES = 100;

export type TrainEvent =
  | { readonly kind: 'step'; readonly step: number; readonly totalSteps: number; readonly epoch: number; readonly loss: number; readonly lr: number; readonly imagesPerSecond: number }
  | { readonly kind: 'epoch'; readonly epoch: number; readonly trainLoss: number; readonly seconds: number; readonly eval?: EvalResult };

export interface TrainSummary {
  readonly steps: number;
  readonly images: number;
  readonly seconds: number;
  /** Training throughput over all steps after the first (the first pays one-off kernel warm-up). */
  readonly imagesPerSecond: number;
  readonly finalTrainLoss: number;
  readonly eval?: EvalResult;
  readonly prefixCache?: { readonly rows: number; readonly bytes: number; readonly hits: number; readonly misses: number };
  /** The optimizer's moments at the end, to continue from. */
  readonly optimizer: AdamWState;
}

const now = (): number => (typeof performance !== 'undefined' ? performance.now() : Date.now());

/**
 * Trains on `data.train` as given (the caller applies trainLimit, as `selectData` does); the
 * options are parsed here, so a bad value fails before the first step.
 */
export async function* train(
  model: TrainableVit,
  data: { train: Dataset; test?: Dataset; normalization: Normalization },
  options: Partial<TrainOptions> = {},
  controls: LoopControls = {},
): AsyncGenerator<TrainEvent, TrainSummary> {
  const o = parseTrainOptions(options);
  const { train: stored } = data;
  const packed = controls.packedWindow;
  if (!packed && o.trainLimit !== undefined && stored.count > o.trainLimit) {
    throw new OptionError('trainLimit', `select the ${o.trainLimit} training images (selectData) before training on them`);
  }
  checkFits(stored, model.config);
  const { stepsPerEpoch, totalSteps, epochs, warmupSteps } = trainingSchedule(o, packed?.trainImages ?? stored.count);
  const schedule: Schedule = { baseLr: o.lr, minLr: o.minLr, totalSteps, warmupSteps };
  const from = controls.window?.from ?? 0;
  const to = Math.min(controls.window?.to ?? totalSteps, totalSteps);
  if (from < 0 || from >= to) throw new Error(`step window [${from}, ${to}) is empty or outside the run's ${totalSteps} steps`);
  if (packed && stored.count !== (to - from) * o.batchSize) {
    throw new Error(`a pack of steps ${from}-${to} must hold ${(to - from) * o.batchSize} records; this one holds ${stored.count}`);
  }
  const inPackOrder = packed ? Uint32Array.from({ length: stored.count }, (_, i) => i) : undefined;
  const optimizer = new AdamW(model.tuned, { ...ADAMW_DEFAULTS, weightDecay: o.weightDecay }, controls.optimizerState);
  const input = inputTransform(model.config);
  // By default only photos stored larger than the input are cropped at random (digits at their size are not).
  const resizedCrop = o.resizedCrop ?? (stored.height > input.size || stored.width > input.size);
  // Without the random crop every step reads the same eval-transformed pixels: transform once.
  const ds = resizedCrop ? stored : atInputSize(stored, input);
  const augmentation: Augmentation = { resizedCrop, cropPadding: o.cropPadding, flip: o.flip };
  const augmented = resizedCrop || o.cropPadding > 0 || (o.flip && ds.flipInvariant);
  const evalEachEpoch = controls.evalEachEpoch ?? data.test !== undefined;
  const cacheable = controls.prefixCache !== undefined && !packed && model.inspection.gradientStart > 0 && !augmented;
  let cache: PrefixCache | undefined;
  let random: () => number = Math.random;
  const lossAndGrads = async (part: Uint32Array): Promise<{ loss: tf.Scalar; grads: Map<string, tf.Tensor> }> => {
    if (cache?.hasAll(part)) {
      cache.hits += part.length;
      const [prefix, labels] = [cache.gather(part), makeLabels(ds, part)];
      const result = model.lossAndGradsFrom(prefix, labels, o.labelSmoothing);
      tf.dispose([prefix, labels]);
      return result;
    }
    const batch = makeBatch(ds, part, data.normalization, augmentation, random, resizedCrop ? input : undefined);
    try {
      if (!cacheable) return model.lossAndGrads(batch.images, batch.labels, o.labelSmoothing);
      const prefix = model.frozenPrefix(batch.images)!;
      cache ??= new PrefixCache(ds.count, prefix.shape.slice(1), controls.prefixCache!);
      cache.misses += part.length;
      await cache.store(part, prefix);
      const result = model.lossAndGradsFrom(prefix, batch.labels, o.labelSmoothing);
      prefix.dispose();
      return result;
    } finally {
      tf.dispose([batch.images, batch.labels]);
    }
  };
  const start = now();
  let afterFirst = start;
  let step = from;
  let lastLoss = NaN;
  let lastEval: EvalResult | undefined;
  let optimizerState: AdamWState | undefined;
  try {
    for (let epoch = Math.floor(from / stepsPerEpoch); epoch < epochs && step < to; epoch++) {
      const order = inPackOrder ?? permutation(ds.count, o.seed * 1009 + epoch);
      const epochStart = now();
      let lossSum = 0;
      const epochEnd = Math.min((epoch + 1) * stepsPerEpoch, totalSteps);
      const firstStep = step;
      for (let b = step - epoch * stepsPerEpoch; step < Math.min(epochEnd, to); b++, step++) {
        const t0 = now();
        // One generator per step, so that a window sees the same crops and flips as a whole run.
        random = rng((o.seed ^ 0x9e3779b9) + Math.imul(step, 0x85ebca6b));
        const lr = lrAt(schedule, step);
        const at = inPackOrder ? step - from : b;
        const idx = order.subarray(at * o.batchSize, (at + 1) * o.batchSize);
        const micro = Math.min(o.microBatch ?? o.batchSize, idx.length);
        let result: { loss: tf.Scalar; grads: Map<string, tf.Tensor> } | undefined;
        // Micro-batches in a fixed order, each weighted by its share: the mean over the whole batch.
        for (let m = 0; m < idx.length; m += micro) {
          const part = idx.subarray(m, m + micro);
          const piece = await lossAndGrads(part);
          if (micro === idx.length) {
            result = piece;
            break;
          }
          const share = part.length / idx.length;
          const prev = result;
          result = {
            loss: tf.tidy(() => (prev ? tf.add(prev.loss, tf.mul(piece.loss, share)) : tf.mul(piece.loss, share)) as tf.Scalar),
            grads: new Map([...piece.grads].map(([k, g]) => [k, tf.tidy(() => (prev ? tf.add(prev.grads.get(k)!, tf.mul(g, share)) : tf.mul(g, share)))])),
          };
          tf.dispose([piece.loss, ...piece.grads.values(), ...(prev ? [prev.loss, ...prev.grads.values()] : [])]);
        }
        const { loss, grads } = result!;
        const clipped = o.clipGrad > 0 ? await clipByGlobalNorm(grads, o.clipGrad) : grads;
        optimizer.apply(clipped, lr);
        lastLoss = (await loss.data())[0];
        tf.dispose([loss, ...grads.values(), ...(clipped === grads ? [] : clipped.values())]);
        if (!Number.isFinite(lastLoss)) throw new Error(`loss became ${lastLoss} at step ${step} (lr ${lr.toExponential(2)}): lower the learning rate`);
        lossSum += lastLoss;
        if (step === from) afterFirst = now();
        yield { kind: 'step', step: step + 1, totalSteps, epoch, loss: lastLoss, lr, imagesPerSecond: o.batchSize / ((now() - t0) / 1000) };
      }
      if (step < epochEnd) break; // the window ends inside this epoch
      const seconds = (now() - epochStart) / 1000;
      lastEval = evalEachEpoch && data.test ? await evaluate(model.params, model.config, data.test, data.normalization, o.batchSize) : undefined;
      yield { kind: 'epoch', epoch, trainLoss: lossSum / (step - firstStep), seconds, eval: lastEval };
    }
    optimizerState = await optimizer.state();
  } finally {
    optimizer.dispose();
  }
  const end = now();
  const done = step - from;
  return {
    steps: done,
    images: done * o.batchSize,
    seconds: (end - start) / 1000,
    imagesPerSecond: done > 1 ? ((done - 1) * o.batchSize) / ((end - afterFirst) / 1000) : (done * o.batchSize) / ((end - start) / 1000),
    finalTrainLoss: lastLoss,
    eval: lastEval,
    prefixCache: cache && { rows: cache.cachedRows, bytes: cache.bytes, hits: cache.hits, misses: cache.misses },
    optimizer: optimizerState!,
  };
}

/** Sums squares pairwise rather than with one addN: WebGPU caps the inputs of one kernel. Reads asynchronously. */
async function clipByGlobalNorm(grads: Map<string, tf.Tensor>, maxNorm: number): Promise<Map<string, tf.Tensor>> {
  const squares = tf.tidy(() => [...grads.values()].map((g) => tf.sum(tf.square(g))).reduce((a, b) => tf.add(a, b)));
  const value = Math.sqrt((await squares.data())[0]);
  squares.dispose();
  if (value <= maxNorm) return grads;
  const scale = maxNorm / (value + 1e-6);
  return new Map([...grads].map(([k, g]) => [k, tf.mul(g, scale)]));
}

/** Any image size fits (the model's transform resizes it); channels and classes must. */
export function checkFits(ds: Dataset, c: VitConfig): void {
  if (ds.channels !== c.channels) {
    throw new Error(`${ds.name} has ${ds.channels}-channel images, the model takes ${c.channels} channels: convert the images first`);
  }
  if (ds.classes > c.numClasses) throw new Error(`${ds.name} has ${ds.classes} classes, the model's head ${c.numClasses}: replace the head`);
}

export async function evaluate(
  params: NamedTensors,
  config: VitConfig,
  stored: Dataset,
  normalization: Normalization,
  batchSize = 64,
  onProgress?: (done: number, total: number) => void,
): Promise<EvalResult> {
  checkFits(stored, config);
  const ds = atInputSize(stored, inputTransform(config));
  const start = now();
  let correct = 0;
  let lossSum = 0;
  const K = config.numClasses;
  const confusion = K <= CONFUSION_MAX_CLASSES ? Array.from({ length: K }, () => new Array<number>(K).fill(0)) : undefined;
  const all = Uint32Array.from({ length: ds.count }, (_, i) => i);
  for (let b = 0; b < ds.count; b += batchSize) {
    const idx = all.subarray(b, Math.min(ds.count, b + batchSize));
    const batch = makeBatch(ds, idx, normalization);
    const [predicted, loss] = tf.tidy(() => {
      const logits = forward(params, batch.images, config);
      return [tf.argMax(logits, 1), tf.mul(crossEntropy(logits, batch.labels, 0), idx.length)];
    });
    const guesses = await predicted.data();
    for (let i = 0; i < idx.length; i++) {
      const truth = ds.labels[idx[i]];
      if (guesses[i] === truth) correct++;
      if (confusion) confusion[truth][guesses[i]]++;
    }
    lossSum += (await loss.data())[0];
    tf.dispose([predicted, loss, batch.images, batch.labels]);
    onProgress?.(b + idx.length, ds.count);
  }
  const imagesPerSecond = ds.count / ((now() - start) / 1000);
  return { accuracy: correct / ds.count, loss: lossSum / ds.count, count: ds.count, imagesPerSecond, ...(confusion && { confusion }) };
}
