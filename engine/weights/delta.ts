// Weight deltas: the result of a partial fine-tuning run. A safetensors file with only the tuned
// tensors, each stored as fine-tuned minus pre-trained ("diff") or, for a new head, as its value
// ("full"); a manifest in the metadata names the base by the SHA-256 of its weights. In PyTorch:
//   merged[k] = delta[k] if manifest["tensors"][k] == "full" else base[k] + delta[k]
import { VitConfig } from '../vit/config';
import { Strategy } from '../tuning/strategy';
import { Checkpoint, HostWeights } from './checkpoint';
import { WriteDtype, f16ToF32, f32ToF16, parseSafetensors, serializeSafetensors } from './safetensors';

export const DELTA_KEY = 'partune.delta';
export const DELTA_FORMAT = 'partune.delta/1';

export type TensorMode = 'diff' | 'full';

export interface DeltaManifest {
  readonly format: typeof DELTA_FORMAT;
  /** The base's weights, head size, and input size where the delta was trained at another (pos_embed resampled, stored in full). */
  readonly base: { readonly sha256: string; readonly numClasses: number; readonly imageSize?: number };
  /** Architecture of the fine-tuned model (its head may have a new class count). */
  readonly architecture: VitConfig;
  readonly strategy: Strategy;
  readonly dtype: WriteDtype;
  readonly tensors: Readonly<Record<string, TensorMode>>;
  readonly tunedParams: number;
  readonly training?: Readonly<Record<string, unknown>>;
  /** The class of each output, by index, when the training data named them. */
  readonly classNames?: readonly string[];
  /** Set on soups: how they were made and of what. */
  readonly soup?: {
    readonly method: 'uniform' | 'greedy';
    readonly ingredients: readonly { readonly label: string; readonly strategy: Strategy }[];
    readonly steps?: readonly { readonly label: string; readonly score: number; readonly kept: boolean }[];
  };
}

export interface Delta {
  readonly manifest: DeltaManifest;
  readonly tensors: HostWeights;
}

export interface MakeDeltaInput {
  readonly base: Checkpoint;
  /** Fine-tuned values; only the names in `tuned` are read. */
  readonly fineTuned: HostWeights;
  readonly tuned: readonly string[];
  readonly architecture: VitConfig;
  readonly strategy: Strategy;
  readonly dtype?: WriteDtype;
  readonly training?: Record<string, unknown>;
  readonly classNames?: readonly string[];
  /** Names in `tuned` that are carried along, not trained (a resampled position embedding): not counted as tuned. */
  readonly carried?: readonly string[];
}

/** Stored as a value rather than a difference: new tensors, a new head, a resampled position embedding. */
function storedInFull(base: Checkpoint, name: string, shape: readonly number[]): boolean {
  const b = base.weights.get(name);
  if (!b || !sameShape(b.shape, shape)) return true;
  return (base.replacedHead !== undefined && name.startsWith('head.')) || (base.resampledFrom !== undefined && name === 'pos_embed');
}

export function makeDelta(input: MakeDeltaInput): Delta {
  const dtype = input.dtype ?? 'F32';
  const tensors: HostWeights = new Map();
  const modes: Record<string, TensorMode> = {};
  let tunedParams = 0;
  for (const name of input.tuned) {
    const tuned = input.fineTuned.get(name);
    if (!tuned) throw new Error(`fine-tuned weights lack tuned tensor '${name}'`);
    if (!input.carried?.includes(name)) tunedParams += tuned.data.length;
    const base = input.base.weights.get(name);
    if (!base || storedInFull(input.base, name, tuned.shape)) {
      modes[name] = 'full';
      tensors.set(name, { shape: [...tuned.shape], data: tuned.data.slice() });
      continue;
    }
    const diff = new Float32Array(tuned.data.length);
    for (let i = 0; i < diff.length; i++) diff[i] = tuned.data[i] - base.data[i];
    modes[name] = 'diff';
    tensors.set(name, { shape: [...tuned.shape], data: diff });
  }
  const manifest: DeltaManifest = {
    format: DELTA_FORMAT,
    base: {
      sha256: input.base.sha256, numClasses: input.base.replacedHead?.from ?? input.base.config.numClasses,
      ...(input.base.resampledFrom !== undefined && { imageSize: input.base.resampledFrom }),
    },
    architecture: input.architecture,
    strategy: input.strategy,
    dtype,
    tensors: modes,
    tunedParams,
    training: input.training,
    ...(input.classNames && { classNames: [...input.classNames] }),
  };
  return { manifest, tensors };
}

