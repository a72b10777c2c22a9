// Analytic gradients against central finite differences, for every kind of tensor in the ViT.
import * as tf from '@tensorflow/tfjs';
import { HostWeights, TrainableVit, VitConfig, crossEntropy, initParams, model, parseVitConfig, presetStrategy, toHost } from '../engine';
import { TOY, useBackend } from './helpers';

beforeAll(() => useBackend('cpu'));

function lossAt(weights: HostWeights, c: VitConfig, x: tf.Tensor4D, y: tf.Tensor1D, override?: [string, Float32Array]): number {
  return tf.tidy(() => {
    const p = new Map([...weights].map(([k, v]) => [k, tf.tensor(override && override[0] === k ? override[1] : v.data, v.shape)]));
    return crossEntropy(model.forward(p, x, c), y, 0.1).dataSync()[0];
  });
}

async function checkAll(c: VitConfig, names: string[]): Promise<void> {
  const weights = await toHost(initParams(c, 3));
  // Larger-than-init weights so every path carries signal.
  for (const w of weights.values()) w.data.forEach((v, i) => (w.data[i] = v * 10 + (w.shape.length === 1 ? 0.1 * Math.sin(i) : 0)));
  const x = tf.randomNormal([4, c.imageSize, c.imageSize, c.channels], 0, 1, 'float32', 7) as tf.Tensor4D;
  const y = tf.tensor1d([0, 1, 2, 1], 'int32');
  const m = new TrainableVit(weights, c, presetStrategy('full'));
  const { loss, grads } = m.lossAndGrads(x, y, 0.1);
  expect(Math.abs(loss.dataSync()[0] - lossAt(weights, c, x, y))).toBeLessThan(1e-5);
  const eps = 2e-3;
  for (const name of names) {
    const w = weights.get(name)!;
    const g = grads.get(name)!.dataSync();
    // Directional derivative along a fixed pseudo-random unit direction.
    const u = new Float32Array(w.data.length).map((_, i) => Math.sin(12.9898 * (i + 1)) * 43758.5453 % 1);
    const norm = Math.hypot(...u);
    u.forEach((v, i) => (u[i] = v / norm));
    const analytic = u.reduce((s, v, i) => s + v * g[i], 0);
    const shifted = (sign: number): Float32Array => w.data.map((v, i) => v + sign * eps * u[i]);
    const numeric = (lossAt(weights, c, x, y, [name, shifted(1)]) - lossAt(weights, c, x, y, [name, shifted(-1)])) / (2 * eps);
    const err = Math.abs(analytic - numeric) / Math.max(1e-2, Math.abs(analytic) + Math.abs(numeric));
    expect([name, analytic, numeric, err < 2e-2]).toEqual([name, analytic, numeric, true]);
  }
  tf.dispose([x, y, loss, ...grads.values()]);
  m.dispose();
}

describe('gradients match finite differences', () => {
  it('for each kind of tensor (gelu, cls pooling)', async () => {
    await checkAll(TOY, [
      'patch_embed.proj.weight', 'patch_embed.proj.bias', 'cls_token', 'pos_embed',
      'blocks.0.norm1.weight', 'blocks.0.norm1.bias', 'blocks.0.attn.qkv.weight', 'blocks.0.attn.qkv.bias',
      'blocks.0.attn.proj.weight', 'blocks.1.attn.proj.bias', 'blocks.0.norm2.weight', 'blocks.1.norm2.bias',
      'blocks.0.mlp.fc1.weight', 'blocks.1.mlp.fc1.bias', 'blocks.1.mlp.fc2.weight', 'blocks.0.mlp.fc2.bias',
      'norm.weight', 'norm.bias', 'head.weight', 'head.bias',
    ]);
  });

  it('with tanh-GELU, ReLU, mean pooling and no qkv bias', async () => {
    await checkAll(parseVitConfig({ ...TOY, activation: 'gelu_tanh', pool: 'mean', qkvBias: false }), ['blocks.0.mlp.fc1.weight', 'blocks.0.attn.qkv.weight', 'cls_token']);
    await checkAll(parseVitConfig({ ...TOY, activation: 'relu' }), ['blocks.1.mlp.fc1.weight', 'patch_embed.proj.weight']);
  });
});
