// The run lifecycle: PREPARING -> RUNNING (round after round) -> FINALIZING -> SUCCEEDED, driven
// for every kind by one loop that asks the kind's stages for the work and persists each
// transition before the next begins. Each run is driven by one server replica at a time (the one
// holding its lock in the store's coordination); `adopt`, at start and every second, takes up the
// unfinished runs no replica drives (after a restart, or a replica's death) where their records
// say they stand. A replica that is not the run's driver nudges the driver instead. A cancel that
// lands mid-step wins (the transition is refused).
import { randomUUID } from 'node:crypto';
import { isTransient, keys } from '../../storage';
import { ComputeError } from '../compute';
import { conflict } from '../errors';
import type { Platform } from '../platform';
import { MetricPoint, RunRecord, ShardRecord, need } from '../state/records';
import { LostRunLock } from '../state/store';
import { plural } from '../../protocol/words';
import { RunEvents } from './events';
import { evaluatesAfter } from './plan';
import { RunQueries } from './queries';
import { Retention } from './retention';
import { LostUpdate, StagesByKind } from './stages';

/** How often a replica looks again at the runs it drives without being nudged. */
const RECHECK_MS = 5000;

export class Scheduler {
  private readonly chains = new Map<string, Promise<void>>();
  /** Runs this replica drives that wait for a store (blobs or database) to answer again, and why. */
  private readonly paused = new Map<string, string>();
  private checkedAt = performance.now();

  constructor(
    private readonly p: Platform, private readonly stages: StagesByKind, private readonly events: RunEvents, private readonly runs: RunQueries,
    private readonly retention: Retention,
  ) {}

  /**
   * Takes up the unfinished runs no replica drives, and lets go of the ended ones; returns how many
   * it took up. Every few seconds it also moves on the runs it drives that are idle: a nudge can be
   * lost (its sender froze between settling a shard and sending it, or PostgreSQL restarted).
   */
  async adopt(): Promise<number> {
    const { coordination } = this.p.state;
    const unfinished = await this.p.state.runs.unfinished();
    const open = new Set(unfinished);
    for (const id of coordination.driven()) if (!open.has(id) && !this.chains.has(id)) await coordination.letGo(id);
    if (performance.now() - this.checkedAt > RECHECK_MS) {
      this.checkedAt = performance.now();
      // A paused run has its own retries: another would stack on them.
      for (const id of coordination.driven()) if (open.has(id) && !this.chains.has(id) && !this.paused.has(id)) void this.advance(id);
    }
    let adopted = 0;
    for (const id of unfinished) {
      if (coordination.drives(id) || !(await coordination.drive(id))) continue;
      adopted++;
      void this.advance(id);
    }
    return adopted;
  }

  /** A nudge from another replica: moves the run on if this replica drives it. */
  nudged(id: string): void {
    if (this.p.state.coordination.drives(id)) void this.advance(id);
  }

  /**
   * Moves a run on as far as its stored state allows, one advance at a time per run, on the replica
   * that drives it: here when this one does or may take it, else by nudging the one that does.
   */
  advance(id: string): Promise<void> {
    const next = (this.chains.get(id) ?? Promise.resolve()).then(() => this.drive(id)).then(() => this.resumed(id), (e: Error) => {
      // The server stopping mid-step is not the run's failure: its record is unchanged, the next driver picks it up.
      if (e instanceof ComputeError && e.fault === 'shutdown') return this.p.log(`run ${id}: stopped mid-step; it resumes at the next start`);
      // Another replica drives the run now (this one's lock lapsed): what this one computed is not recorded.
      if (e instanceof LostRunLock) return this.p.log(e.message);
      if (!isTransient(e) && !this.p.state.transient(e)) {
        if (!this.p.state.coordination.drives(id)) return this.p.log(`run ${id}: ${e.message}; not failed, as this server no longer drives it`);
        return this.fail(id, e.message);
      }
      // A storage or database hiccup: the run's record is unchanged, so the same step is simply tried again.
      this.p.log(`run ${id}: ${e.message}; retrying in 2 s`);
      if (!this.paused.has(id)) void this.pause(id, e.message);
      setTimeout(() => void this.advance(id), 2000).unref();
    });
    this.chains.set(id, next);
    void next.then(() => this.chains.get(id) === next && this.chains.delete(id));
    return next;
  }

  /** Why the run waits for a store, when it does (the verification clock shows it with the shards' reasons). */
  pausedWhy(id: string): string | undefined {
    return this.paused.get(id);
  }

  private async pause(id: string, message: string): Promise<void> {
    const why = `paused: a store is unreachable or full (${message.slice(0, 200)}); it resumes by itself, the step tried again every 2 s`;
    this.paused.set(id, why);
    await this.p.state.runs.setWaiting(id, why).catch(() => undefined);
    await this.events.emit(id, 'WAITING', { message: why }).catch(() => undefined);
  }

  private async resumed(id: string): Promise<void> {
    if (!this.paused.delete(id) || !this.p.state.coordination.drives(id)) return;
    this.p.log(`run ${id}: resumed`);
    await this.p.state.runs.setWaiting(id, null).catch(() => undefined);
    await this.events.emit(id, 'STATUS', { message: 'resumed: the store answers again' }).catch(() => undefined);
  }

  /** Resolves once every advance queued so far has finished (for an orderly shutdown). */
  async idle(): Promise<void> {
    await Promise.all(this.chains.values());
  }

  async fail(id: string, message: string): Promise<void> {
    if (!(await this.p.state.runs.stop(id, 'FAILED', message))) return;
    this.p.log(`run ${id} failed: ${message}`);
    await this.events.emit(id, 'STATUS', { message });
    await this.retention.ended(id);
  }

