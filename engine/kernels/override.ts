// What the product kernels share: replacing a backend's kernel while keeping the replaced one as
// the fallback, and the shape analysis of a (batched, broadcast, transposed) product.
import * as tf from '@tensorflow/tfjs';

export interface WasmBackendInternals {
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  typedArrayFromHeap(t: tf.TensorInfo): Float32Array;
}

type KernelArgs = Parameters<tf.KernelFunc>[0];

/** Runs `take` instead of the registered kernel; where it returns null, the replaced kernel runs. */
export function overrideKernel(kernelName: string, backendName: string, take: (args: KernelArgs) => tf.TensorInfo | null): void {
  const replaced = tf.getKernel(kernelName, backendName);
  if (!replaced) throw new Error(`no ${kernelName} kernel on '${backendName}': import its backend first`);
  tf.unregisterKernel(kernelName, backendName);
  tf.registerKernel({ ...replaced, kernelFunc: (args) => take(args) ?? replaced.kernelFunc(args) });
}

/** out (batch..., m, n) = op(a) op(b); strides in elements between batch items, 0 broadcasts one matrix. */
export interface ProductPlan {
  readonly batchShape: number[];
  readonly batch: number;
  readonly m: number;
  readonly k: number;
  readonly n: number;
  readonly aStride: number;
  readonly bStride: number;
}

const size = (shape: readonly number[]): number => shape.reduce((x, y) => x * y, 1);

/** The plan for float32 operands of one rank whose batch dims are equal or 1 on one side; else null. */
export function productPlan(a: tf.TensorInfo, b: tf.TensorInfo, transposeA: boolean, transposeB: boolean): ProductPlan | null {
  const r = a.shape.length;
  if (a.dtype !== 'float32' || b.dtype !== 'float32' || b.shape.length !== r || r < 2) return null;
  const batchA = size(a.shape.slice(0, -2));
  const batchB = size(b.shape.slice(0, -2));
  const sameBatch = a.shape.slice(0, -2).every((d, i) => d === b.shape[i]);
  if (!sameBatch && batchA !== 1 && batchB !== 1) return null;
  const m = transposeA ? a.shape[r - 1] : a.shape[r - 2];
  const k = transposeA ? a.shape[r - 2] : a.shape[r - 1];
  const n = transposeB ? b.shape[r - 2] : b.shape[r - 1];
  if (k !== (transposeB ? b.shape[r - 1] : b.shape[r - 2]) || m * k * n === 0) return null;
  return {
    batchShape: (batchA >= batchB ? a : b).shape.slice(0, -2), batch: Math.max(batchA, batchB), m, k, n,
    aStride: batchA > 1 ? m * k : 0, bStride: batchB > 1 ? k * n : 0,
  };
}
