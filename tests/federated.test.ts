// The distributed run's pure parts: a shard window continues exactly where the last left off,
// FedAvg is the sample-weighted mean, states and dataset shards round-trip, and a malformed
// update is refused with the tensor named.
import * as tf from '@tensorflow/tfjs';
import {
  Checkpoint, Dataset, HostWeights, Strategy, TrainOptions, TrainingState, TrainableVit, fedAvg, parseTrainOptions, initParams, packDataset, parseState, presetStrategy, serializeState, toHost, train,
  tunedShapes, unpackDataset, weightedMean, withNewHead, runShard, inspect, packWindow, selectData, windowRecords,
} from '../engine';
import { makePlan, shardWindows } from '../server/runs/plan';
import { parseRunOptions } from '../protocol/run-options';
import { TOY, toyData, useBackend } from './helpers';

beforeAll(() => useBackend('wasm'));

const w = (...v: number[]) => new Map([['x', { shape: [v.length], data: Float32Array.from(v) }]]);

describe('FedAvg', () => {
  it('weights by samples: [1] x 1 and [3] x 3 average to [2.5]', () => {
    expect(Array.from(weightedMean([{ weights: w(1), samples: 1 }, { weights: w(3), samples: 3 }]).get('x')!.data)).toEqual([2.5]);
  });

  it('of one reply is that reply, bit for bit', () => {
    const v = w(0.1, -3.3e-7, 12345.678);
    expect(weightedMean([{ weights: v, samples: 7 }]).get('x')!.data).toEqual(v.get('x')!.data);
  });

  it('refuses replies whose tensors differ, naming the tensor', () => {
    const other = new Map([['y', { shape: [1], data: Float32Array.of(1) }]]);
    expect(() => weightedMean([{ weights: w(1), samples: 1 }, { weights: other, samples: 1 }])).toThrow(/'x'/);
    expect(() => weightedMean([{ weights: w(1), samples: 1 }, { weights: w(1, 2), samples: 1 }])).toThrow(/'x'/);
  });

  it('averages optimizer moments too and keeps the furthest step', () => {
    const s = (v: number, step: number, samples: number): TrainingState => ({
      label: { run: 'r', round: 0, samples }, params: w(v), optimizer: { step, expAvg: w(v), expAvgSq: w(v * v) },
    });
    const avg = fedAvg([s(1, 4, 1), s(3, 6, 3)], { run: 'r', round: 1 });
    expect(avg.optimizer.step).toBe(6);
    expect(Array.from(avg.optimizer.expAvgSq.get('x')!.data)).toEqual([(1 + 27) / 4]);
  });
});

describe('training state files', () => {
  const shapes = new Map<string, readonly number[]>([['head.weight', [3, 2]], ['head.bias', [3]]]);
  const state = (): TrainingState => {
    const params = new Map([['head.weight', { shape: [3, 2], data: Float32Array.from([1, 2, 3, 4, 5, 6]) }], ['head.bias', { shape: [3], data: Float32Array.of(0, 1, 2) }]]);
    return { label: { run: 'r', round: 2, shard: 's', samples: 64 }, params, optimizer: { step: 5, expAvg: params, expAvgSq: params } };
  };

  it('round-trip exactly, label and step included', () => {
    const back = parseState(serializeState(state()), shapes);
    expect(back.label).toEqual({ run: 'r', round: 2, shard: 's', samples: 64 });
    expect(back.optimizer.step).toBe(5);
    expect(back.params.get('head.weight')!.data).toEqual(state().params.get('head.weight')!.data);
  });

  it.each([
    ['a NaN', (s: TrainingState) => s.params.get('head.bias')!.data.set([NaN]), /non-finite.*param\/head\.bias|param\/head\.bias.*non-finite/],
    ['a wrong shape', (s: TrainingState) => s.params.set('head.bias', { shape: [4], data: new Float32Array(4) }), /param\/head\.bias.*shape \[4\]/],
    ['an extra tensor', (s: TrainingState) => s.params.set('blocks.0.attn.qkv.weight', { shape: [1], data: new Float32Array(1) }), /unexpected tensor 'param\/blocks\.0\.attn\.qkv\.weight'/],
    ['a missing tensor', (s: TrainingState) => s.params.delete('head.bias'), /missing 'param\/head\.bias'/],
  ])('refuse %s, naming the tensor', (_what, spoil, message) => {
    const s = state();
    const params = new Map([...s.params].map(([k, v]) => [k, { shape: v.shape, data: v.data.slice() }]));
    const bad = { ...s, params };
    spoil(bad);
    expect(() => parseState(serializeState(bad), shapes, 'update')).toThrow(message);
  });

  it('refuse F16 tensors', () => {
    const bytes = serializeState(state());
    const json = new TextDecoder().decode(bytes.subarray(8, 8 + Number(new DataView(bytes.buffer).getBigUint64(0, true))));
    expect(json).toContain('"F32"');
    const spoiled = new TextEncoder().encode(json.replace('"dtype":"F32","shape":[3]', '"dtype":"F16","shape":[6]'));
    const out = new Uint8Array(bytes);
    out.set(spoiled, 8);
    expect(() => parseState(out, shapes, 'update')).toThrow(/'exp_avg\/head\.bias' is F16, must be F32/);
  });
});

