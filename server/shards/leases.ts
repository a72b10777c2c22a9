// The shard protocol's leases: claim the oldest pending shard that fits, heartbeat with progress
// to keep it, give it back on an error. A lease ends without a result when it lapses, when its steps
// stop advancing (PARTUNE_STALL_SECONDS), or at its deadline (the shard's steps at the worker's
// measured speed, with slack); each such end is a strike against its worker. A shard fails its run
// only when the failure budget says so: enough distinct workers, at least one of them trusted.
import { Assignment, Download } from '../../protocol/shard-job';
import { trainOptionsOf } from '../../protocol/run-options';
import { keys } from '../../storage';
import { forbidden, notFound } from '../errors';
import type { Platform } from '../platform';
import { RunRecord, ShardRecord, need, trainingSpec } from '../state/records';
import { RunEvents } from '../runs/events';
import { RunQueries } from '../runs/queries';
import { Scheduler } from '../runs/scheduler';
import { ClaimWaiters, MAX_CLAIM_WAIT_SECONDS } from './claim-waiters';
import { Verification } from './verification';
import { Workers } from './workers';

/** A deadline allows this many times the steps at the worker's last measured speed. */
const SPEED_SLACK = 4;

export interface Claimed { readonly shard: ShardRecord; readonly leaseUntil: Date; readonly assignment: Assignment }

/** A lease's end as the worker sees it: still held, or lost (and why). */
export type Held = { readonly shard: ShardRecord; readonly run: RunRecord } | { readonly lost: string };

export class Leases {
  private readonly waiters = new ClaimWaiters();

  constructor(
    private readonly p: Platform, private readonly workers: Workers, private readonly runs: RunQueries, private readonly scheduler: Scheduler,
    private readonly verification: Verification, private readonly events: RunEvents,
  ) {}

  /**
   * Leases the oldest pending shard whose run fits the worker's memory budget (bytes); when there is
   * none, waits up to `waitSeconds` for one to become claimable before answering null. A client
   * that goes away while waiting (`gone`) takes nothing: a dead worker must not hold a shard.
   */
  async claim(workerId: string, memoryBudget?: number, waitSeconds = 0, gone?: AbortSignal): Promise<Claimed | null> {
    const until = Date.now() + Math.min(Math.max(0, waitSeconds), MAX_CLAIM_WAIT_SECONDS) * 1000;
    for (;;) {
      if (gone?.aborted) return null;
      const ticket = Date.now() < until && !this.waiters.stopped ? this.waiters.ticket(until - Date.now(), gone) : undefined;
      const claimed = await this.claimNow(workerId, memoryBudget).catch((e: unknown) => {
        ticket?.cancel();
        throw e;
      });
      if (claimed || !ticket) {
        ticket?.cancel();
        return claimed;
      }
      await ticket.woken;
    }
  }

  /** Shards became claimable (a signal from any replica): wakes about that many waiting claims. */
  wake(shards: number): void {
    this.waiters.wake(shards);
  }

  /** The server stops: waiting claims answer null now. */
  stopWaiting(): void {
    this.waiters.close();
  }

  private async claimNow(workerId: string, memoryBudget: number | undefined): Promise<Claimed | null> {
    const worker = await this.workers.active(workerId);
    const now = new Date();
    const leaseUntil = new Date(now.getTime() + this.p.config.leaseSeconds * 1000);
    const leased = await this.p.state.shards.leaseOldest(worker, memoryBudget, leaseUntil, now);
    if (!leased) return null;
    const run = await this.runs.get(leased.runId);
    const deadline = this.deadline(await this.p.state.shards.lastSpeed(run.id, worker.id), run, leased, now);
    await this.p.state.shards.setDeadline(leased.id, worker.id, leased.attempts, deadline);
    const shard = { ...leased, deadline, leaseUntil: new Date(Math.min(leaseUntil.getTime(), deadline.getTime())) };
    await this.verification.leased(run, shard, worker);
    const assignment = await this.assignment(run, shard, worker.kind === 'node');
    await this.events.emit(run.id, 'SHARD', { message: `shard ${shard.round}.${shard.index} (steps ${shard.fromStep}-${shard.toStep}) leased to worker ${workerId}` }, run);
    return { shard, leaseUntil: shard.leaseUntil, assignment };
  }

