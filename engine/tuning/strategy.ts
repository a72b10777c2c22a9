// Which tensors a fine-tuning run updates (Ye et al. 2023, "Partial Fine-Tuning: A Successor to
// Full Fine-Tuning for Vision Transformers"). Strategies are plain data; `isTuned` is the one
// place that decides, `inspect` shows the decision.
//
// Layers are the model's parameter groups (vit/groups.ts): attention = norm1 + attn.*, FFN = norm2
// + mlp.*; the head is always tuned; patch/position embeddings, cls token and the final norm are
// tuned only by `full`. With this, ViT-B/16 with 100 classes gives the paper's counts exactly.
import { VitConfig } from '../vit/config';
import { Glob, compileGlob } from './glob';
import { paramGroup } from '../vit/groups';
import { paramSpecs, sizeOf } from '../vit/params';

export const PRESET_NAMES = [
  'full', 'linear-probe', 'attn-only', 'ffn-only', 'first-half', 'last-half',
  'first-half-attn', 'first-half-ffn', 'last-half-attn', 'last-half-ffn',
] as const;
export type PresetName = (typeof PRESET_NAMES)[number];

export type Strategy =
  | { readonly kind: 'preset'; readonly name: PresetName }
  | {
      readonly kind: 'custom';
      readonly name: string;
      /** Blocks whose attention layer is tuned. */
      readonly attnLayers?: readonly number[];
      /** Blocks whose FFN layer is tuned. */
      readonly ffnLayers?: readonly number[];
      /** Blocks tuned whole (attention and FFN). */
      readonly blocks?: readonly number[];
      /** Globs over timm parameter names: `*` within a dotted segment, `**` across segments. */
      readonly include?: readonly string[];
      readonly exclude?: readonly string[];
    };

export const presetStrategy = (name: PresetName): Strategy => ({ kind: 'preset', name });

interface Resolved {
  readonly attn: ReadonlySet<number>;
  readonly ffn: ReadonlySet<number>;
  readonly embeddings: boolean;
  readonly include: readonly Glob[];
  readonly exclude: readonly Glob[];
}

const range = (from: number, to: number): number[] => Array.from({ length: Math.max(0, to - from) }, (_, i) => from + i);

/** Halves of an odd depth: the first half gets floor(depth / 2) blocks. */
function resolve(s: Strategy, depth: number): Resolved {
  const half = Math.floor(depth / 2);
  const all = range(0, depth);
  const first = range(0, half);
  const last = range(half, depth);
  const plain = (attn: number[], ffn: number[], embeddings = false): Resolved => ({
    attn: new Set(attn), ffn: new Set(ffn), embeddings, include: [], exclude: [],
  });
  if (s.kind === 'preset') {
    switch (s.name) {
      case 'full': return plain(all, all, true);
      case 'linear-probe': return plain([], []);
      case 'attn-only': return plain(all, []);
      case 'ffn-only': return plain([], all);
      case 'first-half': return plain(first, first);
      case 'last-half': return plain(last, last);
      case 'first-half-attn': return plain(first, []);
      case 'first-half-ffn': return plain([], first);
      case 'last-half-attn': return plain(last, []);
      case 'last-half-ffn': return plain([], last);
    }
  }
  const blocks = s.blocks ?? [];
  for (const i of [...blocks, ...(s.attnLayers ?? []), ...(s.ffnLayers ?? [])]) {
    if (!Number.isInteger(i) || i < 0 || i >= depth) throw new Error(`strategy '${s.name}': block ${i} does not exist (depth ${depth})`);
  }
  return {
    attn: new Set([...blocks, ...(s.attnLayers ?? [])]),
    ffn: new Set([...blocks, ...(s.ffnLayers ?? [])]),
    embeddings: false,
    include: (s.include ?? []).map(compileGlob),
    exclude: (s.exclude ?? []).map(compileGlob),
  };
}

function decide(r: Resolved, name: string): boolean {
  const group = paramGroup(name);
  if (group.kind === 'head') return true;
  if (r.exclude.some((re) => re.test(name))) return false;
  if (r.include.some((re) => re.test(name))) return true;
  if (group.kind === 'attn') return r.attn.has(group.block);
  if (group.kind === 'ffn') return r.ffn.has(group.block);
  return r.embeddings;
}

export function isTuned(s: Strategy, name: string, depth: number): boolean {
  return decide(resolve(s, depth), name);
}

export interface Inspection {
  readonly strategy: string;
  readonly tuned: string[];
  readonly frozen: string[];
  readonly tunedParams: number;
  readonly totalParams: number;
  readonly attnLayers: number[];
  readonly ffnLayers: number[];
  /** -1: the gradient reaches the embeddings; k: tokens entering block k need no gradient. */
  readonly gradientStart: number;
  /** Predicted safetensors delta size (tensor bytes plus header) for F32 and F16. */
  readonly deltaBytes: { readonly f32: number; readonly f16: number };
}

