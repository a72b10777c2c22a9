// Runs in SQLite. Each transition is one transaction guarded by the status (and round) it leaves,
// so a cancel that lands meanwhile wins: the later write changes nothing and reports false.
import { randomUUID } from 'node:crypto';
import type { RoundOutcome, RunFilter, RunRepository, RunStart, RunSuccess } from '../store';
import { BlobRef, NewShard, Page, RollbackRecord, RunRecord, page } from '../records';
import { Db, prepared } from './database';
import { decodeRun, encodeDelta, encodeRun, encodeStoredStrategy, nowIso, profileRows, runFilterSql } from '../rows';

const ACTIVE_SQL = "('PREPARING', 'RUNNING', 'FINALIZING')";

export class SqliteRuns implements RunRepository {
  constructor(private readonly db: Db) {}

  async insert(run: RunRecord): Promise<void> {
    const row = encodeRun(run);
    const cols = Object.keys(row);
    prepared(this.db, `INSERT INTO runs (${cols.join(', ')}) VALUES (${cols.map((c) => `@${c}`).join(', ')})`).run(row);
  }

  async setPublic(id: string, value: boolean): Promise<void> {
    prepared(this.db, 'UPDATE runs SET public = ? WHERE id = ?').run(value ? 1 : 0, id);
  }

  async get(id: string): Promise<RunRecord | undefined> {
    const row = prepared(this.db, 'SELECT * FROM runs WHERE id = ?').get(id);
    return row === undefined ? undefined : decodeRun(row);
  }

  async list(filter: RunFilter, first: number, offset: number): Promise<Page<RunRecord>> {
    const { where: w, args } = runFilterSql(filter, () => '?');
    const rows = prepared(this.db, `SELECT * FROM runs ${w} ORDER BY created_at DESC LIMIT ? OFFSET ?`).all(...args, first, offset);
    const total = (prepared(this.db, `SELECT COUNT(*) AS n FROM runs ${w}`).get(...args) as { n: number }).n;
    return page(rows.map(decodeRun), total, offset);
  }

  async unfinished(): Promise<string[]> {
    return (prepared(this.db, `SELECT id FROM runs WHERE status IN ${ACTIVE_SQL} ORDER BY created_at`).all() as { id: string }[]).map((r) => r.id);
  }

  /** A round's replicas, numbered after any its index had before a rollback. */
  private insertShards(runId: string, round: number, shards: readonly NewShard[]): void {
    const insert = prepared(this.db, `INSERT INTO shards (id, run_id, round, idx, replica, need, from_step, to_step, status, created_at, pending_since,
      pack_key, pack_sha256, pack_bytes, registered_only) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'PENDING', ?, ?, ?, ?, ?, ?)`);
    const offsets = new Map<number, number>();
    for (const s of shards) {
      // Replicas of one index in this batch share the offset the first of them found.
      const base = offsets.get(s.index) ?? ((prepared(this.db, 'SELECT MAX(replica) + 1 AS n FROM shards WHERE run_id = ? AND round = ? AND idx = ?')
        .get(runId, round, s.index) as { n: number | null }).n ?? 0);
      offsets.set(s.index, base);
      insert.run(randomUUID(), runId, round, s.index, s.replica + base, s.need, s.fromStep, s.toStep, nowIso(), Date.now(),
        s.pack?.key ?? null, s.pack?.sha256 ?? null, s.pack?.bytes ?? null, s.registeredOnly ? 1 : 0);
    }
  }

  async start(id: string, start: RunStart, shards: readonly NewShard[]): Promise<boolean> {
    return this.db.transaction(() => {
      const changed = prepared(this.db, `UPDATE runs SET status = 'RUNNING', plan = ?, state_key = ?, state_sha256 = ?, normalization = ?, round = 0, step = 0,
        round_states = json_array(?), updated_at = ? WHERE id = ? AND status = 'PREPARING'`)
        .run(JSON.stringify(start.plan), start.state.key, start.state.sha256, JSON.stringify(start.normalization), start.state.sha256, nowIso(), id).changes > 0;
      if (changed) this.insertShards(id, 0, shards);
      return changed;
    })();
  }

  async skipRounds(id: string): Promise<boolean> {
    return prepared(this.db, "UPDATE runs SET status = 'FINALIZING', updated_at = ? WHERE id = ? AND status = 'PREPARING'").run(nowIso(), id).changes > 0;
  }

  async completeRound(id: string, round: number, outcome: RoundOutcome, nextShards: readonly NewShard[]): Promise<boolean> {
    return this.db.transaction(() => {
      const changed = prepared(this.db, `UPDATE runs SET round = ?, step = ?, state_key = ?, state_sha256 = ?, metrics = json_insert(metrics, '$[#]', json(?)),
        round_states = json_insert(round_states, '$[#]', ?), waiting = NULL, status = ?, updated_at = ? WHERE id = ? AND status = 'RUNNING' AND round = ?`)
        .run(round + 1, outcome.step, outcome.state.key, outcome.state.sha256, JSON.stringify(outcome.metric), outcome.state.sha256,
          outcome.finishing ? 'FINALIZING' : 'RUNNING', nowIso(), id, round).changes > 0;
      if (changed && !outcome.finishing) this.insertShards(id, round + 1, nextShards);
      return changed;
    })();
  }

