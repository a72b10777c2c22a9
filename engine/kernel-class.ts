// A worker's kernel class: the name under which its results must be bit-identical to another
// worker's. It names the backend and whatever changes the order of float operations under it: the
// wasm SIMD flag, the BLAS (its build and core, with threads), the GPU adapter. Computed once, after
// the backend is chosen; the caller adds what only its platform knows (`device`).
import * as tf from '@tensorflow/tfjs';

/** Letters, digits and `.:_/+-` (spaces become `_`), at most 120 characters. */
export const KERNEL_CLASS_PATTERN = /^[a-z0-9][a-z0-9.:_/+-]{0,119}$/;

const clean = (s: string): string => s.toLowerCase().replace(/\s+/g, '_').replace(/[^a-z0-9.:_/+-]/g, '');

/**
 * `device`: what computes the products when the backend does not (a native BLAS, e.g.
 * `blas:openblas_0.3.21_..._zen/t2`) or the GPU it runs on (`nvidia_ampere`).
 */
export async function kernelClass(device?: string): Promise<string> {
  const backend = tf.getBackend();
  let name: string;
  if (backend === 'wasm') {
    const simd = await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT');
    name = device ? `wasm-${device}` : `wasm-xnnpack${simd ? '-simd' : ''}`;
  } else if (backend === 'webgl') {
    const bits = tf.env().getBool('WEBGL_RENDER_FLOAT32_ENABLED') ? 32 : 16;
    name = `webgl${tf.env().getNumber('WEBGL_VERSION')}-f${bits}${device ? `:${device}` : ''}`;
  } else {
    name = `${backend}${device ? `:${device}` : ''}`;
  }
  return clean(name).slice(0, 120);
}