export function inspect(s: Strategy, c: VitConfig): Inspection {
  const r = resolve(s, c.depth);
  const specs = paramSpecs(c);
  for (const glob of r.include) {
    if (!specs.some((p) => glob.test(p.name))) throw new Error(`strategy '${s.name}': include pattern '${glob.source}' matches no parameter`);
  }
  const tunedSpecs = specs.filter((p) => decide(r, p.name));
  const tuned = tunedSpecs.map((p) => p.name);
  const tunedParams = tunedSpecs.reduce((n, p) => n + sizeOf(p.shape), 0);
  const groups = tuned.map(paramGroup);
  const layerSet = (kind: 'attn' | 'ffn'): number[] =>
    range(0, c.depth).filter((i) => groups.some((g) => g.kind === kind && g.block === i));
  const blockIndices = groups.flatMap((g) => (g.kind === 'attn' || g.kind === 'ffn' ? [g.block] : []));
  const beforeBlocks = groups.some((g) => g.kind === 'embed');
  const headerBytes = 600 + tuned.reduce((n, name) => n + name.length + 70, 0);
  return {
    strategy: s.name,
    tuned,
    frozen: specs.filter((p) => !decide(r, p.name)).map((p) => p.name),
    tunedParams,
    totalParams: specs.reduce((n, p) => n + sizeOf(p.shape), 0),
    attnLayers: layerSet('attn'),
    ffnLayers: layerSet('ffn'),
    gradientStart: beforeBlocks ? -1 : blockIndices.length ? Math.min(...blockIndices) : c.depth,
    deltaBytes: { f32: headerBytes + tunedParams * 4, f16: headerBytes + tunedParams * 2 },
  };
}

/** Bounds on a custom strategy: more than any ViT needs, so that parsing and matching stay cheap. */
const MAX_LIST = 256;
const MAX_BLOCKS = 1024;
const MAX_NAME = 128;
/** A strategy given as JSON text may have at most this many characters. */
export const MAX_STRATEGY_TEXT = 16_384;

/** A preset name, or a custom strategy as a JSON object. */
export function parseStrategy(raw: unknown): Strategy {
  if (typeof raw === 'string') {
    if (raw.length > MAX_STRATEGY_TEXT) throw new Error(`a strategy's text may have at most ${MAX_STRATEGY_TEXT} characters (this one has ${raw.length})`);
    if ((PRESET_NAMES as readonly string[]).includes(raw)) return presetStrategy(raw as PresetName);
    if (raw.trim().startsWith('{')) return parseStrategy(JSON.parse(raw));
    throw new Error(`unknown strategy '${raw}'; presets: ${PRESET_NAMES.join(', ')}, or a custom strategy as JSON`);
  }
  if (typeof raw !== 'object' || raw === null) throw new Error('a strategy is a preset name or an object');
  const r = raw as Record<string, unknown>;
  if (r.kind === 'preset') return parseStrategy(r.name);
  const ints = (key: string): number[] | undefined => {
    const v = r[key];
    if (v === undefined) return undefined;
    if (!Array.isArray(v) || v.length > MAX_LIST || !v.every((x) => Number.isInteger(x) && x >= 0 && x < MAX_BLOCKS)) {
      throw new Error(`strategy: '${key}' must be a list of at most ${MAX_LIST} block indices below ${MAX_BLOCKS}`);
    }
    return [...new Set(v as number[])].sort((a, b) => a - b);
  };
  const strings = (key: string): string[] | undefined => {
    const v = r[key];
    if (v === undefined) return undefined;
    if (!Array.isArray(v) || v.length > MAX_LIST || !v.every((x) => typeof x === 'string' && x.length > 0)) {
      throw new Error(`strategy: '${key}' must be a list of at most ${MAX_LIST} name globs`);
    }
    for (const glob of v as string[]) compileGlob(glob);
    return v as string[];
  };
  const known = new Set(['kind', 'name', 'attnLayers', 'ffnLayers', 'blocks', 'include', 'exclude']);
  const unknown = Object.keys(r).filter((k) => !known.has(k));
  if (unknown.length) throw new Error(`strategy: unknown field '${unknown[0]}'`);
  const strategy: Strategy = {
    kind: 'custom',
    name: typeof r.name === 'string' && r.name ? r.name.slice(0, MAX_NAME) : 'custom',
    attnLayers: ints('attnLayers'),
    ffnLayers: ints('ffnLayers'),
    blocks: ints('blocks'),
    include: strings('include'),
    exclude: strings('exclude'),
  };
  return JSON.parse(JSON.stringify(strategy)) as Strategy; // drop undefined fields: plain serialisable data
}
