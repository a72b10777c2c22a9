// The server's own tensor work (validating checkpoints, a run's first state, evaluation, the final
// delta, angles, soups, merging), run in a worker thread so the event loop keeps answering workers
// and clients. The engine does the maths; this file fetches blobs and caches what they parse to.
import {
  Checkpoint, Dataset, LayerAngle, MissingArchitectureError, Normalization, SoupIngredient, Strategy, TrainOptions, TrainingState, applyDelta, concatDatasets,
  countParams, evaluateWeights, exportCheckpoint, finishFineTuning, inspect, layerAngles, loadCheckpoint, parseDelta, parseState, parseVitConfig,
  StepWindow, packDataset, packWindow, resolveNormalization, selectByAngle, selectData, serializeDelta, serializeState, soupWithScores, tensorAngles,
  topKForBudget, tunedShapes, unpackDataset, withNewHead, withTuned,
} from '../../engine';
import { BlobStore, keys, sha256 } from '../../storage';
import type { BlobRef, StoredBlob } from '../state/records';
import { DatasetImport, ImportedDataset, importDataset } from './dataset-import';
import { InputError } from './input-error';
import sharp from 'sharp';
import { decodeOriginal, imageFormat } from '../../node/image-folder';
import { Prediction, predictImages } from '../../node/predict';

/** The samples' bounds: 100 classes x 8 thumbnails of 64 px is at most ~10 MB of data URLs. */
const SAMPLE_CLASSES = 100;
const THUMBNAIL = 64;
/** A photo to predict is at most a 24-megapixel camera's: larger ones would hold the compute thread for seconds each. */
const PREDICT_PIXELS = 24_000_000;
const PREDICT_CALL_PIXELS = 96_000_000;

export { InputError };

/** What every job of a run starts from: the model with a fresh head for the run's classes. */
export interface RunBasis {
  readonly runId: string;
  readonly model: BlobRef;
  readonly numClasses: number;
  readonly strategy: Strategy;
  readonly options: TrainOptions;
}

