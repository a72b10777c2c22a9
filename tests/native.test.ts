// The native BLAS path for the wasm backend (native/): every product it takes over against the
// pure-JavaScript cpu backend, the ViT's gradients and the prefix-cache losses with it, and bad input.
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Dataset, LoopControls, TrainSummary, TrainableVit, initParams, installWasmKernels, parseVitConfig, presetStrategy, toHost, train } from '../engine';
import { installNativeBlas, nativeProducts, probeNativeBlas } from '../native';
import { TOY } from './helpers';
import { itUnless } from './support/skip';

const ADDON = join(__dirname, '..', 'native', 'build', 'Release', 'partune_blas.node');

async function on(backend: 'cpu' | 'wasm', f: () => tf.Tensor): Promise<Float32Array> {
  await tf.setBackend(backend);
  const t = f();
  const out = (await t.data()) as Float32Array;
  t.dispose();
  return out;
}

const filled = (shape: number[], f: (i: number) => number): tf.Tensor => tf.tensor(Float32Array.from({ length: shape.reduce((x, y) => x * y, 1) }, (_, i) => f(i)), shape);
const maxError = (a: Float32Array, b: Float32Array): number => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);

describe('native BLAS options', () => {
  it('says why it is inactive instead of failing', () => {
    expect(installNativeBlas({ blas: 'off' })).toEqual({ active: false, reason: 'turned off' });
    expect(() => installNativeBlas({ threads: 0 })).toThrow('threads must be a positive integer');
  });

  itUnless(existsSync(ADDON) ? undefined : `${ADDON} is not built (npm run build:native)`)('rejects a library that is not a CBLAS with the loader\'s reason', () => {
    expect(() => installNativeBlas({ blas: '/nonexistent/libblas.so' })).toThrow(/cannot use BLAS '\/nonexistent\/libblas.so': .*No such file/);
    expect(() => installNativeBlas({ blas: 'libc.so.6' })).toThrow(/libc.so.6 has no cblas_sgemm/);
  });
});

const blas = probeNativeBlas();

