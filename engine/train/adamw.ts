// AdamW (Loshchilov & Hutter 2019) with decoupled weight decay, matching torch.optim.AdamW:
//   p <- p - lr * wd * p;  m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
//   p <- p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
import * as tf from '@tensorflow/tfjs';

export interface AdamWOptions {
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
}

export const ADAMW_DEFAULTS: AdamWOptions = { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.05 };

/** The usual rule: no decay on norms, biases (1-D tensors) and the cls/position tokens. */
export const decays = (name: string, shape: readonly number[]): boolean =>
  shape.length >= 2 && name !== 'cls_token' && name !== 'pos_embed';

export class AdamW {
  private readonly m = new Map<string, tf.Variable>();
  private readonly v = new Map<string, tf.Variable>();
  private t = 0;

  constructor(private readonly params: ReadonlyMap<string, tf.Variable>, private readonly opts: AdamWOptions = ADAMW_DEFAULTS) {
    for (const [name, p] of params) {
      this.m.set(name, tf.variable(tf.zerosLike(p), false));
      this.v.set(name, tf.variable(tf.zerosLike(p), false));
    }
  }

  get step(): number {
    return this.t;
  }

  apply(grads: ReadonlyMap<string, tf.Tensor>, lr: number): void {
    this.t++;
    const { beta1, beta2, eps, weightDecay } = this.opts;
    const c1 = 1 - beta1 ** this.t;
    const c2 = 1 - beta2 ** this.t;
    for (const [name, p] of this.params) {
      const g = grads.get(name);
      if (!g) throw new Error(`no gradient for tuned tensor '${name}'`);
      tf.tidy(() => {
        const m = this.m.get(name)!;
        const v = this.v.get(name)!;
        const mNew = tf.add(tf.mul(m, beta1), tf.mul(g, 1 - beta1));
        const vNew = tf.add(tf.mul(v, beta2), tf.mul(tf.square(g), 1 - beta2));
        m.assign(mNew);
        v.assign(vNew);
        const decayed = decays(name, p.shape) && weightDecay > 0 ? tf.mul(p, 1 - lr * weightDecay) : p;
        const update = tf.div(tf.div(mNew, c1), tf.add(tf.sqrt(tf.div(vNew, c2)), eps));
        p.assign(tf.sub(decayed, tf.mul(update, lr)));
      });
    }
  }

  dispose(): void {
    for (const t of [...this.m.values(), ...this.v.values()]) t.dispose();
  }
}
