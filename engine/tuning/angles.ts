// The fine-tuned angle metric (Ye et al. 2023): for each attention layer (norm1 + attn.qkv +
// attn.proj of a block) and each FFN layer (norm2 + mlp.fc1 + mlp.fc2), the angle between its
// pre-trained and fine-tuned weights, flattened and concatenated:
//   angle = arccos(w_p . w_f / (|w_p| |w_f|)), in degrees.
// Layers are ranked within their group (attention with attention, FFN with FFN), never across.
import { VitConfig } from '../vit/config';
import { paramSpecs, sizeOf } from '../vit/params';
import { LayerKind, layerOf } from '../vit/groups';
import { Strategy, inspect } from './strategy';

type Weights = ReadonlyMap<string, { readonly data: Float32Array }>;

export type { LayerKind };

export interface LayerAngle {
  readonly kind: LayerKind;
  readonly block: number;
  readonly degrees: number;
  readonly params: number;
}

/** Angle between two equally long vectors, in degrees, accumulated in float64. */
export function angleDegrees(a: ArrayLike<number>[], b: ArrayLike<number>[]): number {
  let dot = 0;
  let na = 0;
  let nb = 0;
  a.forEach((part, p) => {
    const other = b[p];
    if (part.length !== other.length) throw new Error(`angle: parts of different lengths (${part.length} vs ${other.length})`);
    for (let i = 0; i < part.length; i++) {
      dot += part[i] * other[i];
      na += part[i] * part[i];
      nb += other[i] * other[i];
    }
  });
  if (na === 0 || nb === 0) throw new Error('angle: a zero weight vector has no direction');
  const cos = Math.min(1, Math.max(-1, dot / Math.sqrt(na * nb)));
  return (Math.acos(cos) * 180) / Math.PI;
}

/** Per-layer angles between pre-trained and fine-tuned weights (both complete, timm names). */
export function layerAngles(pretrained: Weights, fineTuned: Weights, c: VitConfig): LayerAngle[] {
  const out: LayerAngle[] = [];
  for (const kind of ['attn', 'ffn'] as const) {
    for (let block = 0; block < c.depth; block++) {
      const names = paramSpecs(c).filter((s) => {
        const layer = layerOf(s.name);
        return layer?.kind === kind && layer.block === block;
      });
      const part = (w: Weights, n: string): Float32Array => {
        const t = w.get(n);
        if (!t) throw new Error(`angle: tensor '${n}' is missing`);
        return t.data;
      };
      out.push({
        kind, block,
        degrees: angleDegrees(names.map((s) => part(pretrained, s.name)), names.map((s) => part(fineTuned, s.name))),
        params: names.reduce((n, s) => n + sizeOf(s.shape), 0),
      });
    }
  }
  return out;
}

/**
 * Per-tensor angles, for every tensor both sides hold with the same length; NaN where one side is
 * all zeros (a zero-initialised bias has no direction to turn from).
 */
export function tensorAngles(pretrained: Weights, fineTuned: Weights): Map<string, number> {
  const out = new Map<string, number>();
  const zero = (a: Float32Array): boolean => a.every((v) => v === 0);
  for (const [name, p] of pretrained) {
    const f = fineTuned.get(name);
    if (!f || f.data.length !== p.data.length) continue;
    out.set(name, zero(p.data) || zero(f.data) ? NaN : angleDegrees([p.data], [f.data]));
  }
  return out;
}

export interface AngleSelection {
  /** Largest angles (the paper's choice for harder tasks) or smallest (easier tasks). */
  readonly direction: 'largest' | 'smallest';
  /** Layers per group; `attn` and `ffn` may differ. */
  readonly topK: { readonly attn: number; readonly ffn: number };
}

/** The top-K layers of each group by angle, as a custom strategy (ties: the earlier block). */
export function selectByAngle(angles: readonly LayerAngle[], sel: AngleSelection, name = `angle-${sel.direction}`): Strategy {
  const pick = (kind: LayerKind): number[] => {
    const group = angles.filter((a) => a.kind === kind);
    const k = sel.topK[kind];
    if (!Number.isInteger(k) || k < 0 || k > group.length) throw new Error(`top-K for ${kind} must be 0..${group.length} (got ${k})`);
    const sign = sel.direction === 'largest' ? -1 : 1;
    return [...group].sort((x, y) => sign * (x.degrees - y.degrees) || x.block - y.block).slice(0, k).map((a) => a.block).sort((x, y) => x - y);
  };
  return { kind: 'custom', name, attnLayers: pick('attn'), ffnLayers: pick('ffn') };
}

/** Spearman rank correlation (Pearson over ranks, ties sharing their mean rank). */
export function spearman(a: readonly number[], b: readonly number[]): number {
  if (a.length !== b.length || a.length < 2) throw new Error('spearman: need two equally long lists of at least 2 values');
  const ranks = (x: readonly number[]): number[] => {
    const order = x.map((v, i) => [v, i] as const).sort((p, q) => p[0] - q[0]);
    const r = new Array<number>(x.length);
    for (let i = 0; i < order.length; ) {
      let j = i;
      while (j + 1 < order.length && order[j + 1][0] === order[i][0]) j++;
      for (let k = i; k <= j; k++) r[order[k][1]] = (i + j) / 2 + 1;
      i = j + 1;
    }
    return r;
  };
  const [ra, rb] = [ranks(a), ranks(b)];
  const mean = (ra.length + 1) / 2;
  let cov = 0;
  let va = 0;
  let vb = 0;
  for (let i = 0; i < ra.length; i++) {
    cov += (ra[i] - mean) * (rb[i] - mean);
    va += (ra[i] - mean) ** 2;
    vb += (rb[i] - mean) ** 2;
  }
  return cov / Math.sqrt(va * vb);
}

/** Agreement of two angle profiles of one model, per group (e.g. a short probe against a long one). */
export function rankAgreement(x: readonly LayerAngle[], y: readonly LayerAngle[]): Record<LayerKind, number> {
  const group = (p: readonly LayerAngle[], kind: LayerKind): number[] => p.filter((a) => a.kind === kind).sort((s, t) => s.block - t.block).map((a) => a.degrees);
  return { attn: spearman(group(x, 'attn'), group(y, 'attn')), ffn: spearman(group(x, 'ffn'), group(y, 'ffn')) };
}

/** The largest K (the same for both groups) whose strategy fits a parameter budget. */
export function topKForBudget(angles: readonly LayerAngle[], config: VitConfig, direction: 'largest' | 'smallest', budget: number): number {
  let best = -1;
  for (let k = 0; k <= config.depth; k++) {
    if (inspect(selectByAngle(angles, { direction, topK: { attn: k, ffn: k } }), config).tunedParams <= budget) best = k;
  }
  if (best < 0) throw new Error(`a budget of ${budget} parameters is below what the head alone needs`);
  return best;
}
