// The ViT's parameters in timm's names and shapes (vision_transformer.py): the single source of
// truth for what a checkpoint must hold, how big it is and how it is initialised.
import * as tf from '@tensorflow/tfjs';
import { VitConfig, innerDim, numPatches } from './config';

export type NamedTensors = ReadonlyMap<string, tf.Tensor>;

export interface ParamSpec {
  readonly name: string;
  readonly shape: readonly number[];
}

export function paramSpecs(c: VitConfig): ParamSpec[] {
  const inner = innerDim(c);
  const specs: ParamSpec[] = [
    { name: 'cls_token', shape: [1, 1, c.dim] },
    { name: 'pos_embed', shape: [1, numPatches(c) + 1, c.dim] },
    { name: 'patch_embed.proj.weight', shape: [c.dim, c.channels, c.patchSize, c.patchSize] },
    { name: 'patch_embed.proj.bias', shape: [c.dim] },
  ];
  for (let i = 0; i < c.depth; i++) {
    const b = `blocks.${i}`;
    specs.push(
      { name: `${b}.norm1.weight`, shape: [c.dim] },
      { name: `${b}.norm1.bias`, shape: [c.dim] },
      { name: `${b}.attn.qkv.weight`, shape: [3 * inner, c.dim] },
      ...(c.qkvBias ? [{ name: `${b}.attn.qkv.bias`, shape: [3 * inner] }] : []),
      { name: `${b}.attn.proj.weight`, shape: [c.dim, inner] },
      { name: `${b}.attn.proj.bias`, shape: [c.dim] },
      { name: `${b}.norm2.weight`, shape: [c.dim] },
      { name: `${b}.norm2.bias`, shape: [c.dim] },
      { name: `${b}.mlp.fc1.weight`, shape: [c.mlpDim, c.dim] },
      { name: `${b}.mlp.fc1.bias`, shape: [c.mlpDim] },
      { name: `${b}.mlp.fc2.weight`, shape: [c.dim, c.mlpDim] },
      { name: `${b}.mlp.fc2.bias`, shape: [c.dim] },
    );
  }
  specs.push(
    { name: 'norm.weight', shape: [c.dim] },
    { name: 'norm.bias', shape: [c.dim] },
    { name: 'head.weight', shape: [c.numClasses, c.dim] },
    { name: 'head.bias', shape: [c.numClasses] },
  );
  return specs;
}

export const sizeOf = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

export function countParams(c: VitConfig): number {
  return paramSpecs(c).reduce((n, s) => n + sizeOf(s.shape), 0);
}

export const HEAD_NAMES: readonly string[] = ['head.weight', 'head.bias'];

/** timm's init: trunc-normal(0.02) weights and tokens, zero biases, unit LayerNorm scales. */
export function initParam(spec: ParamSpec, seed: number): tf.Tensor {
  const { name, shape } = spec;
  if (/norm\d?\.weight$/.test(name)) return tf.ones(shape as number[]);
  if (name.endsWith('.bias')) return tf.zeros(shape as number[]);
  // tfjs treats a seed of 0 as "no seed" (Math.random): shift so that every seed is honoured.
  return tf.truncatedNormal(shape as number[], 0, 0.02, 'float32', seed + 1);
}

export function initParams(c: VitConfig, seed = 0): Map<string, tf.Tensor> {
  return new Map(paramSpecs(c).map((s, i) => [s.name, initParam(s, seed * 1000 + i)]));
}
