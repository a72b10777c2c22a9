// One unit of the study, run in its own process (`node dist/study/job.js SPEC.json`): pre-train
// the source model, fine-tune one strategy at one learning rate and seed, or make the soups of
// one seed's partial deltas. Writes its result as JSON (and a delta or checkpoint) where the spec
// says; prints progress lines on stdout.
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import * as tf from '@tensorflow/tfjs';
import {
  Checkpoint, Dataset, Delta, LayerAngle, LoopControls, Normalization, Strategy, TrainOptions, TrainableVit, channelStats, evaluate, exportCheckpoint,
  finishFineTuning, greedySoup, initParams, layerAngles, loadCheckpoint, parseDelta, parseVitConfig, scoreDelta, serializeDelta, toHost, train,
  uniformSoup, withNewHead,
} from '../engine';
import { selectBackend } from '../node/backend';
import { Experiment, Pretraining, plan } from './experiments';
import { sourceData, targetData } from './data';

interface Common {
  readonly experiment: string;
  readonly quick: boolean;
  readonly result: string;
}
export type JobSpec =
  | (Common & { readonly kind: 'pretrain'; readonly checkpointOut: string })
  | (Common & { readonly kind: 'finetune'; readonly base: BaseRef; readonly label: string; readonly strategy: Strategy; readonly lr: number; readonly seed: number; readonly deltaOut: string })
  | (Common & { readonly kind: 'soup'; readonly base: BaseRef; readonly seed: number; readonly ingredients: readonly { readonly label: string; readonly delta: string }[] });

export interface BaseRef {
  readonly checkpoint: string;
  readonly config?: string;
}

export interface FinetuneResult {
  readonly kind: 'finetune';
  readonly experiment: string;
  readonly label: string;
  readonly strategy: Strategy;
  readonly lr: number;
  readonly seed: number;
  readonly tunedParams: number;
  readonly totalParams: number;
  readonly attnLayers: number[];
  readonly ffnLayers: number[];
  readonly deltaBytes: number;
  readonly steps: number;
  readonly trainImages: number;
  readonly trainSeconds: number;
  readonly imagesPerSecond: number;
  readonly finalTrainLoss: number;
  readonly heldOut: number;
  readonly test: number;
  readonly testLoss: number;
  /** Fine-tuned angles against the pre-trained weights (full fine-tuning only). */
  readonly angles?: LayerAngle[];
}

export interface SoupResult {
  readonly kind: 'soup';
  readonly experiment: string;
  readonly seed: number;
  readonly ingredients: { readonly label: string; readonly heldOut: number }[];
  readonly uniform: { readonly heldOut: number; readonly test: number };
  readonly greedy: { readonly heldOut: number; readonly test: number; readonly kept: string[]; readonly steps: { label: string; score: number; kept: boolean }[] };
  readonly seconds: number;
}

export interface PretrainResult {
  readonly kind: 'pretrain';
  readonly experiment: string;
  readonly params: number;
  readonly trainImages: number;
  readonly epochs: number;
  readonly sourceTest: number;
  readonly sourceTestImages: number;
  readonly trainSeconds: number;
  readonly imagesPerSecond: number;
  readonly checkpoint: string;
}

const say = (line: string): void => void process.stdout.write(`${line}\n`);

/** Writes atomically: a result file exists only when complete. */
function writeAtomic(path: string, bytes: string | Uint8Array): void {
  writeFileSync(`${path}.partial`, bytes);
  renameSync(`${path}.partial`, path);
}

async function openBase(ref: BaseRef): Promise<Checkpoint> {
  const config = ref.config ? parseVitConfig(JSON.parse(readFileSync(ref.config, 'utf8'))) : undefined;
  return loadCheckpoint(new Uint8Array(readFileSync(ref.checkpoint)), { config, source: ref.checkpoint });
}

function normalizationOf(base: Checkpoint, ref: BaseRef): Normalization {
  if (!base.config.preprocessing) throw new Error(`${ref.checkpoint} declares no preprocessing`);
  return base.config.preprocessing;
}

async function accuracy(params: ReadonlyMap<string, tf.Tensor>, config: Checkpoint['config'], ds: Dataset, norm: Normalization): Promise<{ accuracy: number; loss: number }> {
  return evaluate(params, config, ds, norm, 100);
}

/** Drives the training generator, printing a progress line about every 20 seconds. */
async function runTraining(model: TrainableVit, ds: Dataset, norm: Normalization, options: Partial<TrainOptions>, controls: LoopControls, what: string) {
  const run = train(model, { train: ds, normalization: norm }, options, controls);
  let last = Date.now();
  for (;;) {
    const next = await run.next();
    if (next.done) return next.value;
    const e = next.value;
    if (e.kind === 'step' && Date.now() - last > 20_000) {
      last = Date.now();
      say(`${what}: step ${e.step}/${e.totalSteps} loss ${e.loss.toFixed(4)} ${e.imagesPerSecond.toFixed(0)} img/s`);
    }
  }
}

