// The CLI's commands: each parses its options, calls the engine, prints a human summary on
// stderr (with a progress bar) and, with --json, one machine-readable line on stdout.
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import * as tf from '@tensorflow/tfjs';
import {
  Checkpoint, Dataset, LoopControls, Normalization, PRESET_NAMES, PrefixCacheOptions, Split, TrainOptions, TrainableVit, TrainSummary, VitConfig, adapt,
  MissingArchitectureError, applyDelta, evaluate, exportCheckpoint, finishFineTuning, inspect, parseDelta, parseStrategy, parseVitConfig, presetStrategy,
  resolveNormalization, selectData, serializeDelta, toDevice, train, trainingSchedule, withNewHead, DeltaManifest, atImageSize, defaultMicroBatch,
} from '../engine';
import { BACKENDS, BackendChoice, selectBackend } from '../node/backend';
import { openCheckpoint, readConfig } from '../node/checkpoints';
import { readData } from '../node/data';
import { Options, UsageError, trainOptionsFrom, withFlags } from './options';
import { ProgressBar, formatSeconds } from './progress';
import { plural } from '../protocol/words';

export type { Options };

export const str = (o: Options, k: string): string | undefined => (typeof o[k] === 'string' ? (o[k] as string) : undefined);
export function need(o: Options, k: string): string {
  const v = str(o, k);
  if (!v) throw new UsageError(`--${k} is required`);
  return v;
}
export function num(o: Options, k: string, fallback: number, integer = false): number {
  const v = str(o, k);
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isFinite(n) || (integer && !Number.isInteger(n))) throw new UsageError(`--${k} must be ${integer ? 'an integer' : 'a number'} (got '${v}')`);
  return n;
}
export const optionalInt = (o: Options, k: string): number | undefined => (str(o, k) === undefined ? undefined : num(o, k, 0, true));

export function say(o: Options, line: string): void {
  if (!o.quiet) process.stderr.write(`${line}\n`);
}

/** --backend, and for wasm --blas auto|off|engine|PATH (off: XNNPACK; engine: the tabs' GEMM) and --threads N. */
export function selectBackendFrom(o: Options): ReturnType<typeof selectBackend> {
  const choice = str(o, 'backend') ?? 'auto';
  if (!(BACKENDS as readonly string[]).includes(choice)) throw new UsageError(`--backend: unknown backend '${choice}'; choose one of ${BACKENDS.join(', ')}`);
  return selectBackend(choice as BackendChoice, { blas: str(o, 'blas'), threads: optionalInt(o, 'threads') });
}

export async function backend(o: Options): Promise<string> {
  const info = await selectBackendFrom(o);
  say(o, `backend: ${info.name} (${info.detail})`);
  return info.name;
}

/** --config FILE or --arch PRESET, for checkpoints that carry no architecture. */
export function configFrom(o: Options): VitConfig | undefined {
  if (str(o, 'config') && str(o, 'arch')) throw new UsageError('give either --config or --arch, not both');
  return readConfig({ config: str(o, 'config'), arch: str(o, 'arch') });
}

/** --checkpoint (a file or random:PRESET), read with `config` when given. */
export async function checkpointFrom(o: Options, config = configFrom(o)): Promise<Checkpoint> {
  try {
    return await openCheckpoint(need(o, 'checkpoint'), { config });
  } catch (e) {
    if (e instanceof MissingArchitectureError) throw new Error(`${e.message}: pass --config FILE or --arch PRESET`);
    throw e;
  }
}

/** Photos are stored a little larger than the model's input, so that crops have room: 256 for 224. */
export const storageSizeFor = (config: VitConfig): number => Math.round((config.imageSize * 8) / 7);

/**
 * The run's seeded subsets of --data (--train-limit, --test-limit); photos decoded at --storage-size
 * (bad files fail the command unless --skip-bad), other images converted by --adapt if asked.
 */
