import * as tf from '@tensorflow/tfjs';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { countParams, initParams, model, paramSpecs, parseVitConfig, preset, toHost } from '../engine';
import { TOY, VIT_MNIST, describeIfExists, useBackend } from './helpers';

beforeAll(() => useBackend('wasm'));

describe('ViT architecture', () => {
  it('has timm parameter counts for the timm presets', () => {
    // Reference: timm's vit_{tiny,small,base}_patch16_224 with 1000 classes.
    expect(countParams(preset('vit_tiny_patch16_224'))).toBe(5_717_416);
    expect(countParams(preset('vit_small_patch16_224'))).toBe(22_050_664);
    expect(countParams(preset('vit_base_patch16_224'))).toBe(86_567_656);
  });

  it('names parameters as timm does', () => {
    const names = paramSpecs(TOY).map((s) => s.name);
    expect(names).toEqual(expect.arrayContaining([
      'patch_embed.proj.weight', 'patch_embed.proj.bias', 'cls_token', 'pos_embed', 'blocks.1.norm1.weight',
      'blocks.1.attn.qkv.weight', 'blocks.1.attn.qkv.bias', 'blocks.1.attn.proj.weight', 'blocks.1.norm2.bias',
      'blocks.1.mlp.fc1.weight', 'blocks.1.mlp.fc2.bias', 'norm.weight', 'head.weight', 'head.bias',
    ]));
    expect(paramSpecs({ ...TOY, qkvBias: false }).some((s) => s.name.endsWith('qkv.bias'))).toBe(false);
  });

  it('gives logits of shape (B, classes) for every activation and pooling', () => {
    for (const activation of ['gelu', 'gelu_tanh', 'relu'] as const) {
      for (const pool of ['cls', 'mean'] as const) {
        const c = parseVitConfig({ ...TOY, activation, pool });
        const p = initParams(c, 1);
        const x = tf.randomNormal([3, 8, 8, 3]) as tf.Tensor4D;
        const y = model.forward(p, x, c);
        expect(y.shape).toEqual([3, 3]);
        expect(Array.from(y.dataSync()).every(Number.isFinite)).toBe(true);
        tf.dispose([x, y, ...p.values()]);
      }
    }
  });

  it('rejects inputs and configs that do not fit, with a message', () => {
    const p = initParams(TOY);
    const x = tf.zeros([1, 9, 9, 3]) as tf.Tensor4D;
    expect(() => model.forward(p, x, TOY)).toThrow(/9x9x3.*8x8x3/);
    expect(() => parseVitConfig({ ...TOY, patchSize: 3 })).toThrow(/not a multiple of patch size/);
    expect(() => parseVitConfig({ ...TOY, activation: 'swish' })).toThrow(/activation/);
    expect(() => preset('vit_huge')).toThrow(/unknown architecture preset 'vit_huge'/);
    tf.dispose([x, ...p.values()]);
  });
});

describeIfExists(VIT_MNIST, 'the shared vit-mnist-500k config.json', () => {
  it('parses as it is, with its unusual attention width', () => {
    const c = parseVitConfig(JSON.parse(readFileSync(join(VIT_MNIST, 'config.json'), 'utf8')));
    expect(c).toMatchObject({ dim: 64, heads: 4, headDim: 64, qkvBias: false, activation: 'relu', layerNormEps: 1e-5 });
    expect(countParams(c)).toBe(499_722); // the count its config.json states
  });
});

describe('random initialisation', () => {
  it('is reproducible for every seed, 0 included, and differs between seeds', async () => {
    const digest = async (seed: number): Promise<number[]> => {
      const params = initParams(TOY, seed);
      const host = await toHost(params);
      params.forEach((t) => t.dispose());
      return [...host.values()].map((w) => w.data.reduce((a, v, i) => a + v * (1 + (i % 7)), 0));
    };
    expect(await digest(0)).toEqual(await digest(0));
    expect(await digest(3)).toEqual(await digest(3));
    expect(await digest(0)).not.toEqual(await digest(1));
  });
});
