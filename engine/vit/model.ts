// ViT forward pass over named tensors (timm vision_transformer.py semantics). Pure functions of
// (params, input): the training loop decides which params are variables and where the tape starts.
//
// The layers are fused ops with hand-written gradients (fused.ts), which give weight gradients
// only to trainable variables (TrainableVit's tuned tensors). The patch embedding is
// reshape + transpose + matMul: the wasm backend has no Conv2DBackpropFilter.
import * as tf from '@tensorflow/tfjs';
import { VitConfig, numPatches } from './config';
import { NamedTensors } from './params';
import { layerNorm, linear, linearGelu, selfAttention } from './fused';

function get(p: NamedTensors, name: string): tf.Tensor {
  const t = p.get(name);
  if (!t) throw new Error(`parameter '${name}' is missing`);
  return t;
}

/** The activations without a fused op (exact GELU is fused with fc1: see linearGelu). */
function activate(x: tf.Tensor, kind: 'relu' | 'gelu_tanh'): tf.Tensor {
  if (kind === 'relu') return tf.relu(x);
  const inner = tf.mul(tf.add(x, tf.mul(tf.pow(x, 3), 0.044715)), Math.sqrt(2 / Math.PI));
  return tf.mul(tf.mul(x, 0.5), tf.add(tf.tanh(inner), 1));
}

/** Images (B, H, W, C), already normalised -> tokens (B, 1 + N, D) with position embeddings. */
export function embed(p: NamedTensors, images: tf.Tensor4D, c: VitConfig): tf.Tensor3D {
  const [B, H, W, C] = images.shape;
  if (H !== c.imageSize || W !== c.imageSize || C !== c.channels) {
    throw new Error(`input is ${H}x${W}x${C}, the model expects ${c.imageSize}x${c.imageSize}x${c.channels}`);
  }
  const P = c.patchSize;
  const g = H / P;
  const N = numPatches(c);
  // (B*g, P, g, P*C) -> (B*g, g, P, P*C): each patch's pixels become contiguous in (p1, p2, c) order.
  const rows = tf.reshape(images, [B * g, P, g, P * C]);
  const patches = tf.reshape(tf.transpose(rows, [0, 2, 1, 3]), [B * N, P * P * C]);
  // timm's conv weight (D, C, P, P) -> (P, P, C, D) -> (P*P*C, D), matching the patch order above.
  const w = get(p, 'patch_embed.proj.weight');
  const wFlat = tf.reshape(tf.transpose(w, [2, 3, 1, 0]), [P * P * C, c.dim]);
  const tokens = tf.reshape(tf.add(tf.matMul(patches, wFlat), get(p, 'patch_embed.proj.bias')), [B, N, c.dim]);
  const cls = tf.tile(get(p, 'cls_token'), [B, 1, 1]); // (B, 1, D)
  return tf.add(tf.concat([cls, tokens], 1), get(p, 'pos_embed')) as tf.Tensor3D;
}

function attention(p: NamedTensors, x: tf.Tensor3D, i: number, c: VitConfig): tf.Tensor3D {
  const [B, T, D] = x.shape;
  const pre = `blocks.${i}.attn`;
  const x2 = tf.reshape(x, [B * T, D]) as tf.Tensor2D;
  const bias = c.qkvBias ? get(p, `${pre}.qkv.bias`) : undefined;
  const mixed = selfAttention(x2, get(p, `${pre}.qkv.weight`), bias, B, c.heads, c.headDim); // (B*T, heads*hd)
  return tf.reshape(linear(mixed, get(p, `${pre}.proj.weight`), get(p, `${pre}.proj.bias`)), [B, T, D]);
}

function mlp(p: NamedTensors, x: tf.Tensor3D, i: number, c: VitConfig): tf.Tensor3D {
  const [B, T, D] = x.shape;
  const pre = `blocks.${i}.mlp`;
  const x2 = tf.reshape(x, [B * T, D]) as tf.Tensor2D;
  const [w1, b1] = [get(p, `${pre}.fc1.weight`), get(p, `${pre}.fc1.bias`)];
  const h = c.activation === 'gelu' ? linearGelu(x2, w1, b1) : activate(linear(x2, w1, b1), c.activation);
  return tf.reshape(linear(h as tf.Tensor2D, get(p, `${pre}.fc2.weight`), get(p, `${pre}.fc2.bias`)), [B, T, D]);
}

/** One pre-norm transformer block: two residual lines, as in timm's Block.forward. */
export function block(p: NamedTensors, x: tf.Tensor3D, i: number, c: VitConfig): tf.Tensor3D {
  const b = `blocks.${i}`;
  const eps = c.layerNormEps;
  const a = tf.add(x, attention(p, layerNorm(x, get(p, `${b}.norm1.weight`), get(p, `${b}.norm1.bias`), eps) as tf.Tensor3D, i, c)) as tf.Tensor3D;
  return tf.add(a, mlp(p, layerNorm(a, get(p, `${b}.norm2.weight`), get(p, `${b}.norm2.bias`), eps) as tf.Tensor3D, i, c)) as tf.Tensor3D;
}

/** The token a classifier reads: cls, or the mean of the patch tokens. (B, T, D) -> (B, D) */
export function pool(x: tf.Tensor3D, c: VitConfig): tf.Tensor2D {
  const [B, T, D] = x.shape;
  return c.pool === 'cls' ? tf.reshape(tf.slice(x, [0, 0, 0], [B, 1, D]), [B, D]) : tf.mean(tf.slice(x, [0, 1, 0], [B, T - 1, D]), 1);
}

/** Final LayerNorm and linear head: pooled (B, D) -> logits (B, classes). */
export function head(p: NamedTensors, pooled: tf.Tensor2D, c: VitConfig): tf.Tensor2D {
  const normed = layerNorm(pooled, get(p, 'norm.weight'), get(p, 'norm.bias'), c.layerNormEps) as tf.Tensor2D;
  return linear(normed, get(p, 'head.weight'), get(p, 'head.bias'));
}

export function classify(p: NamedTensors, x: tf.Tensor3D, c: VitConfig): tf.Tensor2D {
  return head(p, pool(x, c), c);
}

/** Blocks [from, to) applied to tokens. */
export function blocks(p: NamedTensors, x: tf.Tensor3D, c: VitConfig, from = 0, to = c.depth): tf.Tensor3D {
  let h = x;
  for (let i = from; i < to; i++) h = block(p, h, i, c);
  return h;
}

export function forward(p: NamedTensors, images: tf.Tensor4D, c: VitConfig): tf.Tensor2D {
  return tf.tidy(() => classify(p, blocks(p, embed(p, images, c), c), c));
}