export function serializeDelta(d: Delta): Uint8Array {
  return serializeSafetensors(d.tensors, { dtype: d.manifest.dtype, metadata: { format: 'pt', [DELTA_KEY]: JSON.stringify(d.manifest) } });
}

export function parseDelta(bytes: Uint8Array, source = 'delta'): Delta {
  const file = parseSafetensors(bytes, source);
  const raw = file.metadata[DELTA_KEY];
  if (!raw) throw new Error(`${source}: not a Partune delta (no '${DELTA_KEY}' manifest in its safetensors metadata)`);
  let manifest: DeltaManifest;
  try {
    manifest = JSON.parse(raw) as DeltaManifest;
  } catch (e) {
    throw new Error(`${source}: manifest is not valid JSON (${(e as Error).message})`);
  }
  if (manifest.format !== DELTA_FORMAT) throw new Error(`${source}: unsupported delta format '${manifest.format}'`);
  const tensors: HostWeights = new Map();
  for (const name of Object.keys(manifest.tensors)) {
    const t = file.tensors.get(name);
    if (!t) throw new Error(`${source}: manifest lists tensor '${name}' but the file lacks it`);
    tensors.set(name, { shape: t.shape, data: t.data });
  }
  const extra = [...file.tensors.keys()].find((k) => !(k in manifest.tensors));
  if (extra) throw new Error(`${source}: tensor '${extra}' is not in the manifest`);
  return { manifest, tensors };
}

/** Base + delta -> the fine-tuned model's full weights. Refuses a base with other weights. */
export function applyDelta(base: Checkpoint, delta: Delta): HostWeights {
  const m = delta.manifest;
  if (base.sha256 !== m.base.sha256) {
    throw new Error(`delta was made from base weights ${m.base.sha256.slice(0, 12)}…, this checkpoint's weights are ${base.sha256.slice(0, 12)}…`);
  }
  const merged: HostWeights = new Map([...base.weights].map(([k, v]) => [k, { shape: v.shape, data: v.data }]));
  for (const [name, t] of delta.tensors) {
    if (m.tensors[name] === 'full') {
      merged.set(name, { shape: t.shape, data: t.data.slice() });
      continue;
    }
    const b = base.weights.get(name);
    if (!b) throw new Error(`delta changes tensor '${name}', which the base lacks`);
    if (!sameShape(b.shape, t.shape)) throw new Error(`delta tensor '${name}' has shape [${t.shape}], the base [${b.shape}]`);
    const out = new Float32Array(b.data.length);
    for (let i = 0; i < out.length; i++) out[i] = b.data[i] + t.data[i];
    merged.set(name, { shape: b.shape, data: out });
  }
  return merged;
}

/**
 * Rounds fine-tuned tensors onto what applying the delta yields, base + dtype(tuned - base). In
 * f32 this moves a small share of elements (those near zero) by at most half an ulp of their
 * difference; afterwards base + delta reproduces the weights bit for bit.
 */
export function roundToDelta(
  base: Checkpoint,
  fineTuned: HostWeights,
  tuned: readonly string[],
  dtype: WriteDtype = 'F32',
): { weights: HostWeights; changed: number } {
  const store = dtype === 'F32' ? Math.fround : (x: number): number => f16ToF32(f32ToF16(x));
  const weights: HostWeights = new Map(fineTuned);
  let changed = 0;
  for (const name of tuned) {
    const f = fineTuned.get(name)!;
    const b = base.weights.get(name);
    const full = !b || storedInFull(base, name, f.shape);
    const out = new Float32Array(f.data.length);
    for (let i = 0; i < out.length; i++) {
      out[i] = full ? store(f.data[i]) : b.data[i] + store(f.data[i] - b.data[i]);
      if (out[i] !== f.data[i]) changed++;
    }
    weights.set(name, { shape: f.shape, data: out });
  }
  return { weights, changed };
}

const sameShape = (a: readonly number[], b: readonly number[]): boolean => a.length === b.length && a.every((d, i) => d === b[i]);
