// The PEFT-style test over every strategy: a few steps, frozen tensors bit-identical, tuned ones
// moved, no NaN, no tensor leak; and the frozen-prefix cut gives the same gradients as a full tape.
import * as tf from '@tensorflow/tfjs';
import {
  Dataset, PRESET_NAMES, PresetName, LoopControls, TrainEvent, TrainOptions, TrainSummary, TrainableVit, crossEntropy, initParams, lrAt, model,
  parseStrategy, parseVitConfig, presetStrategy, toHost, train,
} from '../engine';
import { TOY, useBackend } from './helpers';

beforeAll(() => useBackend('wasm'));

function toyData(n: number, seed = 1): Dataset {
  const px = 8 * 8 * 3;
  const images = new Uint8Array(n * px);
  const labels = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    labels[i] = i % 3;
    // Class-dependent brightness pattern plus noise, so there is something to learn.
    for (let p = 0; p < px; p++) images[i * px + p] = ((labels[i] * 80 + ((p * 37 + i * seed * 11) % 60)) % 256);
  }
  return { name: 'toy', images, labels, count: n, height: 8, width: 8, channels: 3, classes: 3, flipInvariant: true };
}

const bits = (a: Float32Array): Uint32Array => new Uint32Array(a.buffer.slice(a.byteOffset, a.byteOffset + a.byteLength));