export async function prepareData(o: Options, config: VitConfig, options: TrainOptions): Promise<Split> {
  const spec = need(o, 'data');
  const channels = config.channels === 1 ? 1 : 3;
  const storageSize = num(o, 'storage-size', storageSizeFor(config), true);
  if (storageSize < 8 || storageSize > 4096) throw new Error(`--storage-size must be from 8 to 4096 (got ${storageSize})`);
  const bar = spec.startsWith('folder:') ? new ProgressBar('decode', 1, Boolean(o.quiet)) : undefined;
  const { split, report } = await readData(spec, {
    // Bicubic, as the server's import stores them, whatever the model: the same folder gives the same pixels in both.
    storageSize, interpolation: 'bicubic', channels, skipBad: Boolean(o['skip-bad']),
    onProgress: (done, total) => bar?.update(done, {}, total),
  });
  if (report) {
    bar?.done(`decoded ${plural(report.decoded, 'image')} (${report.layout}) at ${storageSize}x${storageSize}`);
    const some = (paths: readonly string[]): string => `${paths.slice(0, 5).join(', ')}${paths.length > 5 ? ', …' : ''}`;
    const n = report.skipped.length;
    if (n) say(o, `skipped ${plural(n, 'file')} that ${n === 1 ? 'does' : 'do'} not decode: ${some(report.skipped.map((s) => s.path))}`);
    if (report.ignored.length) say(o, `ignored ${plural(report.ignored.length, 'file')} outside class folders or not images: ${some(report.ignored)}`);
  }
  const chosen = selectData(split, options);
  const fit = (ds: Dataset): Dataset => {
    if (ds.channels === config.channels) return ds;
    if (o.adapt) return adapt(ds, { size: ds.height, channels: config.channels });
    throw new Error(`${ds.name} has ${ds.channels}-channel images, the model takes ${config.channels}: pass --adapt to convert them`);
  };
  return { train: fit(chosen.train), test: fit(chosen.test) };
}

/** --image-size N: the checkpoint at another resolution, its position embedding resampled as timm does. */
export function atImageSizeFrom(o: Options, ckpt: Checkpoint): Checkpoint {
  const size = optionalInt(o, 'image-size');
  if (size === undefined) return ckpt;
  if (size % ckpt.config.patchSize !== 0 || size < ckpt.config.patchSize || size > 4096) {
    throw new Error(`--image-size must be a multiple of the patch size ${ckpt.config.patchSize} up to 4096 (got ${size})`);
  }
  return atImageSize(ckpt, size);
}

/** --normalize: the checkpoint's own normalisation when it declares one, else the training images'. */
export function normalization(options: TrainOptions, config: VitConfig, train: Dataset): { norm: Normalization; source: string } {
  const { normalization: norm, source } = withFlags(() => resolveNormalization(options.normalize, config, train));
  return { norm, source: source === 'model' ? 'model' : `${train.name} statistics` };
}

export async function evalCommand(o: Options): Promise<Record<string, unknown>> {
  const options = trainOptionsFrom(o);
  const which = str(o, 'split') ?? 'test';
  if (!['train', 'test'].includes(which)) throw new Error('--split must be train or test');
  const backendName = await backend(o);
  const ckpt = await checkpointFrom(o);
  // finetune's seeded subsets: --test-limit N scores the images finetune scored with the same --seed.
  const split = await prepareData(o, ckpt.config, options);
  const ds = which === 'train' ? split.train : split.test;
  const { norm, source } = normalization(options, ckpt.config, split.train);
  say(o, `evaluating ${ds.count} images of ${ds.name} (normalisation: ${source})`);
  const params = toDevice(ckpt.weights);
  const bar = new ProgressBar('eval', ds.count, Boolean(o.quiet));
  const result = await evaluate(params, ckpt.config, ds, norm, num(o, 'batch-size', 64, true), (d) => bar.update(d));
  tf.dispose([...params.values()]);
  bar.done(`top-1 ${(result.accuracy * 100).toFixed(2)}%  loss ${result.loss.toFixed(4)}  ${result.imagesPerSecond.toFixed(1)} img/s`);
  return { command: 'eval', backend: backendName, data: ds.name, images: ds.count, accuracy: result.accuracy, loss: result.loss, imagesPerSecond: result.imagesPerSecond, checkpointSha256: ckpt.sha256 };
}

