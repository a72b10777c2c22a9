// Installs the C kernels into the wasm backend (idempotent): batched products and GELU, and on
// request every product on the engine's GEMM.
import { registerBatchedMatMul } from './batched-matmul';
import { registerGeluWithSlope } from './gelu';
import { GemmModule, GemmOptions } from './gemm-module';
import { registerGemmProducts } from './gemm-products';
import { kernelModule } from './module';

let installed: Promise<void> | undefined;

/** Call after @tensorflow/tfjs-backend-wasm is imported; resolves once the kernels are in place. */
export function installWasmKernels(): Promise<void> {
  installed ??= kernelModule().then((k) => {
    registerBatchedMatMul(k);
    registerGeluWithSlope(k);
  });
  return installed;
}

let gemm: { options: string; module: Promise<GemmModule> } | undefined;

/**
 * Puts the wasm backend's products on the engine's GEMM (after installWasmKernels). Once per
 * process: a second call must ask for the same threads and build.
 */
export function installGemm(options: GemmOptions = {}): Promise<GemmModule> {
  const key = `${options.threads ?? 1}/${options.simd128Only ? 'simd128' : 'best'}`;
  if (gemm && gemm.options !== key) throw new Error(`the GEMM is already installed (${gemm.options}): start a new process to change it`);
  gemm ??= {
    options: key,
    module: GemmModule.create(options).then((g) => {
      registerGemmProducts(g);
      return g;
    }),
  };
  return gemm.module;
}
