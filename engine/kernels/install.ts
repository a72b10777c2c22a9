// Installs the C kernels into the wasm backend (idempotent): batched products and GELU.
import { registerBatchedMatMul } from './batched-matmul';
import { registerGeluWithSlope } from './gelu';
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