type Weights = Map<string, { shape: number[]; data: Float32Array }>;

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

  private dataset(shards: readonly BlobRef[]): Promise<Dataset> {
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

  /** The run's base: the model with a new head for its classes, seeded as the CLI seeds it. */
  private async runBase(b: RunBasis): Promise<Checkpoint> {
    return withNewHead(await this.checkpoint(b.model), b.numClasses, b.options.seed);
  }

  private async fineTuned(b: RunBasis, state: BlobRef): Promise<{ base: Checkpoint; tuned: Weights }> {
    const base = await this.runBase(b);
    const s = parseState(await this.store.get(state.key, state.sha256), tunedShapes(base.config, inspect(b.strategy, base.config).tuned), state.key);
    return { base, tuned: s.params };
  }

  /** The run's test images: its seeded testLimit subset, as the CLI takes it. */
  private async testSplit(b: RunBasis, test: readonly BlobRef[]): Promise<Dataset> {
    const all = await this.dataset(test);
    return selectData({ train: all, test: all }, b.options).test;
  }

  /** A dataset's files parsed and stored as shards (dataset-import.ts). */
  importDataset(d: DatasetImport): Promise<ImportedDataset> {
    return importDataset(this.store, d);
  }

  /** Any supported checkpoint -> the canonical file (timm names, F32, architecture in metadata). */
  async importModel(args: { bytes: Uint8Array; config?: unknown; source: string }): Promise<{ canonical: Uint8Array; config: unknown; params: number; weightsSha256: string }> {
    let ckpt: Checkpoint;
    try {
      ckpt = await loadCheckpoint(args.bytes, { config: args.config === undefined ? undefined : parseVitConfig(args.config), source: args.source });
    } catch (e) {
      throw new InputError(e instanceof MissingArchitectureError ? `${e.message}: give it as \`config\`` : (e as Error).message);
    }
    const canonical = exportCheckpoint(ckpt.weights, ckpt.config, 'F32', {}, ckpt.classNames);
    return { canonical, config: ckpt.config, params: countParams(ckpt.config), weightsSha256: ckpt.sha256 };
  }

  /** Round 0: the tuned tensors as the base has them, zero moments, and the run's normalisation. */
  async prepare(b: RunBasis & { train: readonly BlobRef[] }): Promise<{ state: Uint8Array; normalization: Normalization }> {
    const base = await this.runBase(b);
    const all = await this.dataset(b.train);
    const { normalization } = resolveNormalization(b.options.normalize, base.config, selectData({ train: all, test: all }, b.options).train);
    const { tuned } = inspect(b.strategy, base.config);
    const params: Weights = new Map(tuned.map((n) => [n, base.weights.get(n)!]));
    const zeros: Weights = new Map(tuned.map((n) => [n, { shape: params.get(n)!.shape, data: new Float32Array(params.get(n)!.data.length) }]));
    const state: TrainingState = { label: { run: b.runId, round: 0 }, params, optimizer: { step: 0, expAvg: zeros, expAvgSq: zeros } };
    return { state: serializeState(state), normalization };
  }

  /** Each window's training records packed and stored under the run by their hash (replicas of a window share one). */
  async packWindows(a: { runId: string; train: readonly BlobRef[]; options: TrainOptions; windows: readonly StepWindow[] }): Promise<StoredBlob[]> {
    const all = await this.dataset(a.train);
    const packs: StoredBlob[] = [];
    for (const w of a.windows) {
      const bytes = packDataset(packWindow(all, a.options, w), { compress: true });
      const stored = await this.store.put(keys.windowPack(a.runId, sha256(bytes)), bytes);
      packs.push({ key: stored.key, sha256: stored.sha256, bytes: bytes.length });
    }
    return packs;
  }

  async evaluate(b: RunBasis & { state: BlobRef; test: readonly BlobRef[]; normalization: Normalization }): Promise<{ accuracy: number; loss: number; count: number }> {
    const { base, tuned } = await this.fineTuned(b, b.state);
    const r = await evaluateWeights(withTuned(base, b.numClasses, tuned).weights, base.config, await this.testSplit(b, b.test), b.normalization);
    return { accuracy: r.accuracy, loss: r.loss, count: r.count };
  }

  /** The run's delta, and the accuracy of exactly what base + delta gives (the engine's finishing step, as the CLI's). */
  async finalize(b: RunBasis & { state: BlobRef; test: readonly BlobRef[]; normalization: Normalization; training: Record<string, unknown> }): Promise<{
    delta: Uint8Array; accuracy: number; loss: number; tensors: number; tunedParams: number;
  }> {
    const { base, tuned } = await this.fineTuned(b, b.state);
    const test = await this.testSplit(b, b.test);
    const { delta, scores } = await finishFineTuning({
      base, fineTuned: tuned, strategy: b.strategy, normalization: b.normalization, splits: { test }, training: b.training, classNames: test.classNames,
    });
    return { delta: serializeDelta(delta), accuracy: scores.test.accuracy, loss: scores.test.loss, tensors: delta.tensors.size, tunedParams: delta.manifest.tunedParams };
  }

  /** The fine-tuned angle of every attention and FFN layer (and tensor) of a probe's final state, and the selection. */
  async angles(b: RunBasis & { state: BlobRef; direction: 'largest' | 'smallest'; topK?: number; budget?: number; name: string }): Promise<{
    angles: LayerAngle[]; tensorAngles: Record<string, number | null>; topK: number; strategy: Strategy;
  }> {
    const pretrained = await this.checkpoint(b.model);
    const { base, tuned } = await this.fineTuned(b, b.state);
    const weights = withTuned(base, b.numClasses, tuned).weights;
    const angles = layerAngles(pretrained.weights, weights, pretrained.config);
    const topK = b.budget !== undefined ? topKForBudget(angles, base.config, b.direction, b.budget) : b.topK ?? Math.ceil(base.config.depth / 2);
    const strategy = selectByAngle(angles, { direction: b.direction, topK: { attn: topK, ffn: topK } }, b.name);
    const perTensor = Object.fromEntries([...tensorAngles(pretrained.weights, weights)].map(([k, v]) => [k, Number.isNaN(v) ? null : v]));
    return { angles, tensorAngles: perTensor, topK, strategy };
  }

  /** A uniform or greedy soup of deltas of one base, with held-out and test scores. */
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

  /** Top classes of photos by the model, or base + delta, through its eval transform. */
  async predict(a: { model: BlobRef; delta?: BlobRef; images: { filename: string; bytes: Uint8Array }[]; top: number }): Promise<
    { filename: string; top: Prediction[] }[]
  > {
    const base = await this.checkpoint(a.model);
    const delta = a.delta ? parseDelta(await this.store.get(a.delta.key, a.delta.sha256), a.delta.key) : undefined;
    const m = delta ? { config: delta.manifest.architecture, weights: applyDelta(base, delta), classNames: delta.manifest.classNames } : base;
    // Headers first: the call's photos together are bounded, so that one request holds the compute thread for seconds at most.
    let pixels = 0;
    for (const img of a.images) {
      if (imageFormat(img.bytes)) pixels += await sharp(img.bytes).metadata().then((m) => (m.width ?? 0) * (m.height ?? 0), () => 0);
    }
    if (pixels > PREDICT_CALL_PIXELS) {
      throw new InputError(`the photos of one predict call hold at most ${PREDICT_CALL_PIXELS / 1e6} megapixels (these ${Math.round(pixels / 1e6)})`);
    }
    const decoded = [];
    for (const img of a.images) {
      try {
        decoded.push(await decodeOriginal(img.bytes, m.config.channels === 1 ? 1 : 3, PREDICT_PIXELS));
      } catch (e) {
        throw new InputError(`${img.filename}: not a decodable image (${(e as Error).message.split('\n')[0]})`);
      }
    }
    const top = await predictImages(m, decoded, a.top);
    return a.images.map((img, i) => ({ filename: img.filename, top: top[i] }));
  }

  /** What a finished run's delta records of its test split: the confusion matrix and the class names. */
  async testConfusion(a: { delta: BlobRef }): Promise<{ confusion: number[][] | null; classNames: string[] | null }> {
    const m = parseDelta(await this.store.get(a.delta.key, a.delta.sha256), a.delta.key).manifest;
    const c = m.training?.testConfusion;
    const valid = Array.isArray(c) && c.every((row) => Array.isArray(row) && row.every((v) => Number.isInteger(v) && v >= 0));
    return { confusion: valid ? (c as number[][]) : null, classNames: m.classNames ? [...m.classNames] : null };
  }

  /** The first `perClass` training images of each of the first 100 classes as PNG thumbnails of at most 64 px (the dashboard's samples). */
  async datasetSamples(a: { train: readonly BlobRef[]; perClass: number }): Promise<{ label: number; dataUrl: string }[]> {
    const taken = new Map<number, number>();
    const out: { label: number; dataUrl: string }[] = [];
    // Photos are stored classes interleaved, so the first shards hold every class; at most 8 are read.
    for (const shard of a.train.slice(0, 8)) {
      const ds = await this.dataset([shard]);
      const px = ds.height * ds.width * ds.channels;
      for (let i = 0; i < ds.count; i++) {
        const label = ds.labels[i];
        if (label >= SAMPLE_CLASSES || (taken.get(label) ?? 0) >= a.perClass) continue;
        taken.set(label, (taken.get(label) ?? 0) + 1);
        const raw = Buffer.from(ds.images.subarray(i * px, (i + 1) * px));
        const image = sharp(raw, { raw: { width: ds.width, height: ds.height, channels: ds.channels as 1 | 3 } });
        const png = await image.resize({ width: THUMBNAIL, height: THUMBNAIL, fit: 'inside', withoutEnlargement: true }).png().toBuffer();
        out.push({ label, dataUrl: `data:image/png;base64,${png.toString('base64')}` });
      }
      if (taken.size === Math.min(ds.classes, SAMPLE_CLASSES) && [...taken.values()].every((n) => n >= a.perClass)) break;
    }
    return out.sort((x, y) => x.label - y.label);
  }

  /** Base + delta -> a full checkpoint in the canonical form. */
  async merge(args: { model: BlobRef; delta: BlobRef }): Promise<{ canonical: Uint8Array; config: unknown; params: number; weightsSha256: string }> {
    const base = await this.checkpoint(args.model);
    const delta = parseDelta(await this.store.get(args.delta.key, args.delta.sha256), args.delta.key);
    const merged = applyDelta(base, delta);
    return this.importModel({ bytes: exportCheckpoint(merged, delta.manifest.architecture, 'F32', {}, delta.manifest.classNames), source: args.delta.key });
  }
}
