// The browser's TensorFlow.js backend, chosen by measurement: for each model shape the tab times a
// few real training steps on every backend it has (WebGPU, WebGL, WebAssembly on the engine's
// GEMM with one thread per core) and takes the fastest, remembering the choice in localStorage. A
// software GPU (SwiftShader, llvmpipe: 15-170x slower than wasm) is never taken unless forced
// with `?backend=`.
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-webgpu';
import { getThreadsCount, setThreadsCount, setWasmPaths } from '@tensorflow/tfjs-backend-wasm';
import { type BackendTiming as EngineTiming, SpawnGemmThread, Strategy, VitConfig, fastestBackend, installGemm, installWasmKernels, kernelClass, modelShapeKey, timeBackends } from '../engine';

export type BrowserBackend = 'webgpu' | 'webgl' | 'wasm';
const NAMES: readonly BrowserBackend[] = ['webgpu', 'webgl', 'wasm'];

export interface BackendTiming extends EngineTiming {
  readonly backend: BrowserBackend;
}

export interface BackendState {
  readonly name: BrowserBackend;
  readonly detail: string;
  /** Results of one kernel class are bit-identical (engine/kernel-class.ts). */
  readonly kernelClass: string;
  /** The model shape the choice was measured on (engine/train/measure.ts), null before any. */
  readonly model: string | null;
  readonly timings: readonly BackendTiming[];
  readonly how: 'forced' | 'measured' | 'remembered' | 'only one';
}

interface Candidate {
  readonly name: BrowserBackend;
  readonly detail: string;
  /** Why `auto` never takes it, or null. */
  readonly software: string | null;
  readonly device?: string;
}

export interface BackendOptions {
  /** `?backend=`: this one, no measuring. */
  readonly forced: string | null;
  readonly wasmPath: string;
  /** `?products=`: the engine's GEMM (default) or tfjs's XNNPACK, to compare. */
  readonly products: 'gemm' | 'xnnpack';
  /** The GEMM thread script (gemm-thread.js). */
  readonly threadScript: string;
  /** WebAssembly threads (`?threads=`); default: every core where the page is cross-origin isolated, else 1. */
  readonly threads?: number;
  /** localStorage, where the choices are remembered; null to measure every time. */
  readonly storage: Storage | null;
}

const SOFTWARE = /swiftshader|llvmpipe|lavapipe|softpipe|software|basic render/i;
const CACHE_PREFIX = 'partune.backend.v1:';

const spawnWebWorker = (script: string): SpawnGemmThread => (init) => new Promise((resolve, reject) => {
  const worker = new Worker(script);
  worker.onerror = (e) => reject(new Error(`GEMM thread failed to start: ${e.message}`));
  worker.onmessage = () => resolve();
  worker.postMessage(init);
});

interface GpuAdapter { isFallbackAdapter?: boolean; info?: { vendor?: string; architecture?: string; description?: string; isFallbackAdapter?: boolean } }

async function webgpuCandidate(): Promise<Candidate | null> {
  const gpu = (navigator as unknown as { gpu?: { requestAdapter(): Promise<GpuAdapter | null> } }).gpu;
  const adapter = gpu ? await gpu.requestAdapter().catch(() => null) : null;
  if (!adapter) return null;
  const info = adapter.info ?? {};
  const name = [info.vendor, info.architecture, info.description].filter(Boolean).join(' ') || 'unnamed adapter';
  const fallback = adapter.isFallbackAdapter ?? info.isFallbackAdapter ?? false;
  const software = fallback ? `a fallback adapter (${name})` : SOFTWARE.test(name) ? `a software adapter (${name})` : null;
  return { name: 'webgpu', detail: `WebGPU on ${name}`, software, device: name };
}

function webglCandidate(): Candidate | null {
  const gl = document.createElement('canvas').getContext('webgl2') ?? document.createElement('canvas').getContext('webgl');
  if (!gl) return null;
  const info = gl.getExtension('WEBGL_debug_renderer_info');
  const renderer = (info ? String(gl.getParameter(info.UNMASKED_RENDERER_WEBGL)) : '') || 'unnamed_gpu';
  return { name: 'webgl', detail: `WebGL on ${renderer}`, software: SOFTWARE.test(renderer) ? `a software renderer (${renderer})` : null, device: renderer };
}

