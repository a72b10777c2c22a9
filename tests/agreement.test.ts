// Whether two updates of one shard agree: the distance across kernel classes against hand-computed
// cases, and the digest that compares them within a class (tensors and step, not the label).
import { TrainingState, lossesDisagree, updateDistance } from '../engine';
import { digestOf } from '../server/compute/shard-jobs';

const t = (...v: number[]) => ({ shape: [v.length], data: Float32Array.from(v) });
const state = (w: number[], b: number[], step = 4, m = [0, 0]): TrainingState => ({
  label: { run: 'r', round: 1, shard: 's' },
  params: new Map([['w', t(...w)], ['b', t(...b)]]),
  optimizer: { step, expAvg: new Map([['w', t(...m)], ['b', t(0)]]), expAvgSq: new Map([['w', t(1, 1)], ['b', t(1)]]) },
});

describe('updateDistance', () => {
  const start = state([0, 0], [0], 0);

  it('is 0 for identical updates and the relative L2 of the difference over all tuned parameters otherwise', () => {
    expect(updateDistance(start, state([3, 4], [0]), state([3, 4], [0]))).toEqual({ relative: 0, tensor: 'w' });
    // moves 5 and sqrt(9 + 16 + 144) = 13; difference (0, 0, 12): 12 / 13, all of it in b
    expect(updateDistance(start, state([3, 4], [0]), state([3, 4], [12]))).toEqual({ relative: 12 / 13, tensor: 'b' });
    // a reversed move is twice its own size away
    expect(updateDistance(start, state([3, 4], [0]), state([-3, -4], [0])).relative).toBeCloseTo(2, 6);
  });

  it('cannot agree with a different step count, nor a move with no move', () => {
    expect(updateDistance(start, state([3, 4], [0], 4), state([3, 4], [0], 5)).relative).toBe(Infinity);
    expect(updateDistance(start, state([0, 0], [0]), state([0, 0], [0])).relative).toBe(0);
  });

  it('leaves the moments to the bound check and the digest', () => {
    expect(updateDistance(start, state([3, 4], [0], 4, [1, 1]), state([3, 4], [0], 4, [-1, 5])).relative).toBe(0);
  });
});

describe('the digest of an update', () => {
  it('names its tensors and step, not its label', () => {
    const a = state([3, 4], [1]);
    expect(digestOf({ ...a, label: { run: 'r', round: 1, shard: 'another replica' } })).toBe(digestOf(a));
    expect(digestOf(state([3, 4], [1], 5))).not.toBe(digestOf(a));
    expect(digestOf(state([3, 4], [1], 4, [0, 1e-30]))).not.toBe(digestOf(a));
    const flipped = state([3, 4], [1]);
    new Uint32Array(flipped.params.get('w')!.data.buffer)[0] ^= 1; // one bit of one float
    expect(digestOf(flipped)).not.toBe(digestOf(a));
  });
});

describe('lossesDisagree', () => {
  it('allows 2% between kernel classes', () => {
    expect(lossesDisagree(2.3, 2.31)).toBeNull();
    expect(lossesDisagree(2.3, 1.5)).toMatch(/reported losses 2.3000 and 1.5000 differ by 34.8%/);
  });
});
