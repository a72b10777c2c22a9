// Foreign checkpoint namings -> timm's, in the spirit of timm's checkpoint_filter_fn: recognise
// the format by sentinel keys, then map names (and layouts) with pure functions.
import { VitConfig } from '../vit/config';
import { RawTensor } from './safetensors';

export type Naming = 'timm' | 'lucidrains' | 'hf';

type Raw = ReadonlyMap<string, RawTensor>;

export function detectNaming(raw: Raw): Naming {
  const has = (re: RegExp): boolean => [...raw.keys()].some((k) => re.test(k));
  if (has(/^blocks\.\d+\.attn\.qkv\.weight$/)) return 'timm';
  if (has(/^transformer\.layers\.\d+\.0\.(fn\.)?to_qkv\.weight$/)) return 'lucidrains';
  if (has(/^(vit\.)?encoder\.layer\.\d+\.attention\.attention\.query\.weight$/)) return 'hf';
  const sample = [...raw.keys()].slice(0, 5).join(', ');
  throw new Error(`unknown checkpoint naming (expected timm, lucidrains vit-pytorch or Hugging Face ViT keys; found e.g. ${sample})`);
}

/** Returns timm-named tensors; anything left unmapped is an error naming the tensor. */
export function toTimm(raw: Raw, config: VitConfig, naming = detectNaming(raw)): Map<string, RawTensor> {
  if (naming === 'timm') return new Map(raw);
  return naming === 'lucidrains' ? fromLucidrains(raw, config) : fromHf(raw);
}

function take(raw: Raw, used: Set<string>, name: string): RawTensor {
  const t = raw.get(name);
  if (!t) throw new Error(`checkpoint is missing tensor '${name}'`);
  used.add(name);
  return t;
}

function rejectLeftovers(raw: Raw, used: Set<string>, ignorable: RegExp): void {
  const left = [...raw.keys()].filter((k) => !used.has(k) && !ignorable.test(k));
  if (left.length) throw new Error(`checkpoint has tensors this architecture does not use: ${left.slice(0, 5).join(', ')}${left.length > 5 ? ', ...' : ''}`);
}

/**
 * lucidrains vit-pytorch: PreNorm blocks (layers.i.0 = attention, layers.i.1 = feed-forward, with
 * `.fn.` in older releases), patches flattened as (p1 p2 c) into a Linear, mlp_head = LayerNorm + Linear.
 */
function fromLucidrains(raw: Raw, c: VitConfig): Map<string, RawTensor> {
  const used = new Set<string>();
  const out = new Map<string, RawTensor>();
  const t = (name: string): RawTensor => take(raw, used, name);
  const first = (...names: string[]): string => names.find((n) => raw.has(n)) ?? names[0];
  if (raw.has('to_patch_embedding.2.weight')) {
    throw new Error("checkpoint uses vit-pytorch's patch LayerNorms (to_patch_embedding.1 and .3), which timm's ViT has no place for");
  }
  out.set('cls_token', t('cls_token'));
  out.set('pos_embed', t('pos_embedding'));
  // Linear (D, P*P*C) over (p1 p2 c) patches -> conv weight (D, C, P, P).
  const lin = t('to_patch_embedding.1.weight');
  const P = c.patchSize;
  out.set('patch_embed.proj.weight', permute(lin, [c.dim, P, P, c.channels], [0, 3, 1, 2]));
  out.set('patch_embed.proj.bias', t('to_patch_embedding.1.bias'));
  for (let i = 0; i < c.depth; i++) {
    const L = `transformer.layers.${i}`;
    const attn = first(`${L}.0.fn.to_qkv.weight`, `${L}.0.to_qkv.weight`).replace(/to_qkv\.weight$/, '');
    const ff = raw.has(`${L}.1.fn.net.0.weight`) ? `${L}.1.fn.net.` : `${L}.1.net.`;
    out.set(`blocks.${i}.norm1.weight`, t(`${L}.0.norm.weight`));
    out.set(`blocks.${i}.norm1.bias`, t(`${L}.0.norm.bias`));
    out.set(`blocks.${i}.attn.qkv.weight`, t(`${attn}to_qkv.weight`));
    if (c.qkvBias) out.set(`blocks.${i}.attn.qkv.bias`, t(`${attn}to_qkv.bias`));
    if (raw.has(`${attn}to_out.0.weight`)) {
      out.set(`blocks.${i}.attn.proj.weight`, t(`${attn}to_out.0.weight`));
      out.set(`blocks.${i}.attn.proj.bias`, t(`${attn}to_out.0.bias`));
    } else {
      // vit-pytorch drops to_out when heads == 1 and dim_head == dim: an identity projection.
      out.set(`blocks.${i}.attn.proj.weight`, identity(c.dim));
      out.set(`blocks.${i}.attn.proj.bias`, zeros(c.dim));
    }
    // Newer releases keep the FFN's LayerNorm at net.0 and shift the linears to net.1 / net.4.
    const newer = raw.has(`${ff}4.weight`);
    const norm2 = newer ? `${ff}0` : `${L}.1.norm`;
    out.set(`blocks.${i}.norm2.weight`, t(`${norm2}.weight`));
    out.set(`blocks.${i}.norm2.bias`, t(`${norm2}.bias`));
    const [fc1, fc2] = newer ? ['1', '4'] : ['0', '3'];
    out.set(`blocks.${i}.mlp.fc1.weight`, t(`${ff}${fc1}.weight`));
    out.set(`blocks.${i}.mlp.fc1.bias`, t(`${ff}${fc1}.bias`));
    out.set(`blocks.${i}.mlp.fc2.weight`, t(`${ff}${fc2}.weight`));
    out.set(`blocks.${i}.mlp.fc2.bias`, t(`${ff}${fc2}.bias`));
  }
  const finalNorm = raw.has('mlp_head.0.weight') ? 'mlp_head.0' : 'transformer.norm';
  out.set('norm.weight', t(`${finalNorm}.weight`));
  out.set('norm.bias', t(`${finalNorm}.bias`));
  const head = raw.has('mlp_head.1.weight') ? 'mlp_head.1' : 'mlp_head';
  out.set('head.weight', t(`${head}.weight`));
  out.set('head.bias', t(`${head}.bias`));
  rejectLeftovers(raw, used, /$^/);
  return out;
}

