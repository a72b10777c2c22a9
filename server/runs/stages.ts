// A run kind's stages, as Flower's Strategy: the scheduler does the I/O and the transitions, the
// stages do the work of each step. configure (PREPARING: the plan and the first state) -> each
// round's shards (windows and their packed records) -> aggregate each round's shard updates -> evaluate at epoch ends -> finish (FINALIZING: the delta
// and what the run reports). A kind without rounds (a soup) configures nothing and only finishes.
import type { Normalization } from '../../engine';
import type { AngleProfileRecord, BlobRef, NewShard, Plan, RunKind, RunRecord, ShardRecord, SoupReport, StoredBlob, StoredStrategy } from '../state/records';

export interface Configured {
  readonly plan: Plan;
  readonly state: StoredBlob;
  readonly normalization: Normalization;
}

export interface Finished {
  /** The delta file (safetensors) and what it holds. */
  readonly delta: { readonly bytes: Uint8Array; readonly tensors: number; readonly tunedParams: number };
  readonly accuracy: number;
  readonly loss: number | null;
  readonly report?: SoupReport;
  /** An angle probe's profile and the strategy it derived. */
  readonly profile?: { readonly record: AngleProfileRecord; readonly strategy: StoredStrategy };
  /** What the run's last event says. */
  readonly message: string;
}

export interface RunStages {
  /** The plan and round 0's state; null for a kind without rounds. */
  configure(run: RunRecord): Promise<Configured | null>;
  /** The shards of round `round` of `plan`: their windows, replicas, and the data each reads. */
  shards(run: RunRecord, plan: Plan, round: number): Promise<NewShard[]>;
  /** The next round's state from this round's accepted shard updates. */
  aggregate(run: RunRecord, shards: readonly ShardRecord[]): Promise<StoredBlob>;
  /** Test top-1 and loss of a state. */
  evaluate(run: RunRecord, state: BlobRef): Promise<{ readonly accuracy: number; readonly loss: number }>;
  finish(run: RunRecord): Promise<Finished>;
}

/** A shard's accepted update can no longer be read intact: the shard is done again, not the run failed. */
export class LostUpdate extends Error {
  constructor(readonly shard: ShardRecord, reason: string) {
    super(`the update of shard ${shard.round}.${shard.index} is unusable (${reason})`);
  }
}

export type StagesByKind = { readonly [K in RunKind]: RunStages };
