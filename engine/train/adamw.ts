// AdamW (Loshchilov & Hutter 2019) with decoupled weight decay, matching torch.optim.AdamW:
//   p <- p - lr * wd * p;  m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
//   p <- p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
import * as tf from '@tensorflow/tfjs';
import { HostWeights } from '../weights/checkpoint';
import { decays } from '../vit/groups';

/** Moments by tensor name (PyTorch's exp_avg / exp_avg_sq) and the step count bias correction uses. */
export interface AdamWState {
  readonly step: number;
  readonly expAvg: HostWeights;
  readonly expAvgSq: HostWeights;
}

export interface AdamWOptions {
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
}

export const ADAMW_DEFAULTS: AdamWOptions = { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.05 };

export class AdamW {
  private readonly m = new Map<string, tf.Variable>();
  private readonly v = new Map<string, tf.Variable>();
  private t = 0;

  constructor(private readonly params: ReadonlyMap<string, tf.Variable>, private readonly opts: AdamWOptions = ADAMW_DEFAULTS, state?: AdamWState) {
    const moment = (p: tf.Variable, name: string, from?: HostWeights): tf.Variable => {
      const w = from?.get(name);
      if (from && !w) throw new Error(`optimizer state has no moment for '${name}'`);
      if (w && w.data.length !== p.size) throw new Error(`optimizer state for '${name}' has ${w.data.length} values, the tensor ${p.size}`);
      // tidy: the initial value is a tensor of its own beside the variable.
      return tf.tidy(() => tf.variable(w ? tf.tensor(w.data, p.shape, 'float32') : tf.zerosLike(p), false));
    };
    for (const [name, p] of params) {
      this.m.set(name, moment(p, name, state?.expAvg));
      this.v.set(name, moment(p, name, state?.expAvgSq));
    }
    this.t = state?.step ?? 0;
  }

  async state(): Promise<AdamWState> {
    const read = async (moments: Map<string, tf.Variable>): Promise<HostWeights> =>
      new Map(await Promise.all([...moments].map(async ([k, v]) => [k, { shape: [...v.shape] as number[], data: (await v.data()) as Float32Array }] as [string, { shape: number[]; data: Float32Array }])));
    return { step: this.t, expAvg: await read(this.m), expAvgSq: await read(this.v) };
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
