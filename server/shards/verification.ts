// Verified compute: the service around judgement.ts. At a lease it decides what the result will
// need (SPOT_CHECK: a second, same-class result for an untrusted worker, a check by another
// registered worker at a rate for a registered one; QUORUM: the quorum from the start). After each
// result, a lease's end, and on the server's clock for replicas nobody took, it judges the index
// from the store's rows and applies the verdict: accept and strike, issue or open up a replica,
// or say why the run waits. A caught worker's support is withdrawn everywhere (withdrawal.ts).
import { randomInt } from 'node:crypto';
import { CROSS_CLASS_TOLERANCE, LOSS_TOLERANCE, UpdateDistance } from '../../engine';
import type { Platform } from '../platform';
import { EARNED_TRUST_STREAK, RunRecord, ShardRecord, WorkerRecord, isRegistered, roundState, trainingSpec } from '../state/records';
import type { IndexKey } from '../state/store';
import { RunEvents } from '../runs/events';
import { Scheduler } from '../runs/scheduler';
import { Ballot, Case, Judgement, Outvote, judge } from './judgement';
import { PACE_SLACK, median } from './pace';
import { RunShapes } from './run-shapes';
import { Withdrawal } from './withdrawal';
import { Workers } from './workers';

/**
 * Under SPOT_CHECK, how often a registered worker's result is checked by another registered
 * worker: 1 / (agreements in a row + 1 + EARNED_TRUST_STREAK), never below the run's rate.
 */
export const spotCheckRate = (w: WorkerRecord, floor: number): number => Math.max(floor, 1 / (w.streak + 1 + EARNED_TRUST_STREAK));

/** At most this many waiting reasons are shown per run. */
const SHOWN_REASONS = 3;

export class Verification {
  private readonly distances = new Map<string, Promise<UpdateDistance>>();
  private ticking = false;

  constructor(
    private readonly p: Platform,
    private readonly workers: Workers,
    private readonly shapes: RunShapes,
    private readonly scheduler: Scheduler,
    private readonly events: RunEvents,
    private readonly withdrawal: Withdrawal,
  ) {}

  /** At a lease under SPOT_CHECK: how many results this one needs, and the sibling replica it then needs, issued now. */
  async leased(run: RunRecord, shard: ShardRecord, worker: WorkerRecord): Promise<void> {
    const o = trainingSpec(run).options;
    if (o.verification !== 'SPOT_CHECK') return;
    const registered = isRegistered(worker);
    // A registered result is checked only by another registered worker: an untrusted one could not overturn it.
    const checked =
      !registered || (randomInt(1_000_000) < spotCheckRate(worker, o.spotCheckRate) * 1_000_000 && (await this.workers.registeredOnline([worker.id])) > 0);
    await this.p.state.shards.setNeed(shard.id, worker.id, shard.attempts, checked ? 2 : 1);
    if (!checked) return;
    const open = (await this.p.state.shards.ofIndex(run.id, shard.round, shard.index)).filter(
      (r) => r.id !== shard.id && (r.status === 'PENDING' || r.status === 'LEASED'),
    );
    if (open.length) return;
    const registeredOnly = registered || !o.admitVolunteers;
    const added = await this.p.state.shards.addReplica(shard, { need: 1, needClass: registeredOnly ? null : shard.leaseClass, registeredOnly });
    if (added)
      await this.issued(
        shard,
        `${registered ? 'a registered worker is asked' : `a worker of kernel class ${shard.leaseClass} is asked`} to check worker ${worker.id}'s result`,
      );
  }

  /** A lease of the shard ended without a result: results that waited for it are judged now. */
  async released(shard: ShardRecord): Promise<void> {
    await this.judge({ runId: shard.runId, round: shard.round, index: shard.index });
  }

  /**
   * Judges an index; one judgement of an index at a time, across server replicas (two would each
   * add a replica). Returns why it cannot move on, when it cannot.
   */
  judge(key: IndexKey): Promise<string | null> {
    return this.p.state.coordination
      .exclusive(`judge/${key.runId}/${key.round}/${key.index}`, () => this.decide(key))
      .catch((e: Error) => {
        this.p.log(`run ${key.runId} shard ${key.round}.${key.index}: not judged: ${e.message}`);
        return null;
      });
  }

  /**
   * Run by the server's clock for the runs this server drives: indices whose replicas waited past
   * the window are judged (escalated), and each run says whether, and why, it waits.
   */
  async clock(): Promise<void> {
    if (this.ticking) return; // a slow tick (a busy store) is not stacked on by the next one
    this.ticking = true;
    try {
      await this.tick();
    } finally {
      this.ticking = false;
    }
  }

