// The server's own tensor work (validating checkpoints, a run's first state, evaluation, the final
// delta, merging), run in a worker thread so the event loop keeps answering workers and clients.
import {
  Checkpoint, Dataset, LayerAngle, Normalization, SoupIngredient, layerAngles, selectByAngle, soupWithScores, tensorAngles, topKForBudget, Strategy, TrainingState, channelStats, concatDatasets, countParams, evaluate, exportCheckpoint,
  inspect, loadCheckpoint, makeDelta, parseDelta, parseState, parseVitConfig, roundToDelta, serializeDelta, serializeState,
  toDevice, tunedShapes, unpackDataset, withNewHead, withTuned, applyDelta, limit as limitDataset,
} from '../../engine';
import * as tf from '@tensorflow/tfjs';
import { BlobStore } from '../../storage';

export interface BlobRef { readonly key: string; readonly sha256: string }

export interface RunSpec {
  readonly runId: string;
  readonly model: BlobRef;
  readonly numClasses: number;
  readonly strategy: Strategy;
  readonly seed: number;
}

export class Jobs {
  private readonly checkpoints = new Map<string, Promise<Checkpoint>>();
  private readonly datasets = new Map<string, Promise<Dataset>>();

  constructor(private readonly store: BlobStore) {}

  private checkpoint(ref: BlobRef): Promise<Checkpoint> {
    let c = this.checkpoints.get(ref.sha256);
    if (!c) {
      c = this.store.get(ref.key, ref.sha256).then((bytes) => loadCheckpoint(bytes, { source: ref.key }));
      this.checkpoints.set(ref.sha256, c);
      c.catch(() => this.checkpoints.delete(ref.sha256));
    }
    return c;
  }

  private async dataset(shards: readonly BlobRef[]): Promise<Dataset> {
    const id = shards.map((s) => s.sha256).join('+');
    let d = this.datasets.get(id);
    if (!d) {
      d = Promise.all(shards.map(async (s) => unpackDataset(await this.store.get(s.key, s.sha256), s.key))).then((parts) => parts.reduce(concatDatasets));
      this.datasets.set(id, d);
      d.catch(() => this.datasets.delete(id));
      while (this.datasets.size > 4) this.datasets.delete(this.datasets.keys().next().value!);
    }
    return d;
  }

  /** The run's base: the model with a fresh head for the dataset's classes (seeded, as the CLI does). */
  private async runBase(spec: RunSpec): Promise<Checkpoint> {
    return withNewHead(await this.checkpoint(spec.model), spec.numClasses, spec.seed);
  }

  /** Any supported checkpoint -> the canonical file (timm names, F32, architecture in metadata). */
  async importModel(args: { bytes: Uint8Array; config?: unknown; source: string }): Promise<{ canonical: Uint8Array; config: unknown; params: number; weightsSha256: string }> {
    const ckpt = await loadCheckpoint(args.bytes, { config: args.config === undefined ? undefined : parseVitConfig(args.config), source: args.source });
    return { canonical: exportCheckpoint(ckpt.weights, ckpt.config), config: ckpt.config, params: countParams(ckpt.config), weightsSha256: ckpt.sha256 };
  }

  async prepare(spec: RunSpec & { train: readonly BlobRef[]; trainLimit?: number; normalize: 'auto' | 'model' | 'dataset' }): Promise<{
    state: Uint8Array; normalization: Normalization; tunedParams: number; totalParams: number;
  }> {
    const base = await this.runBase(spec);
    const declared = base.config.preprocessing;
    if (spec.normalize === 'model' && !declared) throw new Error('the model declares no preprocessing; use normalize DATASET');
    const normalization = spec.normalize !== 'dataset' && declared ? declared : channelStats(limitDataset(await this.dataset(spec.train), spec.trainLimit, spec.seed));
    const ins = inspect(spec.strategy, base.config);
    const params = new Map(ins.tuned.map((n) => [n, base.weights.get(n)!]));
    const zeros = new Map(ins.tuned.map((n) => [n, { shape: params.get(n)!.shape, data: new Float32Array(params.get(n)!.data.length) }]));
    const state: TrainingState = { label: { run: spec.runId, round: 0 }, params, optimizer: { step: 0, expAvg: zeros, expAvgSq: zeros } };
    return { state: serializeState(state), normalization, tunedParams: ins.tunedParams, totalParams: ins.totalParams };
  }

  private async fineTuned(spec: RunSpec, state: BlobRef): Promise<{ base: Checkpoint; weights: Map<string, { shape: number[]; data: Float32Array }>; tuned: readonly string[] }> {
    const base = await this.runBase(spec);
    const ins = inspect(spec.strategy, base.config);
    const s = parseState(await this.store.get(state.key, state.sha256), tunedShapes(base.config, ins.tuned), state.key);
    return { base, weights: withTuned(base, spec.numClasses, s.params).weights, tuned: ins.tuned };
  }

  private async score(weights: Map<string, { shape: number[]; data: Float32Array }>, spec: RunSpec, base: Checkpoint, test: readonly BlobRef[], normalization: Normalization, limit?: number) {
    // The same seeded subset the CLI's --test-limit takes.
    const part = limitDataset(await this.dataset(test), limit, spec.seed + 1);
    const params = toDevice(weights);
    try {
      return await evaluate(params, parseVitConfig({ ...base.config, numClasses: spec.numClasses }), part, normalization);
    } finally {
      tf.dispose([...params.values()]);
    }
  }

