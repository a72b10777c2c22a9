// The ViT's layers as fused ops with hand-written gradients. Composed from primitives, a linear
// layer, LayerNorm, GELU or attention keeps every intermediate alive on the gradient tape until
// backward ends; as custom gradients they keep only what backward needs (peak memory at width 192:
// 3.2 GB -> 1.2 GB) and skip weight-gradient products for frozen weights.
import * as tf from '@tensorflow/tfjs';
import { geluWithSlope } from '../kernels/gelu';
import { columnSum, linearProduct, product } from './products';

type Args = (tf.Tensor | tf.GradSaveFunc)[];

/**
 * Weight gradients are computed only for tensors being tuned (trainable variables): a custom
 * gradient must return one for every input, and for frozen weights zeros cost a fill instead of
 * a product (this is what makes attn-only or ffn-only cheaper than full per step). Pass the
 * forward's own input: saved tensors are clones, never variables.
 */
const weightGrad = (w: tf.Tensor, grad: () => tf.Tensor): tf.Tensor =>
  w instanceof tf.Variable && w.trainable ? grad() : tf.zerosLike(w);

/**
 * LayerNorm over the last axis. Saves the input (alive anyway: it is the residual stream) and
 * per-row mean and 1/std, and recomputes xhat in backward. With g = dy * w:
 * dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), dw = sum(dy * xhat), db = sum(dy).
 */
export function layerNorm(x: tf.Tensor, weight: tf.Tensor, bias: tf.Tensor, eps: number): tf.Tensor {
  const op = tf.customGrad((...args: Args) => {
    const [xIn, w, bIn, save] = args as [tf.Tensor, tf.Tensor, tf.Tensor, tf.GradSaveFunc];
    const [mean, rstd] = tf.tidy(() => {
      const m = tf.moments(xIn, -1, true);
      return [m.mean, tf.rsqrt(tf.add(m.variance, eps))];
    });
    save([xIn, mean, rstd, w]);
    return {
      value: tf.tidy(() => tf.add(tf.mul(tf.mul(tf.sub(xIn, mean), rstd), w), bIn)),
      gradFunc: (dy: tf.Tensor, [xs, m, r, wSaved]: tf.Tensor[]) =>
        tf.tidy(() => {
          const rows = dy.size / dy.shape[dy.rank - 1];
          const dy2 = tf.reshape(dy, [rows, -1]);
          const xh2 = tf.reshape(tf.mul(tf.sub(xs, m), r), [rows, -1]);
          const g = tf.mul(dy2, wSaved);
          const meanG = tf.mean(g, -1, true);
          const meanGx = tf.mean(tf.mul(g, xh2), -1, true);
          const dx = tf.mul(tf.sub(tf.sub(g, meanG), tf.mul(xh2, meanGx)), tf.reshape(r, [rows, 1]));
          return [tf.reshape(dx, dy.shape), weightGrad(w, () => columnSum(tf.mul(dy2, xh2))), weightGrad(bIn, () => columnSum(dy2))];
        }),
    };
  }) as (a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) => tf.Tensor;
  return op(x, weight, bias);
}

/**
 * y = x W^T + b for x (N, in), W (out, in) as torch.nn.Linear; saves x and W.
 * dx = dy W, dW = dy^T x, db = column sums of dy.
 */
export const linear = tf.customGrad((...args: Args) => {
  const [x, w, b, save] = args as [tf.Tensor2D, tf.Tensor2D, tf.Tensor1D, tf.GradSaveFunc];
  save([x, w]);
  return {
    value: tf.tidy(() => linearProduct(x, w, b)),
    gradFunc: (dy: tf.Tensor, [xs, ws]: tf.Tensor[]) =>
      tf.tidy(() => [
        tf.matMul(dy as tf.Tensor2D, ws as tf.Tensor2D),
        weightGrad(w, () => product(dy, xs, true, false)),
        weightGrad(b, () => columnSum(dy)),
      ]),
  };
}) as (x: tf.Tensor2D, w: tf.Tensor, b: tf.Tensor) => tf.Tensor2D;

/**
 * gelu(x W^T + b) in one op: the pre-activation never outlives the forward; saves x, W and the
 * GELU slope. dz = dy * slope, then as linear.
 */