  private async tick(): Promise<void> {
    const driven = this.p.state.coordination.driven();
    if (!driven.length) return;
    const reasons = new Map<string, string[]>();
    for (const key of await this.p.state.shards.stalled(driven, new Date(Date.now() - this.p.config.waitSeconds * 1000))) {
      const why = await this.judge(key);
      if (why) reasons.set(key.runId, [...(reasons.get(key.runId) ?? []), `round ${key.round} shard ${key.index} ${why}`]);
    }
    for (const id of driven) {
      const paused = this.scheduler.pausedWhy(id);
      const list = [...(paused ? [paused] : []), ...(reasons.get(id) ?? [])];
      const waiting = list.length
        ? list.slice(0, SHOWN_REASONS).join('; ') + (list.length > SHOWN_REASONS ? `; and ${list.length - SHOWN_REASONS} more` : '')
        : null;
      if (await this.p.state.runs.setWaiting(id, waiting))
        await this.events.emit(id, waiting ? 'WAITING' : 'STATUS', { message: waiting ?? 'no longer waiting' });
    }
  }

  private async decide(key: IndexKey): Promise<string | null> {
    const run = await this.p.state.runs.get(key.runId);
    if (!run || run.spec.kind === 'SOUP' || (run.status !== 'RUNNING' && run.status !== 'FINALIZING')) return null;
    const rows = await this.p.state.shards.ofIndex(key.runId, key.round, key.index);
    if (!rows.length) return null;
    const j = judge(await this.caseOf(run, rows));
    return this.apply(run, key, rows, j);
  }

  private async apply(run: RunRecord, key: IndexKey, rows: readonly ShardRecord[], j: Judgement): Promise<string | null> {
    const row = (id: string): ShardRecord => rows.find((r) => r.id === id)!;
    const reason = (o: Outvote): { id: string; reason: string } => ({
      id: o.ballot.id,
      reason: `attempt ${row(o.ballot.id).attempts} by worker ${o.ballot.workerId}: outvoted: ${o.why}`,
    });
    const settle = (
      accept: { id: string; votes: number; required: number } | undefined,
      v: Extract<Judgement, { kind: 'late' }> | Extract<Judgement, { kind: 'accept' }>,
    ) =>
      this.p.state.shards.settle(
        {
          ...key,
          accept,
          agreed: v.agreed.map((b) => b.id),
          close: v.close.map((b) => b.id),
          credit: v.credit.map((b) => ({ workerId: b.workerId, kernelClass: b.kernelClass })),
          outvoted: v.outvoted.map(reason),
        },
        this.workers.budget,
      );
    switch (j.kind) {
      case 'accept':
        if (!(await settle({ id: j.accept.id, votes: j.votes, required: j.required }, j))) return null;
        await this.note(key, `accepted worker ${j.accept.workerId}'s result: ${j.because}`);
        await this.withdrawal.caught(run, key, j.outvoted);
        void this.scheduler.advance(run.id);
        return null;
      case 'late':
        if (await settle(undefined, j)) await this.withdrawal.caught(run, key, j.outvoted);
        return null;
      case 'overturn': {
        const outvoted = j.caught.map((ballot) => ({ ballot, why: j.because }));
        if (!(await this.p.state.shards.settle({ ...key, agreed: [], close: [], credit: [], outvoted: outvoted.map(reason) }, this.workers.budget)))
          return null;
        await this.withdrawal.overturned(run, key, outvoted);
        return this.decide(key);
      }
      case 'replica':
        const registeredOnly = j.registeredOnly || !trainingSpec(run).options.admitVolunteers;
        if (await this.p.state.shards.addReplica(rows[0], { need: j.need, needClass: registeredOnly ? null : j.needClass, registeredOnly })) {
          await this.issued(
            rows[0],
            `${j.because}; another replica is issued${j.registeredOnly ? ' to registered workers' : j.needClass ? ` to workers of kernel class ${j.needClass}` : ''}`,
          );
        }
        return null;
      case 'relax':
        if (await this.p.state.shards.relax(j.replicaId)) await this.issued(rows[0], j.because);
        return null;
      case 'wait':
        return j.waiting;
      case 'stuck':
        await this.scheduler.fail(run.id, `shard ${key.round}.${key.index}: ${j.because}`);
        return null;
    }
  }

