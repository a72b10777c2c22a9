// One training case of the 224x224 bench, run through the engine's own loop (engine/train/loop.ts:
// AdamW, gradient clipping, micro-batches, the frozen-prefix cache) on synthetic images stored at
// the model's size, so that nothing is augmented and a frozen prefix may be cached. Engine and
// TensorFlow.js only: the same code runs in a Node process and in a browser tab.
import * as tf from '@tensorflow/tfjs';
import { Dataset, initParams, parseStrategy, preset, toHost, train, TrainableVit } from '../engine';

export interface TrainCase {
  /** A preset name (engine/vit/config.ts), e.g. vit_small_patch16_224. */
  readonly model: string;
  readonly strategy: string;
  /** Train from the frozen-prefix cache: step 1 fills it, later steps read it. */
  readonly cached: boolean;
  readonly batch: number;
  readonly microBatch?: number;
  /** Timed steps after one untimed warm-up step. */
  readonly steps: number;
  /** Stop timing once this much time has passed, after at least one timed step. */
  readonly budgetMs: number;
}

export interface TrainMeasurement {
  readonly imagesPerSecond: number;
  readonly msPerStep: number;
  readonly warmupMs: number;
  readonly stepsTimed: number;
  /** The most bytes the engine's distinct tensor buffers held at once during the steps (weights included). */
  readonly peakTensorMiB: number;
  /** The peak of tf.memory().numBytes, which counts a buffer again for each view of it (reshapes). */
  readonly peakNumBytesMiB: number;
  /** The engine's tensors before the first step: the model's weights. */
  readonly modelTensorMiB: number;
  /** tfjs-wasm's heap at the end: wasm memory never shrinks, so this is its high-water mark. */
  readonly wasmHeapMiB: number | null;
  readonly tunedParams: number;
  readonly totalParams: number;
  readonly gradientStart: number;
  readonly prefixCache: { readonly hits: number; readonly misses: number } | null;
  readonly numTensorsStable: boolean;
}

const MiB = 2 ** 20;
const now = (): number => performance.now();

interface EngineState {
  numBytes: number;
  tensorInfo: WeakMap<object, { bytes: number }>;
}

/**
 * Peaks of the engine's tensor bytes, read where tfjs counts them (trackTensor, removeDataId): tf.profile
 * would also read back every kernel's output and slow the timed steps. tf.memory().numBytes counts
 * a tensor's bytes once per view (a reshape of a buffer counts it again), so distinct buffers are
 * summed beside it.
 */
function peakBytesTracker(): { reset(): void; peaks(): { buffers: number; numBytes: number } } {
  const engine = tf.engine() as unknown as {
    trackTensor: (a: { dataId: object }, b: unknown) => void;
    removeDataId: (d: object, b: unknown) => void;
    state: EngineState;
  };
  const { state } = engine;
  // tensorInfo is a WeakMap (not enumerable): start from numBytes, exact while no views are held (the model's weights).
  let buffers = state.numBytes;
  let peakBuffers = buffers;
  let peakNumBytes = state.numBytes;
  const track = engine.trackTensor.bind(engine);
  const remove = engine.removeDataId.bind(engine);
  engine.trackTensor = (a, backend): void => {
    const fresh = !state.tensorInfo.has(a.dataId);
    track(a, backend);
    if (fresh) buffers += state.tensorInfo.get(a.dataId)?.bytes ?? 0;
    peakBuffers = Math.max(peakBuffers, buffers);
    peakNumBytes = Math.max(peakNumBytes, state.numBytes);
  };
  engine.removeDataId = (dataId, backend): void => {
    const before = state.tensorInfo.get(dataId)?.bytes ?? 0;
    remove(dataId, backend);
    if (!state.tensorInfo.has(dataId)) buffers -= before;
  };
  return {
    reset: () => {
      peakBuffers = buffers;
      peakNumBytes = state.numBytes;
    },
    peaks: () => ({ buffers: peakBuffers, numBytes: peakNumBytes }),
  };
}

function wasmHeapBytes(): number | null {
  const wasm = (tf.backend() as unknown as { wasm?: { HEAPU8?: Uint8Array } }).wasm;
  return wasm?.HEAPU8 ? wasm.HEAPU8.buffer.byteLength : null;
}

/** Random pixels at the model's size: speed does not depend on the values. */
function syntheticImages(count: number, size: number, channels: number): Dataset {
  const images = new Uint8Array(count * size * size * channels);
  let s = 12345;
  for (let i = 0; i < images.length; i++) images[i] = (s = (Math.imul(s, 1103515245) + 12345) >>> 0) >>> 24;
  const labels = Uint8Array.from({ length: count }, (_, i) => i % 10);
  return { name: 'synthetic', images, labels, count, height: size, width: size, channels, classes: 10, flipInvariant: false };
}

export async function runTrainCase(c: TrainCase): Promise<TrainMeasurement> {
  const config = preset(c.model);
  const init = initParams(config, 0);
  const weights = await toHost(init);
  tf.dispose([...init.values()]);
  const model = new TrainableVit(weights, config, parseStrategy(c.strategy));
  const ds = syntheticImages(c.batch, config.imageSize, config.channels);
  // One step per epoch: epoch 1 fills the prefix cache, later epochs train from it.
  const options = { epochs: 1 + c.steps, batchSize: c.batch, microBatch: c.microBatch, lr: 1e-4, seed: 0 };
  const controls = { evalEachEpoch: false, prefixCache: c.cached ? { maxBytes: 2 ** 30, dtype: 'f32' as const } : undefined };
  const bytes = peakBytesTracker();
  const modelBytes = tf.memory().numBytes;
  const times: number[] = [];
  const counts: number[] = [];
  const gen = train(model, { train: ds, normalization: config.preprocessing! }, options, controls);
  const start = now();
  bytes.reset();
  let cache: TrainMeasurement['prefixCache'] = null;
  try {
    for (;;) {
      const r = await gen.next();
      if (r.done) {
        cache = r.value.prefixCache ? { hits: r.value.prefixCache.hits, misses: r.value.prefixCache.misses } : null;
        break;
      }
      if (r.value.kind !== 'step') continue;
      times.push(now());
      counts.push(tf.memory().numTensors);
      if (times.length > 1 && now() - times[0] > c.budgetMs) {
        await gen.return(undefined as never);
        break;
      }
    }
  } finally {
    model.dispose();
  }
  const timed = times.length - 1;
  const ms = timed > 0 ? (times[timed] - times[0]) / timed : NaN;
  return {
    imagesPerSecond: (c.batch * 1000) / ms,
    msPerStep: ms,
    warmupMs: times[0] - start,
    stepsTimed: timed,
    peakTensorMiB: bytes.peaks().buffers / MiB,
    peakNumBytesMiB: bytes.peaks().numBytes / MiB,
    modelTensorMiB: modelBytes / MiB,
    wasmHeapMiB: wasmHeapBytes() === null ? null : wasmHeapBytes()! / MiB,
    tunedParams: model.inspection.tunedParams,
    totalParams: model.inspection.totalParams,
    gradientStart: model.inspection.gradientStart,
    prefixCache: cache,
    numTensorsStable: counts.slice(1).every((n) => n === counts[1]),
  };
}