async function pretrain(e: Experiment, spec: Extract<JobSpec, { kind: 'pretrain' }>): Promise<PretrainResult> {
  if (!('pretrain' in e.base)) throw new Error(`${e.id} has a given base; nothing to pre-train`);
  const p: Pretraining = e.base.pretrain;
  const data = sourceData(e, p);
  const norm = channelStats(data.train);
  const config = parseVitConfig({ ...p.config, numClasses: p.classes.length, preprocessing: norm });
  const init = initParams(config, 0);
  const weights = await toHost(init);
  tf.dispose([...init.values()]);
  const model = new TrainableVit(weights, config, { kind: 'preset', name: 'full' });
  const summary = await runTraining(model, data.train, norm, {
    epochs: p.epochs, batchSize: p.batchSize, lr: p.lr, weightDecay: 0.05, labelSmoothing: 0.1, seed: 0, cropPadding: 4, flip: true,
  }, {}, 'pre-training');
  const sourceTest = await accuracy(model.params, config, data.test, norm);
  const trained = await model.weights();
  model.dispose();
  writeAtomic(spec.checkpointOut, exportCheckpoint(trained, config));
  return {
    kind: 'pretrain', experiment: e.id, params: model.inspection.totalParams, trainImages: data.train.count, epochs: p.epochs,
    sourceTest: sourceTest.accuracy, sourceTestImages: data.test.count, trainSeconds: summary.seconds, imagesPerSecond: summary.imagesPerSecond,
    checkpoint: spec.checkpointOut,
  };
}

async function finetune(e: Experiment, spec: Extract<JobSpec, { kind: 'finetune' }>): Promise<FinetuneResult> {
  const base = await openBase(spec.base);
  const norm = normalizationOf(base, spec.base);
  const data = targetData(e);
  const start = await withNewHead(base, data.train.classes, spec.seed);
  const model = new TrainableVit(start.weights, start.config, spec.strategy);
  const ins = model.inspection;
  const r = e.recipe;
  const summary = await runTraining(model, data.train, norm, {
    epochs: r.epochs, batchSize: r.batchSize, lr: spec.lr, weightDecay: r.weightDecay, labelSmoothing: r.labelSmoothing, seed: spec.seed,
  }, { prefixCache: { dtype: 'f32', maxBytes: 2 ** 30 } }, spec.label);
  const trained = await model.weights();
  model.dispose();
  // Scores are those of exactly base + delta, the model one would deploy.
  const { delta, weights: fineTuned, scores } = await finishFineTuning({
    base: start, fineTuned: trained, strategy: spec.strategy, normalization: norm, splits: { test: data.test, heldOut: data.heldOut }, batchSize: 100,
    training: { data: data.train.name, trainImages: data.train.count, epochs: r.epochs, lr: spec.lr, seed: spec.seed },
  });
  const { heldOut, test } = scores;
  const bytes = serializeDelta(delta);
  writeAtomic(spec.deltaOut, bytes);
  return {
    kind: 'finetune', experiment: e.id, label: spec.label, strategy: spec.strategy, lr: spec.lr, seed: spec.seed,
    tunedParams: ins.tunedParams, totalParams: ins.totalParams, attnLayers: ins.attnLayers, ffnLayers: ins.ffnLayers, deltaBytes: bytes.length,
    steps: summary.steps, trainImages: data.train.count, trainSeconds: summary.seconds, imagesPerSecond: summary.imagesPerSecond,
    finalTrainLoss: summary.finalTrainLoss, heldOut: heldOut.accuracy, test: test.accuracy, testLoss: test.loss,
    angles: spec.strategy.kind === 'preset' && spec.strategy.name === 'full' ? layerAngles(base.weights, fineTuned, base.config) : undefined,
  };
}

async function soups(e: Experiment, spec: Extract<JobSpec, { kind: 'soup' }>): Promise<SoupResult> {
  const started = Date.now();
  const base = await openBase(spec.base);
  const norm = normalizationOf(base, spec.base);
  const data = targetData(e);
  const ingredients = spec.ingredients.map((i) => ({ label: i.label, delta: parseDelta(new Uint8Array(readFileSync(i.delta)), i.delta) }));
  const score = async (d: Delta, ds: Dataset): Promise<number> => (await scoreDelta(base, d, ds, norm, 100)).accuracy;
  const alone = new Map<Delta, number>();
  for (const i of ingredients) alone.set(i.delta, await score(i.delta, data.heldOut));
  const heldOutScore = async (d: Delta): Promise<number> => alone.get(d) ?? score(d, data.heldOut);
  const greedy = await greedySoup(base, ingredients, heldOutScore);
  const uniform = uniformSoup(base, ingredients);
  say(`seed ${spec.seed}: greedy soup keeps ${greedy.steps.filter((s) => s.kept).map((s) => s.label).join(', ')}`);
  return {
    kind: 'soup', experiment: e.id, seed: spec.seed,
    ingredients: ingredients.map((i) => ({ label: i.label, heldOut: alone.get(i.delta)! })),
    uniform: { heldOut: await score(uniform, data.heldOut), test: await score(uniform, data.test) },
    greedy: {
      heldOut: await score(greedy.soup, data.heldOut), test: await score(greedy.soup, data.test),
      kept: greedy.steps.filter((s) => s.kept).map((s) => s.label), steps: greedy.steps,
    },
    seconds: (Date.now() - started) / 1000,
  };
}

export async function runJob(spec: JobSpec): Promise<void> {
  await selectBackend('auto', { threads: 1 }); // one job per core
  const [e] = plan(spec.quick, spec.experiment);
  const result = spec.kind === 'pretrain' ? await pretrain(e, spec) : spec.kind === 'finetune' ? await finetune(e, spec) : await soups(e, spec);
  writeAtomic(spec.result, `${JSON.stringify({ ...result, spec }, null, 1)}\n`);
}

if (require.main === module) {
  const file = process.argv[2];
  if (!file) {
    process.stderr.write('usage: node dist/study/job.js SPEC.json\n');
    process.exit(2);
  }
  runJob(JSON.parse(readFileSync(file, 'utf8')) as JobSpec).then(
    () => process.exit(0),
    (err: Error) => {
      process.stderr.write(`${err.stack ?? err.message}\n`);
      process.exit(1);
    },
  );
}
