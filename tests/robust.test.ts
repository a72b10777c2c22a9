// Robust aggregation rules on literal arrays, against results computed by hand.
import { TrainingState, aggregate, moveLength } from '../engine';

const state = (params: number[], m: number[] = params.map(() => 0), v: number[] = params.map(() => 1), step = 10): TrainingState => ({
  label: { run: 'r', round: 0, samples: 32 },
  params: new Map([['w', { shape: [params.length], data: Float32Array.from(params) }]]),
  optimizer: { step, expAvg: new Map([['w', { shape: [m.length], data: Float32Array.from(m) }]]), expAvgSq: new Map([['w', { shape: [v.length], data: Float32Array.from(v) }]]) },
});
const values = (s: TrainingState, group: 'params' | 'expAvg' | 'expAvgSq' = 'params'): number[] =>
  Array.from((group === 'params' ? s.params : s.optimizer[group]).get('w')!.data);
const label = { run: 'r', round: 1 };
const start = state([0, 0]);

it('moveLength is the L2 length of the move from the round start', () => {
  expect(moveLength(start, state([3, 4]))).toBe(5);
});

it('MEDIAN is coordinate-wise, the mean of the middle two for an even count, moments included', () => {
  const r = aggregate('MEDIAN', start, [state([1, 10], [1, 1], [4, 4]), state([2, 20], [2, 2], [5, 5]), state([3, -30], [3, 3], [6, 6])], label);
  expect(values(r.state)).toEqual([2, 10]);
  expect(values(r.state, 'expAvgSq')).toEqual([5, 5]);
  expect(values(aggregate('MEDIAN', start, [1, 2, 3, 4].map((x) => state([x, -x])), label).state)).toEqual([2.5, -2.5]);
});

it('TRIMMED_MEAN drops a quarter at each end: of 8 values the two largest and two smallest', () => {
  const updates = [1, 2, 3, 4, 5, 6, 7, 8].map((x) => state([x / 8, 0]));
  expect(values(aggregate('TRIMMED_MEAN', start, updates, label).state)[0]).toBeCloseTo((3 + 4 + 5 + 6) / 4 / 8, 7);
  expect(values(aggregate('TRIMMED_MEAN', start, [1, 2, 3].map((x) => state([x, 0])), label).state)).toEqual([2, 0]); // one of three each end
});

it('CENTERED_CLIP iterates from the median to the mean when no update is beyond the median distance', () => {
  // median (0, 0); distances 1, 1, 0 -> tau 1; nothing clipped, so one step reaches the mean and stays
  const r = aggregate('CENTERED_CLIP', start, [state([1, 0]), state([0, 1]), state([0, 0])], label);
  expect(values(r.state)[0]).toBeCloseTo(1 / 3, 6);
  expect(values(r.state)[1]).toBeCloseTo(1 / 3, 6);
});

it("CENTERED_CLIP bounds an outlier's pull: (1, 0), (2, 0), (5, 0) -> (2, 0) where the mean is (8/3, 0)", () => {
  // median (2, 0); distances 1, 0, 3 -> tau 1; clipped moves -1, 0, +1 cancel
  const r = aggregate('CENTERED_CLIP', start, [state([1, 0], [1, 0], [1, 1]), state([2, 0], [2, 0], [2, 2]), state([5, 0], [5, 0], [8, 8])], label);
  expect(values(r.state)).toEqual([2, 0]);
  expect(values(r.state, 'expAvg')).toEqual([2, 0]); // the moments move with their update's scale
  // second moments 1, 2, 8 with scales 1, 1, 1/3: v <- v + ((1 - v) + (2 - v) + (8 - v) / 3) / 3 = 2v/9 + 17/9, from 2, three times
  expect(values(r.state, 'expAvgSq')[0]).toBeCloseTo(589 / 243, 6);
  expect(r.screened).toEqual([]); // 5 is not over 3 x the median move 2
});

it('screening sets aside a move over three times the median; FEDAVG keeps everything', () => {
  const updates = [state([1, 0]), state([0, 1]), state([-1, 0]), state([30, 40])];
  const median = aggregate('MEDIAN', start, updates, label);
  expect(median.screened).toEqual([3]);
  expect(values(median.state)).toEqual([0, 0]);
  const fedavg = aggregate('FEDAVG', start, updates, label);
  expect(fedavg.screened).toEqual([]);
  expect(values(fedavg.state)).toEqual([7.5, 10.25]);
});

it('keeps the furthest step and the label it is given', () => {
  const r = aggregate('TRIMMED_MEAN', start, [state([1, 1], undefined, undefined, 12), state([1, 1], undefined, undefined, 14), state([1, 1])], label);
  expect([r.state.optimizer.step, r.state.label]).toEqual([14, label]);
});
