// A ViT prepared for partial fine-tuning: tuned tensors become variables, frozen ones stay plain
// tensors (never touched, so bit-identical), and the gradient tape starts at the first tuned
// block: the frozen prefix runs outside it, so none of its activations are kept for backward.
import * as tf from '@tensorflow/tfjs';
import { VitConfig } from '../vit/config';
import { blocks, classify, embed } from '../vit/model';
import { Inspection, Strategy, inspect } from '../tuning/strategy';
import { HostWeights, toHost } from '../weights/checkpoint';
import { registerMatMulGradient } from '../vit/matmul-gradient';

export class TrainableVit {
  readonly inspection: Inspection;
  /** Every parameter by timm name; the tuned ones are the variables in `tuned`. */
  readonly params: Map<string, tf.Tensor>;
  readonly tuned: Map<string, tf.Variable>;

  constructor(weights: HostWeights, readonly config: VitConfig, readonly strategy: Strategy) {
    registerMatMulGradient();
    this.inspection = inspect(strategy, config);
    const tunedNames = new Set(this.inspection.tuned);
    this.params = new Map();
    this.tuned = new Map();
    for (const [name, w] of weights) {
      const t = tf.tensor(w.data, w.shape, 'float32');
      if (tunedNames.has(name)) {
        const v = tf.variable(t, true);
        t.dispose();
        this.tuned.set(name, v);
        this.params.set(name, v);
      } else {
        this.params.set(name, t);
      }
    }
  }

  logits(images: tf.Tensor4D): tf.Tensor2D {
    return tf.tidy(() => classify(this.params, blocks(this.params, embed(this.params, images, this.config), this.config), this.config));
  }

  /** Tokens entering the first tuned block, computed without a tape (null: the tape starts at the embedding). */
  frozenPrefix(images: tf.Tensor4D): tf.Tensor3D | null {
    const start = this.inspection.gradientStart;
    if (start < 0) return null;
    return tf.tidy(() => blocks(this.params, embed(this.params, images, this.config), this.config, 0, start));
  }

  /** Mean loss and gradients of the tuned tensors, by name. The caller disposes both. */
  lossAndGrads(images: tf.Tensor4D, labels: tf.Tensor1D, labelSmoothing: number): { loss: tf.Scalar; grads: Map<string, tf.Tensor> } {
    const prefix = this.frozenPrefix(images);
    const start = Math.max(0, this.inspection.gradientStart);
    const byVariable = new Map([...this.tuned].map(([name, v]) => [v.name, name]));
    const { value, grads } = tf.variableGrads(() => {
      const tokens = prefix ?? embed(this.params, images, this.config);
      const out = classify(this.params, blocks(this.params, tokens, this.config, start), this.config);
      return crossEntropy(out, labels, labelSmoothing);
    }, [...this.tuned.values()]);
    prefix?.dispose();
    return { loss: value, grads: new Map(Object.entries(grads).map(([k, g]) => [byVariable.get(k)!, g])) };
  }

  /** Overwrites tuned tensors (e.g. after rounding onto a delta); frozen ones never change. */
  assignTuned(weights: HostWeights): void {
    for (const [name, v] of this.tuned) {
      const w = weights.get(name);
      if (!w) throw new Error(`no value for tuned tensor '${name}'`);
      tf.tidy(() => v.assign(tf.tensor(w.data, v.shape, 'float32')));
    }
  }

  weights(): Promise<HostWeights> {
    return toHost(this.params);
  }

  dispose(): void {
    for (const t of this.params.values()) t.dispose();
  }
}

/** Mean cross-entropy against labels smoothed towards uniform by `smoothing` (as torch's label_smoothing). */
export function crossEntropy(logits: tf.Tensor2D, labels: tf.Tensor1D, smoothing: number): tf.Scalar {
  return tf.tidy(() => {
    const K = logits.shape[1];
    const target = tf.add(tf.mul(tf.oneHot(labels, K), 1 - smoothing), smoothing / K);
    return tf.neg(tf.mean(tf.sum(tf.mul(target, tf.logSoftmax(logits)), 1))) as tf.Scalar;
  });
}