export async function finetuneCommand(o: Options): Promise<Record<string, unknown>> {
  const started = Date.now();
  let options = trainOptionsFrom(o);
  const controls: LoopControls = { prefixCache: prefixCacheOption(o) };
  const strategy = strategyFrom(o);
  const out = need(o, 'out');
  const head = str(o, 'head') ?? 'new';
  if (!['new', 'keep'].includes(head)) throw new UsageError(`--head must be new or keep (got '${head}')`);
  const dtype = str(o, 'delta-dtype') === 'f16' ? 'F16' : 'F32';
  const backendName = await backend(o);
  const probe = atImageSizeFrom(o, await checkpointFrom(o));
  const split = await prepareData(o, probe.config, options);
  if (options.resizedCrop === undefined && Math.max(split.train.height, split.train.width) > probe.config.imageSize) {
    const stored = `${split.train.width}x${split.train.height}`;
    say(o, `random-resized crop on: images stored at ${stored}, the model takes ${probe.config.imageSize} (--no-resized-crop: the eval transform instead)`);
  }
  if (head === 'keep' && split.train.classes !== probe.config.numClasses) {
    throw new Error(`--head keep: the head has ${probe.config.numClasses} classes, ${split.train.name} ${split.train.classes}`);
  }
  const ckpt: Checkpoint = head === 'new' ? await withNewHead(probe, split.train.classes, options.seed) : probe;
  const config = ckpt.config;
  const { norm, source } = normalization(options, config, split.train);
  const model = new TrainableVit(ckpt.weights, config, strategy);
  const ins = model.inspection;
  options = withMicroBatch(o, options, config, ins.tunedParams);
  say(o, `strategy ${ins.strategy}: ${ins.tunedParams.toLocaleString('en-US')} of ${ins.totalParams.toLocaleString('en-US')} parameters tuned (${((100 * ins.tunedParams) / ins.totalParams).toFixed(2)}%), gradient from ${ins.gradientStart < 0 ? 'the embeddings' : `block ${ins.gradientStart}`}`);
  say(o, `data: ${split.train.count} train / ${split.test.count} test images of ${split.train.name.replace(/\/train$/, '')}; normalisation: ${source}`);
  let trained;
  let summary: TrainSummary;
  let history: Record<string, number>[];
  try {
    ({ summary, history } = await runTraining(o, model, split, norm, options, controls));
    trained = await model.weights();
  } finally {
    model.dispose();
  }
  const finished = await finishFineTuning({
    base: ckpt, fineTuned: trained, strategy, normalization: norm, splits: { test: split.test }, dtype, classNames: split.train.classNames,
    training: {
      data: split.train.name.replace(/\/train$/, ''), trainImages: split.train.count, normalization: norm, ...options,
      steps: summary.steps, seconds: summary.seconds, imagesPerSecond: summary.imagesPerSecond, backend: backendName, history,
    },
  });
  const final = finished.scores.test;
  const bytes = serializeDelta(finished.delta);
  writeFileSync(out, bytes);
  const merged = str(o, 'merged-out');
  if (merged) writeFileSync(merged, exportCheckpoint(finished.weights, finished.delta.manifest.architecture, 'F32', {}, split.train.classNames));
  const full = Object.values(finished.delta.manifest.tensors).filter((m) => m === 'full').length;
  say(o, `delta: ${out} (${(bytes.length / 1024).toFixed(1)} KiB, ${ins.tuned.length} tensors, ${full} stored in full)${merged ? `; merged checkpoint: ${merged}` : ''}`);
  const cache = summary.prefixCache;
  if (cache) say(o, `frozen-prefix cache: ${cache.rows} images (${(cache.bytes / 2 ** 20).toFixed(0)} MiB), ${cache.hits} hits, ${cache.misses} computed`);
  say(o, `top-1 ${(final.accuracy * 100).toFixed(2)}% on ${split.test.count} test images; ${summary.imagesPerSecond.toFixed(1)} img/s; ${((Date.now() - started) / 1000).toFixed(0)} s`);
  return {
    command: 'finetune', strategy: ins.strategy, backend: backendName, accuracy: final.accuracy, loss: final.loss,
    tunedParams: ins.tunedParams, totalParams: ins.totalParams, deltaBytes: bytes.length, imagesPerSecond: summary.imagesPerSecond,
    seconds: (Date.now() - started) / 1000, trainSeconds: summary.seconds, prefixCache: summary.prefixCache, out,
  };
}

/** Unset, the micro-batch the platform would record: what fits a 2 GiB step (so that a run and this command agree bit for bit). */
export function withMicroBatch(o: Options, options: TrainOptions, config: VitConfig, tunedParams: number): TrainOptions {
  if (options.microBatch !== undefined) return options;
  const microBatch = defaultMicroBatch(config, tunedParams, options.batchSize);
  if (microBatch < options.batchSize) say(o, `micro-batches of ${microBatch} (what fits a 2 GiB step; --micro-batch M to choose)`);
  return { ...options, microBatch };
}

