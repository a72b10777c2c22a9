// Caught means undone. A worker whose result lost a judgement is a suspect, and so is every worker
// whose result was bit-identical to it there (its partners): the votes they gave anywhere are
// withdrawn. Every accepted result they supported is counted again without them; one that no
// longer has the votes it needed loses its acceptance, and when its round was already combined
// into later ones, the run rolls back to that round (its stored starting state) and computes
// again from there, so no lie survives into the delta. Rollbacks are recorded on the run.
import { keys as blobKeys, sha256 } from '../../storage';
import type { Platform } from '../platform';
import { RunRecord, ShardRecord, WorkerRecord, isRegistered, need } from '../state/records';
import type { IndexKey } from '../state/store';
import { RunEvents } from '../runs/events';
import { Scheduler } from '../runs/scheduler';
import type { Outvote } from './judgement';
import { countGroups } from './parties';

const sameIndex = (a: IndexKey, b: IndexKey): boolean => a.runId === b.runId && a.round === b.round && a.index === b.index;

export class Withdrawal {
  /** Judges an index again (verification.ts), set once the services are wired. */
  private rejudge: (key: IndexKey) => Promise<unknown> = async () => undefined;

  constructor(
    private readonly p: Platform,
    private readonly scheduler: Scheduler,
    private readonly events: RunEvents,
  ) {}

  onRejudge(rejudge: (key: IndexKey) => Promise<unknown>): void {
    this.rejudge = rejudge;
  }

  /** Results outvoted at `key`: their workers are caught, their support elsewhere withdrawn. */
  async caught(run: RunRecord, key: IndexKey, outvoted: readonly Outvote[]): Promise<void> {
    if (!outvoted.length) return;
    for (const { ballot, why } of outvoted) {
      await this.events.emit(run.id, 'WARNING', { message: `shard ${key.round}.${key.index}: worker ${ballot.workerId} outvoted: ${why}` });
    }
    await this.withdraw(
      new Set(outvoted.map((o) => o.ballot.workerId)),
      `worker(s) ${[...new Set(outvoted.map((o) => o.ballot.workerId))].join(', ')} caught at round ${key.round} shard ${key.index}`,
      key,
    );
  }

  /** An accepted result at `key` was overturned by a registered one: undone there (rolled back to its round if combined since), and its supporters caught. */
  async overturned(run: RunRecord, key: IndexKey, caught: readonly Outvote[]): Promise<void> {
    const why = `the accepted result of round ${key.round} shard ${key.index} was overturned by a registered worker`;
    if (key.round < run.round || run.status === 'FINALIZING') await this.rollback(run, key.round, why);
    await this.caught(run, key, caught);
  }

  private async withdraw(suspects: ReadonlySet<string>, why: string, judged: IndexKey): Promise<void> {
    const rows = await this.p.state.shards.supported([...suspects]);
    const indices: IndexKey[] = [];
    for (const r of rows)
      if (!indices.some((k) => sameIndex(k, { runId: r.runId, round: r.round, index: r.index })))
        indices.push({ runId: r.runId, round: r.round, index: r.index });
    const rollbacks = new Map<string, number>();
    const reopened: IndexKey[] = [];
    const finished = new Map<string, IndexKey[]>();
    for (const key of indices) {
      if (sameIndex(key, judged)) continue;
      const run = await this.p.state.runs.get(key.runId);
      if (!run) continue;
      if (run.status !== 'RUNNING' && run.status !== 'FINALIZING') {
        if (run.status === 'SUCCEEDED') finished.set(run.id, [...(finished.get(run.id) ?? []), key]);
        continue;
      }
      const all = await this.p.state.shards.ofIndex(key.runId, key.round, key.index);
      const accepted = all.find((r) => r.verdict === 'ACCEPTED');
      if (!accepted) continue;
      const supporting = all.filter((r) => (r.verdict === 'ACCEPTED' || r.verdict === 'AGREED') && r.digest === accepted.digest);
      if (
        await this.stands(
          accepted,
          supporting.filter((r) => !suspects.has(r.workerId!)),
        )
      )
        continue;
      const voided = supporting.filter((r) => suspects.has(r.workerId!)).map((r) => r.id);
      if (
        !(await this.p.state.shards.unsettle(
          key,
          voided,
          supporting.filter((r) => !voided.includes(r.id)).map((r) => r.id),
        ))
      )
        continue;
      await this.events.emit(run.id, 'WARNING', { message: `shard ${key.round}.${key.index}: its accepted result lost its support (${why}): judged again` });
      if (key.round < run.round || run.status === 'FINALIZING') rollbacks.set(run.id, Math.min(rollbacks.get(run.id) ?? Infinity, key.round));
      reopened.push(key);
    }
    for (const [runId, round] of rollbacks) {
      const run = await this.p.state.runs.get(runId);
      if (run) await this.rollback(run, round, why);
    }
    for (const [runId, keys] of finished) {
      const where = keys
        .slice(0, 5)
        .map((k) => `${k.round}.${k.index}`)
        .join(', ');
      await this.events.emit(runId, 'WARNING', {
        message: `${why}; they had results accepted in this finished run (shards ${where}${keys.length > 5 ? ', ...' : ''}): its delta may hold a lie`,
      });
      this.p.log(`run ${runId} (finished): ${why}; ${keys.length} of its accepted results had their support`);
    }
    for (const key of reopened) await this.rejudge(key);
  }

  /** Whether an accepted result keeps the votes it needed with the supporters left. */
  private async stands(accepted: ShardRecord, others: readonly ShardRecord[]): Promise<boolean> {
    const workers: WorkerRecord[] = [];
    for (const r of others) {
      const w = await this.p.state.workers.get(r.workerId!);
      if (w && !w.quarantinedAt) workers.push(w);
    }
    if (workers.some(isRegistered)) return true;
    return countGroups(workers.filter((w) => !isRegistered(w)).map((w) => ({ prefix: w.party, origin: w.origin }))) >= (accepted.required ?? 1);
  }

  /** Back to round `to`: its stored starting state, later rounds' work void; recorded and said. */
  async rollback(run: RunRecord, to: number, why: string): Promise<boolean> {
    const plan = need(run.plan, 'plan', run);
    const key = blobKeys.runState(run.id, to);
    // A run from before round states were recorded: the state's digest is read from the store.
    const digest = run.roundStates[to] ?? sha256(await this.p.blobs.get(key));
    const rolled = await this.p.state.runs.rollback(
      run.id,
      { round: to, step: plan.rounds[to][0], state: { key, sha256: digest } },
      {
        at: new Date().toISOString(),
        fromRound: run.round,
        toRound: to,
        reason: why.slice(0, 1000),
      },
    );
    if (!rolled) return false;
    this.p.log(`run ${run.id} rolled back from round ${run.round} to round ${to}: ${why}`);
    await this.events.emit(run.id, 'ROLLBACK', { message: `rolled back from round ${run.round} to round ${to}: ${why}` });
    void this.scheduler.advance(run.id);
    return true;
  }
}
