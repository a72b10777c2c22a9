// Verified compute: a shard's result is used only once enough workers computed the same thing.
// Each result needs some number of agreeing results, decided at its lease (QUORUM: the quorum;
// SPOT_CHECK: 2 for an untrusted worker, and for a trusted one at a rate that decays with its
// streak of agreements, like BOINC's adaptive replication; else 1), and the sibling replica is
// issued at once so both run together. Replicas of one kernel class must match bit for bit (their
// digests), across classes within the calibrated tolerance. A group of agreeing results is
// accepted when it reaches its members' need and, needing 2 or more, holds a trusted worker or
// one more result than needed from distinct addresses (colluding volunteers must outnumber the
// quorum, not just match it). The accepted update is one of the agreeing ones, a trusted worker's
// when there is one: replication never changes the result. Results outside it are outvoted: their
// workers lose their trust and take a strike, and what they had accepted unchecked is judged again.
import { randomInt } from 'node:crypto';
import { CROSS_CLASS_TOLERANCE, lossesDisagree } from '../../engine';
import type { Platform } from '../platform';
import { EARNED_TRUST_STREAK, RunRecord, ShardRecord, WorkerRecord, isTrusted, need, trainingSpec } from '../state/records';
import { RunEvents } from '../runs/events';
import { Scheduler } from '../runs/scheduler';
import { RunShapes } from './run-shapes';
import { Workers } from './workers';

/**
 * Under SPOT_CHECK, how often a trusted worker's result is checked: 1 / (agreements in a row + 1),
 * never below the run's rate. A registered worker starts where a volunteer earns its trust.
 */
export const spotCheckRate = (w: WorkerRecord, floor: number): number =>
  Math.max(floor, 1 / (w.streak + 1 + (w.trusted && !w.demoted ? EARNED_TRUST_STREAK : 0)));

export class Verification {
  constructor(
    private readonly p: Platform, private readonly workers: Workers, private readonly shapes: RunShapes, private readonly scheduler: Scheduler,
    private readonly events: RunEvents,
  ) {}

  /**
   * At a lease under SPOT_CHECK: how many agreeing results this worker's result will need, and the
   * sibling replica it then needs, issued now. A trusted worker is checked only while another
   * trusted one is online to check it (a volunteer's agreement proves little, its lie would stall).
   */
  async leased(run: RunRecord, shard: ShardRecord, worker: WorkerRecord): Promise<void> {
    const o = trainingSpec(run).options;
    if (o.verification !== 'SPOT_CHECK') return;
    const checked = !isTrusted(worker) || (randomInt(1_000_000) < spotCheckRate(worker, o.spotCheckRate) * 1_000_000
      && (await this.p.state.workers.countTrustedOthersSince(this.workers.onlineSince(), worker.id)) > 0);
    await this.p.state.shards.setNeed(shard.id, worker.id, shard.attempts, checked ? 2 : 1);
    if (!checked) return;
    const open = (await this.p.state.shards.ofIndex(run.id, shard.round, shard.index)).filter((r) => r.id !== shard.id && (r.status === 'PENDING' || r.status === 'LEASED'));
    if (!open.length && typeof (await this.p.state.shards.addReplica(shard, 1)) === 'object') await this.issued(shard, `a replica is issued to check worker ${worker.id}`);
  }

  /** A lease of the shard ended without a result: results that waited for it are judged now. */
  async released(shard: ShardRecord): Promise<void> {
    const run = await this.p.state.runs.get(shard.runId);
    if (run?.status === 'RUNNING' && run.round === shard.round) await this.judge(run, shard);
  }

  /**
   * Run by the server's clock. A spot check of a trusted worker that no other worker took up is
   * dropped, and the result accepted as it is, once no other trusted worker is online or after the
   * stall window: a check must not hold a round when the worker that would take it left. An
   * untrusted worker's result always waits for its second opinion.
   */
  async dropUnclaimedChecks(): Promise<void> {
    const now = Date.now();
    const stall = this.p.config.stallSeconds * 1000;
    for (const row of await this.p.state.shards.unclaimedChecks(new Date(now))) {
      const alone = (await this.p.state.workers.countTrustedOthersSince(this.workers.onlineSince(), row.workerId!)) === 0;
      if (!alone && row.completedAt!.getTime() > now - stall) continue;
      const run = await this.p.state.runs.get(row.runId);
      if (run && (await this.settle(run, row, row, [], []))) {
        await this.note(row, `no other worker took up the check of worker ${row.workerId}'s result${alone ? ' and no other trusted worker is online' : ` in ${stall / 1000} s`}: accepted unchecked`);
        void this.scheduler.advance(run.id);
      }
    }
  }