describe('dataset shards', () => {
  it('round-trip pixels, labels and metadata', () => {
    const ds = toyData(10);
    const back = unpackDataset(packDataset(ds));
    expect(back).toEqual(ds);
  });

  it('refuse a truncated file', () => {
    const bytes = packDataset(toyData(10));
    expect(() => unpackDataset(bytes.subarray(0, bytes.length - 5), 'shard 3')).toThrow(/shard 3: 'images' is truncated|shard 3: 'labels' is truncated/);
  });
});

describe('plans', () => {
  const windows = (round: [number, number], shards: number): number[][] => shardWindows(round, shards).map((w) => [w.fromStep, w.toStep]);

  it('cut rounds at epoch ends and split rounds into contiguous shard windows', () => {
    const plan = makePlan(parseRunOptions({ epochs: 2, batchSize: 10, stepsPerRound: 4, shardsPerRound: 2 }), 105); // 10 steps per epoch
    expect(plan.rounds).toEqual([[0, 4], [4, 8], [8, 10], [10, 14], [14, 18], [18, 20]]);
    expect(plan.shardsPerRound).toBe(2);
    expect(windows([8, 10], 3)).toEqual([[8, 9], [9, 10]]);
    expect(windows([0, 5], 2)).toEqual([[0, 2], [2, 5]]);
  });

  it('refuse a schedule of more rounds than a run can hold', () => {
    expect(() => makePlan(parseRunOptions({ epochs: 1, batchSize: 1, stepsPerRound: 1, maxSteps: 5_000_000 }), 6_000_000)).toThrow(/too many rounds/);
  });
});