  async cancel(id: string): Promise<RunRecord> {
    if (!(await this.p.state.runs.stop(id, 'CANCELLED'))) {
      throw conflict(`run ${id} is ${(await this.runs.get(id)).status}; only a running run can be cancelled`);
    }
    await this.events.emit(id, 'STATUS', { message: 'cancelled' });
    void this.retention.ended(id);
    return this.runs.get(id);
  }

  private async drive(id: string): Promise<void> {
    if (!(await this.p.state.coordination.drive(id))) return this.p.state.coordination.nudge(id);
    for (;;) {
      const run = await this.runs.get(id);
      if (run.status === 'PREPARING') await this.prepare(run);
      else if (run.status === 'RUNNING') await this.finishRound(run);
      else if (run.status === 'FINALIZING') await this.finish(run);
      else return this.p.state.coordination.letGo(id);
      const after = await this.runs.get(id);
      if (after.status === run.status && after.round === run.round) return;
    }
  }

  private async prepare(run: RunRecord): Promise<void> {
    const configured = await this.stages[run.spec.kind].configure(run);
    if (!configured) {
      await this.p.state.runs.skipRounds(run.id);
      return;
    }
    const { plan } = configured;
    const shards = await this.stages[run.spec.kind].shards(run, plan, 0);
    if (!(await this.p.state.runs.start(run.id, configured, shards))) return;
    await this.events.shardsAvailable(shards.length);
    await this.events.emit(run.id, 'STATUS', { message: `${plural(plan.rounds.length, 'round')} of up to ${plural(plan.rounds[0][1] - plan.rounds[0][0], 'step')}, ${plural(plan.shardsPerRound, 'shard')} each` });
  }

  /** When every shard of the current round has an accepted result: aggregate, evaluate at epoch ends, next round. */
  private async finishRound(run: RunRecord): Promise<void> {
    const shards = accepted(await this.p.state.shards.ofRun(run.id, run.round));
    if (!shards) return;
    const stages = this.stages[run.spec.kind];
    const plan = need(run.plan, 'plan', run);
    let state;
    try {
      state = await stages.aggregate(run, shards);
    } catch (e) {
      if (!(e instanceof LostUpdate)) throw e;
      if (await this.p.state.shards.reopen(e.shard.id, `${e.message}: re-issued`)) {
        await this.events.emit(run.id, 'WARNING', { message: `${e.message}; the shard is re-issued` });
        await this.events.shardsAvailable(1);
      }
      return;
    }
    const [, to] = plan.rounds[run.round];
    const metric: MetricPoint = { step: to, epoch: to / plan.stepsPerEpoch, round: run.round, trainLoss: weightedLoss(shards), at: new Date().toISOString() };
    const evaluation = evaluatesAfter(plan, run.round) ? await stages.evaluate(run, state) : undefined;
    const point: MetricPoint = evaluation ? { ...metric, testAccuracy: evaluation.accuracy, testLoss: evaluation.loss } : metric;
    const last = run.round + 1 >= plan.rounds.length;
    const next = last ? [] : await stages.shards(run, plan, run.round + 1);
    if (!(await this.p.state.runs.completeRound(run.id, run.round, { state, step: to, metric: point, finishing: last }, next))) return;
    await this.events.shardsAvailable(next.length);
    const acc = evaluation ? `, test top-1 ${(evaluation.accuracy * 100).toFixed(2)}%` : '';
    await this.events.emit(run.id, evaluation ? 'EVALUATION' : 'ROUND', {
      trainLoss: point.trainLoss, testAccuracy: evaluation?.accuracy, testLoss: evaluation?.loss,
      message: `round ${run.round + 1}/${plan.rounds.length} aggregated from ${plural(shards.length, 'shard')}${acc}`,
    });
  }

  private async finish(run: RunRecord): Promise<void> {
    const f = await this.stages[run.spec.kind].finish(run);
    const blob = await this.p.blobs.put(keys.delta(run.id), f.delta.bytes);
    const delta = {
      id: randomUUID(), runId: run.id, blob, tensors: f.delta.tensors, tunedParams: f.delta.tunedParams, dtype: 'F32' as const, mergedModelId: null, createdAt: new Date(),
    };
    const succeeded = await this.p.state.runs.succeed(run.id, { accuracy: f.accuracy, loss: f.loss, tunedParams: f.delta.tunedParams, report: f.report, delta, profile: f.profile });
    if (!succeeded) return this.p.blobs.remove(blob.key); // cancelled meanwhile: nothing is recorded
    this.p.log(`run ${run.id} succeeded: top-1 ${(f.accuracy * 100).toFixed(2)}%, delta ${(blob.bytes / 1024).toFixed(1)} KiB`);
    await this.events.emit(run.id, 'STATUS', { testAccuracy: f.accuracy, testLoss: f.loss ?? undefined, message: f.message });
    await this.retention.ended(run.id);
  }
}

/** The accepted replica of each index, in index order; undefined while an index has none. */
function accepted(replicas: readonly ShardRecord[]): ShardRecord[] | undefined {
  const byIndex = new Map<number, ShardRecord | undefined>();
  for (const r of replicas) byIndex.set(r.index, r.verdict === 'ACCEPTED' ? r : byIndex.get(r.index));
  const out = [...byIndex.entries()].sort(([a], [b]) => a - b).map(([, r]) => r);
  return out.length > 0 && out.every((r) => r !== undefined) ? (out as ShardRecord[]) : undefined;
}

function weightedLoss(shards: readonly ShardRecord[]): number | undefined {
  const reported = shards.filter((s) => s.loss !== null);
  if (!reported.length) return undefined;
  const steps = reported.reduce((n, s) => n + (s.toStep - s.fromStep), 0);
  return reported.reduce((a, s) => a + s.loss! * (s.toStep - s.fromStep), 0) / steps;
}
