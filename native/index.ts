// Node only: runs the wasm backend's matrix products (BatchMatMul, _FusedMatMul) on the machine's
// BLAS through a small N-API addon, in place on the wasm heap (no copies). On this kind of CPU
// OpenBLAS does 85-95 GFLOPS per core where XNNPACK's 128-bit SIMD does 12-21, and products are
// ~80% of a training step. Optional: without the built addon or a BLAS library, nothing changes.
import * as tf from '@tensorflow/tfjs';
import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { declareTransposedProductsFast, overrideKernel, productPlan } from '../engine';

interface Addon {
  open(path: string): string;
  setThreads(n: number): number;
  gemm(heap: Float32Array, batch: number, m: number, n: number, k: number, transposeA: number, transposeB: number,
    a: number, aStride: number, b: number, bStride: number, c: number, bias: number): void;
}

interface WasmBackendInternals {
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  dataIdMap: { get(id: tf.DataId): { memoryOffset: number } | undefined };
  wasm: { HEAPF32: Float32Array };
}

export interface NativeBlasOptions {
  /** 'auto' (OpenBLAS or Accelerate if present), 'off' (XNNPACK), or the path of a CBLAS shared library; default $PARTUNE_BLAS or 'auto'. ('engine', the engine's GEMM, is node/backend.ts's.) */
  readonly blas?: string;
  /** BLAS threads; default: every core. */
  readonly threads?: number;
}

export type NativeBlasStatus =
  | { readonly active: true; readonly library: string; readonly threads: number }
  | { readonly active: false; readonly reason: string };

const ADDON_PATHS = [
  join(__dirname, 'build', 'Release', 'partune_blas.node'),
  join(__dirname, '..', '..', 'native', 'build', 'Release', 'partune_blas.node'),
];

const LIBRARIES: Record<string, string[]> = {
  linux: ['libopenblas.so.0', 'libopenblas.so', 'libopenblasp.so.0'],
  darwin: ['/System/Library/Frameworks/Accelerate.framework/Accelerate', 'libopenblas.dylib', '/opt/homebrew/opt/openblas/lib/libopenblas.dylib'],
};

let addon: Addon | undefined;
let status: NativeBlasStatus | undefined;
let productsRun = 0;
let activeChoice: string | undefined;

/** Products run on the native BLAS so far in this process (the rest went to the wasm kernels). */
export const nativeProducts = (): number => productsRun;

function loadAddon(): Addon | string {
  const path = ADDON_PATHS.find((p) => existsSync(p));
  if (!path) return 'the native addon is not built (npm run build:native needs a C compiler)';
  return require(path) as Addon;
}

function openLibrary(a: Addon, choice: string): string | { error: string } {
  const candidates = choice === 'auto' ? (LIBRARIES[process.platform] ?? []) : [choice];
  const errors: string[] = [];
  for (const path of candidates) {
    try {
      return a.open(path);
    } catch (e) {
      errors.push((e as Error).message);
    }
  }
  return { error: choice === 'auto' ? `no BLAS library found (tried ${candidates.join(', ') || 'none on this platform'})` : errors[0] };
}

/** op(a) op(b) (+ bias) on the BLAS, or null where the plan or the bias is not one gemm can take. */
function product(backend: WasmBackendInternals, a: tf.TensorInfo, b: tf.TensorInfo, ta: boolean, tb: boolean, bias?: tf.TensorInfo): tf.TensorInfo | null {
  const plan = productPlan(a, b, ta, tb);
  if (!plan) return null;
  if (bias && (bias.dtype !== 'float32' || bias.shape.reduce((x, y) => x * y, 1) !== plan.n || bias.shape[bias.shape.length - 1] !== plan.n)) return null;
  const out = backend.makeOutput([...plan.batchShape, plan.m, plan.n], 'float32');
  const offset = (t: tf.TensorInfo): number => backend.dataIdMap.get(t.dataId)!.memoryOffset / 4;
  productsRun++;
  // Read the heap after makeOutput: allocation can grow (and replace) the wasm memory.
  addon!.gemm(backend.wasm.HEAPF32, plan.batch, plan.m, plan.n, plan.k, ta ? 1 : 0, tb ? 1 : 0,
    offset(a), plan.aStride, offset(b), plan.bStride, offset(out), bias ? offset(bias) : -1);
  return out;
}

function registerKernels(): void {
  overrideKernel('BatchMatMul', 'wasm', (args) => {
    const { a, b } = args.inputs as { a: tf.TensorInfo; b: tf.TensorInfo };
    const { transposeA, transposeB } = args.attrs as unknown as { transposeA: boolean; transposeB: boolean };
    return product(args.backend as unknown as WasmBackendInternals, a, b, transposeA, transposeB);
  });
  overrideKernel('_FusedMatMul', 'wasm', (args) => {
    const { a, b, bias, preluActivationWeights } = args.inputs as Record<string, tf.TensorInfo | undefined>;
    const { transposeA, transposeB, activation } = args.attrs as unknown as { transposeA: boolean; transposeB: boolean; activation: string };
    if (activation !== 'linear' || preluActivationWeights) return null;
    return product(args.backend as unknown as WasmBackendInternals, a!, b!, transposeA, transposeB, bias);
  });
}

/** Whether a native BLAS can be used ('auto' or a library path), without installing anything. */
export function probeNativeBlas(choice = 'auto'): { readonly library: string } | { readonly reason: string } {
  const loaded = loadAddon();
  if (typeof loaded === 'string') return { reason: loaded };
  const library = openLibrary(loaded, choice);
  return typeof library === 'string' ? { library } : { reason: library.error };
}

/**
 * Puts the wasm backend's products on a native BLAS (idempotent; later calls only change the
 * thread count). Call after the wasm backend is imported. Says whether it is active and why not.
 */
export function installNativeBlas(options: NativeBlasOptions = {}): NativeBlasStatus {
  const threads = options.threads ?? availableParallelism();
  if (!Number.isInteger(threads) || threads < 1) throw new Error(`threads must be a positive integer, got ${options.threads}`);
  const choice = options.blas ?? process.env.PARTUNE_BLAS ?? 'auto';
  if (status?.active) {
    if (choice !== 'auto' && choice !== activeChoice) throw new Error(`the native BLAS is already in use (${status.library}): start a new process to change it`);
    status = { ...status, threads: addon!.setThreads(threads) || threads };
    return status;
  }
  if (choice === 'off') return { active: false, reason: 'turned off' };
  const found = probeNativeBlas(choice);
  if ('reason' in found) {
    if (choice !== 'auto') throw new Error(`cannot use BLAS '${choice}': ${found.reason}`);
    return { active: false, reason: found.reason };
  }
  addon = loadAddon() as Addon;
  activeChoice = choice;
  registerKernels();
  declareTransposedProductsFast('wasm');
  status = { active: true, library: found.library, threads: addon.setThreads(threads) || threads };
  return status;
}
