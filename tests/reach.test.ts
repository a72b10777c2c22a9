// AdamW's reach: updates that real steps produced (the engine's own shards, through the file
// format) are within it; updates a liar makes from them (scaled, sign-flipped, zeroed, noise of
// the right size, doctored moments, a wrong step count, more steps than claimed) are not. And what
// the bounds cannot see: lies inside them (reversed, halved, unmoved, small noise) pass, which is
// why the platform replicates untrusted work.
import {
  TrainingState, beyondReach, initParams, inspect, parseState, parseTrainOptions, presetStrategy, reachOf, runShard, serializeState, toHost, tunedShapes,
  withNewHead,
} from '../engine';
import { HostWeights } from '../engine/weights/checkpoint';
import { TOY, toyData, useBackend } from './helpers';

beforeAll(() => useBackend('wasm'));

const map = (w: HostWeights, f: (x: number, i: number) => number): HostWeights =>
  new Map([...w].map(([k, t]) => [k, { shape: t.shape, data: Float32Array.from(t.data, f) }]));

describe("AdamW's reach", () => {
  const options = parseTrainOptions({ epochs: 2, batchSize: 8, lr: 1e-3, seed: 3, warmupSteps: 2 }); // the default lr
  const data = toyData(48);
  const reach = (from: number, to: number) => reachOf(options, data.count, from, to);
  const windows: [number, number][] = [[0, 3], [3, 12]];
  const honest: { start: TrainingState; update: TrainingState; window: [number, number] }[] = [];

  beforeAll(async () => {
    const base = await withNewHead({ config: TOY, weights: await toHost(initParams(TOY, 2)), naming: 'timm', sha256: 'x' }, 3, 0);
    const strategy = presetStrategy('attn-only');
    const tuned = inspect(strategy, TOY).tuned;
    const shapes = tunedShapes(TOY, tuned);
    const zeros = new Map(tuned.map((n) => [n, { shape: base.weights.get(n)!.shape, data: new Float32Array(base.weights.get(n)!.data.length) }]));
    let start: TrainingState = { label: { run: 'r', round: 0 }, params: new Map(tuned.map((n) => [n, base.weights.get(n)!])), optimizer: { step: 0, expAvg: zeros, expAvgSq: zeros } };
    for (const [round, window] of windows.entries()) {
      const gen = runShard({ base, numClasses: 3, strategy, train: data, normalization: { mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25] }, options, window: { from: window[0], to: window[1] }, start, label: { run: 'r', round } });
      let next = await gen.next();
      while (!next.done) next = await gen.next();
      const update = parseState(serializeState(next.value), shapes);
      honest.push({ start, update, window });
      start = update;
    }
  });

  it('holds every honest shard, from a zero state and from a trained one', () => {
    for (const { start, update, window } of honest) expect({ window, why: beyondReach(start, update, reach(...window)) }).toEqual({ window, why: null });
  });

  it('refuses what a liar makes of them, saying what moved too far', () => {
    const { start, update, window } = honest[1];
    const lie = (changes: Partial<TrainingState> & { moments?: Partial<TrainingState['optimizer']> }): string | null =>
      beyondReach(start, { ...update, ...changes, optimizer: { ...update.optimizer, ...changes.moments } }, reach(...window));
    let seed = 1;
    const noise = (): number => ((seed = (seed * 16807) % 2147483647) / 2147483647 - 0.5) * 0.4;
    expect(lie({ params: map(update.params, (x) => 100 * x) })).toMatch(/moved .* more than 9 AdamW steps can/);
    expect(lie({ params: map(update.params, (x) => -x) })).toMatch(/moved/);
    expect(lie({ params: map(update.params, () => 0) })).toMatch(/moved/);
    expect(lie({ params: map(update.params, (x) => x + noise()) })).toMatch(/moved/);
    expect(lie({ moments: { expAvgSq: map(update.optimizer.expAvgSq, (x) => x * 1e-4) } })).toMatch(/exp_avg(_sq)? .*(fell|larger)/);
    expect(lie({ moments: { expAvg: map(update.optimizer.expAvg, (x) => 50 * x + 1e-3) } })).toMatch(/exp_avg .* larger than its second moment allows/);
    expect(lie({ moments: { step: update.optimizer.step + 1 } })).toMatch(/optimizer is at step 13; 9 steps from 3 reach 12/);
    // Nine real steps claimed as two: moved too far for two.
    expect(beyondReach(start, { ...update, optimizer: { ...update.optimizer, step: start.optimizer.step + 2 } }, reach(3, 5))).toMatch(/moved/);
  });

  it('bounds the moments by the gradient clip: inflated second or first moments are refused, from a zero state too', () => {
    for (const { start, update, window } of honest) {
      const lie = (moments: Partial<TrainingState['optimizer']>): string | null =>
        beyondReach(start, { ...update, optimizer: { ...update.optimizer, ...moments } }, reach(...window));
      expect(lie({ expAvgSq: map(update.optimizer.expAvgSq, (x) => x * 1e30) })).toMatch(/exp_avg_sq .* gradients clipped to norm 1 can make/);
      expect(lie({ expAvgSq: map(update.optimizer.expAvgSq, (x) => x + 1) })).toMatch(/exp_avg_sq .* gradients clipped to norm 1 can make/);
      // Within each coordinate's cap, the sum over all tuned tensors is bounded by C^2 too.
      expect(lie({ expAvgSq: map(update.optimizer.expAvgSq, (x) => x + 1e-3) })).toMatch(/second moments sum to .* gradients of norm at most 1/);
      expect(lie({ expAvg: map(update.optimizer.expAvg, (x) => x + 0.5), expAvgSq: map(update.optimizer.expAvgSq, (x) => x + 0.5 ** 2) }))
        .toMatch(/exp_avg(_sq)? .* (gradients clipped to norm 1 can make|second moment allows)|moments (sum|have norm)/);
      // Without a clip there is no upper bound: only replication tells.
      expect(beyondReach(start, { ...update, optimizer: { ...update.optimizer, expAvgSq: map(update.optimizer.expAvgSq, (x) => x * 1e30) } }, { ...reach(...window), clip: 0 })).toBeNull();
    }
  });

  it('lets through what stays inside every bound: reversed, halved and unmoved moves, noise far below the move', () => {
    const { start, update, window } = honest[1];
    const move = (f: (p: number, p0: number, i: number) => number, name?: string): HostWeights =>
      new Map([...update.params].map(([k, t]) => [k, { shape: t.shape, data: Float32Array.from(t.data, (x, i) => (name && k !== name ? x : f(x, start.params.get(k)!.data[i], i))) }]));
    const passes = (params: HostWeights, optimizer: Partial<TrainingState['optimizer']> = {}): string | null =>
      beyondReach(start, { ...update, params, optimizer: { ...update.optimizer, ...optimizer } }, reach(...window));
    expect(passes(move((p, p0) => p0 - (p - p0)))).toBeNull(); // reversed
    expect(passes(move((p, p0) => p0 + 0.5 * (p - p0)))).toBeNull(); // halved
    expect(passes(move((_, p0) => p0), { expAvg: start.optimizer.expAvg, expAvgSq: start.optimizer.expAvgSq })).toBeNull(); // lazy: unmoved, step advanced
    expect(passes(move((p, p0, i) => p + 1e-3 * (p - p0) * Math.sin(i)))).toBeNull(); // noise of 1e-3 of the move
  });
});
