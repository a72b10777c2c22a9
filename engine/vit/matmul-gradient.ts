// BatchMatMul's gradient with explicit transposes for 2-D products. tfjs's stock gradient asks
// for transposed products, which the wasm backend runs in a scalar loop instead of XNNPACK (4x
// slower training); transposing first keeps them on the fast path. Batched products keep the
// flags: the batched kernel (kernels/) reads transposed operands itself. Same values, any backend.
import * as tf from '@tensorflow/tfjs';

/** matMul(x, y, tx, ty), untransposed when 2-D. */
const product = (x: tf.Tensor, y: tf.Tensor, tx: boolean, ty: boolean): tf.Tensor =>
  x.rank > 2 ? tf.matMul(x, y, tx, ty) : tf.matMul(tx ? tf.transpose(x) : x, ty ? tf.transpose(y) : y);

let registered = false;

export function registerMatMulGradient(): void {
  if (registered) return;
  registered = true;
  tf.registerGradient({
    kernelName: 'BatchMatMul',
    inputsToSave: ['a', 'b'],
    gradFunc: (dy, saved, attrs) => {
      const [a, b] = saved;
      const { transposeA, transposeB } = attrs as unknown as { transposeA: boolean; transposeB: boolean };
      const g = dy as tf.Tensor;
      if (!transposeA && !transposeB) return { a: () => product(g, b, false, true), b: () => product(a, g, true, false) };
      if (!transposeA && transposeB) return { a: () => product(g, b, false, false), b: () => product(g, a, true, false) };
      if (transposeA && !transposeB) return { a: () => product(b, g, false, true), b: () => product(a, g, false, false) };
      return { a: () => product(b, g, true, true), b: () => product(g, a, true, true) };
    },
  });
}
