// A run's training state between rounds, and a shard's update: the tuned tensors with their AdamW
// moments (PyTorch's names: exp_avg, exp_avg_sq) in one safetensors file, F32 only.
import { AdamWState } from '../train/adamw';
import { HostWeights } from './checkpoint';
import { parseSafetensors, serializeSafetensors } from './safetensors';

export const STATE_KEY = 'partune.state';

/** Who made the file and for what: checked against the shard it claims to answer. */
export interface StateLabel {
  readonly run: string;
  readonly round: number;
  readonly shard?: string;
  /** Training images behind this state (a shard's weight in the average). */
  readonly samples?: number;
}

export interface TrainingState {
  readonly label: StateLabel;
  readonly params: HostWeights;
  readonly optimizer: AdamWState;
}

const GROUPS = { params: 'param/', expAvg: 'exp_avg/', expAvgSq: 'exp_avg_sq/' } as const;

export function serializeState(s: TrainingState): Uint8Array {
  const all: HostWeights = new Map();
  for (const [name, w] of s.params) all.set(GROUPS.params + name, w);
  for (const [name, w] of s.optimizer.expAvg) all.set(GROUPS.expAvg + name, w);
  for (const [name, w] of s.optimizer.expAvgSq) all.set(GROUPS.expAvgSq + name, w);
  return serializeSafetensors(all, { dtype: 'F32', metadata: { [STATE_KEY]: JSON.stringify({ ...s.label, step: s.optimizer.step }) } });
}

/**
 * Parses and checks a state against the tensors it must hold (`expected`: name -> shape). Every
 * failure names the tensor: a wrong name set, shape, dtype or a non-finite value.
 */
export function parseState(bytes: Uint8Array, expected: ReadonlyMap<string, readonly number[]>, source = 'training state'): TrainingState {
  const file = parseSafetensors(bytes, source);
  const raw = file.metadata[STATE_KEY];
  if (!raw) throw new Error(`${source}: not a training state (no ${STATE_KEY} metadata)`);
  const meta = JSON.parse(raw) as StateLabel & { step: number };
  const groups = { params: new Map(), expAvg: new Map(), expAvgSq: new Map() } as Record<keyof typeof GROUPS, HostWeights>;
  for (const [key, t] of file.tensors) {
    const group = (Object.keys(GROUPS) as (keyof typeof GROUPS)[]).find((g) => key.startsWith(GROUPS[g]));
    const name = group ? key.slice(GROUPS[group].length) : key;
    const shape = expected.get(name);
    if (!group || !shape) throw new Error(`${source}: unexpected tensor '${key}'`);
    if (t.dtype !== 'F32') throw new Error(`${source}: '${key}' is ${t.dtype}, must be F32`);
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      throw new Error(`${source}: '${key}' has shape [${t.shape}], expected [${shape}]`);
    }
    const bad = t.data.findIndex((v) => !Number.isFinite(v));
    if (bad >= 0) throw new Error(`${source}: '${key}' holds a non-finite value (${t.data[bad]}) at ${bad}`);
    if (group === 'expAvgSq' && t.data.some((v) => v < 0)) throw new Error(`${source}: '${key}' has negative second moments`);
    groups[group].set(name, { shape: t.shape, data: t.data });
  }
  for (const name of expected.keys()) {
    for (const g of Object.keys(GROUPS) as (keyof typeof GROUPS)[]) {
      if (!groups[g].has(name)) throw new Error(`${source}: missing '${GROUPS[g]}${name}'`);
    }
  }
  if (!Number.isInteger(meta.step) || meta.step < 0) throw new Error(`${source}: bad optimizer step ${meta.step}`);
  const label: StateLabel = { run: meta.run, round: meta.round, shard: meta.shard, samples: meta.samples };
  return { label, params: groups.params, optimizer: { step: meta.step, expAvg: groups.expAvg, expAvgSq: groups.expAvgSq } };
}