describe('native BLAS for the wasm backend', () => {
  if ('reason' in blas) {
    it.skip(`skipped: no native BLAS (${blas.reason})`, () => undefined);
    process.stderr.write(`[skip] native BLAS: ${blas.reason}\n`);
    return;
  }

  beforeAll(async () => {
    await installWasmKernels();
    expect(installNativeBlas({ threads: 1 })).toEqual({ active: true, library: blas.library, threads: 1 });
    await tf.setBackend('wasm');
    await tf.ready();
  });

  it('refuses operands outside the heap instead of reading or writing past it', () => {
    const gemm = (require(ADDON) as { gemm: (...args: unknown[]) => void }).gemm;
    const heap = new Float32Array(100);
    expect(() => gemm(heap, 1, 5, 5, 5, 0, 0, 0, 0, 25, 0, 50, -1)).not.toThrow();
    expect(() => gemm(heap, 1, 5, 5, 5, 0, 0, 0, 0, 25, 0, 80, -1)).toThrow('gemm: operands outside the heap');
    expect(() => gemm(heap, 2, 5, 5, 5, 0, 0, 0, 25, 60, 25, 0, -1)).toThrow('gemm: operands outside the heap');
    expect(() => gemm(heap, 1, 5, 5, 5, 0, 0, 0, 0, 25, 0, 50, 98)).toThrow('gemm: operands outside the heap');
    expect(() => gemm(new Float64Array(100), 1, 5, 5, 5, 0, 0, 0, 0, 25, 0, 50, -1)).toThrow('gemm: heap must be a Float32Array');
  });

  it('cannot be switched to another library once in use', () => {
    expect(() => installNativeBlas({ blas: 'off' })).toThrow(/already in use .*start a new process/);
  });
  // [name, a shape, b shape, transposeA, transposeB]; odd sizes so a wrong leading dimension shows.
  const products: [string, number[], number[], boolean, boolean][] = [
    ['2-D', [37, 19], [19, 23], false, false],
    ['2-D, b transposed (x W^T)', [37, 19], [23, 19], false, true],
    ['2-D, a transposed (dy^T x)', [19, 37], [19, 23], true, false],
    ['2-D, both transposed', [19, 37], [23, 19], true, true],
    ['batched (attention scores)', [2, 3, 13, 7], [2, 3, 9, 7], false, true],
    ['batched, a broadcast', [1, 5, 6], [4, 6, 3], false, false],
    ['batched, b broadcast, a transposed', [4, 6, 5], [1, 6, 3], true, false],
    ['a vector times a matrix', [1, 300], [300, 17], false, false],
  ];
  for (const [name, sa, sb, ta, tb] of products) {
    it(`${name} matches the cpu backend`, async () => {
      const f = (): tf.Tensor => tf.matMul(filled(sa, (i) => Math.sin(i * 1.3)), filled(sb, (i) => Math.cos(i * 0.7)), ta, tb);
      const ref = await on('cpu', f);
      const before = nativeProducts();
      const got = await on('wasm', f);
      expect(nativeProducts()).toBe(before + 1);
      expect(got.length).toBe(ref.length);
      expect(maxError(got, ref)).toBeLessThan(1e-4);
    });
  }

  it('a fused product with bias matches, and one with an activation falls back correctly', async () => {
    const x = (): tf.Tensor2D => filled([33, 10], (i) => Math.sin(i)) as tf.Tensor2D;
    const w = (): tf.Tensor2D => filled([10, 7], (i) => Math.cos(i * 0.3)) as tf.Tensor2D;
    const bias = (): tf.Tensor => filled([7], (i) => i - 3);
    for (const activation of ['linear', 'relu'] as const) {
      const f = (): tf.Tensor => tf.fused.matMul({ a: x(), b: w(), bias: bias(), activation });
      const before = nativeProducts();
      expect(maxError(await on('wasm', f), await on('cpu', f))).toBeLessThan(1e-5);
      expect(nativeProducts() - before).toBe(activation === 'linear' ? 1 : 0);
    }
  });

  it('products keep working after the wasm heap grows', async () => {
    const big = tf.zeros([64, 1024, 1024]); // 256 MiB: the heap must grow, replacing its buffer
    const f = (): tf.Tensor => tf.matMul(filled([40, 30], (i) => i % 7), filled([30, 20], (i) => i % 5));
    expect(maxError(await on('wasm', f), await on('cpu', f))).toBe(0);
    big.dispose();
  });

  it('gives the ViT the same loss and gradients as the cpu backend', async () => {
    const grads = async (backend: 'cpu' | 'wasm'): Promise<[number, Map<string, Float32Array>]> => {
      await tf.setBackend(backend);
      const m = new TrainableVit(await toHost(initParams(TOY, 2)), TOY, presetStrategy('full'));
      const x = tf.randomNormal([4, 8, 8, 3], 0, 1, 'float32', 5) as tf.Tensor4D;
      const y = tf.tensor1d([0, 1, 2, 0], 'int32');
      const r = m.lossAndGrads(x, y, 0.1);
      const loss = (await r.loss.data())[0];
      const out = new Map([...r.grads].map(([k, g]) => [k, g.dataSync() as Float32Array]));
      tf.dispose([x, y, r.loss, ...r.grads.values()]);
      m.dispose();
      return [loss, out];
    };
    const [cpuLoss, cpu] = await grads('cpu');
    const before = nativeProducts();
    const [wasmLoss, wasm] = await grads('wasm');
    expect(nativeProducts() - before).toBeGreaterThan(20);
    expect(Math.abs(wasmLoss - cpuLoss)).toBeLessThan(1e-5);
    expect([...wasm.keys()].sort()).toEqual([...cpu.keys()].sort());
    for (const [k, g] of cpu) {
      const scale = g.reduce((s, v) => Math.max(s, Math.abs(v)), 0);
      expect([k, maxError(wasm.get(k)!, g) <= 1e-4 * scale + 1e-7]).toEqual([k, true]);
    }
  });

  // OpenBLAS's edge micro-kernels make a row's result depend on its position in the batch (measured
  // on Haswell kernels), and cached rows were computed in other batches: equal to float rounding.
  it('trains last-half to the same losses, to float rounding, with and without the prefix cache', async () => {
    const c = parseVitConfig({ ...TOY, depth: 4 });
    const n = 40;
    const images = Uint8Array.from({ length: n * 8 * 8 * 3 }, (_, i) => (i * 37 + Math.floor(i / 192) * 80) % 256);
    const data: Dataset = { name: 'toy', images, labels: Uint8Array.from({ length: n }, (_, i) => i % 3), count: n, height: 8, width: 8, channels: 3, classes: 3, flipInvariant: true };
    const losses = async (controls: LoopControls): Promise<{ losses: number[]; summary: TrainSummary }> => {
      const m = new TrainableVit(await toHost(initParams(c, 6)), c, presetStrategy('last-half'));
      const out: number[] = [];
      const run = train(m, { train: data, normalization: { mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25] } },
        { epochs: 3, batchSize: 8, lr: 1e-2, seed: 2 }, controls);
      let next = await run.next();
      for (; !next.done; next = await run.next()) if (next.value.kind === 'step') out.push(next.value.loss);
      m.dispose();
      return { losses: out, summary: next.value };
    };
    const before = nativeProducts();
    const plain = await losses({});
    expect(nativeProducts()).toBeGreaterThan(before);
    const cached = await losses({ prefixCache: { maxBytes: 1 << 30, dtype: 'f32' } });
    expect(cached.summary.prefixCache).toMatchObject({ misses: 40, hits: 80 }); // epochs 2 and 3 train from the cache
    expect(cached.losses).toHaveLength(plain.losses.length);
    const worst = Math.max(...cached.losses.map((l, i) => Math.abs(l - plain.losses[i]) / Math.abs(plain.losses[i])));
    expect(worst).toBeLessThan(1e-6);
  });
});