export const linearGelu = tf.customGrad((...args: Args) => {
  const [x, w, b, save] = args as [tf.Tensor2D, tf.Tensor2D, tf.Tensor1D, tf.GradSaveFunc];
  const [value, slope] = tf.tidy(() => geluWithSlope(linearProduct(x, w, b)));
  save([x, w, slope]);
  return {
    value,
    gradFunc: (dy: tf.Tensor, [xs, ws, s]: tf.Tensor[]) =>
      tf.tidy(() => {
        const dz = tf.mul(dy, s) as tf.Tensor2D;
        return [tf.matMul(dz, ws as tf.Tensor2D), weightGrad(w, () => product(dz, xs, true, false)), weightGrad(b, () => columnSum(dz))];
      }),
  };
}) as (x: tf.Tensor2D, w: tf.Tensor, b: tf.Tensor) => tf.Tensor2D;

/**
 * Multi-head self-attention up to (not including) the output projection, in one op:
 * x (B*T, D), the fused qkv weight (3I, D) and bias (3I) -> softmax(scale q k^T) v as (B*T, I).
 * The projections and head transposes live inside, so backward keeps only x, the weight, the
 * per-head q, k, v and the attention weights p:
 *   dv = p^T do, dp = do v^T, ds = scale p * (dp - rowsum(dp * p)), dq = ds k, dk = ds^T q,
 *   then dx = sum_j dy_j W_j, dW_j = dy_j^T x, db_j = sum(dy_j) over j in {q, k, v}.
 */
export function selfAttention(x: tf.Tensor2D, weight: tf.Tensor, bias: tf.Tensor | undefined, batch: number, heads: number, headDim: number): tf.Tensor2D {
  const T = x.shape[0] / batch;
  const I = heads * headDim;
  const D = x.shape[1];
  const scale = headDim ** -0.5;
  const toHeads = (t: tf.Tensor): tf.Tensor4D => tf.transpose(tf.reshape(t, [batch, T, heads, headDim]), [0, 2, 1, 3]); // (B, heads, T, hd)
  const toTokens = (t: tf.Tensor): tf.Tensor2D => tf.reshape(tf.transpose(t, [0, 2, 1, 3]), [batch * T, I]);
  // Row slices of the fused weight are contiguous (cheap); splitting activations is not.
  const rows = (w: tf.Tensor, j: number): tf.Tensor2D => tf.slice(w as tf.Tensor2D, [j * I, 0], [I, D]);
  const op = tf.customGrad((...args: Args) => {
    const save = args[args.length - 1] as tf.GradSaveFunc;
    const [xIn, w] = args as tf.Tensor[];
    const b = bias ? (args[2] as tf.Tensor) : undefined;
    const [qh, kh, vh, p] = tf.tidy(() => {
      const project = (j: number): tf.Tensor4D => toHeads(linearProduct(xIn as tf.Tensor2D, rows(w, j), b && tf.slice(b, [j * I], [I])));
      const [q, k, v] = [project(0), project(1), project(2)];
      return [q, k, v, tf.softmax(tf.mul(tf.matMul(q, k, false, true), scale))];
    });
    save([xIn, w, qh, kh, vh, p]);
    return {
      value: tf.tidy(() => toTokens(tf.matMul(p, vh))),
      gradFunc: (dy: tf.Tensor, [xs, ws, qs, ks, vs, ps]: tf.Tensor[]) =>
        tf.tidy(() => {
          const dOut = toHeads(dy);
          const dp = tf.matMul(dOut, vs, false, true);
          const ds = tf.mul(tf.mul(ps, tf.sub(dp, tf.sum(tf.mul(dp, ps), -1, true))), scale);
          const dProj = [toTokens(tf.matMul(ds, ks)), toTokens(tf.matMul(ds, qs, true, false)), toTokens(tf.matMul(ps, dOut, true, false))];
          const dx = tf.addN(dProj.map((d, j) => tf.matMul(d, rows(ws, j))));
          const dw = weightGrad(w, () => tf.concat(dProj.map((d) => product(d, xs, true, false)), 0));
          return b ? [dx, dw, weightGrad(b, () => tf.concat(dProj.map((d) => columnSum(d)), 0))] : [dx, dw];
        }),
    };
  }) as (...t: tf.Tensor[]) => tf.Tensor2D;
  return bias ? op(x, weight, bias) : op(x, weight);
}
