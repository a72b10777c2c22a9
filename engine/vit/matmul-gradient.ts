// BatchMatMul's gradient through products.ts. tfjs's stock gradient asks for transposed
// products, which the wasm backend runs in a scalar loop instead of XNNPACK (4x slower training)
// unless it has a native BLAS; products.ts transposes first where needed. Batched products keep
// the flags: the batched kernel (kernels/) reads transposed operands itself. Same values, any backend.
import * as tf from '@tensorflow/tfjs';
import { product } from './products';

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
