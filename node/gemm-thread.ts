// A worker_threads thread of the engine's GEMM (engine/kernels/gemm-threads.ts).
import { parentPort } from 'node:worker_threads';
import { GemmThreadInit, runGemmThread } from '../engine';

parentPort!.once('message', (init: GemmThreadInit) => runGemmThread(init, () => parentPort!.postMessage('ready')));