  /**
   * The stall window plus the shard's images at the speed the worker showed on this run (same
   * model, batch and strategy), with slack; PARTUNE_MAX_SHARD_SECONDS at most, and until it has one.
   */
  private deadline(speed: number | undefined, run: RunRecord, shard: ShardRecord, now: Date): Date {
    const { stallSeconds, maxShardSeconds } = this.p.config;
    const images = (shard.toStep - shard.fromStep) * trainingSpec(run).options.batchSize;
    const seconds = speed ? Math.min(maxShardSeconds, stallSeconds + (SPEED_SLACK * images) / speed) : maxShardSeconds;
    return new Date(now.getTime() + seconds * 1000);
  }

  /** What the worker downloads, trains and uploads. Node workers get internal URLs, browsers public ones. */
  private async assignment(run: RunRecord, shard: ShardRecord, internal: boolean): Promise<Assignment> {
    const model = await this.p.state.models.byIdOrName(run.modelId);
    const dataset = await this.p.state.datasets.byIdOrName(run.datasetId);
    if (!model || !dataset) throw new Error(`run ${run.id}: its ${model ? 'dataset' : 'model'} is no longer registered`);
    // URLs live as long as the lease may.
    const seconds = Math.max(60, Math.ceil((need(shard.deadline, 'deadline', run).getTime() - Date.now()) / 1000));
    const get = async (b: { key: string; sha256: string; bytes: number }): Promise<Download> => ({ url: await this.p.blobs.presignGet(b.key, seconds, internal), sha256: b.sha256, bytes: b.bytes });
    const state = need(run.state, 'state', run);
    const stateInfo = await this.p.blobs.stat(state.key);
    const updateLimit = 2 * (stateInfo?.bytes ?? 0) + 65_536; // an update is a state of the same tensors
    return {
      shard: { id: shard.id, round: shard.round, index: shard.index },
      job: {
        runId: run.id, round: shard.round, shardId: shard.id, attempt: shard.attempts, strategy: run.strategy, numClasses: run.numClasses,
        normalization: need(run.normalization, 'normalization', run), options: trainOptionsOf(trainingSpec(run).options),
        trainImages: need(run.plan, 'plan', run).trainImages, window: { from: shard.fromStep, to: shard.toStep }, heartbeatSeconds: Math.max(1, Math.floor(this.p.config.leaseSeconds / 4)),
      },
      model: await get(model.blob),
      // The window's records when packed (shards planned before packs read the whole split).
      train: shard.pack ? [] : await Promise.all(dataset.shards.filter((s) => s.split === 'train').map(get)),
      records: shard.pack && (await get(shard.pack)),
      state: await get({ ...state, bytes: stateInfo?.bytes ?? 0 }),
      uploadUrl: await this.p.blobs.presignPut(keys.shardUpload(run.id, shard.id, shard.attempts), seconds, internal, updateLimit),
    };
  }

  /**
   * The shard and its run while `workerId` holds the lease at `attempt`. A shard another worker
   * holds, or held at that attempt, is not this worker's to act on: FORBIDDEN.
   */
  async held(workerId: string, shardId: string, attempt: number): Promise<Held> {
    const shard = await this.p.state.shards.get(shardId);
    if (!shard) throw notFound(`shard ${shardId} not found`);
    if (shard.workerId !== null && shard.workerId !== workerId && shard.attempts === attempt) throw forbidden(`shard ${shardId} is leased to another worker`);
    const run = await this.runs.get(shard.runId);
    if (run.status === 'CANCELLED') return { lost: 'the run was cancelled' };
    if (shard.status === 'CANCELLED') return { lost: 'other replicas settled the shard' };
    if (shard.status !== 'LEASED' || shard.workerId !== workerId || shard.attempts !== attempt) {
      const why = shard.rejections.find((r) => r.startsWith(`attempt ${attempt}:`) || r.startsWith(`attempt ${attempt} `));
      return { lost: why ? `the lease ended (${why}) and the shard was re-issued` : 'the lease ended and the shard was re-issued' };
    }
    return { shard, run };
  }

