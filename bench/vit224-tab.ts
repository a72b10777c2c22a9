// The browser side of the 224x224 bench: one training case (bench/vit224-case.ts) in a tab on
// WebAssembly with the products on the engine's GEMM, as the edge worker sets it up
// (edge-worker/backend.ts), bundled by bench/vit224-browser.ts. The result lands on window.partuneBench.
import * as tf from '@tensorflow/tfjs';
import { setThreadsCount, setWasmPaths } from '@tensorflow/tfjs-backend-wasm';
import { SpawnGemmThread, installGemm, installWasmKernels } from '../engine';
import { TrainCase, runTrainCase } from './vit224-case';

const spawn: SpawnGemmThread = (init) =>
  new Promise((resolve, reject) => {
    const worker = new Worker('/gemm-thread.js');
    worker.onerror = (e) => reject(new Error(`GEMM thread failed to start: ${e.message}`));
    worker.onmessage = () => resolve();
    worker.postMessage(init);
  });

async function main(): Promise<unknown> {
  const q = new URLSearchParams(location.search);
  const c = JSON.parse(q.get('case')!) as TrainCase;
  // Threads need SharedArrayBuffer, which only a cross-origin isolated page has.
  const threads = crossOriginIsolated ? Number(q.get('threads') ?? 1) : 1;
  setWasmPaths(`${location.origin}/wasm/`);
  await installWasmKernels();
  setThreadsCount(threads);
  const gemm = await installGemm({ threads, spawn });
  if (!(await tf.setBackend('wasm'))) throw new Error('the wasm backend failed to start');
  await tf.ready();
  const backend = `WebAssembly in a tab, products on the engine GEMM (${gemm.arithmetic}, ${gemm.threadCount} thread${gemm.threadCount > 1 ? 's' : ''})`;
  return { ...(await runTrainCase(c)), backend, threads: gemm.threadCount, crossOriginIsolated, userAgent: navigator.userAgent };
}

main().then(
  (r) => ((window as unknown as { partuneBench: unknown }).partuneBench = r),
  (e: Error) => ((window as unknown as { partuneBench: unknown }).partuneBench = { error: e.message }),
);