  async evaluate(spec: RunSpec & { state: BlobRef; test: readonly BlobRef[]; normalization: Normalization; limit?: number }): Promise<{ accuracy: number; loss: number; count: number }> {
    const { base, weights } = await this.fineTuned(spec, spec.state);
    const r = await this.score(weights, spec, base, spec.test, spec.normalization, spec.limit);
    return { accuracy: r.accuracy, loss: r.loss, count: r.count };
  }

  /** The run's delta, and the accuracy of exactly what base + delta gives. */
  async finalize(spec: RunSpec & { state: BlobRef; test: readonly BlobRef[]; normalization: Normalization; limit?: number; training: Record<string, unknown> }): Promise<{
    delta: Uint8Array; accuracy: number; loss: number; tensors: number; tunedParams: number;
  }> {
    const { base, weights, tuned } = await this.fineTuned(spec, spec.state);
    const rounded = roundToDelta(base, weights, tuned, 'F32').weights;
    const r = await this.score(rounded, spec, base, spec.test, spec.normalization, spec.limit);
    const delta = makeDelta({
      base, fineTuned: rounded, tuned, architecture: { ...base.config, preprocessing: spec.normalization }, strategy: spec.strategy, dtype: 'F32',
      training: { ...spec.training, testAccuracy: r.accuracy, testLoss: r.loss, testImages: r.count },
    });
    return { delta: serializeDelta(delta), accuracy: r.accuracy, loss: r.loss, tensors: delta.tensors.size, tunedParams: delta.manifest.tunedParams };
  }

  /** The fine-tuned angle of every attention and FFN layer (and tensor) of a probe's final state. */
  async angles(spec: RunSpec & { state: BlobRef; direction: 'largest' | 'smallest'; topK?: number; budget?: number; name?: string }): Promise<{
    angles: LayerAngle[]; tensorAngles: Record<string, number | null>; topK: number; strategy: Strategy; tunedParams: number; deltaBytes: number;
  }> {
    const pretrained = await this.checkpoint(spec.model);
    const { weights } = await this.fineTuned(spec, spec.state);
    const angles = layerAngles(pretrained.weights, weights, pretrained.config);
    const config = parseVitConfig({ ...pretrained.config, numClasses: spec.numClasses });
    const topK = spec.budget !== undefined ? topKForBudget(angles, config, spec.direction, spec.budget) : spec.topK ?? Math.ceil(config.depth / 2);
    const strategy = selectByAngle(angles, { direction: spec.direction, topK: { attn: topK, ffn: topK } }, spec.name ?? `angle-${spec.direction}-top${topK}`);
    const ins = inspect(strategy, config);
    const perTensor = Object.fromEntries([...tensorAngles(pretrained.weights, weights)].map(([k, v]) => [k, Number.isNaN(v) ? null : v]));
    return { angles, tensorAngles: perTensor, topK, strategy, tunedParams: ins.tunedParams, deltaBytes: ins.deltaBytes.f32 };
  }

  /** A uniform or greedy soup of deltas of one base, with held-out and test scores (engine's soupWithScores). */
  async soup(args: {
    model: BlobRef; ingredients: { label: string; delta: BlobRef }[]; test: readonly BlobRef[]; normalization: Normalization; method: 'uniform' | 'greedy'; heldOut?: number;
  }, progress: (message: string) => void): Promise<{
    delta: Uint8Array; heldOut: number; test: number; heldOutImages: number; testImages: number; tensors: number; tunedParams: number;
    ingredients: { label: string; heldOut: number; test: number }[]; steps?: { label: string; score: number; kept: boolean }[];
  }> {
    const ingredients: SoupIngredient[] = [];
    for (const i of args.ingredients) ingredients.push({ label: i.label, delta: parseDelta(await this.store.get(i.delta.key, i.delta.sha256), i.label) });
    const r = await soupWithScores({
      base: await this.checkpoint(args.model), ingredients, test: await this.dataset(args.test), normalization: args.normalization,
      method: args.method, heldOut: args.heldOut, progress,
    });
    return {
      delta: serializeDelta(r.soup), heldOut: r.result.heldOut, test: r.result.test, heldOutImages: r.heldOutImages, testImages: r.testImages,
      tensors: r.soup.tensors.size, tunedParams: r.soup.manifest.tunedParams, ingredients: r.ingredients, steps: r.steps,
    };
  }

  /** Base + delta -> a full checkpoint in the canonical form. */
  async merge(args: { model: BlobRef; delta: BlobRef }): Promise<{ canonical: Uint8Array; config: unknown; params: number; weightsSha256: string }> {
    const base = await this.checkpoint(args.model);
    const delta = parseDelta(await this.store.get(args.delta.key, args.delta.sha256), args.delta.key);
    const merged = applyDelta(base, delta);
    return this.importModel({ bytes: exportCheckpoint(merged, delta.manifest.architecture), source: args.delta.key });
  }
}