async function wasmCandidate(o: BackendOptions): Promise<Candidate> {
  setWasmPaths(o.wasmPath);
  await installWasmKernels();
  // Threads need SharedArrayBuffer, which only a cross-origin isolated page has.
  const cores = Math.max(1, navigator.hardwareConcurrency || 1);
  const threads = crossOriginIsolated ? Math.min(o.threads ?? cores, cores) : 1;
  setThreadsCount(threads); // tfjs's XNNPACK pool (it still reports 1 in Chromium here; the GEMM takes the products anyway)
  let products = 'XNNPACK';
  let device: string | undefined;
  if (o.products === 'gemm') {
    const gemm = await installGemm({ threads, spawn: spawnWebWorker(o.threadScript) });
    products = `engine GEMM (${gemm.arithmetic}, ${gemm.threadCount} thread${gemm.threadCount > 1 ? 's' : ''})`;
    device = `gemm-${gemm.arithmetic}`;
  }
  const isolation = crossOriginIsolated ? '' : '; one thread: the page is not cross-origin isolated';
  return { name: 'wasm', detail: `WebAssembly, products on ${products}${isolation}`, software: null, device };
}

async function use(c: Candidate): Promise<void> {
  if (!(await tf.setBackend(c.name).catch(() => false))) throw new Error(`the ${c.name} backend failed to start`);
  await tf.ready();
}

async function classOf(c: Candidate): Promise<string> {
  return kernelClass(c.device);
}

export class BrowserBackends {
  private state: BackendState;

  private constructor(private readonly o: BackendOptions, private readonly candidates: Candidate[], first: Candidate, firstClass: string) {
    const how = o.forced ? 'forced' : candidates.filter((c) => !c.software).length === 1 ? 'only one' : 'measured';
    this.state = { name: first.name, detail: this.describe(first), kernelClass: firstClass, model: null, timings: this.untimed(), how };
  }

  static async open(o: BackendOptions): Promise<BrowserBackends> {
    if (o.forced && !NAMES.includes(o.forced as BrowserBackend)) throw new Error(`unknown backend '${o.forced}' (webgpu, webgl or wasm)`);
    const found = [await webgpuCandidate(), webglCandidate(), await wasmCandidate(o)].filter((c): c is Candidate => c !== null);
    const usable = o.forced ? found.filter((c) => c.name === o.forced) : found.filter((c) => !c.software);
    if (usable.length === 0) throw new Error(o.forced ? `the ${o.forced} backend is not available in this browser` : 'no TensorFlow.js backend works in this browser');
    // Until a model is measured: wasm, the one that never disappoints on a CPU.
    const first = usable.find((c) => c.name === 'wasm') ?? usable[0];
    await use(first);
    return new BrowserBackends(o, found, first, await classOf(first));
  }

  get current(): BackendState {
    return this.state;
  }

  /** The backend for a model: forced, remembered, or measured now; switches tfjs to it. */
  async forModel(config: VitConfig, strategy: Strategy, batchSize: number): Promise<BackendState> {
    const model = modelShapeKey(config, strategy, batchSize);
    if (this.state.model === model) return this.state;
    const usable = this.o.forced ? this.candidates.filter((c) => c.name === this.o.forced) : this.candidates.filter((c) => !c.software);
    const key = `${CACHE_PREFIX}${model}|${usable.map((c) => c.detail).join('|')}`;
    const remembered = this.remembered(key);
    let timings: BackendTiming[];
    const how: BackendState['how'] = this.o.forced ? 'forced' : remembered ? 'remembered' : usable.length === 1 ? 'only one' : 'measured';
    const names = usable.map((c) => c.name);
    if (remembered) {
      timings = remembered;
    } else {
      timings = await timeBackends(this.untimed(), names, (name) => use(usable.find((c) => c.name === name)!), config, strategy, batchSize);
      this.o.storage?.setItem(key, JSON.stringify(timings));
    }
    const chosen = usable.find((c) => c.name === fastestBackend(timings, names))!;
    await use(chosen);
    this.state = { name: chosen.name, detail: this.describe(chosen), kernelClass: await classOf(chosen), model, timings, how };
    return this.state;
  }

  private describe(c: Candidate): string {
    if (c.name !== 'wasm') return c.detail;
    const tfjsThreads = getThreadsCount(); // throws until the wasm backend has started
    return `${c.detail}; tfjs ops on ${tfjsThreads} thread${tfjsThreads > 1 ? 's' : ''}`;
  }

  private untimed(): BackendTiming[] {
    return this.candidates.map((c) => ({
      backend: c.name, detail: c.detail, imagesPerSecond: null,
      note: this.o.forced && c.name !== this.o.forced ? `not used: ?backend=${this.o.forced}` : c.software && !this.o.forced ? `never chosen: ${c.software}` : 'not measured yet',
    }));
  }

  private remembered(key: string): BackendTiming[] | null {
    try {
      const value = this.o.storage?.getItem(key);
      const timings = value ? (JSON.parse(value) as BackendTiming[]) : null;
      return Array.isArray(timings) && timings.every((t) => NAMES.includes(t.backend)) ? timings : null;
    } catch {
      return null;
    }
  }
}
