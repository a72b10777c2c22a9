// A backend's numerical check: one training step of a small ViT (forward logits, loss, every
// gradient, the AdamW-updated weights) on the current backend against the pure-JavaScript cpu
// backend. Relative errors, each against its tensor's largest magnitude.
import * as tf from '@tensorflow/tfjs';
import { parseVitConfig } from '../vit/config';
import { initParams } from '../vit/params';
import { presetStrategy } from '../tuning/strategy';
import { HostWeights, toHost } from '../weights/checkpoint';
import * as model from '../vit/model';
import { ADAMW_DEFAULTS, AdamW } from './adamw';
import { TrainableVit } from './trainable';

const SMALL = parseVitConfig({
  imageSize: 8, channels: 3, patchSize: 4, dim: 12, depth: 2, heads: 2, headDim: 5, mlpDim: 20,
  activation: 'gelu', qkvBias: true, pool: 'cls', layerNormEps: 1e-6, numClasses: 3,
});

export interface StepCheck {
  readonly backend: string;
  readonly logits: number;
  readonly loss: number;
  readonly gradients: number;
  readonly updated: number;
}

interface Step { logits: Float32Array; loss: number; grads: HostWeights; updated: HostWeights }

async function step(weights: HostWeights, images: Float32Array, labels: Int32Array): Promise<Step> {
  const x = tf.tensor4d(images, [labels.length, 8, 8, 3]);
  const y = tf.tensor1d(labels, 'int32');
  const m = new TrainableVit(weights, SMALL, presetStrategy('full'));
  const logitsT = model.forward(m.params, x, SMALL);
  const logits = (await logitsT.data()) as Float32Array;
  const { loss, grads } = m.lossAndGrads(x, y, 0.1);
  const gradsHost = await toHost(grads);
  const opt = new AdamW(m.tuned, ADAMW_DEFAULTS);
  opt.apply(grads, 1e-2);
  const result = { logits, loss: (await loss.data())[0], grads: gradsHost, updated: await m.weights() };
  tf.dispose([x, y, logitsT, loss, ...grads.values()]);
  opt.dispose();
  m.dispose();
  return result;
}

/** Largest |a - b| relative to the largest |b| of each tensor, over all tensors. */
function worst(a: HostWeights, b: HostWeights): number {
  let w = 0;
  for (const [k, t] of b) {
    const scale = Math.max(1e-12, ...t.data.map(Math.abs));
    const o = a.get(k)!.data;
    for (let i = 0; i < t.data.length; i++) w = Math.max(w, Math.abs(o[i] - t.data[i]) / scale);
  }
  return w;
}

/** Runs the step on the cpu backend, then on `backend` (left current), and compares. */
export async function checkStepAgainstCpu(backend: string): Promise<StepCheck> {
  await tf.setBackend('cpu');
  const init = initParams(SMALL, 7);
  const weights = await toHost(init);
  tf.dispose([...init.values()]);
  const images = Float32Array.from({ length: 4 * 8 * 8 * 3 }, (_, i) => Math.sin(i * 0.37) * 1.5);
  const labels = Int32Array.from([0, 1, 2, 1]);
  const reference = await step(weights, images, labels);
  if (!(await tf.setBackend(backend))) throw new Error(`the ${backend} backend failed to start`);
  const ours = await step(weights, images, labels);
  const logitScale = Math.max(...reference.logits.map(Math.abs));
  return {
    backend,
    logits: Math.max(...ours.logits.map((v, i) => Math.abs(v - reference.logits[i]))) / logitScale,
    loss: Math.abs(ours.loss - reference.loss) / Math.abs(reference.loss),
    gradients: worst(ours.grads, reference.grads),
    updated: worst(ours.updated, reference.updated),
  };
}
