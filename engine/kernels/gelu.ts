// Exact GELU and its slope, Phi(x) + x phi(x), in one kernel: fc1 + GELU needs both in forward
// (the slope is what backward keeps). On wasm the SIMD kernel of gelu.c replaces eleven
// elementwise passes with scalar erf and exp; other backends compose it from tfjs ops.
import * as tf from '@tensorflow/tfjs';
import { KernelModule } from './module';
import { WasmBackendInternals } from './override';

export const GELU_WITH_SLOPE = 'PartuneGeluWithSlope';
const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);

function composed(x: tf.Tensor): [tf.Tensor, tf.Tensor] {
  return tf.tidy(() => {
    const cdf = tf.mul(tf.add(tf.erf(tf.mul(x, Math.SQRT1_2)), 1), 0.5);
    const pdf = tf.mul(tf.exp(tf.mul(tf.square(x), -0.5)), INV_SQRT_2PI);
    return [tf.mul(x, cdf), tf.add(cdf, tf.mul(x, pdf))];
  });
}

/** [gelu(x), gelu'(x)] with exact (erf) GELU, on whatever backend is active. */
export function geluWithSlope(x: tf.Tensor): [tf.Tensor, tf.Tensor] {
  if (x.dtype !== 'float32' || !tf.getKernel(GELU_WITH_SLOPE, tf.getBackend())) return composed(x);
  return tf.engine().runKernel(GELU_WITH_SLOPE, { x }, {}) as unknown as [tf.Tensor, tf.Tensor];
}

export function registerGeluWithSlope(k: KernelModule): void {
  tf.registerKernel({
    kernelName: GELU_WITH_SLOPE,
    backendName: 'wasm',
    kernelFunc: (args) => {
      const { x } = args.inputs as { x: tf.TensorInfo };
      const backend = args.backend as unknown as WasmBackendInternals;
      const input = backend.typedArrayFromHeap(x);
      const n = input.length;
      const padded = Math.ceil(n / 4) * 4;
      const xOff = k.reserve(padded * 12);
      const yOff = xOff + padded * 4;
      const slopeOff = yOff + padded * 4;
      k.floats(xOff, n).set(input);
      k.exports.gelu_with_slope(xOff, yOff, slopeOff, padded);
      const y = backend.makeOutput([...x.shape], 'float32');
      const slope = backend.makeOutput([...x.shape], 'float32');
      backend.typedArrayFromHeap(y).set(k.floats(yOff, n));
      backend.typedArrayFromHeap(slope).set(k.floats(slopeOff, n));
      return [y, slope];
    },
  });
}
