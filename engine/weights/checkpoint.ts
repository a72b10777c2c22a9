// Checkpoints: safetensors bytes <-> validated, timm-named weights with their architecture.
import * as tf from '@tensorflow/tfjs';
import { VitConfig, parseVitConfig } from '../vit/config';
import { HEAD_NAMES, initParam, paramSpecs } from '../vit/params';
import { Naming, detectNaming, toTimm } from './mappings';
import { RawTensor, WriteDtype, parseSafetensors, serializeSafetensors } from './safetensors';

export const CONFIG_KEY = 'partune.config';
/** A merged checkpoint's class names (JSON array), when its training data named them. */
export const CLASSES_KEY = 'partune.classes';

/** Host-side weights: name -> shape + float32 data, in timm names. */
export type HostWeights = Map<string, { shape: number[]; data: Float32Array }>;

export interface Checkpoint {
  readonly config: VitConfig;
  readonly weights: HostWeights;
  readonly naming: Naming;
  /** SHA-256 of the canonical export (timm names, F32, no metadata): identifies the weights, not the file. */
  readonly sha256: string;
  /** Set when the head was replaced for a new class count. */
  readonly replacedHead?: { readonly from: number; readonly to: number };
  /** The name of each output class, when the file records them. */
  readonly classNames?: readonly string[];
  /** Set when the position embedding was resampled from this input size (fine-tuning at another resolution). */
  readonly resampledFrom?: number;
}

/** A checkpoint that does not say what architecture it is: the caller must give its configuration. */
export class MissingArchitectureError extends Error {
  constructor(readonly source: string) {
    super(`${source}: no architecture in its metadata: give the model's configuration (image size, patch, width, depth, heads)`);
  }
}

export interface LoadOptions {
  /** Architecture, when the file does not carry one in its metadata. */
  readonly config?: VitConfig;
  /** Replace the classifier head with a freshly initialised one for this many classes. */
  readonly numClasses?: number;
  readonly seed?: number;
  readonly source?: string;
}

export async function loadCheckpoint(bytes: Uint8Array, opts: LoadOptions = {}): Promise<Checkpoint> {
  const source = opts.source ?? 'checkpoint';
  const file = parseSafetensors(bytes, source);
  const embedded = file.metadata[CONFIG_KEY];
  if (!opts.config && !embedded) throw new MissingArchitectureError(source);
  const config = opts.config ?? parseVitConfig(JSON.parse(embedded));
  const naming = detectNaming(file.tensors);
  let timm: Map<string, RawTensor>;
  try {
    timm = toTimm(file.tensors, config, naming);
  } catch (e) {
    throw new Error(`${source} (${naming} naming): ${(e as Error).message}`);
  }
  const weights = validate(timm, config, source);
  const classNames = parseClassNames(file.metadata[CLASSES_KEY], config.numClasses, source);
  const checkpoint: Checkpoint = { config, weights, naming, sha256: await weightsDigest(weights), ...(classNames && { classNames }) };
  return opts.numClasses === undefined ? checkpoint : withNewHead(checkpoint, opts.numClasses, opts.seed);
}

function parseClassNames(raw: string | undefined, numClasses: number, source: string): string[] | undefined {
  if (raw === undefined) return undefined;
  let names: unknown;
  try {
    names = JSON.parse(raw);
  } catch {
    throw new Error(`${source}: '${CLASSES_KEY}' metadata is not JSON`);
  }
  if (!Array.isArray(names) || names.length > numClasses || !names.every((n) => typeof n === 'string')) {
    throw new Error(`${source}: '${CLASSES_KEY}' must be at most ${numClasses} class names`);
  }
  return names;
}

/** The same base with a freshly initialised head for `numClasses` (fine-tuning's usual start). */
export async function withNewHead(ckpt: Checkpoint, numClasses: number, seed = 0): Promise<Checkpoint> {
  const config = parseVitConfig({ ...ckpt.config, numClasses });
  const weights: HostWeights = new Map(ckpt.weights);
  for (const spec of paramSpecs(config).filter((s) => HEAD_NAMES.includes(s.name))) {
    const fresh = initParam(spec, seed * 7919 + spec.shape.length);
    weights.set(spec.name, { shape: [...spec.shape], data: (await fresh.data()) as Float32Array });
    fresh.dispose();
  }
  return { ...ckpt, config, weights, classNames: undefined, replacedHead: { from: ckpt.replacedHead?.from ?? ckpt.config.numClasses, to: numClasses } };
}

function validate(timm: Map<string, RawTensor>, config: VitConfig, source: string): HostWeights {
  const out: HostWeights = new Map();
  for (const spec of paramSpecs(config)) {
    const t = timm.get(spec.name);
    if (!t) throw new Error(`${source}: missing tensor '${spec.name}' (shape [${spec.shape}])`);
    if (t.shape.length !== spec.shape.length || t.shape.some((d, i) => d !== spec.shape[i])) {
      throw new Error(`${source}: tensor '${spec.name}' has shape [${t.shape}], the architecture needs [${spec.shape}]`);
    }
    if (!t.data.every(Number.isFinite)) throw new Error(`${source}: tensor '${spec.name}' holds NaN or Inf`);
    out.set(spec.name, { shape: [...spec.shape], data: t.data });
  }
  const extra = [...timm.keys()].filter((k) => !out.has(k));
  if (extra.length) throw new Error(`${source}: unexpected tensor '${extra[0]}' for this architecture${extra.length > 1 ? ` (and ${extra.length - 1} more)` : ''}`);
  return out;
}

/** A standalone checkpoint in timm naming (loadable by safetensors.torch + timm), architecture in metadata. */
export function exportCheckpoint(
  weights: HostWeights,
  config: VitConfig,
  dtype: WriteDtype = 'F32',
  extra: Record<string, string> = {},
  classNames?: readonly string[],
): Uint8Array {
  const names: Record<string, string> = classNames ? { [CLASSES_KEY]: JSON.stringify(classNames) } : {};
  return serializeSafetensors(weights, { dtype, metadata: { format: 'pt', [CONFIG_KEY]: JSON.stringify(config), ...names, ...extra } });
}

export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const digest = await globalThis.crypto.subtle.digest('SHA-256', bytes as Uint8Array<ArrayBuffer>);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
}

export function weightsDigest(weights: HostWeights): Promise<string> {
  return sha256Hex(serializeSafetensors(weights, { dtype: 'F32' }));
}

export function toDevice(weights: HostWeights): Map<string, tf.Tensor> {
  return new Map([...weights].map(([name, t]) => [name, tf.tensor(t.data, t.shape, 'float32')]));
}

export async function toHost(tensors: ReadonlyMap<string, tf.Tensor>): Promise<HostWeights> {
  const out: HostWeights = new Map();
  for (const [name, t] of tensors) out.set(name, { shape: [...t.shape], data: new Float32Array(await t.data()) });
  return out;
}
