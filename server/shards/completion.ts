// A shard's completion: the update uploaded to the shard's URL is checked (its tensors, shapes,
// dtype, finite values and label) and accepted once; a repeated completion is a no-op, a rejected
// update ends the lease and the shard is re-issued.
import { inspect, parseState, tunedShapes } from '../../engine';
import { expectedUpdateLabel } from '../../protocol/shard-job';
import { keys, sha256 } from '../../storage';
import { modelConfig } from '../catalog/models';
import { badInput, conflict } from '../errors';
import type { Platform } from '../platform';
import { RunRecord, ShardRecord, trainingSpec } from '../state/records';
import { RunEvents } from '../runs/events';
import { Scheduler } from '../runs/scheduler';
import { Leases } from './leases';
import { Workers } from './workers';

export class Completion {
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
    const key = keys.shardUpdate(run.id, shard.id, attempt);
    let digest: string;
    try {
      digest = await this.check(run, shard, key, loss);
    } catch (e) {
      const reason = `attempt ${attempt} by worker ${workerId}: update rejected: ${(e as Error).message}`;
      await this.leases.release(workerId, shard, reason);
      throw badInput(`update rejected: ${(e as Error).message}; the shard is re-issued`);
    }
    const samples = (shard.toStep - shard.fromStep) * trainingSpec(run).options.batchSize;
    const accepted = await this.p.state.shards.complete(shard.id, workerId, attempt, { update: { key, sha256: digest }, loss, imagesPerSecond, samples });
    const after = (await this.p.state.shards.get(shard.id))!;
    // Another completion of the same lease may have been accepted while this one was checked.
    if (!accepted && !(after.status === 'DONE' && after.workerId === workerId && after.attempts === attempt)) {
      throw conflict(`shard ${shardId}: the lease ended while the update was checked; its result is not used`);
    }
    if (accepted) {
      await this.events.emit(run.id, 'SHARD', { trainLoss: loss, message: `shard ${shard.round}.${shard.index} done by worker ${workerId} (${imagesPerSecond.toFixed(1)} img/s)` });
      void this.scheduler.advance(run.id);
    }
    return after;
  }

  /** The update's digest once it is the right tensors for this shard; throws saying what is wrong. */
  private async check(run: RunRecord, shard: ShardRecord, key: string, loss: number): Promise<string> {
    if (!Number.isFinite(loss)) throw new Error(`reported loss ${loss}`);
    if (!(await this.p.blobs.stat(key))) throw new Error("nothing was uploaded to the shard's URL");
    const bytes = await this.p.blobs.get(key);
    const model = await this.p.state.models.byIdOrName(run.modelId);
    if (!model) throw new Error(`run ${run.id}: its model is no longer registered`);
    const config = modelConfig(model, run.numClasses);
    const update = parseState(bytes, tunedShapes(config, inspect(run.strategy, config).tuned), 'update');
    const want = expectedUpdateLabel({ runId: run.id, round: shard.round, shardId: shard.id, window: { from: shard.fromStep, to: shard.toStep }, options: trainingSpec(run).options });
    for (const k of ['run', 'round', 'shard', 'samples'] as const) {
      if (update.label[k] !== want[k]) throw new Error(`it claims ${k} ${update.label[k]}, this shard is ${k} ${want[k]}`);
    }
    return sha256(bytes);
  }
}