  async heartbeat(workerId: string, shardId: string, attempt: number, stepsDone: number, loss: number | undefined): Promise<{ cancelled: boolean; reason?: string; leaseUntil?: Date }> {
    await this.workers.seen(workerId);
    const h = await this.held(workerId, shardId, attempt);
    if ('lost' in h) return { cancelled: true, reason: h.lost };
    const now = new Date();
    const leaseUntil = new Date(now.getTime() + this.p.config.leaseSeconds * 1000);
    if (!(await this.p.state.shards.renew(shardId, workerId, attempt, Math.floor(stepsDone), leaseUntil, now))) {
      return { cancelled: true, reason: 'the lease ended and the shard was re-issued' };
    }
    await this.events.progress(h.run.id, Number.isFinite(loss) ? loss : undefined);
    return { cancelled: false, leaseUntil: h.shard.deadline && h.shard.deadline < leaseUntil ? h.shard.deadline : leaseUntil };
  }

  /** The lease ends without a result (the worker failed, or its update was rejected). */
  async release(workerId: string, shard: ShardRecord, reason: string): Promise<boolean> {
    const release = await this.p.state.shards.release(shard.id, workerId, shard.attempts, reason, this.workers.budget);
    if (release === 'lost') return false;
    await this.events.emit(shard.runId, 'WARNING', { message: `shard ${shard.round}.${shard.index}: ${reason}` });
    if (release === 'exhausted') await this.exhausted(shard.id, reason);
    else await this.events.shardsAvailable(1);
    await this.verification.released(shard);
    return true;
  }

  private async exhausted(shardId: string, reason: string): Promise<void> {
    const s = (await this.p.state.shards.get(shardId))!;
    await this.scheduler.fail(s.runId, `shard ${s.round}.${s.index} failed ${s.rejections.length} times (${s.trustedFailures} by trusted workers, ${s.failedBy.length} distinct workers); last: ${reason}`);
  }

  /** A worker gives a shard back after an error: re-issued, and counted against the worker and the shard. */
  async fail(workerId: string, shardId: string, attempt: number, message: string): Promise<boolean> {
    await this.workers.seen(workerId);
    const h = await this.held(workerId, shardId, attempt);
    if ('lost' in h) return false;
    return this.release(workerId, h.shard, `attempt ${attempt} by worker ${workerId} failed: ${message.slice(0, 500)}`);
  }

  /** Ends the lease a worker holds on a shard, if it still does (a ban). */
  async drop(workerId: string, shardId: string, reason: string): Promise<void> {
    const shard = await this.p.state.shards.get(shardId);
    if (shard?.status === 'LEASED' && shard.workerId === workerId) await this.release(workerId, shard, `attempt ${shard.attempts}: ${reason} (worker ${workerId})`);
  }

  /** Ends lapsed, stalled and overdue leases; run by the server's one-second clock (a lapsed shard is claimable within a second). */
  async expire(): Promise<number> {
    const now = new Date();
    const stalledBefore = new Date(now.getTime() - this.p.config.stallSeconds * 1000);
    const expired = await this.p.state.shards.expire(now, stalledBefore, this.workers.budget);
    for (const { shard, release } of expired) {
      const reason = shard.rejections[shard.rejections.length - 1];
      await this.events.emit(shard.runId, 'WARNING', { message: `shard ${shard.round}.${shard.index}: ${reason}; ${release === 'exhausted' ? 'no attempts left' : 're-issued'}` });
      if (release === 'exhausted') await this.exhausted(shard.id, reason);
      await this.verification.released(shard);
    }
    await this.events.shardsAvailable(expired.filter((e) => e.release === 'requeued').length);
    return expired.length;
  }
}
