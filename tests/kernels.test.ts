// The SIMD batched-matmul kernel that replaces tfjs-wasm's BatchMatMul for batched operands.
import * as tf from '@tensorflow/tfjs';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TrainableVit, geluWithSlope, initParams, presetStrategy, toHost } from '../engine';
import { GELU_WITH_SLOPE } from '../engine/kernels/gelu';
import { TOY, useBackend } from './helpers';
import { itUnless } from './support/skip';

async function on(backend: 'cpu' | 'wasm', f: () => tf.Tensor): Promise<Float32Array> {
  await useBackend(backend);
  const t = f();
  const out = (await t.data()) as Float32Array;
  t.dispose();
  return out;
}

describe('batched matmul kernel (wasm)', () => {
  const cases: [string, number[], number[], boolean, boolean][] = [
    ['attention scores', [2, 3, 13, 7], [2, 3, 9, 7], false, true],
    ['attention mix', [2, 3, 13, 13], [2, 3, 13, 7], false, false],
    ['transposed a', [4, 6, 5], [4, 6, 9], true, false],
    ['both transposed', [4, 6, 5], [4, 9, 6], true, true],
    ['broadcast a', [1, 5, 6], [4, 6, 3], false, false],
    ['broadcast b', [4, 5, 6], [1, 6, 3], false, false],
    ['odd sizes', [3, 1, 1], [3, 1, 17], false, false],
  ];
  it.each(cases)('%s matches the cpu backend', async (_, sa, sb, ta, tb) => {
    const a = Float32Array.from({ length: sa.reduce((x, y) => x * y) }, (_, i) => Math.sin(i * 1.3));
    const b = Float32Array.from({ length: sb.reduce((x, y) => x * y) }, (_, i) => Math.cos(i * 0.7));
    const f = (): tf.Tensor => tf.matMul(tf.tensor(a, sa), tf.tensor(b, sb), ta, tb);
    const ref = await on('cpu', f);
    const got = await on('wasm', f);
    expect(got.length).toBe(ref.length);
    expect(Math.max(...got.map((v, i) => Math.abs(v - ref[i])))).toBeLessThan(1e-5);
  });

  it('gives the ViT the same gradients on wasm as on the cpu backend', async () => {
    const grads = async (backend: 'cpu' | 'wasm'): Promise<Map<string, Float32Array>> => {
      await useBackend(backend);
      const m = new TrainableVit(await toHost(initParams(TOY, 2)), TOY, presetStrategy('full'));
      const x = tf.randomNormal([4, 8, 8, 3], 0, 1, 'float32', 5) as tf.Tensor4D;
      const y = tf.tensor1d([0, 1, 2, 0], 'int32');
      const r = m.lossAndGrads(x, y, 0.1);
      const out = new Map([...r.grads].map(([k, g]) => [k, g.dataSync() as Float32Array]));
      tf.dispose([x, y, r.loss, ...r.grads.values()]);
      m.dispose();
      return out;
    };
    const cpu = await grads('cpu');
    const wasm = await grads('wasm');
    for (const [k, g] of cpu) {
      const scale = Math.max(...g.map(Math.abs));
      const err = Math.max(...wasm.get(k)!.map((v, i) => Math.abs(v - g[i])));
      expect([k, err <= 1e-4 * scale + 1e-7]).toEqual([k, true]);
    }
  });

  it('leaves unbatched products to XNNPACK and keeps the results', async () => {
    const f = (): tf.Tensor => tf.matMul(tf.tensor2d([[1, 2], [3, 4]]), tf.tensor2d([[5], [6]]));
    expect(Array.from(await on('wasm', f))).toEqual([17, 39]);
  });

  const hasClang = spawnSync('clang-16', ['--version'], { stdio: 'ignore' }).status === 0 && spawnSync('wasm-ld-16', ['--version'], { stdio: 'ignore' }).status === 0;
  itUnless(hasClang ? undefined : 'clang-16 and lld-16 are not installed')('the committed modules are built from matmul.c, gelu.c and gemm.c (needs clang-16 and lld-16)', () => {
    const dir = join(__dirname, '..', 'engine', 'kernels');
    const fresh = mkdtempSync(join(tmpdir(), 'kern-'));
    execFileSync('bash', [join(dir, 'build.sh'), fresh]);
    for (const file of ['kernels-wasm.ts', 'gemm-wasm.ts']) expect(readFileSync(join(fresh, file), 'utf8')).toBe(readFileSync(join(dir, file), 'utf8'));
  });
});

/** erfc(z) for z >= 0 in double precision: Taylor series of erf near 0, a continued fraction in the tail. */
function erfc64(z: number): number {
  if (z >= 2.5) {
    let f = 0;
    for (let n = 80; n >= 1; n--) f = n / 2 / (z + f);
    return Math.exp(-z * z) / Math.sqrt(Math.PI) / (z + f);
  }
  let term = z;
  let sum = z;
  for (let n = 1; n < 200 && Math.abs(term) > 1e-18; n++) {
    term *= (-z * z) / n;
    sum += term / (2 * n + 1);
  }
  return 1 - (2 / Math.sqrt(Math.PI)) * sum;
}

/** The standard normal CDF without cancellation in either tail. */
const phi64 = (x: number): number => (x < 0 ? 0.5 * erfc64(-x / Math.SQRT2) : 1 - 0.5 * erfc64(x / Math.SQRT2));

describe('GELU kernel (wasm)', () => {
  const xs = Float32Array.from({ length: 4003 }, (_, i) => -12 + (24 * i) / 4002); // odd length: a padded tail
  const exact = Array.from(xs, (x) => {
    const cdf = phi64(x);
    const pdf = Math.exp(-0.5 * x * x) / Math.sqrt(2 * Math.PI);
    return [x * cdf, cdf + x * pdf];
  });

  it.each(['wasm', 'cpu'] as const)('gives x Phi(x) and its slope within float precision of erf in double (%s)', async (backend) => {
    await useBackend(backend);
    const [y, slope] = geluWithSlope(tf.tensor(xs, [1, 4003]));
    const ys = y.dataSync();
    const ss = slope.dataSync();
    tf.dispose([y, slope]);
    let worstY = 0;
    let worstSlope = 0;
    xs.forEach((x, i) => {
      worstY = Math.max(worstY, Math.abs(ys[i] - exact[i][0]) / Math.max(1, Math.abs(x)));
      worstSlope = Math.max(worstSlope, Math.abs(ss[i] - exact[i][1]));
    });
    expect(worstY).toBeLessThan(5e-7);
    expect(worstSlope).toBeLessThan(1e-6);
  });

  it('runs as one kernel on wasm and keeps no tensors', async () => {
    await useBackend('wasm');
    const x = tf.randomNormal([7, 33]);
    const before = tf.memory().numTensors;
    const kernels: string[] = [];
    const profile = await tf.profile(() => tf.dispose(geluWithSlope(x)));
    profile.kernels.forEach((k) => kernels.push(k.name));
    expect(kernels).toEqual([GELU_WITH_SLOPE]);
    expect(tf.memory().numTensors).toBe(before);
    x.dispose();
  });
});
