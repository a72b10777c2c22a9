// The browser's TensorFlow.js backend: WebGPU when the browser gives an adapter, else WebGL, else
// WebAssembly (with the engine's SIMD batched-matmul kernel). `?backend=` forces one.
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-webgpu';
import { setWasmPaths } from '@tensorflow/tfjs-backend-wasm';
import { installWasmKernels, kernelClass } from '../engine';

export type BrowserBackend = 'webgpu' | 'webgl' | 'wasm';

export interface ChosenBackend {
  readonly name: BrowserBackend;
  readonly detail: string;
  /** Results of one kernel class are bit-identical (engine/kernel-class.ts). */
  readonly kernelClass: string;
}

/** The GPU behind WebGL, when the browser names it: shaders round differently on each. */
function webglRenderer(): string {
  const gl = (tf.backend() as unknown as { gpgpu?: { gl?: WebGLRenderingContext } }).gpgpu?.gl;
  const info = gl?.getExtension('WEBGL_debug_renderer_info');
  return (info && gl ? String(gl.getParameter(info.UNMASKED_RENDERER_WEBGL)) : '') || 'unnamed_gpu';
}

async function adapterName(): Promise<string | null> {
  const gpu = (navigator as unknown as { gpu?: { requestAdapter(): Promise<{ info?: { vendor?: string; architecture?: string; description?: string } } | null> } }).gpu;
  if (!gpu) return null;
  const adapter = await gpu.requestAdapter().catch(() => null);
  if (!adapter) return null;
  const info = adapter.info ?? {};
  return [info.vendor, info.architecture, info.description].filter(Boolean).join(' ') || 'unnamed adapter';
}

export async function chooseBackend(forced: string | null, wasmPath: string): Promise<ChosenBackend> {
  setWasmPaths(wasmPath);
  const order: BrowserBackend[] = forced ? [forced as BrowserBackend] : ['webgpu', 'webgl', 'wasm'];
  for (const name of order) {
    if (!['webgpu', 'webgl', 'wasm'].includes(name)) throw new Error(`unknown backend '${name}' (webgpu, webgl or wasm)`);
    if (name === 'webgpu') {
      const adapter = await adapterName();
      if (!adapter) continue;
      if (await tf.setBackend('webgpu').catch(() => false)) return { name, detail: `WebGPU on ${adapter}`, kernelClass: await kernelClass(adapter) };
    } else if (name === 'webgl') {
      if (await tf.setBackend('webgl').catch(() => false)) {
        // WebGL may compute in 16-bit floats (e.g. SwiftShader): say so, it bounds the precision.
        const detail = `WebGL ${tf.env().getNumber('WEBGL_VERSION')}, ${tf.env().getBool('WEBGL_RENDER_FLOAT32_ENABLED') ? '32' : '16'}-bit float`;
        return { name, detail, kernelClass: await kernelClass(webglRenderer()) };
      }
    } else {
      await installWasmKernels();
      if (await tf.setBackend('wasm').catch(() => false)) {
        await tf.ready();
        return { name, detail: `WebAssembly${crossOriginIsolated ? ', threads possible' : ''} (XNNPACK + SIMD kernels)`, kernelClass: await kernelClass() };
      }
    }
  }
  throw new Error(forced ? `the ${forced} backend is not available in this browser` : 'no TensorFlow.js backend works in this browser');
}
