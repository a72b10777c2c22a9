// Runs in SQLite. Each transition is one transaction guarded by the status (and round) it leaves,
// so a cancel that lands meanwhile wins: the later write changes nothing and reports false.
import { randomUUID } from 'node:crypto';
import type { RoundOutcome, RunFilter, RunRepository, RunStart, RunSuccess } from '../store';
import { NewShard, Page, RunRecord, page } from '../records';
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

  private insertShards(runId: string, round: number, shards: readonly NewShard[]): void {
    const insert = prepared(this.db, `INSERT OR IGNORE INTO shards (id, run_id, round, idx, replica, need, from_step, to_step, status, created_at,
      pack_key, pack_sha256, pack_bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'PENDING', ?, ?, ?, ?)`);
    for (const s of shards) {
      insert.run(randomUUID(), runId, round, s.index, s.replica, s.need, s.fromStep, s.toStep, nowIso(), s.pack?.key ?? null, s.pack?.sha256 ?? null, s.pack?.bytes ?? null);
    }
  }

  async start(id: string, start: RunStart, shards: readonly NewShard[]): Promise<boolean> {
    return this.db.transaction(() => {
      const changed = prepared(this.db, `UPDATE runs SET status = 'RUNNING', plan = ?, state_key = ?, state_sha256 = ?, normalization = ?, round = 0, step = 0,
        updated_at = ? WHERE id = ? AND status = 'PREPARING'`)
        .run(JSON.stringify(start.plan), start.state.key, start.state.sha256, JSON.stringify(start.normalization), nowIso(), id).changes > 0;
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
        status = ?, updated_at = ? WHERE id = ? AND status = 'RUNNING' AND round = ?`)
        .run(round + 1, outcome.step, outcome.state.key, outcome.state.sha256, JSON.stringify(outcome.metric), outcome.finishing ? 'FINALIZING' : 'RUNNING',
          nowIso(), id, round).changes > 0;
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
      const changed = prepared(this.db, `UPDATE runs SET status = ?, error = ?, updated_at = ?, finished_at = ? WHERE id = ? AND status IN ${ACTIVE_SQL}`)
        .run(status, error ?? null, nowIso(), nowIso(), id).changes > 0;
      if (changed) prepared(this.db, "UPDATE shards SET status = 'CANCELLED' WHERE run_id = ? AND status IN ('PENDING', 'LEASED')").run(id);
      return changed;
    })();
  }
}
