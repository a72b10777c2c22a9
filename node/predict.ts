// Top-k classes of photos by a model: decoded images through the model's eval transform, a forward
// pass in batches, softmax. Shared by `partune predict` and the server's `predict` query.
import * as tf from '@tensorflow/tfjs';
import { HostWeights, Image8, VitConfig, evalTransform, inputTransform, model as vit, toDevice } from '../engine';

export interface Prediction {
  readonly label: number;
  readonly name: string;
  readonly probability: number;
}

export interface PredictModel {
  readonly config: VitConfig;
  readonly weights: HostWeights;
  readonly classNames?: readonly string[];
}

const BATCH = 16;

/** The model input of one photo: the eval transform, then the model's normalisation (none: 0.5). */
export function modelInput(img: Image8, config: VitConfig): Float32Array {
  const t = inputTransform(config);
  const x = evalTransform(img, t);
  const mean = config.preprocessing?.mean ?? Array(x.channels).fill(0.5);
  const std = config.preprocessing?.std ?? Array(x.channels).fill(0.5);
  const out = new Float32Array(x.data.length);
  for (let i = 0; i < out.length; i++) out[i] = (x.data[i] / 255 - mean[i % x.channels]) / std[i % x.channels];
  return out;
}

export async function predictImages(m: PredictModel, images: readonly Image8[], top = 5): Promise<Prediction[][]> {
  const S = m.config.imageSize;
  const C = m.config.channels;
  const params = toDevice(m.weights);
  const out: Prediction[][] = [];
  try {
    for (let b = 0; b < images.length; b += BATCH) {
      const part = images.slice(b, b + BATCH);
      const input = new Float32Array(part.length * S * S * C);
      part.forEach((img, i) => {
        if (img.channels !== C) throw new Error(`an image has ${img.channels} channels, the model takes ${C}`);
        input.set(modelInput(img, m.config), i * S * S * C);
      });
      const probs = tf.tidy(() => tf.softmax(vit.forward(params, tf.tensor4d(input, [part.length, S, S, C]), m.config)));
      const p = (await probs.data()) as Float32Array;
      probs.dispose();
      const K = m.config.numClasses;
      for (let i = 0; i < part.length; i++) {
        const row = Array.from(p.subarray(i * K, (i + 1) * K), (probability, label) => ({ label, probability }));
        row.sort((a, c) => c.probability - a.probability || a.label - c.label);
        out.push(row.slice(0, Math.min(top, K)).map((r) => ({ ...r, name: m.classNames?.[r.label] ?? String(r.label) })));
      }
    }
  } finally {
    tf.dispose([...params.values()]);
  }
  return out;
}