/** A step that did not fit (WebAssembly's heap or the process's memory ran out), said with what to change; else undefined. */
function outOfMemory(e: Error, options: TrainOptions): Error | undefined {
  const ranOut = /Aborted\(|out of memory|memory access out of bounds|Array buffer allocation failed|Cannot enlarge memory|allocation failed/i;
  if (!ranOut.test(String(e?.message))) return undefined;
  const micro = options.microBatch ?? options.batchSize;
  const smaller = Math.max(1, Math.floor(micro / 2));
  return new Error(`a training step did not fit in memory (batch ${options.batchSize}, micro-batches of ${micro}): ` +
    `try --micro-batch ${smaller} (the same batch of ${options.batchSize}, in pieces) or a smaller --batch-size (${String(e.message).slice(0, 200)})`);
}

/** Drives the training generator with a progress bar; returns the summary and per-epoch history. */
export async function runTraining(
  o: Options, model: TrainableVit, split: Split, norm: Normalization, options: TrainOptions, controls: LoopControls = {},
): Promise<{ summary: TrainSummary; history: Record<string, number>[] }> {
  const { totalSteps } = trainingSchedule(options, split.train.count);
  const bar = new ProgressBar('train', totalSteps, Boolean(o.quiet));
  const history: Record<string, number>[] = [];
  const run = train(model, { train: split.train, test: split.test, normalization: norm }, options, controls);
  let ips = 0;
  for (;;) {
    const next = await run.next().catch((e: Error) => {
      throw outOfMemory(e, options) ?? e;
    });
    if (next.done) return { summary: next.value, history };
    const e = next.value;
    if (e.kind === 'step') {
      ips = ips ? 0.9 * ips + 0.1 * e.imagesPerSecond : e.imagesPerSecond;
      bar.update(e.step, { epoch: String(e.epoch + 1), loss: e.loss.toFixed(4), lr: e.lr.toExponential(1), 'img/s': ips.toFixed(1) });
    } else {
      history.push({ epoch: e.epoch + 1, trainLoss: e.trainLoss, testAccuracy: e.eval?.accuracy ?? NaN, testLoss: e.eval?.loss ?? NaN });
      const acc = e.eval ? `  test top-1 ${(e.eval.accuracy * 100).toFixed(2)}%` : '';
      bar.done(`epoch ${e.epoch + 1}: train loss ${e.trainLoss.toFixed(4)}${acc}  (${formatSeconds(e.seconds)})`);
    }
  }
}

function prefixCacheOption(o: Options): PrefixCacheOptions | undefined {
  const dtype = str(o, 'prefix-cache') ?? 'f32';
  if (!['off', 'f32', 'f16'].includes(dtype)) throw new Error('--prefix-cache must be off, f32 or f16');
  return dtype === 'off' ? undefined : { dtype: dtype as 'f32' | 'f16', maxBytes: num(o, 'prefix-cache-mib', 1024) * 2 ** 20 };
}

/** A preset name, inline JSON, or @file.json. */
/** --strategy: a preset, inline JSON or @file.json; what the engine refuses is a usage error naming the flag. */
export function strategyFrom(o: Options): ReturnType<typeof parseStrategy> {
  const arg = need(o, 'strategy');
  let spec: unknown = arg;
  if (arg.startsWith('@')) {
    try {
      spec = JSON.parse(readFileSync(arg.slice(1), 'utf8'));
    } catch (e) {
      throw new UsageError(`--strategy ${arg}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
    }
  }
  try {
    return parseStrategy(spec);
  } catch (e) {
    throw new UsageError(`--strategy: ${(e as Error).message}`);
  }
}

export async function deltaApplyCommand(o: Options): Promise<Record<string, unknown>> {
  await backend(o);
  const deltaPath = need(o, 'delta');
  const delta = parseDelta(new Uint8Array(readFileSync(deltaPath)), deltaPath);
  const m = delta.manifest;
  // Without a config, the base's architecture is the delta's with the base's class count.
  const config = configFrom(o) ?? baseConfigOf(m);
  const base = await checkpointFrom(o, config);
  const merged = applyDelta(base, delta);
  const bytes = exportCheckpoint(merged, m.architecture, str(o, 'dtype') === 'f16' ? 'F16' : 'F32', {}, m.classNames);
  writeFileSync(need(o, 'out'), bytes);
  say(o, `merged ${delta.tensors.size} tensors into ${need(o, 'out')} (${(bytes.length / 1024 / 1024).toFixed(2)} MiB, timm naming)`);
  return { command: 'delta apply', out: need(o, 'out'), bytes: bytes.length, tensors: delta.tensors.size };
}

/** The base's architecture as a delta records it: the delta's, with the base's head and input size. */
export const baseConfigOf = (m: DeltaManifest): VitConfig =>
  parseVitConfig({ ...m.architecture, numClasses: m.base.numClasses, imageSize: m.base.imageSize ?? m.architecture.imageSize });

/** Any supported naming -> timm names with the architecture in the metadata. */
export async function convertCommand(o: Options): Promise<Record<string, unknown>> {
  await backend(o);
  const ckpt = atImageSizeFrom(o, await checkpointFrom(o));
  const bytes = exportCheckpoint(ckpt.weights, ckpt.config, str(o, 'dtype') === 'f16' ? 'F16' : 'F32', {}, ckpt.classNames);
  writeFileSync(need(o, 'out'), bytes);
  say(o, `converted ${ckpt.naming} -> timm names: ${need(o, 'out')} (${(bytes.length / 1024 / 1024).toFixed(2)} MiB)`);
  return { command: 'convert', from: ckpt.naming, out: need(o, 'out'), bytes: bytes.length, sha256: ckpt.sha256 };
}

export async function deltaInfoCommand(path: string, o: Options): Promise<Record<string, unknown>> {
  if (!existsSync(path)) throw new Error(`delta ${path} not found`);
  const bytes = readFileSync(path);
  const { manifest: m } = parseDelta(new Uint8Array(bytes), path);
  const t = m.training as Record<string, unknown> | undefined;
  say(o, `${path}: ${(bytes.length / 1024).toFixed(1)} KiB, ${m.dtype}, ${Object.keys(m.tensors).length} tensors, ${m.tunedParams.toLocaleString('en-US')} tuned parameters`);
  say(o, `  base weights sha256 ${m.base.sha256}`);
  say(o, `  strategy ${JSON.stringify(m.strategy)}; head ${m.base.numClasses} -> ${m.architecture.numClasses} classes`);
  if (t) say(o, `  trained on ${t.data} (${plural(Number(t.trainImages), 'image')}, ${plural(Number(t.epochs), 'epoch')}, lr ${t.lr}); test top-1 ${typeof t.testAccuracy === 'number' ? (t.testAccuracy * 100).toFixed(2) + '%' : '?'}`);
  return { command: 'delta info', bytes: bytes.length, manifest: m };
}

export async function strategiesCommand(o: Options): Promise<Record<string, unknown>> {
  const config0 = readConfig({ config: str(o, 'config'), arch: str(o, 'arch') ?? (str(o, 'config') ? undefined : 'vit_base_patch16_224') })!;
  const config = str(o, 'classes') ? parseVitConfig({ ...config0, numClasses: num(o, 'classes', 0, true) }) : config0;
  const rows = PRESET_NAMES.map((name) => inspect(presetStrategy(name), config));
  const total = rows[0].totalParams;
  say(o, `${'strategy'.padEnd(16)} ${'tuned params'.padStart(14)} ${'%'.padStart(7)} ${'delta f32'.padStart(11)} ${'delta f16'.padStart(11)}`);
  for (const r of rows) {
    say(o, `${r.strategy.padEnd(16)} ${r.tunedParams.toLocaleString('en-US').padStart(14)} ${((100 * r.tunedParams) / total).toFixed(2).padStart(7)} ${mib(r.deltaBytes.f32).padStart(11)} ${mib(r.deltaBytes.f16).padStart(11)}`);
  }
  return { command: 'strategies', totalParams: total, numClasses: config.numClasses, strategies: rows.map(({ strategy, tunedParams, deltaBytes, attnLayers, ffnLayers }) => ({ strategy, tunedParams, deltaBytes, attnLayers, ffnLayers })) };
}

const mib = (b: number): string => (b > 1 << 20 ? `${(b / (1 << 20)).toFixed(2)} MiB` : `${(b / 1024).toFixed(1)} KiB`);