/** Hugging Face transformers ViTForImageClassification (separate query/key/value linears). */
function fromHf(raw: Raw): Map<string, RawTensor> {
  const used = new Set<string>();
  const out = new Map<string, RawTensor>();
  const t = (name: string): RawTensor => take(raw, used, name);
  const pre = raw.has('vit.embeddings.cls_token') ? 'vit.' : '';
  out.set('cls_token', t(`${pre}embeddings.cls_token`));
  out.set('pos_embed', t(`${pre}embeddings.position_embeddings`));
  out.set('patch_embed.proj.weight', t(`${pre}embeddings.patch_embeddings.projection.weight`));
  out.set('patch_embed.proj.bias', t(`${pre}embeddings.patch_embeddings.projection.bias`));
  for (let i = 0; ; i++) {
    const L = `${pre}encoder.layer.${i}`;
    if (!raw.has(`${L}.attention.attention.query.weight`)) break;
    const A = `${L}.attention.attention`;
    out.set(`blocks.${i}.norm1.weight`, t(`${L}.layernorm_before.weight`));
    out.set(`blocks.${i}.norm1.bias`, t(`${L}.layernorm_before.bias`));
    out.set(`blocks.${i}.attn.qkv.weight`, concatRows([t(`${A}.query.weight`), t(`${A}.key.weight`), t(`${A}.value.weight`)]));
    if (raw.has(`${A}.query.bias`)) {
      out.set(`blocks.${i}.attn.qkv.bias`, concatRows([t(`${A}.query.bias`), t(`${A}.key.bias`), t(`${A}.value.bias`)]));
    }
    out.set(`blocks.${i}.attn.proj.weight`, t(`${L}.attention.output.dense.weight`));
    out.set(`blocks.${i}.attn.proj.bias`, t(`${L}.attention.output.dense.bias`));
    out.set(`blocks.${i}.norm2.weight`, t(`${L}.layernorm_after.weight`));
    out.set(`blocks.${i}.norm2.bias`, t(`${L}.layernorm_after.bias`));
    out.set(`blocks.${i}.mlp.fc1.weight`, t(`${L}.intermediate.dense.weight`));
    out.set(`blocks.${i}.mlp.fc1.bias`, t(`${L}.intermediate.dense.bias`));
    out.set(`blocks.${i}.mlp.fc2.weight`, t(`${L}.output.dense.weight`));
    out.set(`blocks.${i}.mlp.fc2.bias`, t(`${L}.output.dense.bias`));
  }
  out.set('norm.weight', t(`${pre}layernorm.weight`));
  out.set('norm.bias', t(`${pre}layernorm.bias`));
  out.set('head.weight', t('classifier.weight'));
  out.set('head.bias', t('classifier.bias'));
  rejectLeftovers(raw, used, /^vit\.pooler\./); // the pooler is unused by the classifier
  return out;
}

function permute(t: RawTensor, viewShape: number[], perm: number[]): RawTensor {
  const size = t.data.length;
  if (viewShape.reduce((a, b) => a * b, 1) !== size) {
    throw new Error(`cannot view tensor of shape [${t.shape}] as [${viewShape}]`);
  }
  const outShape = perm.map((p) => viewShape[p]);
  const inStrides = strides(viewShape);
  const outStrides = strides(outShape);
  const out = new Float32Array(size);
  for (let o = 0; o < size; o++) {
    let rem = o;
    let src = 0;
    for (let d = 0; d < outShape.length; d++) {
      const idx = Math.floor(rem / outStrides[d]);
      rem -= idx * outStrides[d];
      src += idx * inStrides[perm[d]];
    }
    out[o] = t.data[src];
  }
  return { dtype: t.dtype, shape: outShape, data: out };
}

function strides(shape: number[]): number[] {
  const s = new Array(shape.length).fill(1);
  for (let i = shape.length - 2; i >= 0; i--) s[i] = s[i + 1] * shape[i + 1];
  return s;
}

function concatRows(parts: RawTensor[]): RawTensor {
  const data = new Float32Array(parts.reduce((n, p) => n + p.data.length, 0));
  let at = 0;
  for (const p of parts) {
    data.set(p.data, at);
    at += p.data.length;
  }
  return { dtype: parts[0].dtype, shape: [parts.reduce((n, p) => n + p.shape[0], 0), ...parts[0].shape.slice(1)], data };
}

function identity(n: number): RawTensor {
  const data = new Float32Array(n * n);
  for (let i = 0; i < n; i++) data[i * n + i] = 1;
  return { dtype: 'F32', shape: [n, n], data };
}

const zeros = (n: number): RawTensor => ({ dtype: 'F32', shape: [n], data: new Float32Array(n) });
