// Vision Transformer architecture (Dosovitskiy et al. 2021), described as data the way timm's
// `model_args` are: presets are plain objects merged with overrides, parsed once at the boundary.

import type { Interpolation } from '../data/resample';
import type { InputTransform } from '../data/transforms';

export type Activation = 'gelu' | 'gelu_tanh' | 'relu';
export type Pooling = 'cls' | 'mean';

export interface Preprocessing {
  /** Per-channel mean and std applied after scaling pixels to [0, 1]. */
  readonly mean: readonly number[];
  readonly std: readonly number[];
  /** How images are resized for this model (timm's `interpolation`); default bilinear. */
  readonly interpolation?: Interpolation;
  /** The eval transform's centre crop keeps this share of the resized shorter side (timm's crop_pct); default 1. */
  readonly cropPct?: number;
}

export interface VitConfig {
  readonly imageSize: number;
  readonly channels: number;
  readonly patchSize: number;
  /** Model (residual stream) width. */
  readonly dim: number;
  readonly depth: number;
  readonly heads: number;
  /** Per-head width; heads * headDim is the attention inner width and may differ from dim. */
  readonly headDim: number;
  readonly mlpDim: number;
  readonly activation: Activation;
  readonly qkvBias: boolean;
  readonly pool: Pooling;
  readonly layerNormEps: number;
  readonly numClasses: number;
  /** The normalisation the checkpoint was trained with, when known. */
  readonly preprocessing?: Preprocessing;
}

/** timm's pretrained configs: augreg ViTs use mean = std = 0.5, DeiT ImageNet's statistics; both bicubic. */
const DEIT = { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };

export const PRESETS: Readonly<Record<string, VitConfig>> = {
  vit_tiny_patch16_224: base({ dim: 192, depth: 12, heads: 3 }),
  vit_small_patch16_224: base({ dim: 384, depth: 12, heads: 6 }),
  vit_base_patch16_224: base({ dim: 768, depth: 12, heads: 12 }),
  vit_small_patch16_384: base({ dim: 384, depth: 12, heads: 6, imageSize: 384, cropPct: 1 }),
  vit_base_patch16_384: base({ dim: 768, depth: 12, heads: 12, imageSize: 384, cropPct: 1 }),
  deit_tiny_patch16_224: base({ dim: 192, depth: 12, heads: 3, ...DEIT }),
  deit_small_patch16_224: base({ dim: 384, depth: 12, heads: 6, ...DEIT }),
  deit_base_patch16_224: base({ dim: 768, depth: 12, heads: 12, ...DEIT }),
  // The third-party MNIST model in shared/data/vit-mnist-500k (lucidrains vit-pytorch).
  vit_mnist_500k: {
    imageSize: 28, channels: 1, patchSize: 4, dim: 64, depth: 6, heads: 4, headDim: 64,
    mlpDim: 128, activation: 'relu', qkvBias: false, pool: 'cls', layerNormEps: 1e-5,
    numClasses: 10, preprocessing: { mean: [0.1307], std: [0.3081] },
  },
  // Small models this machine trains in minutes: the demo pre-trains one from scratch.
  vit_micro_patch4_28: {
    imageSize: 28, channels: 1, patchSize: 4, dim: 64, depth: 4, heads: 4, headDim: 16,
    mlpDim: 128, activation: 'gelu', qkvBias: true, pool: 'cls', layerNormEps: 1e-6, numClasses: 10,
  },
  vit_micro_patch4_32: {
    imageSize: 32, channels: 3, patchSize: 4, dim: 64, depth: 4, heads: 4, headDim: 16,
    mlpDim: 128, activation: 'gelu', qkvBias: true, pool: 'cls', layerNormEps: 1e-6, numClasses: 10,
  },
  vit_tiny_patch4_32: {
    imageSize: 32, channels: 3, patchSize: 4, dim: 192, depth: 12, heads: 3, headDim: 64,
    mlpDim: 768, activation: 'gelu', qkvBias: true, pool: 'cls', layerNormEps: 1e-6, numClasses: 10,
  },
};

function base(args: { dim: number; depth: number; heads: number; imageSize?: number; mean?: number[]; std?: number[]; cropPct?: number }): VitConfig {
  return {
    imageSize: args.imageSize ?? 224, channels: 3, patchSize: 16, dim: args.dim, depth: args.depth, heads: args.heads,
    headDim: args.dim / args.heads, mlpDim: args.dim * 4, activation: 'gelu', qkvBias: true,
    pool: 'cls', layerNormEps: 1e-6, numClasses: 1000,
    preprocessing: { mean: args.mean ?? [0.5, 0.5, 0.5], std: args.std ?? [0.5, 0.5, 0.5], interpolation: 'bicubic', cropPct: args.cropPct ?? 0.9 },
  };
}

/** What the model's images go through: its size, interpolation and eval crop. */
export function inputTransform(c: VitConfig): InputTransform {
  return { size: c.imageSize, interpolation: c.preprocessing?.interpolation ?? 'bilinear', cropPct: c.preprocessing?.cropPct ?? 1 };
}

export function preset(name: string, overrides: Partial<VitConfig> = {}): VitConfig {
  const found = PRESETS[name];
  if (!found) {
    throw new Error(`unknown architecture preset '${name}'; known: ${Object.keys(PRESETS).join(', ')}`);
  }
  return parseVitConfig({ ...found, ...overrides });
}

export const numPatches = (c: VitConfig): number => (c.imageSize / c.patchSize) ** 2;
export const innerDim = (c: VitConfig): number => c.heads * c.headDim;

