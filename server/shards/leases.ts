// The shard protocol's leases: claim the oldest pending shard that fits, heartbeat to keep it,
// give it back on an error; leases that lapse return the shard to the queue. Every way a lease ends
// without a result counts towards the shard's attempts: a shard that fails MAX_ATTEMPTS times
// (a job that always kills its worker, say) fails its run instead of being re-issued forever.
import { Assignment, Download } from '../../protocol/shard-job';
import { trainOptionsOf } from '../../protocol/run-options';
import { keys } from '../../storage';
import { notFound } from '../errors';
import type { Platform } from '../platform';
import { RunRecord, ShardRecord, need, trainingSpec } from '../state/records';
import { RunEvents } from '../runs/events';
import { RunQueries } from '../runs/queries';
import { Scheduler } from '../runs/scheduler';
import { Workers } from './workers';

export const MAX_ATTEMPTS = 5;

/** A lease's end as the worker sees it: still held, or lost (and why). */
export type Held = { readonly shard: ShardRecord; readonly run: RunRecord } | { readonly lost: string };

export class Leases {
  constructor(
    private readonly p: Platform, private readonly workers: Workers, private readonly runs: RunQueries, private readonly scheduler: Scheduler,
    private readonly events: RunEvents,
  ) {}

  /** Leases the oldest pending shard whose run fits the worker's memory budget (bytes), if any. */
  async claim(workerId: string, memoryBudget?: number): Promise<{ shard: ShardRecord; leaseUntil: Date; assignment: Assignment } | null> {
    const worker = await this.workers.seen(workerId);
    await this.expire();
    const leaseUntil = new Date(Date.now() + this.p.config.leaseSeconds * 1000);
    const shard = await this.p.state.shards.leaseOldest(workerId, memoryBudget, leaseUntil);
    if (!shard) return null;
    const run = await this.runs.get(shard.runId);
    const assignment = await this.assignment(run, shard, worker.kind === 'node');
    await this.events.emit(run.id, 'SHARD', { message: `shard ${shard.round}.${shard.index} (steps ${shard.fromStep}-${shard.toStep}) leased to worker ${workerId}` });
    return { shard, leaseUntil, assignment };
  }

  /** What the worker downloads, trains and uploads. Node workers get internal URLs, browsers public ones. */
  private async assignment(run: RunRecord, shard: ShardRecord, internal: boolean): Promise<Assignment> {
    const model = await this.p.state.models.byIdOrName(run.modelId);
    const dataset = await this.p.state.datasets.byIdOrName(run.datasetId);
    if (!model || !dataset) throw new Error(`run ${run.id}: its ${model ? 'dataset' : 'model'} is no longer registered`);
    const seconds = this.p.config.urlSeconds;
    const get = async (b: { key: string; sha256: string; bytes: number }): Promise<Download> => ({ url: await this.p.blobs.presignGet(b.key, seconds, internal), sha256: b.sha256, bytes: b.bytes });
    const state = need(run.state, 'state', run);
    const stateInfo = await this.p.blobs.stat(state.key);
    return {
      shard: { id: shard.id, round: shard.round, index: shard.index },
      job: {
        runId: run.id, round: shard.round, shardId: shard.id, attempt: shard.attempts, strategy: run.strategy, numClasses: run.numClasses,
        normalization: need(run.normalization, 'normalization', run), options: trainOptionsOf(trainingSpec(run).options),
        window: { from: shard.fromStep, to: shard.toStep }, heartbeatSeconds: Math.max(1, Math.floor(this.p.config.leaseSeconds / 4)),
      },
      model: await get(model.blob),
      train: await Promise.all(dataset.shards.filter((s) => s.split === 'train').map(get)),
      state: await get({ ...state, bytes: stateInfo?.bytes ?? 0 }),
      uploadUrl: await this.p.blobs.presignPut(keys.shardUpdate(run.id, shard.id, shard.attempts), seconds, internal),
    };
  }

  /** The shard and its run while `workerId` holds the lease at `attempt`. */
  async held(workerId: string, shardId: string, attempt: number): Promise<Held> {
    const shard = await this.p.state.shards.get(shardId);
    if (!shard) throw notFound(`shard ${shardId} not found`);
    const run = await this.runs.get(shard.runId);
    if (shard.status === 'CANCELLED' || run.status === 'CANCELLED') return { lost: 'the run was cancelled' };
    if (shard.status !== 'LEASED' || shard.workerId !== workerId || shard.attempts !== attempt) return { lost: 'the lease expired and the shard was re-issued' };
    return { shard, run };
  }

  async heartbeat(workerId: string, shardId: string, attempt: number, stepsDone: number, loss: number | undefined): Promise<{ cancelled: boolean; reason?: string; leaseUntil?: Date }> {
    await this.workers.seen(workerId);
    const h = await this.held(workerId, shardId, attempt);
    if ('lost' in h) return { cancelled: true, reason: h.lost };
    const leaseUntil = new Date(Date.now() + this.p.config.leaseSeconds * 1000);
    if (!(await this.p.state.shards.renew(shardId, workerId, attempt, Math.floor(stepsDone), leaseUntil))) {
      return { cancelled: true, reason: 'the lease expired and the shard was re-issued' };
    }
    await this.events.emit(h.run.id, 'SHARD', { trainLoss: Number.isFinite(loss) ? loss : undefined });
    return { cancelled: false, leaseUntil };
  }

  /** The lease ends without a result (the worker failed, or its update was rejected). */
  async release(workerId: string, shard: ShardRecord, reason: string): Promise<boolean> {
    const release = await this.p.state.shards.release(shard.id, workerId, shard.attempts, reason, MAX_ATTEMPTS);
    if (release === 'lost') return false;
    await this.events.emit(shard.runId, 'WARNING', { message: `shard ${shard.round}.${shard.index}: ${reason}` });
    if (release === 'exhausted') await this.scheduler.fail(shard.runId, `shard ${shard.round}.${shard.index} failed ${MAX_ATTEMPTS} times; last: ${reason}`);
    return true;
  }

  /** A worker gives a shard back after an error: re-issued, and counted towards failing the run. */
  async fail(workerId: string, shardId: string, attempt: number, message: string): Promise<boolean> {
    await this.workers.seen(workerId);
    const h = await this.held(workerId, shardId, attempt);
    if ('lost' in h) return false;
    return this.release(workerId, h.shard, `attempt ${attempt} by worker ${workerId} failed: ${message.slice(0, 500)}`);
  }

  /** Returns lapsed leases to the queue; run by a timer and before each claim. */
  async expire(): Promise<number> {
    const expired = await this.p.state.shards.expire(new Date(), MAX_ATTEMPTS);
    for (const { shard, release } of expired) {
      const reason = shard.rejections[shard.rejections.length - 1];
      await this.events.emit(shard.runId, 'WARNING', { message: `shard ${shard.round}.${shard.index}: ${reason}; ${release === 'exhausted' ? 'no attempts left' : 're-issued'}` });
      if (release === 'exhausted') await this.scheduler.fail(shard.runId, `shard ${shard.round}.${shard.index} failed ${MAX_ATTEMPTS} times; last: ${reason}`);
    }
    return expired.length;
  }
}
