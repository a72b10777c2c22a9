// A shard's completion: the update uploaded to the lease's slot is checked (its tensors, shapes,
// dtype, finite values, label, and that AdamW's steps could reach it from the round's state),
// copied to a content-addressed key no worker can write, and accepted once; a repeated completion
// is a no-op, a rejected update ends the lease (a strike against its worker) and the shard is
// re-issued.
import { TrainingState, beyondReach, inspect, parseState, reachOf, tunedShapes } from '../../engine';
import { expectedUpdateLabel } from '../../protocol/shard-job';
import { keys, sha256 } from '../../storage';
import { modelConfig } from '../catalog/models';
import { badInput, conflict } from '../errors';
import type { Platform } from '../platform';
import { BlobRef, RunRecord, ShardRecord, need, trainingSpec } from '../state/records';
import { RunEvents } from '../runs/events';
import { Scheduler } from '../runs/scheduler';
import { Leases } from './leases';
import { Workers } from './workers';

export class Completion {
  private readonly starts = new Map<string, Promise<TrainingState>>();

  constructor(
    private readonly p: Platform, private readonly workers: Workers, private readonly leases: Leases, private readonly scheduler: Scheduler,
    private readonly events: RunEvents,
  ) {}

  async complete(workerId: string, shardId: string, attempt: number, loss: number, imagesPerSecond: number): Promise<ShardRecord> {
    await this.workers.seen(workerId);
    const before = await this.p.state.shards.get(shardId);
    if (before?.status === 'DONE' && before.workerId === workerId && before.attempts === attempt) return before; // a retried completion
    const h = await this.leases.held(workerId, shardId, attempt);
    if ('lost' in h) throw conflict(`shard ${shardId}: ${h.lost}; its result is not used`);
    const { shard, run } = h;
    const slot = keys.shardUpload(run.id, shard.id, attempt);
    let accepted: { key: string; sha256: string };
    try {
      if (!(imagesPerSecond >= 0 && imagesPerSecond < 1e6)) throw new Error(`reported speed ${imagesPerSecond} img/s`);
      const bytes = await this.check(run, shard, slot, loss);
      accepted = await this.p.blobs.put(keys.update(sha256(bytes)), bytes);
    } catch (e) {
      const reason = `attempt ${attempt} by worker ${workerId}: update rejected: ${(e as Error).message}`;
      await this.leases.release(workerId, shard, reason);
      throw badInput(`update rejected: ${(e as Error).message}; the shard is re-issued`);
    }
    const samples = (shard.toStep - shard.fromStep) * trainingSpec(run).options.batchSize;
    const done = await this.p.state.shards.complete(shard.id, workerId, attempt, { update: accepted, loss, imagesPerSecond, samples });
    const after = (await this.p.state.shards.get(shard.id))!;
    // Another completion of the same lease may have been accepted while this one was checked.
    if (!done && !(after.status === 'DONE' && after.workerId === workerId && after.attempts === attempt)) {
      throw conflict(`shard ${shardId}: the lease ended while the update was checked; its result is not used`);
    }
    if (done) {
      await this.events.emit(run.id, 'SHARD', { trainLoss: loss, message: `shard ${shard.round}.${shard.index} done by worker ${workerId} (${imagesPerSecond.toFixed(1)} img/s)` });
      void this.scheduler.advance(run.id);
    }
    return after;
  }

  /** The update's bytes once they are the right tensors for this shard; throws saying what is wrong. */
  private async check(run: RunRecord, shard: ShardRecord, key: string, loss: number): Promise<Uint8Array> {
    if (!Number.isFinite(loss)) throw new Error(`reported loss ${loss}`);
    const info = await this.p.blobs.stat(key);
    if (!info) throw new Error("nothing was uploaded to the shard's URL");
    const stateBytes = (await this.p.blobs.stat(need(run.state, 'state', run).key))?.bytes ?? 0;
    if (info.bytes > 2 * stateBytes + 65_536) throw new Error(`the upload has ${info.bytes} bytes, far more than a state of this run's tensors`);
    const bytes = await this.p.blobs.get(key);
    const model = await this.p.state.models.byIdOrName(run.modelId);
    if (!model) throw new Error(`run ${run.id}: its model is no longer registered`);
    const config = modelConfig(model, run.numClasses);
    const shapes = tunedShapes(config, inspect(run.strategy, config).tuned);
    const update = parseState(bytes, shapes, 'update');
    const { options } = trainingSpec(run);
    const want = expectedUpdateLabel({ runId: run.id, round: shard.round, shardId: shard.id, window: { from: shard.fromStep, to: shard.toStep }, options });
    for (const k of ['run', 'round', 'shard', 'samples'] as const) {
      if (update.label[k] !== want[k]) throw new Error(`it claims ${k} ${update.label[k]}, this shard is ${k} ${want[k]}`);
    }
    const reach = reachOf(options, need(run.plan, 'plan', run).trainImages, shard.fromStep, shard.toStep);
    const why = beyondReach(await this.roundStart(need(run.state, 'state', run), shapes), update, reach);
    if (why) throw new Error(`not what ${reach.lrs.length} AdamW steps from the round's state can make: ${why}`);
    return bytes;
  }

  /** The round's starting state, parsed once for all its shards. */
  private roundStart(ref: BlobRef, shapes: ReadonlyMap<string, readonly number[]>): Promise<TrainingState> {
    let state = this.starts.get(ref.sha256);
    if (!state) {
      state = this.p.blobs.get(ref.key, ref.sha256).then((b) => parseState(b, shapes, ref.key));
      state.catch(() => this.starts.delete(ref.sha256));
      this.starts.set(ref.sha256, state);
      while (this.starts.size > 4) this.starts.delete(this.starts.keys().next().value!);
    }
    return state;
  }
}