  async succeed(id: string, s: RunSuccess): Promise<boolean> {
    return this.db.transaction(() => {
      const report = s.report ? JSON.stringify(s.report) : null;
      const changed = prepared(this.db, `UPDATE runs SET status = 'SUCCEEDED', accuracy = ?, loss = ?, tuned_params = ?, report = COALESCE(?, report),
        delta_id = ?, updated_at = ?, finished_at = ? WHERE id = ? AND status = 'FINALIZING'`)
        .run(s.accuracy, s.loss, s.tunedParams, report, s.delta.id, nowIso(), nowIso(), id).changes > 0;
      if (!changed) return false;
      if (s.profile) {
        // The probe's own strategy: a name reserved when it started, replaced if taken meanwhile.
        prepared(this.db, 'INSERT OR REPLACE INTO strategies (name, spec, model_id, source, created_at) VALUES (@name, @spec, @model_id, @source, @created_at)')
          .run(encodeStoredStrategy(s.profile.strategy));
        prepared(this.db, `INSERT OR REPLACE INTO angle_profiles (id, run_id, model_id, dataset_id, probe, angles, tensor_angles, direction, top_k, strategy_name,
          created_at) VALUES (@id, @run_id, @model_id, @dataset_id, @probe, @angles, @tensor_angles, @direction, @top_k, @strategy_name, @created_at)`)
          .run(profileRows.encode(s.profile.record));
      }
      prepared(this.db, `INSERT OR REPLACE INTO deltas (id, run_id, key, sha256, bytes, tensors, tuned_params, dtype, merged_model_id, created_at)
        VALUES (@id, @run_id, @key, @sha256, @bytes, @tensors, @tuned_params, @dtype, @merged_model_id, @created_at)`).run(encodeDelta(s.delta));
      return true;
    })();
  }

  async stop(id: string, status: 'CANCELLED' | 'FAILED', error?: string): Promise<boolean> {
    return this.db.transaction(() => {
      const changed = prepared(this.db, `UPDATE runs SET status = ?, error = ?, waiting = NULL, updated_at = ?, finished_at = ? WHERE id = ? AND status IN ${ACTIVE_SQL}`)
        .run(status, error ?? null, nowIso(), nowIso(), id).changes > 0;
      if (changed) prepared(this.db, "UPDATE shards SET status = 'CANCELLED' WHERE run_id = ? AND status IN ('PENDING', 'LEASED')").run(id);
      return changed;
    })();
  }

  async setWaiting(id: string, waiting: string | null): Promise<boolean> {
    return prepared(this.db, "UPDATE runs SET waiting = ? WHERE id = ? AND status = 'RUNNING' AND waiting IS NOT ?").run(waiting, id, waiting).changes > 0;
  }

  async rollback(id: string, to: { round: number; step: number; state: BlobRef }, record: RollbackRecord): Promise<boolean> {
    return this.db.transaction(() => {
      const row = prepared(this.db, "SELECT * FROM runs WHERE id = ? AND status IN ('RUNNING', 'FINALIZING') AND round >= ?").get(id, to.round);
      if (!row) return false;
      const run = decodeRun(row);
      prepared(this.db, `UPDATE runs SET status = 'RUNNING', round = ?, step = ?, state_key = ?, state_sha256 = ?, metrics = ?, round_states = ?,
        rollbacks = json_insert(rollbacks, '$[#]', json(?)), waiting = NULL, updated_at = ? WHERE id = ?`)
        .run(to.round, to.step, to.state.key, to.state.sha256, JSON.stringify(run.metrics.filter((m) => m.round < to.round)),
          JSON.stringify([...run.roundStates.slice(0, to.round), to.state.sha256]), JSON.stringify(record), nowIso(), id);
      // Later rounds start again from the rolled-back state: what they computed no longer counts.
      prepared(this.db, `UPDATE workers SET current_shard = NULL WHERE current_shard IN (SELECT id FROM shards WHERE run_id = ? AND round > ? AND status IN ('PENDING', 'LEASED'))`)
        .run(id, to.round);
      prepared(this.db, "UPDATE shards SET status = 'CANCELLED', worker_id = NULL WHERE run_id = ? AND round > ? AND status IN ('PENDING', 'LEASED')").run(id, to.round);
      prepared(this.db, "UPDATE shards SET verdict = 'VOIDED' WHERE run_id = ? AND round > ? AND status = 'DONE' AND COALESCE(verdict, '') NOT IN ('OUTVOTED', 'VOIDED')")
        .run(id, to.round);
      return true;
    })();
  }
}
