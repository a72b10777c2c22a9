// The browser bench page: training img/s (and memory per step) of one model shape in this tab, on
// a forced backend (default wasm) with the products on XNNPACK or the engine's GEMM and a chosen
// thread count. Driven by bench/browser-bench.ts and bench/gpu-check.ts; the result lands on
// window.partuneBench.
import { measureTraining, parseStrategy, parseVitConfig } from '../engine';
import { BrowserBackends } from './backend';

async function main(): Promise<unknown> {
  const q = new URLSearchParams(location.search);
  const backends = await BrowserBackends.open({
    forced: q.get('backend') ?? 'wasm', wasmPath: `${location.origin}/worker/wasm/`, threadScript: `${location.origin}/worker/gemm-thread.js`,
    products: q.get('products') === 'xnnpack' ? 'xnnpack' : 'gemm', threads: Number(q.get('threads') ?? 1), storage: null,
  });
  const config = parseVitConfig(JSON.parse(q.get('config')!));
  const strategy = parseStrategy(q.get('strategy')!);
  const batchSize = Number(q.get('batch') ?? 32);
  const measured = await measureTraining(config, strategy, { batchSize, steps: Number(q.get('steps') ?? 3), budgetMs: 60_000, memory: true });
  return { ...measured, detail: backends.current.detail, kernelClass: backends.current.kernelClass, hardwareConcurrency: navigator.hardwareConcurrency, crossOriginIsolated };
}

main().then((r) => {
  (window as unknown as { partuneBench: unknown }).partuneBench = r;
  document.getElementById('out')!.textContent = JSON.stringify(r, null, 2);
}, (e: Error) => {
  (window as unknown as { partuneBench: unknown }).partuneBench = { error: e.message };
});
