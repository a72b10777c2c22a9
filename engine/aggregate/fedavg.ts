// FedAvg (McMahan et al. 2017) over named tensors: the sample-weighted mean of the shards' tuned
// tensors and optimizer moments. Averages by name and refuses replies whose names or shapes differ.
import { HostWeights } from '../weights/checkpoint';
import { TrainingState } from '../weights/state';

export function weightedMean(items: readonly { weights: HostWeights; samples: number }[]): HostWeights {
  if (items.length === 0) throw new Error('nothing to average');
  const total = items.reduce((n, i) => n + i.samples, 0);
  if (!(total > 0)) throw new Error('the replies hold no samples');
  const first = items[0].weights;
  const out: HostWeights = new Map();
  for (const [name, w] of first) {
    const acc = new Float64Array(w.data.length);
    for (const { weights, samples } of items) {
      const t = weights.get(name);
      if (!t || t.data.length !== w.data.length) throw new Error(`tensor '${name}' is missing or has another size in one reply`);
      const k = samples / total;
      for (let i = 0; i < acc.length; i++) acc[i] += k * t.data[i];
    }
    out.set(name, { shape: [...w.shape], data: Float32Array.from(acc) });
  }
  for (const { weights } of items) {
    for (const name of weights.keys()) if (!first.has(name)) throw new Error(`tensor '${name}' appears in only some replies`);
  }
  return out;
}

/** One round's aggregate: parameters and both moments averaged; the step is the furthest reached. */
export function fedAvg(updates: readonly TrainingState[], label: TrainingState['label']): TrainingState {
  const weigh = (pick: (u: TrainingState) => HostWeights) => weightedMean(updates.map((u) => ({ weights: pick(u), samples: u.label.samples ?? 0 })));
  return {
    label,
    params: weigh((u) => u.params),
    optimizer: { step: Math.max(...updates.map((u) => u.optimizer.step)), expAvg: weigh((u) => u.optimizer.expAvg), expAvgSq: weigh((u) => u.optimizer.expAvgSq) },
  };
}