describe('shard windows', () => {
  const norm = { mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25] };

  /** Round 0 as the server writes it: the base's tuned tensors, zero moments. */
  const roundZero = (base: Checkpoint, strategy: Strategy): TrainingState => {
    const tuned = inspect(strategy, TOY).tuned;
    const zeros = new Map(tuned.map((n) => [n, { shape: base.weights.get(n)!.shape, data: new Float32Array(base.weights.get(n)!.data.length) }]));
    return { label: { run: 'r', round: 0 }, params: new Map(tuned.map((n) => [n, base.weights.get(n)!])), optimizer: { step: 0, expAvg: zeros, expAvgSq: zeros } };
  };

  /** The weights one uninterrupted run on `data` ends with: what the windows must reproduce. */
  const uninterrupted = async (base: Checkpoint, strategy: Strategy, data: Dataset, options: TrainOptions): Promise<HostWeights> => {
    const whole = new TrainableVit(base.weights, TOY, strategy);
    for await (const _ of train(whole, { train: data, normalization: norm }, options)) void _;
    const weights = await whole.weights();
    whole.dispose();
    return weights;
  };

  const drain = async (gen: AsyncGenerator<unknown, TrainingState>): Promise<TrainingState> => {
    let next = await gen.next();
    while (!next.done) next = await gen.next();
    return next.value;
  };
  it('three windows carrying params and moments give the uninterrupted run exactly', async () => {
    const data = toyData(48);
    const options = parseTrainOptions({ epochs: 2, batchSize: 8, lr: 5e-3, seed: 3, cropPadding: 1, flip: true });
    const base = await withNewHead({ config: TOY, weights: await toHost(initParams(TOY, 2)), naming: 'timm', sha256: 'x' }, 3, 0);
    const strategy = presetStrategy('last-half');

    const expected = await uninterrupted(base, strategy, data, options);

    const tuned = inspect(strategy, TOY).tuned;
    let state = roundZero(base, strategy);
    const tensorsBefore = tf.memory().numTensors;
    for (const [round, window] of [[0, 5], [5, 6], [6, 12]].entries()) {
      const update = await drain(runShard({ base, numClasses: 3, strategy, train: data, normalization: norm, options, window: { from: window[0], to: window[1] }, start: state, label: { run: 'r', round } }));
      state = parseState(serializeState(update), tunedShapes(TOY, tuned)); // through the file format, as between machines
      expect(state.label.samples).toBe((window[1] - window[0]) * 8);
    }
    for (const name of tuned) expect(state.params.get(name)!.data).toEqual(expected.get(name)!.data);
    expect(tf.memory().numTensors).toBe(tensorsBefore); // shards leave nothing behind
  });

  it('windows trained from packs of only their records give the run on the whole split exactly', async () => {
    const data = toyData(60);
    // trainLimit selects 40 of the 60 images; 5 steps per epoch; the middle window crosses an epoch end.
    const options = parseTrainOptions({ epochs: 2, batchSize: 8, lr: 5e-3, seed: 11, trainLimit: 40, cropPadding: 1, flip: true });
    const base = await withNewHead({ config: TOY, weights: await toHost(initParams(TOY, 4)), naming: 'timm', sha256: 'x' }, 3, 0);
    const strategy = presetStrategy('attn-only');
    const expected = await uninterrupted(base, strategy, selectData({ train: data, test: data }, options).train, options);

    const tuned = inspect(strategy, TOY).tuned;
    let state = roundZero(base, strategy);
    for (const [round, [from, to]] of [[0, 3], [3, 7], [7, 10]].entries()) {
      const pack = unpackDataset(packDataset(packWindow(data, options, { from, to })));
      expect(pack.count).toBe((to - from) * 8);
      state = await drain(runShard({
        base, numClasses: 3, strategy, train: pack, packed: { trainImages: 40 }, normalization: norm, options, window: { from, to }, start: state, label: { run: 'r', round },
      }));
    }
    for (const name of tuned) expect(state.params.get(name)!.data).toEqual(expected.get(name)!.data);
  });

  it('a window reads each selected image once per epoch, and a pack of the wrong size is refused', async () => {
    const options = parseTrainOptions({ epochs: 2, batchSize: 8, seed: 11, trainLimit: 40 });
    const epoch = windowRecords(60, options, { from: 0, to: 5 });
    expect(new Set(epoch).size).toBe(40);
    expect(Math.max(...epoch)).toBeLessThan(60);
    expect(new Set(windowRecords(60, options, { from: 5, to: 10 }))).toEqual(new Set(epoch)); // the same selection, another order
    expect(() => windowRecords(60, options, { from: 8, to: 11 })).toThrow(/outside the run's 10 steps/);

    const base = await withNewHead({ config: TOY, weights: await toHost(initParams(TOY, 4)), naming: 'timm', sha256: 'x' }, 3, 0);
    const start = roundZero(base, presetStrategy('attn-only'));
    const gen = runShard({
      base, numClasses: 3, strategy: presetStrategy('attn-only'), train: packWindow(toyData(60), options, { from: 0, to: 2 }), packed: { trainImages: 40 },
      normalization: norm, options, window: { from: 0, to: 3 }, start, label: { run: 'r', round: 0 },
    });
    await expect(gen.next()).rejects.toThrow('a pack of steps 0-3 must hold 24 records; this one holds 16');
  });
});
