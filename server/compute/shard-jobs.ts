// The per-shard tensor work, on a compute thread of its own so that neither the event loop (which
// answers every worker's claims) nor a long evaluation holds it up: an uploaded update checked
// (its tensors, its label, and that AdamW's steps could reach it from the round's state) and
// copied where no worker can write; two results of different kernel classes compared; a round's
// accepted updates combined into the next state.
import { createHash } from 'node:crypto';
import { Aggregation, Reach, TrainingState, UpdateDistance, aggregate, beyondReach, fedAvg, parseState, serializeState, updateDistance } from '../../engine';
import { BlobStore, IntegrityError, keys, sha256 } from '../../storage';
import type { BlobRef, StoredBlob } from '../state/records';

type Shapes = ReadonlyMap<string, readonly number[]>;

/** SHA-256 over a state's tensors (names, shapes, bytes) and optimizer step: not its label. */
export function digestOf(s: TrainingState): string {
  const h = createHash('sha256');
  h.update(`step ${s.optimizer.step}\n`);
  for (const [group, tensors] of [['param', s.params], ['exp_avg', s.optimizer.expAvg], ['exp_avg_sq', s.optimizer.expAvgSq]] as const) {
    for (const name of [...tensors.keys()].sort()) {
      const t = tensors.get(name)!;
      h.update(`${group}/${name} [${t.shape.join(',')}]\n`);
      h.update(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
    }
  }
  return h.digest('hex');
}

export interface UpdateToCheck {
  /** Where the worker uploaded it. */
  readonly slot: string;
  /** An update is a state of the run's tensors: far more bytes than that is refused unread. */
  readonly maxBytes: number;
  readonly start: BlobRef;
  readonly shapes: Shapes;
  /** The label it must carry. */
  readonly label: { readonly run: string; readonly round: number; readonly shard: string; readonly samples: number };
  readonly reach: Reach;
}

export type UpdateCheck = { readonly ok: true; readonly update: StoredBlob; readonly digest: string } | { readonly ok: false; readonly reason: string };

export type RoundAggregate = { readonly state: StoredBlob; readonly screened: readonly number[] } | { readonly lost: number; readonly reason: string };

export class ShardJobs {
  private readonly states = new Map<string, Promise<TrainingState>>();

  constructor(private readonly store: BlobStore) {}

  /** A stored state or result, parsed once while it is among the last few (a round's start is read by every check). */
  private state(ref: BlobRef, shapes: Shapes): Promise<TrainingState> {
    let s = this.states.get(ref.sha256);
    if (!s) {
      s = this.store.get(ref.key, ref.sha256).then((b) => parseState(b, shapes, ref.key));
      s.catch(() => this.states.delete(ref.sha256));
      this.states.set(ref.sha256, s);
      while (this.states.size > 6) this.states.delete(this.states.keys().next().value!);
    }
    return s;
  }

  async checkUpdate(u: UpdateToCheck): Promise<UpdateCheck> {
    const info = await this.store.stat(u.slot);
    if (!info) return { ok: false, reason: "nothing was uploaded to the shard's URL" };
    if (info.bytes > u.maxBytes) return { ok: false, reason: `the upload has ${info.bytes} bytes, far more than a state of this run's tensors` };
    const bytes = await this.store.get(u.slot).catch((e: { code?: string }) => {
      if (e.code === 'NoSuchKey') return undefined; // given back by a completion of the same lease
      throw e;
    });
    if (!bytes) return { ok: false, reason: "nothing was uploaded to the shard's URL" };
    let update: TrainingState;
    try {
      update = parseState(bytes, u.shapes, 'update');
    } catch (e) {
      return { ok: false, reason: (e as Error).message };
    }
    for (const k of ['run', 'round', 'shard', 'samples'] as const) {
      if (update.label[k] !== u.label[k]) return { ok: false, reason: `it claims ${k} ${update.label[k]}, this shard is ${k} ${u.label[k]}` };
    }
    const why = beyondReach(await this.state(u.start, u.shapes), update, u.reach);
    if (why) return { ok: false, reason: `not what ${u.reach.lrs.length} AdamW steps from the round's state can make: ${why}` };
    return { ok: true, update: await this.store.put(keys.update(u.label.run, sha256(bytes)), bytes), digest: digestOf(update) };
  }

  /** How far apart two results of one shard are, relative to their moves from the round's start. */
  async distance(d: { start: BlobRef; a: BlobRef; b: BlobRef; shapes: Shapes }): Promise<UpdateDistance> {
    const [start, a, b] = await Promise.all([d.start, d.a, d.b].map((ref) => this.state(ref, d.shapes)));
    return updateDistance(start, a, b);
  }

  /** The next round's state from the accepted updates, by the run's rule; names the first update that cannot be read. */
  async aggregate(a: { rule: Aggregation; start: BlobRef; updates: readonly BlobRef[]; shapes: Shapes; label: TrainingState['label']; out: string }): Promise<RoundAggregate> {
    const updates: TrainingState[] = [];
    for (const [i, ref] of a.updates.entries()) {
      try {
        updates.push(parseState(await this.store.get(ref.key, ref.sha256), a.shapes, ref.key));
      } catch (e) {
        if (e instanceof IntegrityError || ['NoSuchKey', 'NotFound'].includes((e as { code?: string }).code ?? '')) return { lost: i, reason: (e as Error).message };
        throw e;
      }
    }
    if (a.rule === 'FEDAVG') return { state: await this.store.put(a.out, serializeState(fedAvg(updates, a.label))), screened: [] };
    const { state, screened } = aggregate(a.rule, await this.state(a.start, a.shapes), updates, a.label);
    return { state: await this.store.put(a.out, serializeState(state)), screened };
  }
}
