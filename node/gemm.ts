// Node's host for the engine's GEMM: its threads are worker_threads, and relaxed SIMD (behind a
// V8 flag in Node 20, on by default in browsers) is switched on so that Node runs the same FMA
// build as a browser tab.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { Worker } from 'node:worker_threads';
import { GemmModule, SpawnGemmThread, installGemm } from '../engine';

// Compiled next to this file; under ts-jest, the build's copy.
const THREAD_SCRIPT = [join(__dirname, 'gemm-thread.js'), join(__dirname, '..', 'dist', 'node', 'gemm-thread.js')].find(existsSync);

export const spawnGemmThread: SpawnGemmThread = (init) => {
  if (!THREAD_SCRIPT) return Promise.reject(new Error('the GEMM thread script is not built (npm run build)'));
  const worker = new Worker(THREAD_SCRIPT);
  worker.unref();
  return new Promise((resolve, reject) => {
    worker.once('error', reject);
    worker.once('message', () => resolve());
    worker.postMessage(init);
  });
};

/** The wasm backend's products on the engine's GEMM with `threads` threads. */
export function installNodeGemm(threads: number, simd128Only = false): Promise<GemmModule> {
  setFlagsFromString('--experimental-wasm-relaxed-simd');
  return installGemm({ threads, spawn: spawnGemmThread, simd128Only });
}
