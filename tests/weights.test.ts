// safetensors I/O, foreign namings and checkpoint validation.
import * as tf from '@tensorflow/tfjs';
import {
  HostWeights, detectNaming, exportCheckpoint, f16ToF32, f32ToF16, initParams, loadCheckpoint, model, parseSafetensors,
  parseVitConfig, serializeSafetensors, toDevice, toHost,
} from '../engine';
import { TOY, useBackend } from './helpers';

beforeAll(() => useBackend('wasm'));

const raw = (shape: number[], f: (i: number) => number): { shape: number[]; data: Float32Array } =>
  ({ shape, data: Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, (_, i) => f(i)) });

describe('safetensors', () => {
  it('round-trips F32 exactly and F16 to half precision, with metadata', () => {
    const tensors = new Map([['b', raw([2, 3], (i) => i / 7 - 0.3)], ['a', raw([4], (i) => -1e-3 * i)]]);
    const f32 = parseSafetensors(serializeSafetensors(tensors, { metadata: { hello: 'world' } }));
    expect(f32.metadata).toEqual({ hello: 'world' });
    expect(f32.tensors.get('b')!.data).toEqual(tensors.get('b')!.data);
    expect(f32.tensors.get('b')!.shape).toEqual([2, 3]);
    const f16 = parseSafetensors(serializeSafetensors(tensors, { dtype: 'F16' }));
    expect(f16.tensors.get('a')!.dtype).toBe('F16');
    f16.tensors.get('b')!.data.forEach((v, i) => expect(Math.abs(v - tensors.get('b')!.data[i])).toBeLessThan(1e-3));
  });

  it('converts half floats like IEEE 754 binary16', () => {
    expect([1, -2, 0.5, 65504, 6.103515625e-5, 5.960464477539063e-8].map(f32ToF16)).toEqual([0x3c00, 0xc000, 0x3800, 0x7bff, 0x0400, 0x0001]);
    expect(f32ToF16(1 + 2 ** -11)).toBe(0x3c00); // ties to even
    expect(f32ToF16(1e6)).toBe(0x7c00);
    expect([0x3c00, 0xc000, 0x0001, 0x7bff].map(f16ToF32)).toEqual([1, -2, 5.960464477539063e-8, 65504]);
  });

  it('reads BF16 written by hand', () => {
    const header = new TextEncoder().encode(JSON.stringify({ x: { dtype: 'BF16', shape: [2], data_offsets: [0, 4] } }));
    const bytes = new Uint8Array(8 + header.length + 4);
    new DataView(bytes.buffer).setBigUint64(0, BigInt(header.length), true);
    bytes.set(header, 8);
    new DataView(bytes.buffer).setUint16(8 + header.length, 0x3fc0, true); // 1.5
    new DataView(bytes.buffer).setUint16(8 + header.length + 2, 0xc040, true); // -3
    expect(Array.from(parseSafetensors(bytes).tensors.get('x')!.data)).toEqual([1.5, -3]);
  });

  it('rejects truncated and malformed files with the tensor named', () => {
    const bytes = serializeSafetensors(new Map([['blocks.0.attn.qkv.weight', raw([8, 8], (i) => i)]]));
    expect(() => parseSafetensors(bytes.subarray(0, bytes.length - 10), 'm.safetensors')).toThrow(/m.safetensors: truncated: tensor 'blocks.0.attn.qkv.weight'/);
    expect(() => parseSafetensors(bytes.subarray(0, 5))).toThrow(/truncated/);
    expect(() => parseSafetensors(new Uint8Array(64).fill(65))).toThrow(/truncated or not safetensors/);
  });
});

