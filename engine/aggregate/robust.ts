// Aggregation rules for a round of several shards that tolerate a minority of bad updates, as in
// Flower (FedMedian, FedTrimmedAvg) and DISCO (centered clipping, Karimireddy et al. 2021):
// coordinate-wise median, trimmed mean, and centered clipping around the median. Before a robust
// rule, shards whose move is over SCREEN times the median move are set aside. Parameters and both
// AdamW moments go through the same rule; every result is a mean, median or convex mix of the
// shards' values, so second moments stay >= 0.
import { HostWeights } from '../weights/checkpoint';
import { TrainingState } from '../weights/state';
import { fedAvg } from './fedavg';

export const AGGREGATIONS = ['FEDAVG', 'MEDIAN', 'TRIMMED_MEAN', 'CENTERED_CLIP'] as const;
export type Aggregation = (typeof AGGREGATIONS)[number];

/** A shard moving more than this many times the median move is set aside by the robust rules. */
export const SCREEN = 3;
/** TRIMMED_MEAN drops this fraction of the values at each end (at least one when there are three or more): a quarter of liars on one side go. */
export const TRIM = 0.25;

export interface Aggregated {
  readonly state: TrainingState;
  /** Indices of the updates set aside by screening. */
  readonly screened: readonly number[];
}

/** The L2 length of an update's move from `start`, over all its tuned tensors. */
export function moveLength(start: TrainingState, u: TrainingState): number {
  let sum = 0;
  for (const [name, p0] of start.params) {
    const p = u.params.get(name)!.data;
    for (let i = 0; i < p0.data.length; i++) sum += (p[i] - p0.data[i]) ** 2;
  }
  return Math.sqrt(sum);
}

const median = (sorted: Float64Array | number[]): number => {
  const n = sorted.length;
  return n % 2 ? sorted[(n - 1) / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
};

/** Applies `f` to each coordinate's values across the updates. */
function coordinatewise(groups: readonly HostWeights[], f: (values: Float64Array) => number): HostWeights {
  const out: HostWeights = new Map();
  const values = new Float64Array(groups.length);
  for (const [name, t] of groups[0]) {
    const data = new Float32Array(t.data.length);
    for (let i = 0; i < data.length; i++) {
      groups.forEach((g, k) => (values[k] = g.get(name)!.data[i]));
      data[i] = f(values);
    }
    out.set(name, { shape: [...t.shape], data });
  }
  return out;
}

const sortedMedian = (v: Float64Array): number => median(Float64Array.from(v).sort());

function trimmedMean(v: Float64Array): number {
  const sorted = Float64Array.from(v).sort();
  const k = Math.min(Math.floor((sorted.length - 1) / 2), Math.max(sorted.length >= 3 ? 1 : 0, Math.floor(TRIM * sorted.length)));
  let sum = 0;
  for (let i = k; i < sorted.length - k; i++) sum += sorted[i];
  return sum / (sorted.length - 2 * k);
}

function perGroup(updates: readonly TrainingState[], label: TrainingState['label'], f: (groups: HostWeights[], start: (s: TrainingState) => HostWeights) => HostWeights): TrainingState {
  return {
    label,
    params: f(updates.map((u) => u.params), (s) => s.params),
    optimizer: {
      step: Math.max(...updates.map((u) => u.optimizer.step)),
      expAvg: f(updates.map((u) => u.optimizer.expAvg), (s) => s.optimizer.expAvg),
      expAvgSq: f(updates.map((u) => u.optimizer.expAvgSq), (s) => s.optimizer.expAvgSq),
    },
  };
}

/** One round's aggregate under `rule`; FEDAVG is the sample-weighted mean of every update, unscreened. */
export function aggregate(rule: Aggregation, start: TrainingState, updates: readonly TrainingState[], label: TrainingState['label']): Aggregated {
  if (updates.length === 0) throw new Error('nothing to aggregate');
  if (rule === 'FEDAVG') return { state: fedAvg(updates, label), screened: [] };
  const lengths = updates.map((u) => moveLength(start, u));
  const typical = median([...lengths].sort((a, b) => a - b));
  const screened = lengths.flatMap((l, i) => (typical > 0 && l > SCREEN * typical ? [i] : []));
  const kept = updates.filter((_, i) => !screened.includes(i));
  if (rule === 'MEDIAN') return { state: perGroup(kept, label, (groups) => coordinatewise(groups, sortedMedian)), screened };
  if (rule === 'TRIMMED_MEAN') return { state: perGroup(kept, label, (groups) => coordinatewise(groups, trimmedMean)), screened };
  return { state: centeredClip(kept, label), screened };
}

/** CENTERED_CLIP's iterations from the median (Karimireddy et al. 2021 find 1-3 enough from a good centre). */
export const CLIP_ITERATIONS = 3;

/**
 * Centered clipping: from the coordinate-wise median v, CLIP_ITERATIONS times
 * v <- v + mean_i clip(x_i - v, tau), tau the median distance of the updates' parameters to the
 * median. Each update's moments move with its parameters' scale, so they stay convex mixes.
 */
function centeredClip(updates: readonly TrainingState[], label: TrainingState['label']): TrainingState {
  let center = perGroup(updates, label, (groups) => coordinatewise(groups, sortedMedian));
  let distances = updates.map((u) => moveLength(center, u));
  const tau = median([...distances].sort((a, b) => a - b));
  for (let l = 0; l < CLIP_ITERATIONS; l++) {
    const from = center;
    if (l > 0) distances = updates.map((u) => moveLength(from, u));
    const scale = distances.map((d) => (d > tau ? tau / d : 1));
    center = perGroup(updates, label, (groups, pick) => {
      const out: HostWeights = new Map();
      for (const [name, c] of pick(from)) {
        const acc = Float64Array.from(c.data);
        groups.forEach((g, k) => {
          const x = g.get(name)!.data;
          for (let i = 0; i < acc.length; i++) acc[i] += (scale[k] * (x[i] - c.data[i])) / groups.length;
        });
        out.set(name, { shape: [...c.shape], data: Float32Array.from(acc) });
      }
      return out;
    });
  }
  return center;
}
