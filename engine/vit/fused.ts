// Fused ops with hand-written gradients. Composed from primitives, LayerNorm, exact GELU and the
// attention core keep every intermediate alive on the gradient tape (several activations per
// op); as custom gradients they keep only what backward needs, which halves training memory and
// drops most elementwise kernels from the backward pass.
import * as tf from '@tensorflow/tfjs';

const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);

type Args = (tf.Tensor | tf.GradSaveFunc)[];

/**
 * Exact GELU, x * Phi(x). Saves its derivative Phi(x) + x * phi(x), computed alongside the
 * value (erf is costly on wasm: once per step instead of twice), so backward is one product.
 */
export const gelu = tf.customGrad((...args: Args) => {
  const [x, save] = args as [tf.Tensor, tf.GradSaveFunc];
  const [value, slope] = tf.tidy(() => {
    const cdf = tf.mul(tf.add(tf.erf(tf.mul(x, Math.SQRT1_2)), 1), 0.5);
    const pdf = tf.mul(tf.exp(tf.mul(tf.square(x), -0.5)), INV_SQRT_2PI);
    return [tf.mul(x, cdf), tf.add(cdf, tf.mul(x, pdf))];
  });
  save([slope]);
  return { value, gradFunc: (dy: tf.Tensor, [s]: tf.Tensor[]) => tf.mul(dy, s) };
}) as (x: tf.Tensor) => tf.Tensor;

/** Sums over rows, (N, D) -> (D), as a product with ones: a column reduction is a slow strided loop on wasm. */
export function columnSums(x: tf.Tensor2D): tf.Tensor1D {
  return tf.tidy(() => tf.reshape(tf.matMul(tf.ones([1, x.shape[0]]), x), [x.shape[1]]));
}

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
          return [tf.reshape(dx, dy.shape), columnSums(tf.mul(dy2, xh2) as tf.Tensor2D), columnSums(dy2 as tf.Tensor2D)];
        }),
    };
  }) as (a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) => tf.Tensor;
  return op(x, weight, bias);
}

/**
 * y = x W^T + b for x (N, in), W (out, in) as torch.nn.Linear; saves x and W. Every product is
 * 2-D and untransposed (the wasm backend's fast path): forward x (W^T), dx = dy W,
 * dW = (dy^T) x, db = sum(dy).
 */
export const linear = tf.customGrad((...args: Args) => {
  const [x, w, b, save] = args as [tf.Tensor2D, tf.Tensor2D, tf.Tensor1D, tf.GradSaveFunc];
  save([x, w]);
  return {
    value: tf.tidy(() => tf.fused.matMul({ a: x, b: tf.transpose(w), bias: b })),
    gradFunc: (dy: tf.Tensor, [xs, ws]: tf.Tensor[]) =>
      tf.tidy(() => [tf.matMul(dy as tf.Tensor2D, ws as tf.Tensor2D), tf.matMul(tf.transpose(dy as tf.Tensor2D), xs as tf.Tensor2D), columnSums(dy as tf.Tensor2D)]),
  };
}) as (x: tf.Tensor2D, w: tf.Tensor, b: tf.Tensor) => tf.Tensor2D;

/** linear without a bias (qkv of models built with qkv_bias=False). */
export const linearNoBias = tf.customGrad((...args: Args) => {
  const [x, w, save] = args as [tf.Tensor2D, tf.Tensor2D, tf.GradSaveFunc];
  save([x, w]);
  return {
    value: tf.tidy(() => tf.matMul(x, tf.transpose(w))),
    gradFunc: (dy: tf.Tensor, [xs, ws]: tf.Tensor[]) =>
      tf.tidy(() => [tf.matMul(dy as tf.Tensor2D, ws as tf.Tensor2D), tf.matMul(tf.transpose(dy as tf.Tensor2D), xs as tf.Tensor2D)]),
  };
}) as (x: tf.Tensor2D, w: tf.Tensor) => tf.Tensor2D;

/**
 * Multi-head attention core on token-major projections: q, k, v (B*T, heads*hd) -> (B*T, heads*hd),
 * softmax(scale q k^T) v per head. The head transposes happen inside, so only the per-head q, k,
 * v and the attention weights p are kept for backward: dv = p^T do, dp = do v^T,
 * ds = p * (dp - rowsum(dp * p)), dq = scale ds k, dk = scale ds^T q.
 */
export function attentionCore(q: tf.Tensor2D, k: tf.Tensor2D, v: tf.Tensor2D, batch: number, heads: number, headDim: number): tf.Tensor2D {
  const T = q.shape[0] / batch;
  const scale = headDim ** -0.5;
  const toHeads = (x: tf.Tensor): tf.Tensor4D => tf.transpose(tf.reshape(x, [batch, T, heads, headDim]), [0, 2, 1, 3]); // (B, heads, T, hd)
  const toTokens = (x: tf.Tensor): tf.Tensor2D => tf.reshape(tf.transpose(x, [0, 2, 1, 3]), [batch * T, heads * headDim]);
  const op = tf.customGrad((...args: Args) => {
    const [qIn, kIn, vIn, save] = args as [tf.Tensor, tf.Tensor, tf.Tensor, tf.GradSaveFunc];
    const [qh, kh, vh, p] = tf.tidy(() => {
      const [a, b, c] = [toHeads(qIn), toHeads(kIn), toHeads(vIn)];
      return [a, b, c, tf.softmax(tf.mul(tf.matMul(a, b, false, true), scale))];
    });
    save([qh, kh, vh, p]);
    return {
      value: tf.tidy(() => toTokens(tf.matMul(p, vh))),
      gradFunc: (dy: tf.Tensor, [qs, ks, vs, ps]: tf.Tensor[]) =>
        tf.tidy(() => {
          const dOut = toHeads(dy);
          const dv = tf.matMul(ps, dOut, true, false);
          const dp = tf.matMul(dOut, vs, false, true);
          const ds = tf.mul(tf.mul(ps, tf.sub(dp, tf.sum(tf.mul(dp, ps), -1, true))), scale);
          return [toTokens(tf.matMul(ds, ks)), toTokens(tf.matMul(ds, qs, true, false)), toTokens(dv)];
        }),
    };
  }) as (a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) => tf.Tensor2D;
  return op(q, k, v);
}