/** timm -> Hugging Face ViTForImageClassification names, written independently of the importer. */
function toHf(w: HostWeights, depth: number): HostWeights {
  const out: HostWeights = new Map();
  const put = (k: string, v: { shape: number[]; data: Float32Array }): void => void out.set(k, v);
  put('vit.embeddings.cls_token', w.get('cls_token')!);
  put('vit.embeddings.position_embeddings', w.get('pos_embed')!);
  put('vit.embeddings.patch_embeddings.projection.weight', w.get('patch_embed.proj.weight')!);
  put('vit.embeddings.patch_embeddings.projection.bias', w.get('patch_embed.proj.bias')!);
  for (let i = 0; i < depth; i++) {
    const b = `blocks.${i}`;
    const L = `vit.encoder.layer.${i}`;
    const qkv = w.get(`${b}.attn.qkv.weight`)!;
    const bias = w.get(`${b}.attn.qkv.bias`)!;
    const rows = qkv.shape[0] / 3;
    ['query', 'key', 'value'].forEach((n, j) => {
      put(`${L}.attention.attention.${n}.weight`, { shape: [rows, qkv.shape[1]], data: qkv.data.slice(j * rows * qkv.shape[1], (j + 1) * rows * qkv.shape[1]) });
      put(`${L}.attention.attention.${n}.bias`, { shape: [rows], data: bias.data.slice(j * rows, (j + 1) * rows) });
    });
    put(`${L}.attention.output.dense.weight`, w.get(`${b}.attn.proj.weight`)!);
    put(`${L}.attention.output.dense.bias`, w.get(`${b}.attn.proj.bias`)!);
    put(`${L}.layernorm_before.weight`, w.get(`${b}.norm1.weight`)!);
    put(`${L}.layernorm_before.bias`, w.get(`${b}.norm1.bias`)!);
    put(`${L}.layernorm_after.weight`, w.get(`${b}.norm2.weight`)!);
    put(`${L}.layernorm_after.bias`, w.get(`${b}.norm2.bias`)!);
    put(`${L}.intermediate.dense.weight`, w.get(`${b}.mlp.fc1.weight`)!);
    put(`${L}.intermediate.dense.bias`, w.get(`${b}.mlp.fc1.bias`)!);
    put(`${L}.output.dense.weight`, w.get(`${b}.mlp.fc2.weight`)!);
    put(`${L}.output.dense.bias`, w.get(`${b}.mlp.fc2.bias`)!);
  }
  put('vit.layernorm.weight', w.get('norm.weight')!);
  put('vit.layernorm.bias', w.get('norm.bias')!);
  put('classifier.weight', w.get('head.weight')!);
  put('classifier.bias', w.get('head.bias')!);
  return out;
}

/** timm -> vit-pytorch (PreNorm release) names; the patch conv becomes a Linear over (p1 p2 c). */
function toLucidrains(w: HostWeights, depth: number, P: number, C: number, D: number): HostWeights {
  const out: HostWeights = new Map();
  const conv = w.get('patch_embed.proj.weight')!; // (D, C, P, P)
  const lin = new Float32Array(conv.data.length);
  for (let d = 0; d < D; d++) for (let c = 0; c < C; c++) for (let y = 0; y < P; y++) for (let x = 0; x < P; x++) {
    lin[d * P * P * C + (y * P + x) * C + c] = conv.data[((d * C + c) * P + y) * P + x];
  }
  out.set('to_patch_embedding.1.weight', { shape: [D, P * P * C], data: lin });
  out.set('to_patch_embedding.1.bias', w.get('patch_embed.proj.bias')!);
  out.set('cls_token', w.get('cls_token')!);
  out.set('pos_embedding', w.get('pos_embed')!);
  for (let i = 0; i < depth; i++) {
    const b = `blocks.${i}`;
    const L = `transformer.layers.${i}`;
    out.set(`${L}.0.norm.weight`, w.get(`${b}.norm1.weight`)!);
    out.set(`${L}.0.norm.bias`, w.get(`${b}.norm1.bias`)!);
    out.set(`${L}.0.fn.to_qkv.weight`, w.get(`${b}.attn.qkv.weight`)!);
    out.set(`${L}.0.fn.to_out.0.weight`, w.get(`${b}.attn.proj.weight`)!);
    out.set(`${L}.0.fn.to_out.0.bias`, w.get(`${b}.attn.proj.bias`)!);
    out.set(`${L}.1.norm.weight`, w.get(`${b}.norm2.weight`)!);
    out.set(`${L}.1.norm.bias`, w.get(`${b}.norm2.bias`)!);
    out.set(`${L}.1.fn.net.0.weight`, w.get(`${b}.mlp.fc1.weight`)!);
    out.set(`${L}.1.fn.net.0.bias`, w.get(`${b}.mlp.fc1.bias`)!);
    out.set(`${L}.1.fn.net.3.weight`, w.get(`${b}.mlp.fc2.weight`)!);
    out.set(`${L}.1.fn.net.3.bias`, w.get(`${b}.mlp.fc2.bias`)!);
  }
  out.set('mlp_head.0.weight', w.get('norm.weight')!);
  out.set('mlp_head.0.bias', w.get('norm.bias')!);
  out.set('mlp_head.1.weight', w.get('head.weight')!);
  out.set('mlp_head.1.bias', w.get('head.bias')!);
  return out;
}

