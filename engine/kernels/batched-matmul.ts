// Replaces the wasm backend's BatchMatMul for batched operands (attention's q.k^T and attn.v,
// forward and backward) with the SIMD kernel of matmul.c: tfjs-wasm runs those in a scalar loop
// at 0.2-4 GFLOPS, the kernel at 15-19. Unbatched products keep the stock XNNPACK path.
import * as tf from '@tensorflow/tfjs';
import { KernelModule } from './module';

export interface WasmBackendInternals {
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  typedArrayFromHeap(t: tf.TensorInfo): Float32Array;
}

const size = (shape: readonly number[]): number => shape.reduce((x, y) => x * y, 1);

/** out (batch, m, n) = op(a) x op(b); a stride of 0 broadcasts a batch-1 operand. */
function run(k: KernelModule, a: Float32Array, b: Float32Array, out: Float32Array, batch: number, m: number, kk: number, n: number, ta: boolean, tb: boolean): void {
  const scratch = k.exports.scratch_bytes(m, kk, n);
  const aOff = k.reserve((a.length + b.length + out.length) * 4 + scratch);
  const bOff = aOff + a.length * 4;
  const outOff = bOff + b.length * 4;
  const scratchOff = outOff + out.length * 4;
  k.floats(aOff, a.length).set(a);
  k.floats(bOff, b.length).set(b);
  const aStride = a.length === m * kk ? 0 : m * kk;
  const bStride = b.length === kk * n ? 0 : kk * n;
  k.exports.batched_matmul(aOff, bOff, outOff, scratchOff, batch, m, kk, n, ta ? 1 : 0, tb ? 1 : 0, aStride, bStride);
  out.set(k.floats(outOff, out.length));
}

export function registerBatchedMatMul(k: KernelModule): void {
  const stock = tf.getKernel('BatchMatMul', 'wasm');
  if (!stock) throw new Error('the wasm backend is not loaded: import @tensorflow/tfjs-backend-wasm first');
  tf.unregisterKernel('BatchMatMul', 'wasm');
  tf.registerKernel({
    ...stock,
    kernelFunc: (args) => {
      const { a, b } = args.inputs as { a: tf.TensorInfo; b: tf.TensorInfo };
      const { transposeA, transposeB } = args.attrs as unknown as { transposeA: boolean; transposeB: boolean };
      const ra = a.shape.length;
      const rb = b.shape.length;
      const batchA = size(a.shape.slice(0, -2));
      const batchB = size(b.shape.slice(0, -2));
      const sameBatch = a.shape.slice(0, -2).every((d, i) => d === b.shape[i]);
      const broadcastable = sameBatch || batchA === 1 || batchB === 1;
      if (ra !== rb || ra < 3 || Math.max(batchA, batchB) === 1 || !broadcastable || a.dtype !== 'float32' || b.dtype !== 'float32') {
        return stock.kernelFunc(args);
      }
      const m = transposeA ? a.shape[ra - 1] : a.shape[ra - 2];
      const kk = transposeA ? a.shape[ra - 2] : a.shape[ra - 1];
      const n = transposeB ? b.shape[rb - 2] : b.shape[rb - 1];
      const batchShape = (batchA >= batchB ? a : b).shape.slice(0, -2);
      const backend = args.backend as unknown as WasmBackendInternals;
      const out = backend.makeOutput([...batchShape, m, n], 'float32');
      run(k, backend.typedArrayFromHeap(a), backend.typedArrayFromHeap(b), backend.typedArrayFromHeap(out), size(batchShape), m, kk, n, transposeA, transposeB);
      return out;
    },
  });
}