  /**
   * After a replica's result is stored: the verdicts on its index, once enough results are in. One
   * judgement of an index at a time, across server replicas (two would each add a replica).
   */
  judge(run: RunRecord, shard: ShardRecord): Promise<void> {
    return this.p.state.coordination.exclusive(`judge/${shard.runId}/${shard.round}/${shard.index}`, () => this.decide(run, shard)).catch((e: Error) => {
      this.p.log(`run ${run.id} shard ${shard.round}.${shard.index}: not judged: ${e.message}`);
    });
  }

  private async decide(run: RunRecord, shard: ShardRecord): Promise<void> {
    const rows = await this.p.state.shards.ofIndex(run.id, shard.round, shard.index);
    const results = rows.filter((r) => r.status === 'DONE' && r.verdict !== 'OUTVOTED');
    if (!results.length) return;
    const workers = new Map<string, WorkerRecord>();
    for (const r of results) {
      const w = await this.p.state.workers.get(r.workerId!);
      if (w) workers.set(w.id, w);
    }
    const trusted = (r: ShardRecord): boolean => { const w = workers.get(r.workerId!); return !!w && isTrusted(w); };
    const accepted = results.find((r) => r.verdict === 'ACCEPTED');
    if (accepted) return this.lateResults(run, shard, accepted, results.filter((r) => r.verdict === null));
    const groups = await this.cluster(run, results);
    const addresses = (g: ShardRecord[]): number => new Set(g.map((r) => (trusted(r) ? r.workerId : workers.get(r.workerId!)?.address))).size;
    const needOf = (g: ShardRecord[]): number => Math.max(...g.map((r) => r.need));
    const acceptable = (g: ShardRecord[]): boolean => g.length >= needOf(g) && (needOf(g) <= 1 || g.some(trusted) || addresses(g) > needOf(g));
    const best = groups.filter(acceptable).sort((a, b) => b.length - a.length || Number(b.some(trusted)) - Number(a.some(trusted)))[0];
    // A result that needs no second opinion still waits for a replica being computed (the worker
    // it checks), so that worker is judged too; a lease ends by its deadline at the latest.
    if (best && needOf(best) <= 1 && rows.some((r) => r.status === 'LEASED')) return;
    if (!best) {
      if (rows.some((r) => r.status === 'PENDING' || r.status === 'LEASED')) return;
      const needed = Math.max(...groups.map(needOf));
      const added = await this.p.state.shards.addReplica(shard, needed);
      if (added === 'limit') {
        await this.scheduler.fail(run.id, `shard ${shard.round}.${shard.index}: ${rows.length} replicas and no ${needed} of them agree (${groups.map((g) => g.length).join(' + ')})`);
      } else if (added) {
        const why = groups.length > 1 ? `${groups.length} different results` : `${results.length} agreeing result(s), not enough without a trusted worker`;
        await this.issued(shard, `${why}; another replica is issued`);
      }
      return;
    }
    const chosen = best.find(trusted) ?? best[0];
    const outvoted = [];
    for (const r of results.filter((x) => !best.includes(x))) outvoted.push({ row: r, why: (await this.differ(run, r, chosen)) ?? 'outvoted' });
    if (!(await this.settle(run, shard, chosen, best, outvoted))) return;
    await this.note(shard, `accepted: ${best.length} agreeing results (workers ${best.map((r) => r.workerId).join(', ')})`);
    void this.scheduler.advance(run.id);
  }

