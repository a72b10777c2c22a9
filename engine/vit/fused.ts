// Fused ops with hand-written gradients. Composed from primitives, LayerNorm, exact GELU and the
// attention core keep every intermediate alive on the gradient tape (several activations per
// op); as custom gradients they keep only what backward needs, which halves training memory and
// drops most elementwise kernels from the backward pass.
import * as tf from '@tensorflow/tfjs';

const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);

type Args = (tf.Tensor | tf.GradSaveFunc)[];

/** Exact GELU, x * Phi(x); saves x only. d/dx = Phi(x) + x * phi(x). */
export const gelu = tf.customGrad((...args: Args) => {
  const [x, save] = args as [tf.Tensor, tf.GradSaveFunc];
  save([x]);
  return {
    value: tf.tidy(() => tf.mul(tf.mul(x, 0.5), tf.add(tf.erf(tf.mul(x, Math.SQRT1_2)), 1))),
    gradFunc: (dy: tf.Tensor, [saved]: tf.Tensor[]) =>
      tf.tidy(() => {
        const cdf = tf.mul(tf.add(tf.erf(tf.mul(saved, Math.SQRT1_2)), 1), 0.5);
        const pdf = tf.mul(tf.exp(tf.mul(tf.square(saved), -0.5)), INV_SQRT_2PI);
        return tf.mul(dy, tf.add(cdf, tf.mul(saved, pdf)));
      }),
  };
}) as (x: tf.Tensor) => tf.Tensor;

/**
 * LayerNorm over the last axis; saves the normalised input and 1/std. With g = dy * w:
 * dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), dw = sum(dy * xhat), db = sum(dy).
 */
export function layerNorm(x: tf.Tensor, weight: tf.Tensor, bias: tf.Tensor, eps: number): tf.Tensor {
  const op = tf.customGrad((...args: Args) => {
    const [xIn, w, b, save] = args as [tf.Tensor, tf.Tensor, tf.Tensor, tf.GradSaveFunc];
    const [xhat, rstd] = tf.tidy(() => {
      const { mean, variance } = tf.moments(xIn, -1, true);
      const r = tf.rsqrt(tf.add(variance, eps));
      return [tf.mul(tf.sub(xIn, mean), r), r];
    });
    save([xhat, rstd, w]);
    return {
      value: tf.tidy(() => tf.add(tf.mul(xhat, w), b)),
      gradFunc: (dy: tf.Tensor, [xh, r, wSaved]: tf.Tensor[]) =>
        tf.tidy(() => {
          const rows = dy.size / dy.shape[dy.rank - 1];
          const dy2 = tf.reshape(dy, [rows, -1]);
          const xh2 = tf.reshape(xh, [rows, -1]);
          const g = tf.mul(dy2, wSaved);
          const meanG = tf.mean(g, -1, true);
          const meanGx = tf.mean(tf.mul(g, xh2), -1, true);
          const dx = tf.mul(tf.sub(tf.sub(g, meanG), tf.mul(xh2, meanGx)), tf.reshape(r, [rows, 1]));
          return [tf.reshape(dx, dy.shape), tf.sum(tf.mul(dy2, xh2), 0), tf.sum(dy2, 0)];
        }),
    };
  }) as (a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) => tf.Tensor;
  return op(x, weight, bias);
}

/**
 * softmax(q k^T) v for (B, heads, T, hd) operands, q already scaled; saves q, k, v and the
 * attention weights p. Backward: dv = p^T do, dp = do v^T, ds = p * (dp - rowsum(dp * p)),
 * dq = ds k, dk = ds^T q.
 */
export const attentionCore = tf.customGrad((...args: Args) => {
  const [q, k, v, save] = args as [tf.Tensor, tf.Tensor, tf.Tensor, tf.GradSaveFunc];
  const p = tf.tidy(() => tf.softmax(tf.matMul(q, k, false, true)));
  save([q, k, v, p]);
  return {
    value: tf.tidy(() => tf.matMul(p, v)),
    gradFunc: (dOut: tf.Tensor, [qs, ks, vs, ps]: tf.Tensor[]) =>
      tf.tidy(() => {
        const dv = tf.matMul(ps, dOut, true, false);
        const dp = tf.matMul(dOut, vs, false, true);
        const ds = tf.mul(ps, tf.sub(dp, tf.sum(tf.mul(dp, ps), -1, true)));
        return [tf.matMul(ds, ks), tf.matMul(ds, qs, true, false), dv];
      }),
  };
}) as (q: tf.Tensor, k: tf.Tensor, v: tf.Tensor) => tf.Tensor;