/**
 * Accepts Partune's own camelCase form and the snake_case form of config.json files written for
 * vit-pytorch style models (image_size, dim, dim_head, mlp_dim, mlp_activation, ...).
 */
/** The most classes a head may have (ImageNet-21k has 21,843). */
export const MAX_CLASSES = 100_000;

export function parseVitConfig(raw: unknown): VitConfig {
  if (typeof raw !== 'object' || raw === null) throw new Error('architecture config must be a JSON object');
  const r = raw as Record<string, unknown>;
  const pick = (...keys: string[]): unknown => keys.map((k) => r[k]).find((v) => v !== undefined);
  const int = (label: string, ...keys: string[]): number => {
    const v = pick(label, ...keys);
    // Bounds far above any ViT's, so that sizes computed from them stay exact and finite.
    const max = label === 'numClasses' ? MAX_CLASSES : 65_536;
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0 || v > max) {
      throw new Error(`architecture config: '${label}' must be an integer from 1 to ${max} (got ${JSON.stringify(v)})`);
    }
    return v;
  };
  const dim = int('dim', 'embed_dim', 'hidden_size');
  const heads = int('heads', 'num_heads', 'num_attention_heads');
  const headDimRaw = pick('headDim', 'dim_head', 'head_dim');
  const config: VitConfig = {
    imageSize: int('imageSize', 'image_size', 'img_size'),
    channels: int('channels', 'in_chans', 'num_channels'),
    patchSize: int('patchSize', 'patch_size'),
    dim,
    depth: int('depth', 'num_hidden_layers'),
    heads,
    headDim: headDimRaw === undefined ? dim / heads : int('headDim', 'dim_head', 'head_dim'),
    mlpDim: int('mlpDim', 'mlp_dim', 'intermediate_size'),
    activation: parseActivation(pick('activation', 'mlp_activation', 'hidden_act') ?? 'gelu'),
    qkvBias: parseBool('qkvBias', pick('qkvBias', 'qkv_bias') ?? true),
    pool: parsePool(pick('pool', 'global_pool') ?? 'cls'),
    layerNormEps: parseEps(pick('layerNormEps', 'layernorm_eps', 'layer_norm_eps') ?? 1e-6),
    numClasses: int('numClasses', 'num_classes'),
    preprocessing: parsePreprocessing(r.preprocessing),
  };
  if (!Number.isInteger(config.headDim)) throw new Error(`architecture config: dim ${dim} is not divisible by heads ${heads}; give headDim`);
  if (config.imageSize % config.patchSize !== 0) {
    throw new Error(`architecture config: image size ${config.imageSize} is not a multiple of patch size ${config.patchSize}`);
  }
  if (config.preprocessing && config.preprocessing.mean.length !== config.channels) {
    throw new Error(`architecture config: preprocessing has ${config.preprocessing.mean.length} channels, the model ${config.channels}`);
  }
  return Object.freeze(config);
}

function parseActivation(v: unknown): Activation {
  const aliases: Record<string, Activation> = {
    gelu: 'gelu', gelu_exact: 'gelu', gelu_tanh: 'gelu_tanh', gelu_pytorch_tanh: 'gelu_tanh', gelu_new: 'gelu_tanh', relu: 'relu',
  };
  const a = typeof v === 'string' ? aliases[v.toLowerCase()] : undefined;
  if (!a) throw new Error(`architecture config: activation must be gelu, gelu_tanh or relu (got ${JSON.stringify(v)})`);
  return a;
}

function parsePool(v: unknown): Pooling {
  if (v === 'cls' || v === 'token') return 'cls';
  if (v === 'mean' || v === 'avg') return 'mean';
  throw new Error(`architecture config: pool must be 'cls' or 'mean' (got ${JSON.stringify(v)})`);
}

function parseBool(label: string, v: unknown): boolean {
  if (typeof v !== 'boolean') throw new Error(`architecture config: '${label}' must be true or false`);
  return v;
}

function parseEps(v: unknown): number {
  if (typeof v !== 'number' || !(v > 0)) throw new Error(`architecture config: layerNormEps must be a positive number`);
  return v;
}

function parsePreprocessing(v: unknown): Preprocessing | undefined {
  if (v === undefined || v === null) return undefined;
  const p = v as { mean?: unknown; std?: unknown; interpolation?: unknown; cropPct?: unknown; crop_pct?: unknown };
  const nums = (x: unknown): x is number[] => Array.isArray(x) && x.length > 0 && x.every((n) => typeof n === 'number' && Number.isFinite(n));
  if (!nums(p.mean) || !nums(p.std) || p.mean.length !== p.std.length || p.std.some((s) => s <= 0)) {
    throw new Error('architecture config: preprocessing needs equal-length mean and positive std arrays');
  }
  const interpolation = p.interpolation ?? undefined;
  if (interpolation !== undefined && interpolation !== 'bilinear' && interpolation !== 'bicubic') {
    throw new Error(`architecture config: preprocessing interpolation must be 'bilinear' or 'bicubic' (got ${JSON.stringify(interpolation)})`);
  }
  const cropPct = p.cropPct ?? p.crop_pct ?? undefined;
  if (cropPct !== undefined && !(typeof cropPct === 'number' && cropPct >= 0.25 && cropPct <= 1)) {
    throw new Error(`architecture config: preprocessing cropPct must be a number from 0.25 to 1 (got ${JSON.stringify(cropPct)})`);
  }
  return { mean: [...p.mean], std: [...p.std], ...(interpolation && { interpolation }), ...(cropPct !== undefined && { cropPct }) };
}
