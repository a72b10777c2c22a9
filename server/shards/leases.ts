// The shard protocol's leases: claim the oldest pending shard that fits (declaring the kernel class
// the result will be computed on), heartbeat with progress to keep it, give it back on an error.
// A lease ends without a result when it lapses, when its steps stop advancing
// (PARTUNE_STALL_SECONDS), or at its deadline: the shard's steps at the pace this run's completed
// shards showed, with slack, never under the stall window; heartbeats extend nothing past it, and
// the lease clock stops when the worker completes (checking its update is the server's time). Each
// such end is a strike against its worker. A shard fails its run only on registered workers' failures.
import { KERNEL_CLASS_PATTERN } from '../../engine';
import { Assignment, Download } from '../../protocol/shard-job';
import { trainOptionsOf } from '../../protocol/run-options';
import { keys } from '../../storage';
import { badInput, forbidden, notFound } from '../errors';
import type { Platform } from '../platform';
import { RunRecord, ShardRecord, WorkerRecord, isRegistered, need, roundState, trainingSpec } from '../state/records';
import { RunEvents } from '../runs/events';
import { RunQueries } from '../runs/queries';
import { Scheduler } from '../runs/scheduler';
import { ClaimWaiters, MAX_CLAIM_WAIT_SECONDS } from './claim-waiters';
import { PACE_SLACK, median } from './pace';
import { Verification } from './verification';
import { Workers } from './workers';


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
  async claim(workerId: string, kernelClass: string, memoryBudget?: number, waitSeconds = 0, gone?: AbortSignal): Promise<Claimed | null> {
    if (!KERNEL_CLASS_PATTERN.test(kernelClass)) throw badInput(`kernelClass '${kernelClass.slice(0, 40)}' is not a kernel class name (engine/kernel-class.ts)`);
    const until = Date.now() + Math.min(Math.max(0, waitSeconds), MAX_CLAIM_WAIT_SECONDS) * 1000;
    for (;;) {
      if (gone?.aborted) return null;
      const ticket = Date.now() < until && !this.waiters.stopped ? this.waiters.ticket(until - Date.now(), gone) : undefined;
      const claimed = await this.claimNow(workerId, kernelClass, memoryBudget).catch((e: unknown) => {
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

  private async claimNow(workerId: string, kernelClass: string, memoryBudget: number | undefined): Promise<Claimed | null> {
    let worker = await this.workers.active(workerId);
    if (worker.kernelClass !== kernelClass) {
      await this.p.state.workers.setKernelClass(worker.id, kernelClass);
      worker = { ...worker, kernelClass };
    }
    const now = new Date();
    const leaseUntil = new Date(now.getTime() + this.p.config.leaseSeconds * 1000);
    const candidate = { id: worker.id, registered: isRegistered(worker), party: worker.party, origin: worker.origin, kernelClass };
    const leased = await this.p.state.shards.leaseOldest(candidate, memoryBudget, leaseUntil, now);
    if (!leased) return null;
    const run = await this.runs.get(leased.runId);
    const deadline = await this.deadline(run, leased, worker, now);
    await this.p.state.shards.setDeadline(leased.id, worker.id, leased.attempts, deadline);
    const shard = { ...leased, deadline, leaseUntil: new Date(Math.min(leaseUntil.getTime(), deadline.getTime())) };
    await this.verification.leased(run, shard, worker);
    const assignment = await this.assignment(run, shard, worker.kind === 'node');
    await this.events.emit(run.id, 'SHARD', { message: `shard ${shard.round}.${shard.index} (steps ${shard.fromStep}-${shard.toStep}) leased to worker ${workerId}` }, run);
    return { shard, leaseUntil: shard.leaseUntil, assignment };
  }

  /**
   * The shard's steps at the median pace of this run's completed results not outvoted (lease to
   * completion, as the server measured it), or the worker's own when it was slower, times
   * PACE_SLACK; never under the stall window, never over PARTUNE_MAX_SHARD_SECONDS, which is also
   * the deadline until the run has a completed shard (`tighten` then shortens it). What a worker
   * reports of its speed plays no part; a fast liar moves the median by its share, and the stall
   * window bounds how short it can make an honest worker's deadline.
   */
  private async deadline(run: RunRecord, shard: ShardRecord, worker: WorkerRecord, now: Date): Promise<Date> {
    const { stallSeconds, maxShardSeconds } = this.p.config;
    const paces = await this.p.state.shards.paces(run.id, worker.id);
    const runPace = median(paces.run);
    const pace = runPace === undefined ? undefined : Math.max(runPace, median(paces.worker) ?? 0);
    const seconds = pace === undefined ? maxShardSeconds : Math.min(maxShardSeconds, Math.max(stallSeconds, PACE_SLACK * pace * (shard.toStep - shard.fromStep)));
    return new Date(now.getTime() + seconds * 1000);
  }

  /**
   * Leases of a round given before the run showed a pace (deadline: the cap) end at the pace it shows
   * now, counted from their lease: heartbeats of fake progress cannot hold them for the cap.
   */
  async tighten(run: RunRecord, round: number): Promise<void> {
    for (const s of await this.p.state.shards.ofRun(run.id, round)) {
      if (s.status !== 'LEASED' || s.submittedAt || !s.leasedAt || !s.workerId) continue;
      const worker = await this.p.state.workers.get(s.workerId);
      if (!worker) continue;
      const deadline = await this.deadline(run, s, worker, s.leasedAt);
      if (!s.deadline || deadline < s.deadline) await this.p.state.shards.setDeadline(s.id, s.workerId, s.attempts, deadline);
    }
  }

  /** What the worker downloads, trains and uploads. Node workers get internal URLs, browsers public ones. */
  private async assignment(run: RunRecord, shard: ShardRecord, internal: boolean): Promise<Assignment> {
    const model = await this.p.state.models.byIdOrName(run.modelId);
    const dataset = await this.p.state.datasets.byIdOrName(run.datasetId);
    if (!model || !dataset) throw new Error(`run ${run.id}: its ${model ? 'dataset' : 'model'} is no longer registered`);
    // URLs live as long as the lease may.
    const seconds = Math.max(60, Math.ceil((need(shard.deadline, 'deadline', run).getTime() - Date.now()) / 1000));
    const get = async (b: { key: string; sha256: string; bytes: number }): Promise<Download> => ({ url: await this.p.blobs.presignGet(b.key, seconds, internal), sha256: b.sha256, bytes: b.bytes });
    const state = roundState(run, shard.round);
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
    await this.scheduler.fail(s.runId, `shard ${s.round}.${s.index} failed ${s.trustedFailures} times on registered workers (${s.rejections.length} failures in all); last: ${reason}`);
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
    const submittedBefore = new Date(now.getTime() - this.p.config.checkSeconds * 1000);
    const expired = await this.p.state.shards.expire(now, stalledBefore, submittedBefore, this.workers.budget);
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
