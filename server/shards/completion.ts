// A shard's completion: the update uploaded to the lease's slot is checked (its tensors, shapes,
// dtype, finite values, label, and that AdamW's steps could reach it from the round's state),
// copied to a content-addressed key no worker can write, and recorded once with its digest and
// kernel class for the verification to judge; a repeated completion is a no-op, a rejected update
// ends the lease (a strike against its worker) and the shard is re-issued.
import { KERNEL_CLASS_PATTERN, beyondReach, parseState, reachOf } from '../../engine';
import { expectedUpdateLabel } from '../../protocol/shard-job';
import { keys, sha256 } from '../../storage';
import { badInput, conflict } from '../errors';
import type { Platform } from '../platform';
import { RunRecord, ShardRecord, need, trainingSpec } from '../state/records';
import { RunEvents } from '../runs/events';
import { Leases } from './leases';
import { RunTensors, digestOf } from './run-tensors';
import { Verification } from './verification';
import { Workers } from './workers';

export class Completion {
  constructor(
    private readonly p: Platform, private readonly workers: Workers, private readonly leases: Leases, private readonly tensors: RunTensors,
    private readonly verification: Verification, private readonly events: RunEvents,
  ) {}

  async complete(workerId: string, shardId: string, attempt: number, loss: number, imagesPerSecond: number, kernelClass: string): Promise<ShardRecord> {
    await this.workers.seen(workerId);
    const before = await this.p.state.shards.get(shardId);
    if (before?.status === 'DONE' && before.workerId === workerId && before.attempts === attempt) return before; // a retried completion
    const h = await this.leases.held(workerId, shardId, attempt);
    if ('lost' in h) throw conflict(`shard ${shardId}: ${h.lost}; its result is not used`);
    const { shard, run } = h;
    const slot = keys.shardUpload(run.id, shard.id, attempt);
    let accepted: { key: string; sha256: string };
    let digest: string;
    try {
      if (!(imagesPerSecond >= 0 && imagesPerSecond < 1e6)) throw new Error(`reported speed ${imagesPerSecond} img/s`);
      if (!KERNEL_CLASS_PATTERN.test(kernelClass)) throw new Error(`kernel class '${kernelClass.slice(0, 40)}' is not a kernel class name`);
      const checked = await this.check(run, shard, slot, loss);
      digest = checked.digest;
      accepted = await this.p.blobs.put(keys.update(sha256(checked.bytes)), checked.bytes);
    } catch (e) {
      const reason = `attempt ${attempt} by worker ${workerId}: update rejected: ${(e as Error).message}`;
      await this.leases.release(workerId, shard, reason);
      throw badInput(`update rejected: ${(e as Error).message}; the shard is re-issued`);
    }
    const samples = (shard.toStep - shard.fromStep) * trainingSpec(run).options.batchSize;
    const done = await this.p.state.shards.complete(shard.id, workerId, attempt, { update: accepted, digest, kernelClass, loss, imagesPerSecond, samples });
    const after = (await this.p.state.shards.get(shard.id))!;
    // Another completion of the same lease may have been accepted while this one was checked.
    if (!done && !(after.status === 'DONE' && after.workerId === workerId && after.attempts === attempt)) {
      throw conflict(`shard ${shardId}: the lease ended while the update was checked; its result is not used`);
    }
    if (done) {
      await this.events.emit(run.id, 'SHARD', { trainLoss: loss, message: `shard ${shard.round}.${shard.index} done by worker ${workerId} (${imagesPerSecond.toFixed(1)} img/s, ${kernelClass})` });
      void this.verification.judge(run, after);
    }
    return after;
  }

  /** The update's bytes and digest once they are the right tensors for this shard; throws saying what is wrong. */
  private async check(run: RunRecord, shard: ShardRecord, key: string, loss: number): Promise<{ bytes: Uint8Array; digest: string }> {
    if (!Number.isFinite(loss)) throw new Error(`reported loss ${loss}`);
    const info = await this.p.blobs.stat(key);
    if (!info) throw new Error("nothing was uploaded to the shard's URL");
    const stateBytes = (await this.p.blobs.stat(need(run.state, 'state', run).key))?.bytes ?? 0;
    if (info.bytes > 2 * stateBytes + 65_536) throw new Error(`the upload has ${info.bytes} bytes, far more than a state of this run's tensors`);
    const bytes = await this.p.blobs.get(key);
    const update = parseState(bytes, await this.tensors.shapes(run), 'update');
    const { options } = trainingSpec(run);
    const want = expectedUpdateLabel({ runId: run.id, round: shard.round, shardId: shard.id, window: { from: shard.fromStep, to: shard.toStep }, options });
    for (const k of ['run', 'round', 'shard', 'samples'] as const) {
      if (update.label[k] !== want[k]) throw new Error(`it claims ${k} ${update.label[k]}, this shard is ${k} ${want[k]}`);
    }
    const reach = reachOf(options, need(run.plan, 'plan', run).trainImages, shard.fromStep, shard.toStep);
    const why = beyondReach(await this.tensors.roundStart(run), update, reach);
    if (why) throw new Error(`not what ${reach.lrs.length} AdamW steps from the round's state can make: ${why}`);
    return { bytes, digest: digestOf(update) };
  }
}
