// A Web Worker thread of the engine's GEMM (engine/kernels/gemm-threads.ts).
import { GemmThreadInit, runGemmThread } from '../engine';

self.onmessage = (e: MessageEvent<GemmThreadInit>): void => runGemmThread(e.data, () => self.postMessage('ready'));
