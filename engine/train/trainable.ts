// A ViT prepared for partial fine-tuning: tuned tensors become variables, frozen ones stay plain
// tensors (never touched, so bit-identical), and the gradient tape starts at the first tuned
// block: the frozen prefix runs outside it, so none of its activations are kept for backward.
import * as tf from '@tensorflow/tfjs';
import { VitConfig } from '../vit/config';
import { blocks, classify, embed, head, pool } from '../vit/model';
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

  /**
   * What the frozen part of the network makes of the images, computed without a tape: the
   * tokens entering the first tuned block, the pooled features when no block is tuned, or null
   * when the gradient reaches the embeddings.
   */
  frozenPrefix(images: tf.Tensor4D): tf.Tensor | null {
    const start = this.inspection.gradientStart;
    if (start < 0) return null;
    return tf.tidy(() => {
      const tokens = blocks(this.params, embed(this.params, images, this.config), this.config, 0, start);
      return start === this.config.depth ? pool(tokens, this.config) : tokens;
    });
  }

  /** Mean loss and gradients of the tuned tensors, by name. The caller disposes both. */
  lossAndGrads(images: tf.Tensor4D, labels: tf.Tensor1D, labelSmoothing: number): { loss: tf.Scalar; grads: Map<string, tf.Tensor> } {
    const prefix = this.frozenPrefix(images);
    try {
      return this.lossAndGradsFrom(prefix ?? images, labels, labelSmoothing);
    } finally {
      prefix?.dispose();
    }
  }

  /** As lossAndGrads, from what `frozenPrefix` returned (or the images when it returned null). */
  lossAndGradsFrom(input: tf.Tensor, labels: tf.Tensor1D, labelSmoothing: number): { loss: tf.Scalar; grads: Map<string, tf.Tensor> } {
    const start = this.inspection.gradientStart;
    const { params, config } = this;
    const byVariable = new Map([...this.tuned].map(([name, v]) => [v.name, name]));
    const { value, grads } = tf.variableGrads(() => {
      let out: tf.Tensor2D;
      if (start < 0) out = classify(params, blocks(params, embed(params, input as tf.Tensor4D, config), config), config);
      else if (start < config.depth) out = classify(params, blocks(params, input as tf.Tensor3D, config, start), config);
      else out = head(params, input as tf.Tensor2D, config);
      return crossEntropy(out, labels, labelSmoothing);
    }, [...this.tuned.values()]);
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
