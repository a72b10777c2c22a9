// How the layers ask for 2-D products and column sums. tfjs-wasm's fast path (XNNPACK) takes
// only untransposed operands: a transposed product falls to a scalar loop, so by default an
// operand is transposed explicitly first. A backend whose products read transposed operands at
// full speed (the wasm backend on a native BLAS) declares it and skips those copies.
import * as tf from '@tensorflow/tfjs';

// tfjs's WebGPU matMul programs read transposed operands themselves.
const fastTransposed = new Set<string>(['webgpu']);

/** From now on, products on `backend` take transposed operands directly. */
export function declareTransposedProductsFast(backend: string): void {
  fastTransposed.add(backend);
}

const direct = (): boolean => fastTransposed.has(tf.getBackend());

/** op(a) op(b) for 2-D operands, op = transpose when the flag is set. */
export function product(a: tf.Tensor, b: tf.Tensor, ta = false, tb = false): tf.Tensor2D {
  if (direct() || a.rank > 2) return tf.matMul(a as tf.Tensor2D, b as tf.Tensor2D, ta, tb);
  return tf.matMul((ta ? tf.transpose(a) : a) as tf.Tensor2D, (tb ? tf.transpose(b) : b) as tf.Tensor2D);
}

/** x W^T + bias for x (N, in) and W (out, in), as torch.nn.Linear. */
export function linearProduct(x: tf.Tensor2D, w: tf.Tensor, bias?: tf.Tensor): tf.Tensor2D {
  const transposed = direct();
  return tf.fused.matMul({ a: x, b: (transposed ? w : tf.transpose(w)) as tf.Tensor2D, transposeB: transposed, bias }) as tf.Tensor2D;
}

/** Sums over the rows of a 2-D tensor, as a product with ones: tfjs-wasm's Sum over axis 0 transposes first (4-7x slower). */
export function columnSum(x: tf.Tensor): tf.Tensor1D {
  const [rows, cols] = x.shape;
  return tf.reshape(tf.matMul(tf.ones([1, rows]), x as tf.Tensor2D), [cols]);
}
