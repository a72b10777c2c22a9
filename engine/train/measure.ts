// Training throughput of a model on the current backend, for choosing a backend by measurement:
// real AdamW steps of the model's shape and strategy at the run's batch size. The weights and
// images are synthetic (speed does not depend on their values), so no download is needed.
import * as tf from '@tensorflow/tfjs';
import { VitConfig } from '../vit/config';
import { initParams } from '../vit/params';
import { Strategy } from '../tuning/strategy';
import { toHost } from '../weights/checkpoint';
import { ADAMW_DEFAULTS, AdamW } from './adamw';
import { TrainableVit } from './trainable';

export interface MeasureOptions {
  readonly batchSize: number;
  /** Timed steps after one untimed warm-up step (shader compilation, first-touch costs). */
  readonly steps?: number;
  /** Stop timing once this much time has passed, after at least one timed step. */
  readonly budgetMs?: number;
  /** Also profile one step's memory. */
  readonly memory?: boolean;
}

/** A shape's identity for caching a measurement: what decides speed, not the weights. */
export const modelShapeKey = (c: VitConfig, strategy: Strategy, batchSize: number): string =>
  [`${c.imageSize}x${c.channels}/p${c.patchSize}`, `d${c.dim}x${c.depth}h${c.heads}m${c.mlpDim}`, `c${c.numClasses}`, strategy.name, `b${batchSize}`].join(',');

export interface Measurement {
  readonly imagesPerSecond: number;
  /** Peak bytes one step allocates on the backend (tf.profile of one more step), when asked for. */
  readonly peakBytesPerStep: number | null;
}

/** Training throughput on the current backend. */
export async function measureTraining(config: VitConfig, strategy: Strategy, o: MeasureOptions): Promise<Measurement> {
  const init = initParams(config, 0);
  const weights = await toHost(init);
  tf.dispose([...init.values()]);
  const m = new TrainableVit(weights, config, strategy);
  const opt = new AdamW(m.tuned, ADAMW_DEFAULTS);
  const x = tf.randomUniform([o.batchSize, config.imageSize, config.imageSize, config.channels], -1, 1, 'float32', 1) as tf.Tensor4D;
  const y = tf.tensor1d(Array.from({ length: o.batchSize }, (_, i) => i % config.numClasses), 'int32');
  const step = async (): Promise<void> => {
    const { loss, grads } = m.lossAndGrads(x, y, 0.1);
    opt.apply(grads, 1e-4);
    await loss.data();
    tf.dispose([loss, ...grads.values()]);
  };
  try {
    await step();
    const t0 = performance.now();
    let steps = 0;
    do {
      await step();
      steps++;
    } while (steps < (o.steps ?? 3) && performance.now() - t0 < (o.budgetMs ?? 20_000));
    const imagesPerSecond = (steps * o.batchSize) / ((performance.now() - t0) / 1000);
    return { imagesPerSecond, peakBytesPerStep: o.memory ? (await tf.profile(step)).peakBytes : null };
  } finally {
    tf.dispose([x, y]);
    opt.dispose();
    m.dispose();
  }
}

/** One backend's line in a worker's choice: img/s on the model, or why it was not timed. */
export interface BackendTiming {
  readonly backend: string;
  readonly detail: string;
  readonly imagesPerSecond: number | null;
  readonly note: string | null;
}

/**
 * Times each of `usable` on the model (switching with `use`), filling their lines of `listed`;
 * returns the lines and the fastest usable backend (the first usable one when none was timed).
 */
export async function timeBackends<T extends BackendTiming>(
  listed: T[], usable: readonly string[], use: (backend: string) => Promise<void>,
  config: VitConfig, strategy: Strategy, batchSize: number,
): Promise<T[]> {
  let timings = listed;
  for (const backend of usable) {
    await use(backend);
    const { imagesPerSecond } = await measureTraining(config, strategy, { batchSize, steps: 3, budgetMs: 15_000 });
    timings = timings.map((t) => (t.backend === backend ? { ...t, imagesPerSecond, note: null } : t));
  }
  return timings;
}

/** The fastest timed backend among `usable`, else the first of them. */
export function fastestBackend(timings: readonly BackendTiming[], usable: readonly string[]): string {
  const timed = timings.filter((t) => t.imagesPerSecond !== null && usable.includes(t.backend));
  return timed.sort((a, b) => b.imagesPerSecond! - a.imagesPerSecond!)[0]?.backend ?? usable[0];
}