describe('training', () => {
  it.each(PRESET_NAMES.map((n) => [n]))('%s: 3 steps move only the tuned tensors, bit for bit', async (name) => {
    const before = await toHost(initParams(TOY, 5));
    const m = new TrainableVit(before, TOY, presetStrategy(name));
    const counts: number[] = [];
    const events: TrainEvent[] = [];
    const norm = { mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25] };
    const run = train(m, { train: toyData(24), normalization: norm }, {
      epochs: 1, batchSize: 8, lr: 1e-2, seed: 1, cropPadding: 1, flip: true,
    });
    for await (const e of run) {
      events.push(e);
      if (e.kind === 'step') counts.push(tf.memory().numTensors);
    }
    expect(events.filter((e) => e.kind === 'step')).toHaveLength(3);
    expect(counts[2]).toBe(counts[1]); // no tensor leak between steps
    const after = await m.weights();
    const tuned = new Set(m.inspection.tuned);
    for (const [k, w] of after) {
      expect(w.data.every(Number.isFinite)).toBe(true);
      const same = bits(w.data).every((b, i) => b === bits(before.get(k)!.data)[i]);
      expect([k, tuned.has(k) ? 'moved' : 'identical']).toEqual([k, same ? 'identical' : 'moved']);
    }
    m.dispose();
  });

  it('the frozen-prefix cut gives the same gradients as a tape over the whole network', async () => {
    const c = parseVitConfig({ ...TOY, depth: 4 });
    const weights = await toHost(initParams(c, 9));
    const x = tf.randomNormal([6, 8, 8, 3], 0, 1, 'float32', 3) as tf.Tensor4D;
    const y = tf.tensor1d([0, 1, 2, 0, 1, 2], 'int32');
    for (const name of ['last-half', 'last-half-ffn', 'linear-probe'] as const) {
      const m = new TrainableVit(weights, c, presetStrategy(name));
      expect(m.inspection.gradientStart).toBeGreaterThan(0);
      const cut = m.lossAndGrads(x, y, 0.1);
      // Reference: every op under one tape, gradients taken w.r.t. the same tensors.
      const names = [...m.tuned.keys()];
      const whole = tf.grads((...ts: tf.Tensor[]) => {
        const p = new Map(m.params);
        names.forEach((n, i) => p.set(n, ts[i]));
        return crossEntropy(model.forward(p, x, c), y, 0.1);
      })(names.map((n) => m.params.get(n)!));
      names.forEach((n, i) => {
        const diff = tf.max(tf.abs(tf.sub(cut.grads.get(n)!, whole[i]))).dataSync()[0];
        expect([n, diff]).toEqual([n, 0]);
      });
      tf.dispose([cut.loss, ...cut.grads.values(), ...whole]);
      m.dispose();
    }
    tf.dispose([x, y]);
  });

  it('the frozen prefix keeps no activations for backward (lower peak memory)', async () => {
    const c = parseVitConfig({ ...TOY, depth: 6, dim: 32, mlpDim: 64, headDim: 16 });
    const weights = await toHost(initParams(c, 2));
    const x = tf.randomNormal([32, 8, 8, 3]) as tf.Tensor4D;
    const y = tf.tensor1d(new Array(32).fill(1), 'int32');
    const peak = async (strategy: ReturnType<typeof parseStrategy>): Promise<number> => {
      const m = new TrainableVit(weights, c, strategy);
      const info = await tf.profile(() => {
        const r = m.lossAndGrads(x, y, 0);
        tf.dispose([r.loss, ...r.grads.values()]);
      });
      m.dispose();
      return info.peakBytes;
    };
    const lastHalf = await peak(presetStrategy('last-half'));
    // Same tuned blocks plus one tiny bias in block 0: the tape must now start at block 0.
    const fromStart = await peak(parseStrategy({ blocks: [3, 4, 5], include: ['blocks.0.norm1.bias'] }));
    expect(lastHalf).toBeLessThan(0.8 * fromStart);
    tf.dispose([x, y]);
  });

  describe('frozen-prefix cache', () => {
    const norm = { mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25] };
    const c = parseVitConfig({ ...TOY, depth: 4 });
    async function losses(strategy: string, controls: LoopControls, options: Partial<TrainOptions> = {}): Promise<{ losses: number[]; summary: TrainSummary }> {
      const m = new TrainableVit(await toHost(initParams(c, 6)), c, presetStrategy(strategy as PresetName));
      const out: number[] = [];
      const run = train(m, { train: toyData(40), normalization: norm }, { epochs: 3, batchSize: 8, lr: 1e-2, seed: 2, ...options }, controls);
      for (;;) {
        const next = await run.next();
        if (next.done) {
          m.dispose();
          return { losses: out, summary: next.value };
        }
        if (next.value.kind === 'step') out.push(next.value.loss);
      }
    }

    it.each([['last-half'], ['last-half-attn'], ['linear-probe']])('%s: the same losses with and without the cache (f32)', async (strategy) => {
      const plain = await losses(strategy, {});
      const cached = await losses(strategy, { prefixCache: { maxBytes: 1 << 30, dtype: 'f32' } });
      expect(cached.losses).toEqual(plain.losses);
      expect(cached.summary.prefixCache).toMatchObject({ rows: 40, misses: 40, hits: 80 }); // epoch 1 fills, 2 and 3 hit
      const partial = await losses(strategy, { prefixCache: { maxBytes: 1700, dtype: 'f32' } }); // a few rows only
      expect(partial.losses).toEqual(plain.losses);
      expect(partial.summary.prefixCache!.rows).toBeLessThan(40);
    });

    it('f16 rows change losses by no more than rounding', async () => {
      const plain = await losses('last-half', {});
      const half = await losses('last-half', { prefixCache: { maxBytes: 1 << 30, dtype: 'f16' } });
      half.losses.forEach((l, i) => expect(Math.abs(l - plain.losses[i])).toBeLessThan(2e-2 * plain.losses[i]));
      expect(half.summary.prefixCache!.bytes).toBe(40 * 5 * 12 * 2) // 40 images x 5 tokens x width 12, 2 bytes each;
    });

    it('is not used when images are augmented or nothing is frozen', async () => {
      const cache = { prefixCache: { maxBytes: 1 << 30, dtype: 'f32' as const } };
      expect((await losses('last-half', cache, { cropPadding: 1 })).summary.prefixCache).toBeUndefined();
      expect((await losses('full', cache)).summary.prefixCache).toBeUndefined();
    });
  });

  it('learns a separable toy task and reports accuracy', async () => {
    const m = new TrainableVit(await toHost(initParams(TOY, 1)), TOY, presetStrategy('full'));
    const norm = { mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25] };
    let last: TrainEvent | undefined;
    for await (const e of train(m, { train: toyData(96), test: toyData(30, 3), normalization: norm }, { epochs: 15, batchSize: 16, lr: 1e-2, labelSmoothing: 0 })) last = e;
    expect(last?.kind === 'epoch' && last.eval!.accuracy).toBeGreaterThan(0.9);
    m.dispose();
  });

  it('schedules: linear warm-up to the base rate, cosine to the minimum', () => {
    const s = { baseLr: 1, minLr: 0.1, warmupSteps: 4, totalSteps: 14 };
    expect([0, 1, 3].map((t) => lrAt(s, t))).toEqual([0.25, 0.5, 1]);
    expect(lrAt(s, 9)).toBeCloseTo(0.55, 10);
    expect(lrAt(s, 14)).toBeCloseTo(0.1, 10);
  });
});