  /** The index as judgement.ts sees it: results with their workers, open replicas, who is online, cross-class distances. */
  private async caseOf(run: RunRecord, rows: readonly ShardRecord[]): Promise<Case> {
    const o = trainingSpec(run).options;
    const now = Date.now();
    const waitMs = this.p.config.waitSeconds * 1000;
    const workers = new Map<string, WorkerRecord>();
    for (const id of new Set(rows.map((r) => r.workerId).filter((w): w is string => w !== null))) {
      const w = await this.p.state.workers.get(id);
      if (w) workers.set(id, w);
    }
    const ballots: Ballot[] = rows
      .filter((r) => r.status === 'DONE' && r.result && r.digest && r.kernelClass && (r.verdict === null || r.verdict === 'ACCEPTED' || r.verdict === 'AGREED'))
      .flatMap((r) => {
        const w = workers.get(r.workerId!);
        if (!w) return [];
        return [
          {
            id: r.id,
            workerId: w.id,
            registered: isRegistered(w),
            counts: w.quarantinedAt === null,
            keys: { prefix: w.party, origin: w.origin },
            kernelClass: r.kernelClass!,
            digest: r.digest!,
            loss: r.loss ?? NaN,
            need: r.need,
            verdict: r.verdict as Ballot['verdict'],
            completedAt: r.completedAt?.getTime() ?? 0,
          },
        ];
      });
    const live = rows.filter((r) => r.status !== 'CANCELLED' && r.verdict !== 'VOIDED');
    const distances = new Map<string, UpdateDistance>();
    for (const a of ballots) {
      for (const b of ballots) {
        if (a.kernelClass < b.kernelClass)
          distances.set(
            `${a.id}/${b.id}`,
            await this.distance(
              run,
              rows.find((r) => r.id === a.id)!,
              rows.find((r) => r.id === b.id)!,
            ),
          );
      }
    }
    // A lease held past what this run's shards take (fake progress, or a stalled worker) is overdue:
    // its index is judged as if nobody held it, so another group gets a replica; the lease itself runs on.
    const leased = rows.filter((r) => r.status === 'LEASED' && !r.submittedAt && r.leasedAt);
    const pace = leased.length ? median((await this.p.state.shards.paces(run.id, '')).run) : undefined;
    const overdue = (r: ShardRecord): boolean =>
      pace !== undefined && leased.includes(r) && r.leasedAt!.getTime() < now - waitMs - PACE_SLACK * pace * (r.toStep - r.fromStep) * 1000;
    return {
      mode: o.verification,
      quorum: o.quorum,
      ballots,
      open: rows
        .filter((r) => r.status === 'PENDING' || r.status === 'LEASED')
        .map((r) => ({
          id: r.id,
          leased: r.status === 'LEASED',
          registeredOnly: r.registeredOnly,
          needClass: r.needClass,
          stale: (r.status === 'PENDING' && (r.pendingSince?.getTime() ?? now) < now - waitMs) || overdue(r),
        })),
      replicas: { open: live.filter((r) => !r.registeredOnly).length, registeredOnly: live.filter((r) => r.registeredOnly).length },
      electorate: await this.workers.electorate(),
      registeredOnline: (await this.workers.registeredOnline([...workers.keys()])) > 0,
      distance: (a, b) => distances.get(a.kernelClass < b.kernelClass ? `${a.id}/${b.id}` : `${b.id}/${a.id}`)!,
      tolerance: CROSS_CLASS_TOLERANCE,
      lossTolerance: LOSS_TOLERANCE,
      waitSeconds: this.p.config.waitSeconds,
    };
  }

  /** Two results' distance on the shards' compute thread, once per pair of stored results (among the last few hundred). */
  private distance(run: RunRecord, a: ShardRecord, b: ShardRecord): Promise<UpdateDistance> {
    const key = `${a.result!.sha256}/${b.result!.sha256}`;
    let d = this.distances.get(key);
    if (!d) {
      d = this.shapes.of(run).then((shapes) => this.p.shardCompute.call('distance', { start: roundState(run, a.round), a: a.result!, b: b.result!, shapes }));
      d.catch(() => this.distances.delete(key));
      this.distances.set(key, d);
      while (this.distances.size > 512) this.distances.delete(this.distances.keys().next().value!);
    }
    return d;
  }

  /** A new replica of the shard's index is pending: said, and signalled to the waiting claims. */
  private async issued(shard: ShardRecord, message: string): Promise<void> {
    await this.note(shard, message);
    await this.events.shardsAvailable(1);
  }

  private note(at: { runId: string; round: number; index: number }, message: string): Promise<void> {
    return this.events.emit(at.runId, 'SHARD', { message: `shard ${at.round}.${at.index}: ${message}` });
  }
}
