// Puts the wasm backend's products (BatchMatMul, and _FusedMatMul with a bias and no activation)
// on the engine's GEMM: any rank, batch broadcast and transposition, so the layers skip their
// explicit transposes. What it cannot take falls back to the kernel it replaced.
import * as tf from '@tensorflow/tfjs';
import { declareTransposedProductsFast } from '../vit/products';
import { GemmModule } from './gemm-module';
import { WasmBackendInternals, overrideKernel, productPlan } from './override';

let products = 0;

/** Products the GEMM has run in this process. */
export const gemmProducts = (): number => products;

function product(g: GemmModule, backend: WasmBackendInternals, a: tf.TensorInfo, b: tf.TensorInfo, ta: boolean, tb: boolean, bias?: tf.TensorInfo): tf.TensorInfo | null {
  const plan = productPlan(a, b, ta, tb);
  if (!plan) return null;
  if (bias && (bias.dtype !== 'float32' || bias.shape.reduce((x, y) => x * y, 1) !== plan.n || bias.shape[bias.shape.length - 1] !== plan.n)) return null;
  const out = backend.makeOutput([...plan.batchShape, plan.m, plan.n], 'float32');
  // Views after makeOutput: allocating can grow (and replace) the backend's memory.
  g.product({ ...plan, ta, tb }, backend.typedArrayFromHeap(a), backend.typedArrayFromHeap(b), backend.typedArrayFromHeap(out), bias && backend.typedArrayFromHeap(bias));
  products++;
  return out;
}

export function registerGemmProducts(g: GemmModule): void {
  overrideKernel('BatchMatMul', 'wasm', (args) => {
    const { a, b } = args.inputs as { a: tf.TensorInfo; b: tf.TensorInfo };
    const { transposeA, transposeB } = args.attrs as unknown as { transposeA: boolean; transposeB: boolean };
    return product(g, args.backend as unknown as WasmBackendInternals, a, b, transposeA, transposeB);
  });
  overrideKernel('_FusedMatMul', 'wasm', (args) => {
    const { a, b, bias, preluActivationWeights } = args.inputs as Record<string, tf.TensorInfo | undefined>;
    const { transposeA, transposeB, activation } = args.attrs as unknown as { transposeA: boolean; transposeB: boolean; activation: string };
    if (activation !== 'linear' || preluActivationWeights) return null;
    return product(g, args.backend as unknown as WasmBackendInternals, a!, b!, transposeA, transposeB, bias);
  });
  declareTransposedProductsFast('wasm');
}