  /** Results that came in after the index was settled: each must match the accepted one. */
  private async lateResults(run: RunRecord, shard: ShardRecord, accepted: ShardRecord, late: ShardRecord[]): Promise<void> {
    if (!late.length) return;
    const agreeing: ShardRecord[] = [];
    const outvoted = [];
    for (const r of late) {
      const why = await this.differ(run, r, accepted);
      if (why) outvoted.push({ row: r, why });
      else agreeing.push(r);
    }
    await this.settle(run, shard, undefined, agreeing, outvoted);
  }

  /** Groups results that agree with each group's first member, in the order they came. */
  private async cluster(run: RunRecord, results: readonly ShardRecord[]): Promise<ShardRecord[][]> {
    const groups: ShardRecord[][] = [];
    for (const r of [...results].sort((a, b) => (a.completedAt?.getTime() ?? 0) - (b.completedAt?.getTime() ?? 0))) {
      let home: ShardRecord[] | undefined;
      for (const g of groups) if (!(await this.differ(run, r, g[0]))) { home = g; break; }
      if (home) home.push(r);
      else groups.push([r]);
    }
    return groups;
  }

  /** Why two results of one index cannot both be honest, or null when they agree. */
  private async differ(run: RunRecord, a: ShardRecord, b: ShardRecord): Promise<string | null> {
    if (a.kernelClass === b.kernelClass) {
      if (a.digest !== b.digest) return `its tensors differ from worker ${b.workerId}'s, on the same kernel class (${a.kernelClass}) where they must be bit-identical`;
      return a.loss !== null && b.loss !== null && Math.abs(a.loss - b.loss) > 1e-6 * Math.max(1, Math.abs(b.loss))
        ? `it reports loss ${a.loss} for the tensors worker ${b.workerId} computed with loss ${b.loss}` : null;
    }
    const d = await this.p.shardCompute.call('distance', {
      start: need(run.state, 'state', run), a: need(a.result, 'result', run), b: need(b.result, 'result', run), shapes: await this.shapes.of(run),
    });
    if (d.relative > CROSS_CLASS_TOLERANCE) {
      return `it differs from worker ${b.workerId}'s (${b.kernelClass}) by ${d.relative.toPrecision(3)} relative L2 (most in ${d.tensor}), over the ${CROSS_CLASS_TOLERANCE} allowed across kernel classes`;
    }
    const losses = a.loss !== null && b.loss !== null ? lossesDisagree(a.loss, b.loss) : null;
    return losses && `${losses} (worker ${b.workerId})`;
  }

  /** Applies the verdicts; the outvoted workers' unchecked results are judged again. False when another judgement came first. */
  private async settle(run: RunRecord, shard: ShardRecord, accept: ShardRecord | undefined, agreeing: ShardRecord[], outvoted: { row: ShardRecord; why: string }[]): Promise<boolean> {
    // An accepted group credits all its members; a lone result (need 1) credits no one.
    const credit = (accept && agreeing.length < 2 ? [] : agreeing).map((r) => r.workerId!);
    const settled = await this.p.state.shards.settle({
      runId: run.id, round: shard.round, index: shard.index, accept: accept?.id, agreed: agreeing.filter((r) => r !== accept).map((r) => r.id), credit,
      outvoted: outvoted.map(({ row, why }) => ({ id: row.id, reason: `attempt ${row.attempts} by worker ${row.workerId}: outvoted: ${why}` })),
    }, this.workers.budget);
    if (!settled) return false;
    for (const { row, why } of outvoted) {
      await this.events.emit(run.id, 'WARNING', { message: `shard ${shard.round}.${shard.index}: worker ${row.workerId} outvoted: ${why}` });
      for (const again of await this.p.state.shards.reverify(row.workerId!)) {
        if (typeof (await this.p.state.shards.addReplica(again, 2)) === 'object') await this.issued(again, `worker ${row.workerId} was outvoted elsewhere: its result is checked again`);
      }
    }
    return true;
  }

  /** A new replica of the shard's index is pending: said, and signalled to the waiting claims. */
  private async issued(shard: ShardRecord, message: string): Promise<void> {
    await this.note(shard, message);
    await this.events.shardsAvailable(1);
  }

  private note(shard: ShardRecord, message: string): Promise<void> {
    return this.events.emit(shard.runId, 'SHARD', { message: `shard ${shard.round}.${shard.index}: ${message}` });
  }
}
