// The engine's wasm GEMM (engine/kernels/gemm.c): every product shape the ViT asks for against a
// float64 reference, the same bits on 1 and 2 threads, the FMA build's arithmetic named, and a
// training step on it against the pure-JavaScript cpu backend.
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { GemmModule, TrainableVit, gemmProducts, initParams, installWasmKernels, kernelClass, presetStrategy, toHost } from '../engine';
import { installNodeGemm, spawnGemmThread } from '../node/gemm';
import { TOY } from './helpers';

interface Case { batch: number; m: number; k: number; n: number; ta: boolean; tb: boolean; aStride?: number; bStride?: number; bias?: boolean }

const CASES: [string, Case][] = [
  ['2-D, edges in every dimension', { batch: 1, m: 13, k: 7, n: 11, ta: false, tb: false }],
  ['transposed a (weight gradients)', { batch: 1, m: 19, k: 33, n: 21, ta: true, tb: false }],
  ['transposed b (x W^T)', { batch: 1, m: 33, k: 21, n: 10, ta: false, tb: true, bias: true }],
  ['both transposed', { batch: 1, m: 9, k: 14, n: 17, ta: true, tb: true }],
  ['k past one block, n past one panel', { batch: 1, m: 70, k: 300, n: 530, ta: false, tb: true }],
  ['batched attention scores', { batch: 6, m: 17, k: 5, n: 17, ta: false, tb: true }],
  ['broadcast b', { batch: 3, m: 5, k: 6, n: 9, ta: false, tb: false, bStride: 0 }],
  ['one row, one column', { batch: 2, m: 1, k: 3, n: 1, ta: true, tb: false }],
];

const fill = (n: number, seed: number): Float32Array => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.731 + seed) * 2);

function reference(c: Case, a: Float32Array, b: Float32Array, bias?: Float32Array): Float64Array {
  const out = new Float64Array(c.batch * c.m * c.n);
  const as = c.aStride ?? c.m * c.k, bs = c.bStride ?? c.k * c.n;
  for (let t = 0; t < c.batch; t++)
    for (let i = 0; i < c.m; i++)
      for (let j = 0; j < c.n; j++) {
        let s = bias ? bias[j] : 0;
        for (let p = 0; p < c.k; p++) s += a[t * as + (c.ta ? p * c.m + i : i * c.k + p)] * b[t * bs + (c.tb ? j * c.k + p : p * c.n + j)];
        out[(t * c.m + i) * c.n + j] = s;
      }
  return out;
}

function run(g: GemmModule, c: Case): { out: Float32Array; ref: Float64Array } {
  const a = fill((c.aStride === 0 ? 1 : c.batch) * c.m * c.k, 1), b = fill((c.bStride === 0 ? 1 : c.batch) * c.k * c.n, 2);
  const bias = c.bias ? fill(c.n, 3) : undefined;
  const out = new Float32Array(c.batch * c.m * c.n);
  g.product({ ...c, aStride: c.aStride ?? c.m * c.k, bStride: c.bStride ?? c.k * c.n }, a, b, out, bias);
  return { out, ref: reference(c, a, b, bias) };
}

describe('engine GEMM (wasm)', () => {
  let simd128: GemmModule;
  let best: GemmModule;
  let twoThreads: GemmModule;
  beforeAll(async () => {
    await installNodeGemm(1); // switches relaxed SIMD on in this process
    simd128 = await GemmModule.create({ simd128Only: true });
    best = await GemmModule.create();
    twoThreads = await GemmModule.create({ threads: 2, spawn: spawnGemmThread });
  });

  it.each(CASES)('%s: within float rounding of a float64 reference', (_, c) => {
    for (const g of [simd128, best, twoThreads]) {
      const { out, ref } = run(g, c);
      const bound = 4 * c.k * 2 ** -24 * 4 * 4 + 1e-6; // |a|,|b| <= 2: k terms of at most 4, each rounded
      expect(out.reduce((w, v, i) => Math.max(w, Math.abs(v - ref[i])), 0)).toBeLessThan(bound);
    }
  });

  it('names its arithmetic: SIMD128 mul + add, or the relaxed FMA fused on this CPU', () => {
    expect(simd128.arithmetic).toBe('simd128');
    // Node 20 has relaxed SIMD behind its flag; x86-64 CPUs since 2013 fuse it.
    expect(best.arithmetic).toMatch(/^(fma|relaxed-unfused)$/);
    const { out: fused } = run(best, CASES[4][1]);
    const { out: separate } = run(simd128, CASES[4][1]);
    expect(fused.some((v, i) => v !== separate[i])).toBe(best.arithmetic === 'fma');
  });

  it('gives the same bits on 1 and 2 threads, split by rows, columns or batch items', () => {
    expect(twoThreads.threadCount).toBe(2);
    const rows = { batch: 1, m: 203, k: 96, n: 130, ta: true, tb: false };
    const columns = { batch: 1, m: 37, k: 300, n: 533, ta: true, tb: false, bias: true };
    const items = { batch: 8, m: 50, k: 32, n: 50, ta: false, tb: true };
    for (const c of [rows, columns, items]) {
      expect(Array.from(run(twoThreads, c).out)).toEqual(Array.from(run(best, c).out));
    }
  });

  it('refuses threads without a host', async () => {
    await expect(GemmModule.create({ threads: 2 })).rejects.toThrow('GEMM threads need a thread host');
  });
});

describe('the wasm backend on the engine GEMM', () => {
  it('takes every product of a training step, and the step matches the cpu backend', async () => {
    await installWasmKernels();
    const g = await installNodeGemm(1);
    await tf.setBackend('cpu');
    const init = initParams(TOY, 3);
    const weights = await toHost(init);
    tf.dispose([...init.values()]);
    const x = (): tf.Tensor4D => tf.tensor4d(Float32Array.from({ length: 4 * 8 * 8 * 3 }, (_, i) => Math.cos(i * 0.37)), [4, 8, 8, 3]);
    const y = (): tf.Tensor1D => tf.tensor1d([0, 1, 2, 1], 'int32');
    const grads = async (backend: string): Promise<Map<string, Float32Array>> => {
      await tf.setBackend(backend);
      const m = new TrainableVit(weights, TOY, presetStrategy('full'));
      const [xs, ys] = [x(), y()];
      const { loss, grads: g2 } = m.lossAndGrads(xs, ys, 0.1);
      const out = new Map([...g2].map(([k, t]) => [k, t.dataSync() as Float32Array]));
      tf.dispose([xs, ys, loss, ...g2.values()]);
      m.dispose();
      return out;
    };
    const cpu = await grads('cpu');
    const before = gemmProducts();
    const wasm = await grads('wasm');
    expect(gemmProducts() - before).toBeGreaterThan(20);
    expect(await kernelClass(`gemm-${g.arithmetic}`)).toBe(`wasm-gemm-${g.arithmetic}`);
    for (const [k, ref] of cpu) {
      const scale = Math.max(...ref.map(Math.abs));
      const err = Math.max(...wasm.get(k)!.map((v, i) => Math.abs(v - ref[i])));
      expect([k, err <= 1e-4 * scale + 1e-7]).toEqual([k, true]);
    }
  });
});