describe('checkpoints', () => {
  const x = (): tf.Tensor4D => tf.randomNormal([2, 8, 8, 3], 0, 1, 'float32', 1) as tf.Tensor4D;

  async function logitsOf(weights: HostWeights, config = TOY): Promise<Float32Array> {
    const p = toDevice(weights);
    const input = x();
    const y = model.forward(p, input, config);
    const out = (await y.data()) as Float32Array;
    tf.dispose([y, input, ...p.values()]);
    return out;
  }

  it('imports Hugging Face and vit-pytorch namings to the same model as timm', async () => {
    const timm = await toHost(initParams(TOY, 4));
    const reference = await logitsOf(timm);
    const noBias = parseVitConfig({ ...TOY, qkvBias: false });
    for (const [naming, weights, config] of [
      ['hf', toHf(timm, TOY.depth), TOY],
      ['lucidrains', toLucidrains(timm, TOY.depth, 4, 3, 12), noBias],
    ] as const) {
      const file = serializeSafetensors(weights);
      const ck = await loadCheckpoint(file, { config });
      expect(ck.naming).toBe(naming);
      if (naming === 'hf') {
        expect(Array.from(await logitsOf(ck.weights))).toEqual(Array.from(reference));
        const roundTrip = await loadCheckpoint(exportCheckpoint(ck.weights, TOY));
        expect(roundTrip.sha256).toBe(ck.sha256);
        expect(roundTrip.naming).toBe('timm');
      } else {
        // vit-pytorch has no qkv bias: the reference is timm with a zero qkv bias.
        const zeroBias: HostWeights = new Map([...timm].map(([k, v]) => [k, k.endsWith('qkv.bias') ? raw(v.shape, () => 0) : v]));
        expect(Array.from(await logitsOf(ck.weights, noBias))).toEqual(Array.from(await logitsOf(zeroBias)));
      }
    }
  });

  it('explains what is wrong with a checkpoint', async () => {
    const timm = await toHost(initParams(TOY, 4));
    const without = new Map(timm);
    without.delete('blocks.1.mlp.fc2.bias');
    await expect(loadCheckpoint(serializeSafetensors(without), { config: TOY, source: 'x.safetensors' })).rejects.toThrow(/x.safetensors: missing tensor 'blocks.1.mlp.fc2.bias' \(shape \[12\]\)/);
    const reshaped = new Map(timm);
    reshaped.set('blocks.0.attn.proj.weight', raw([12, 12], () => 0));
    await expect(loadCheckpoint(serializeSafetensors(reshaped), { config: TOY })).rejects.toThrow(/'blocks.0.attn.proj.weight' has shape \[12,12\], the architecture needs \[12,10\]/);
    const nan = new Map(timm);
    nan.set('head.bias', raw([3], () => NaN));
    await expect(loadCheckpoint(serializeSafetensors(nan), { config: TOY })).rejects.toThrow(/'head.bias' holds NaN/);
    expect(() => detectNaming(new Map([['model.conv1.weight', { dtype: 'F32', shape: [1], data: new Float32Array(1) }]]))).toThrow(/unknown checkpoint naming/);
    await expect(loadCheckpoint(serializeSafetensors(timm))).rejects.toThrow(/no architecture in its metadata/);
    const extra = new Map(timm);
    extra.set('blocks.5.attn.qkv.weight', raw([30, 12], () => 0));
    await expect(loadCheckpoint(serializeSafetensors(extra), { config: TOY })).rejects.toThrow(/unexpected tensor 'blocks.5.attn.qkv.weight'/);
  });

  it('replaces the head for a new class count, keeping the base hash', async () => {
    const file = exportCheckpoint(await toHost(initParams(TOY, 4)), TOY);
    const base = await loadCheckpoint(file);
    const five = await loadCheckpoint(file, { numClasses: 5 });
    expect(five.config.numClasses).toBe(5);
    expect(five.weights.get('head.weight')!.shape).toEqual([5, 12]);
    expect(five.sha256).toBe(base.sha256);
    expect(five.replacedHead).toEqual({ from: 3, to: 5 });
  });
});
