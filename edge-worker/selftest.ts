// In-browser numerical check of the engine per backend (engine/train/check-step.ts: one training
// step against the cpu backend) and the training throughput of the micro ViT. Opened by the tests
// at /worker/selftest.html?backend=...; results land on window.partuneSelfTest.
import * as tf from '@tensorflow/tfjs';
import { checkStepAgainstCpu, measureTraining, preset, presetStrategy } from '../engine';
import { BrowserBackends } from './backend';

async function main(): Promise<void> {
  const params = new URLSearchParams(location.search);
  const backends = await BrowserBackends.open({
    forced: params.get('backend') ?? 'wasm', wasmPath: `${location.origin}/worker/wasm/`, threadScript: `${location.origin}/worker/gemm-thread.js`,
    products: params.get('products') === 'xnnpack' ? 'xnnpack' : 'gemm', storage: null,
  });
  const chosen = backends.current;
  const check = await checkStepAgainstCpu(chosen.name);
  const { imagesPerSecond } = await measureTraining(preset('vit_micro_patch4_28'), presetStrategy('attn-only'), { batchSize: 32, steps: 4, budgetMs: 3000 });
  (window as unknown as { partuneSelfTest: unknown }).partuneSelfTest = {
    ...check, detail: chosen.detail, kernelClass: chosen.kernelClass, imagesPerSecond,
    wasmThreadsSupported: await tf.env().getAsync('WASM_HAS_MULTITHREAD_SUPPORT'), crossOriginIsolated,
  };
}

main().catch((e: Error) => {
  (window as unknown as { partuneSelfTest: unknown }).partuneSelfTest = { error: e.message };
});
