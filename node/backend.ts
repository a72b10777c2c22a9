// Picks the fastest TensorFlow.js backend this Node process can run, and says which and why.
// Optional backends are loaded only if installed: none of them is a hard dependency.
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { spawnSync } from 'node:child_process';
import { availableParallelism, cpus } from 'node:os';
import { installWasmKernels, kernelClass } from '../engine';
import { NativeBlasOptions, installNativeBlas } from '../native';
import { installNodeGemm } from './gemm';

// A Node process runs TensorFlow.js as a product: no debug checks, no advert for tfjs-node.
tf.enableProdMode();

export const BACKENDS = ['auto', 'tensorflow', 'webgpu', 'wasm', 'cpu'] as const;
export type BackendChoice = (typeof BACKENDS)[number];

export interface BackendInfo {
  readonly name: string;
  readonly detail: string;
  /** Results of one kernel class are bit-identical (engine/kernel-class.ts). */
  readonly kernelClass: string;
}

function tryRequire(name: string): boolean {
  try {
    require(name);
    return true;
  } catch {
    return false;
  }
}

async function loadTensorflow(): Promise<string | null> {
  for (const pkg of ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node']) {
    if (tryRequire(pkg) && (await tf.setBackend('tensorflow'))) return pkg;
  }
  return null;
}

/** A WebGPU adapter as Dawn describes it; software ones (SwiftShader, llvmpipe) are never chosen by `auto`. */
export interface WebgpuAdapter {
  readonly name: string;
  readonly software: boolean;
}

const SOFTWARE_ADAPTER = /swiftshader|llvmpipe|lavapipe|softpipe|software/i;

// In a child process: Dawn and the Vulkan loader write warnings straight to stderr, which a worker's log need not show.
const PROBE = `let gpu; try { gpu = require('webgpu'); } catch { process.stdout.write('null'); process.exit(0); }
gpu.create([]).requestAdapter().then((a) => { const i = (a && a.info) || {};
  process.stdout.write(JSON.stringify(a ? { name: [i.vendor, i.architecture, i.description].filter(Boolean).join(' ') || 'unnamed adapter',
    fallback: Boolean(a.isFallbackAdapter ?? i.isFallbackAdapter) } : null)); process.exit(0); }, () => { process.stdout.write('null'); process.exit(0); });`;

/** The adapter Dawn would give, probed quietly in a child process; null without the package or an adapter. */
export function probeWebgpu(): WebgpuAdapter | null {
  const probe = spawnSync(process.execPath, ['-e', PROBE], { cwd: __dirname, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 30_000 });
  try {
    const found = JSON.parse(probe.stdout || 'null') as { name: string; fallback: boolean } | null;
    return found && { name: found.name, software: found.fallback || SOFTWARE_ADAPTER.test(found.name) };
  } catch {
    return null;
  }
}

/** Loads tfjs's WebGPU backend on Dawn (the optional `webgpu` package) and describes its adapter. */
export async function loadWebgpu(): Promise<WebgpuAdapter> {
  let gpu: { create: (flags: string[]) => { requestAdapter(): Promise<{ info?: Record<string, unknown>; isFallbackAdapter?: boolean } | null> }; globals: object };
  try {
    gpu = require('webgpu');
    require.resolve('@tensorflow/tfjs-backend-webgpu');
  } catch {
    throw new Error("the webgpu backend needs the optional packages 'webgpu' and '@tensorflow/tfjs-backend-webgpu' (npm install them)");
  }
  if (!tf.findBackend('webgpu')) {
    Object.assign(globalThis, gpu.globals);
    Object.defineProperty(globalThis, 'navigator', { value: { gpu: gpu.create([]) }, configurable: true });
    require('@tensorflow/tfjs-backend-webgpu');
  }
  const adapter = await (globalThis as unknown as { navigator: { gpu: ReturnType<typeof gpu.create> } }).navigator.gpu.requestAdapter();
  if (!adapter || !(await tf.setBackend('webgpu'))) throw new Error('no WebGPU adapter found (is a Vulkan driver installed?)');
  const info = adapter.info ?? {};
  const name = [info.vendor, info.architecture, info.description].filter(Boolean).join(' ') || 'unnamed adapter';
  return { name, software: Boolean(adapter.isFallbackAdapter ?? info.isFallbackAdapter) || SOFTWARE_ADAPTER.test(name) };
}

/** The loaded WebGPU backend's description. Shaders round differently on each GPU: the adapter is part of the class. */
export async function webgpuInfo(adapter: WebgpuAdapter): Promise<BackendInfo> {
  return { name: 'webgpu', detail: `WebGPU on ${adapter.name} (Dawn via the webgpu package)`, kernelClass: await kernelClass(`dawn/${adapter.name}`) };
}

/** `native` applies to the wasm backend: its products on the machine's BLAS when one is found. */
export async function selectBackend(choice: BackendChoice = 'auto', native: NativeBlasOptions = {}): Promise<BackendInfo> {
  if (!BACKENDS.includes(choice)) throw new Error(`unknown backend '${choice}'; choose one of ${BACKENDS.join(', ')}`);
  if (choice === 'auto' || choice === 'tensorflow') {
    const pkg = await loadTensorflow();
    // Eigen picks its kernels by CPU: the model is part of the class.
    if (pkg) return { name: 'tensorflow', detail: `libtensorflow via ${pkg}`, kernelClass: await kernelClass(`${pkg}/${cpus()[0]?.model ?? 'cpu'}`) };
    if (choice === 'tensorflow') throw new Error('neither @tensorflow/tfjs-node-gpu nor @tensorflow/tfjs-node is installed');
  }
  if (choice === 'webgpu') return webgpuInfo(await loadWebgpu());
  if (choice === 'cpu') {
    await tf.setBackend('cpu');
    return { name: 'cpu', detail: 'pure JavaScript (slow; for reference)', kernelClass: await kernelClass() };
  }
  await installWasmKernels();
  const blasChoice = native.blas ?? process.env.PARTUNE_BLAS ?? 'auto';
  const blas = blasChoice === 'engine' ? ({ active: false, reason: 'the engine GEMM was asked for' } as const) : installNativeBlas(native);
  if (!blas.active && blasChoice !== 'off') {
    // The browser tabs' GEMM (2x XNNPACK's products): a Node worker on it computes in the tabs' kernel class.
    const threads = native.threads ?? availableParallelism();
    const gemm = await installNodeGemm(threads);
    if (!(await tf.setBackend('wasm'))) throw new Error('the wasm backend failed to start');
    await tf.ready();
    const why = blasChoice === 'engine' ? '' : `; native BLAS: ${blas.reason}`;
    return { name: 'wasm', detail: `WebAssembly (products on the engine GEMM, ${gemm.arithmetic}, ${threads} thread${threads > 1 ? 's' : ''}${why})`, kernelClass: await kernelClass(`gemm-${gemm.arithmetic}`) };
  }
  if (!(await tf.setBackend('wasm'))) throw new Error('the wasm backend failed to start');
  await tf.ready();
  const products = blas.active
    ? `products on ${blas.library.split(' ').slice(0, 2).join(' ')}, ${blas.threads} thread${blas.threads > 1 ? 's' : ''}`
    : 'XNNPACK + SIMD kernels; native BLAS turned off';
  // OpenBLAS's configuration names its build and the core it picked: both order the sums.
  const device = blas.active ? `blas:${blas.library}/t${blas.threads}` : undefined;
  return { name: 'wasm', detail: `WebAssembly (${products}), ${choice === 'auto' ? 'no tfjs-node installed' : 'requested'}`, kernelClass: await kernelClass(device) };
}
