// In-browser numerical check of the engine per backend: one training step of a small ViT (forward
// logits, loss, every gradient, the AdamW-updated weights) on webgpu / webgl / wasm against the
// cpu backend, and the training throughput of the micro ViT. Opened by the tests at
// /worker/selftest.html; results land on window.partuneSelfTest.
import * as tf from '@tensorflow/tfjs';
import { AdamW, ADAMW_DEFAULTS, HostWeights, TrainableVit, initParams, model, parseVitConfig, preset, presetStrategy, toHost } from '../engine';
import { chooseBackend } from './backend';

const SMALL = parseVitConfig({
  imageSize: 8, channels: 3, patchSize: 4, dim: 12, depth: 2, heads: 2, headDim: 5, mlpDim: 20,
  activation: 'gelu', qkvBias: true, pool: 'cls', layerNormEps: 1e-6, numClasses: 3,
});

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

async function throughput(): Promise<number> {
  const config = preset('vit_micro_patch4_28');
  const init = initParams(config, 1);
  const weights = await toHost(init);
  tf.dispose([...init.values()]);
  const m = new TrainableVit(weights, config, presetStrategy('attn-only'));
  const opt = new AdamW(m.tuned, ADAMW_DEFAULTS);
  const x = tf.randomUniform([32, 28, 28, 1]) as tf.Tensor4D;
  const y = tf.tensor1d(Array.from({ length: 32 }, (_, i) => i % 10), 'int32');
  const run = async (): Promise<void> => {
    const { loss, grads } = m.lossAndGrads(x, y, 0.1);
    opt.apply(grads, 1e-3);
    await loss.data();
    tf.dispose([loss, ...grads.values()]);
  };
  await run(); // shader compilation / warm-up
  let steps = 0;
  const t0 = performance.now();
  while (steps < 2 || performance.now() - t0 < 3000) {
    await run();
    steps++;
  }
  const ips = (steps * 32) / ((performance.now() - t0) / 1000);
  tf.dispose([x, y]);
  opt.dispose();
  m.dispose();
  return ips;
}

async function main(): Promise<void> {
  const backend = new URLSearchParams(location.search).get('backend') ?? 'wasm';
  const wasm = `${location.origin}/worker/wasm/`;
  await chooseBackend('wasm', wasm); // registers the wasm kernels before any switching
  await tf.setBackend('cpu');
  const init = initParams(SMALL, 7);
  const weights = await toHost(init);
  tf.dispose([...init.values()]);
  const images = Float32Array.from({ length: 4 * 8 * 8 * 3 }, (_, i) => Math.sin(i * 0.37) * 1.5);
  const labels = Int32Array.from([0, 1, 2, 1]);
  const reference = await step(weights, images, labels);
  const chosen = await chooseBackend(backend, wasm);
  const ours = await step(weights, images, labels);
  const logitScale = Math.max(...reference.logits.map(Math.abs));
  (window as unknown as { partuneSelfTest: unknown }).partuneSelfTest = {
    backend: chosen.name, detail: chosen.detail,
    logits: Math.max(...ours.logits.map((v, i) => Math.abs(v - reference.logits[i]))) / logitScale,
    loss: Math.abs(ours.loss - reference.loss) / Math.abs(reference.loss),
    gradients: worst(ours.grads, reference.grads),
    updated: worst(ours.updated, reference.updated),
    imagesPerSecond: await throughput(),
  };
}

main().catch((e: Error) => {
  (window as unknown as { partuneSelfTest: unknown }).partuneSelfTest = { error: e.message };
});
