// Replaces the wasm backend's BatchMatMul for batched operands (attention's q.k^T and attn.v,
// forward and backward) with the SIMD kernel of matmul.c: tfjs-wasm runs those in a scalar loop
// at 0.2-4 GFLOPS, the kernel at 15-19. Unbatched products keep the stock XNNPACK path.
import * as tf from '@tensorflow/tfjs';
import { KernelModule } from './module';
import { ProductPlan, WasmBackendInternals, overrideKernel, productPlan } from './override';

function run(k: KernelModule, a: Float32Array, b: Float32Array, out: Float32Array, p: ProductPlan, ta: boolean, tb: boolean): void {
  const scratch = k.exports.scratch_bytes(p.m, p.k, p.n);
  const aOff = k.reserve((a.length + b.length + out.length) * 4 + scratch);
  const bOff = aOff + a.length * 4;
  const outOff = bOff + b.length * 4;
  const scratchOff = outOff + out.length * 4;
  k.floats(aOff, a.length).set(a);
  k.floats(bOff, b.length).set(b);
  k.exports.batched_matmul(aOff, bOff, outOff, scratchOff, p.batch, p.m, p.k, p.n, ta ? 1 : 0, tb ? 1 : 0, p.aStride, p.bStride);
  out.set(k.floats(outOff, out.length));
}

export function registerBatchedMatMul(k: KernelModule): void {
  overrideKernel('BatchMatMul', 'wasm', (args) => {
    const { a, b } = args.inputs as { a: tf.TensorInfo; b: tf.TensorInfo };
    const { transposeA, transposeB } = args.attrs as unknown as { transposeA: boolean; transposeB: boolean };
    const plan = a.shape.length >= 3 ? productPlan(a, b, transposeA, transposeB) : null;
    if (!plan || plan.batch === 1) return null;
    const backend = args.backend as unknown as WasmBackendInternals;
    const out = backend.makeOutput([...plan.batchShape, plan.m, plan.n], 'float32');
    run(k, backend.typedArrayFromHeap(a), backend.typedArrayFromHeap(b), backend.typedArrayFromHeap(out), plan, transposeA, transposeB);
    return out;
  });
}
