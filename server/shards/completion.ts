// A shard's completion: the lease clock stops, then the update uploaded to the lease's slot is
// checked (its tensors, shapes, dtype, finite values, label, and that AdamW's steps could reach it
// from the round's state, moments bounded by the gradient clip), copied to a content-addressed key
// no worker can write, and recorded once with its digest (over tensors, moments, step and the
// reported loss) and the kernel class it was claimed with, for the verification to judge; a
// repeated completion is a no-op, a rejected update ends the lease (a strike against its worker)
// and the shard is re-issued.
import { createHash } from 'node:crypto';
import { reachOf } from '../../engine';
import { expectedUpdateLabel } from '../../protocol/shard-job';
import { keys } from '../../storage';
import type { UpdateCheck } from '../compute/shard-jobs';
import { badInput, conflict } from '../errors';
import type { Platform } from '../platform';
import { RunRecord, ShardRecord, need, trainingSpec } from '../state/records';
import { RunEvents } from '../runs/events';
import { Leases } from './leases';
import { RunShapes } from './run-shapes';
import type { Slots } from './slots';
import { Verification } from './verification';
import { Workers } from './workers';

/** What a worker says of its result; checked, never trusted. */
export interface CompletionReport {
  readonly loss: number;
  readonly imagesPerSecond: number;
  readonly kernelClass: string;
  readonly downloadedBytes: number | null;
}

export class Completion {
  constructor(
    private readonly p: Platform,
    private readonly workers: Workers,
    private readonly leases: Leases,
    private readonly shapes: RunShapes,
    private readonly verification: Verification,
    private readonly events: RunEvents,
    private readonly slots: Slots,
  ) {}

  async complete(workerId: string, shardId: string, attempt: number, report: CompletionReport): Promise<ShardRecord> {
    const { loss, imagesPerSecond, kernelClass } = report;
    await this.workers.seen(workerId);
    const before = await this.p.state.shards.get(shardId);
    if (before?.status === 'DONE' && before.workerId === workerId && before.attempts === attempt) return before; // a retried completion
    const h = await this.leases.held(workerId, shardId, attempt);
    if ('lost' in h) throw conflict(`shard ${shardId}: ${h.lost}; its result is not used`);
    const { shard, run } = h;
    await this.p.state.shards.submit(shard.id, workerId, attempt, new Date());
    const slot = keys.shardUpload(run.id, shard.id, attempt);
    const checked = await this.check(run, shard, slot, report);
    if (!checked.ok) {
      // A completion of this lease racing this one was accepted (and its slot given back) meanwhile.
      const now = await this.p.state.shards.get(shard.id);
      if (now?.status === 'DONE' && now.workerId === workerId && now.attempts === attempt) return now;
      await this.slots.checked(slot);
      await this.leases.release(workerId, shard, `attempt ${attempt} by worker ${workerId}: update rejected: ${checked.reason}`);
      throw badInput(`update rejected: ${checked.reason}; the shard is re-issued`);
    }
    const { update: accepted } = checked;
    const digest = withLoss(checked.digest, loss);
    const samples = (shard.toStep - shard.fromStep) * trainingSpec(run).options.batchSize;
    const downloadedBytes =
      report.downloadedBytes !== null && Number.isFinite(report.downloadedBytes) && report.downloadedBytes >= 0 ? Math.round(report.downloadedBytes) : null;
    const done = await this.p.state.shards.complete(shard.id, workerId, attempt, {
      update: accepted,
      digest,
      kernelClass: shard.leaseClass ?? kernelClass,
      loss,
      imagesPerSecond,
      samples,
      downloadedBytes,
    });
    const after = (await this.p.state.shards.get(shard.id))!;
    await this.slots.checked(slot); // the update, if accepted, is kept under its own key
    // Another completion of the same lease may have been accepted while this one was checked.
    if (!done && !(after.status === 'DONE' && after.workerId === workerId && after.attempts === attempt)) {
      throw conflict(`shard ${shardId}: the lease ended while the update was checked; its result is not used`);
    }
    if (done) {
      await this.events.emit(
        run.id,
        'SHARD',
        { trainLoss: loss, message: `shard ${shard.round}.${shard.index} done by worker ${workerId} (${imagesPerSecond.toFixed(1)} img/s, ${kernelClass})` },
        run,
      );
      void this.verification
        .judge({ runId: run.id, round: after.round, index: after.index })
        .then(() => this.leases.tighten(run, after.round))
        .catch((e: Error) => this.p.log(`run ${run.id}: tightening the round's leases failed: ${e.message}`));
    }
    return after;
  }

  /** The update checked on the shards' compute thread, and stored where no worker can write; or why it is refused. */
  private async check(run: RunRecord, shard: ShardRecord, slot: string, { loss, imagesPerSecond, kernelClass }: CompletionReport): Promise<UpdateCheck> {
    if (!Number.isFinite(loss)) return { ok: false, reason: `reported loss ${loss}` };
    if (!(imagesPerSecond >= 0 && imagesPerSecond < 1e6)) return { ok: false, reason: `reported speed ${imagesPerSecond} img/s` };
    // The class is declared with the claim: a result claimed for another class is refused, never re-judged by a looser rule.
    if (kernelClass !== shard.leaseClass)
      return { ok: false, reason: `it reports kernel class '${kernelClass.slice(0, 120)}', the shard was claimed for '${shard.leaseClass}'` };
    const start = need(run.state, 'state', run);
    const stateBytes = (await this.p.blobs.stat(start.key))?.bytes ?? 0;
    const { options } = trainingSpec(run);
    return this.p.shardCompute.call('checkUpdate', {
      slot,
      maxBytes: 2 * stateBytes + 65_536,
      start,
      shapes: await this.shapes.of(run),
      label: expectedUpdateLabel({ runId: run.id, round: shard.round, shardId: shard.id, window: { from: shard.fromStep, to: shard.toStep }, options }),
      reach: reachOf(options, need(run.plan, 'plan', run).trainImages, shard.fromStep, shard.toStep),
    });
  }
}

/** The update's digest bound to the loss its worker reported: replicas must agree on both. */
function withLoss(digest: string, loss: number): string {
  return createHash('sha256')
    .update(digest)
    .update(new Uint8Array(Float64Array.of(loss).buffer))
    .digest('hex');
}
