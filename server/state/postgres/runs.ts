// Runs in PostgreSQL. Each transition is one transaction guarded by the status (and round) it
// leaves, so a cancel that lands meanwhile, from any replica, wins: the later write changes
// nothing and reports false. The driver's transitions (start, rounds, success, waiting) also
// carry its fence: from a replica whose lock lapsed they are refused (LostRunLock).
import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import type { RoundOutcome, RunFilter, RunRepository, RunStart, RunSuccess } from '../store';
import { BlobRef, NewShard, Page, RollbackRecord, RunRecord, page } from '../records';
import { decodeRun, encodeDelta, encodeRun, encodeStoredStrategy, nowIso, profileRows, runFilterSql } from '../rows';
import { Queryable, all, execute, first, insertRow, run, transaction } from './database';
import type { RunLocks } from './run-locks';

const ACTIVE_SQL = "('PREPARING', 'RUNNING', 'FINALIZING')";

/** INSERT ... ON CONFLICT (key) DO UPDATE of every column: the row replaced. */
function upsert(table: string, key: string, row: Record<string, unknown>): [string, unknown[]] {
  const set = Object.keys(row).map((c) => `${c} = EXCLUDED.${c}`).join(', ');
  return insertRow(table, row, `ON CONFLICT (${key}) DO UPDATE SET ${set}`);
}

export class PgRuns implements RunRepository {
  constructor(private readonly pool: pg.Pool, private readonly locks: RunLocks) {}

  async insert(r: RunRecord): Promise<void> {
    await execute(this.pool, insertRow('runs', encodeRun(r)));
  }

  async setPublic(id: string, value: boolean): Promise<void> {
    await run(this.pool, 'UPDATE runs SET public = $1 WHERE id = $2', value ? 1 : 0, id);
  }

  async get(id: string): Promise<RunRecord | undefined> {
    const row = await first(this.pool, 'SELECT * FROM runs WHERE id = $1', id);
    return row === undefined ? undefined : decodeRun(row);
  }

  async list(filter: RunFilter, count: number, offset: number): Promise<Page<RunRecord>> {
    const { where: w, args } = runFilterSql(filter, (i) => `$${i}`);
    const n = args.length;
    const rows = await all(this.pool, `SELECT * FROM runs ${w} ORDER BY created_at DESC LIMIT $${n + 1} OFFSET $${n + 2}`, ...args, count, offset);
    const total = (await first<{ n: number }>(this.pool, `SELECT COUNT(*) AS n FROM runs ${w}`, ...args))!.n;
    return page(rows.map(decodeRun), total, offset);
  }

  async unfinished(): Promise<string[]> {
    return (await all<{ id: string }>(this.pool, `SELECT id FROM runs WHERE status IN ${ACTIVE_SQL} ORDER BY created_at`)).map((r) => r.id);
  }

  /** A round's replicas, numbered after any its index had before a rollback. */
  private async insertShards(db: Queryable, runId: string, round: number, shards: readonly NewShard[]): Promise<void> {
    const offsets = new Map<number, number>();
    for (const s of shards) {
      // Replicas of one index in this batch share the offset the first of them found.
      const base = offsets.get(s.index) ?? (await first<{ n: number | null }>(db, 'SELECT MAX(replica) + 1 AS n FROM shards WHERE run_id = $1 AND round = $2 AND idx = $3',
        runId, round, s.index))?.n ?? 0;
      offsets.set(s.index, base);
      await run(db, `INSERT INTO shards (id, run_id, round, idx, replica, need, from_step, to_step, status, created_at, pending_since,
        pack_key, pack_sha256, pack_bytes, registered_only) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'PENDING', $9, $10, $11, $12, $13, $14)`,
      randomUUID(), runId, round, s.index, s.replica + base, s.need, s.fromStep, s.toStep, nowIso(), Date.now(),
      s.pack?.key ?? null, s.pack?.sha256 ?? null, s.pack?.bytes ?? null, s.registeredOnly ? 1 : 0);
    }
  }

  async start(id: string, start: RunStart, shards: readonly NewShard[]): Promise<boolean> {
    return transaction(this.pool, async (db) => {
      await this.locks.check(db, id);
      const changed = await run(db, `UPDATE runs SET status = 'RUNNING', plan = $1, state_key = $2, state_sha256 = $3, normalization = $4, round = 0, step = 0,
        round_states = $7, updated_at = $5 WHERE id = $6 AND status = 'PREPARING'`,
      JSON.stringify(start.plan), start.state.key, start.state.sha256, JSON.stringify(start.normalization), nowIso(), id, JSON.stringify([start.state.sha256])) > 0;
      if (changed) await this.insertShards(db, id, 0, shards);
      return changed;
    });
  }

  async skipRounds(id: string): Promise<boolean> {
    return transaction(this.pool, async (db) => {
      await this.locks.check(db, id);
      return (await run(db, "UPDATE runs SET status = 'FINALIZING', updated_at = $1 WHERE id = $2 AND status = 'PREPARING'", nowIso(), id)) > 0;
    });
  }

  async completeRound(id: string, round: number, outcome: RoundOutcome, nextShards: readonly NewShard[]): Promise<boolean> {
    return transaction(this.pool, async (db) => {
      await this.locks.check(db, id);
      const changed = await run(db, `UPDATE runs SET round = $1, step = $2, state_key = $3, state_sha256 = $4,
          metrics = (metrics::jsonb || jsonb_build_array($5::jsonb))::text, round_states = (round_states::jsonb || to_jsonb($4::text))::text,
          waiting = NULL, status = $6, updated_at = $7
        WHERE id = $8 AND status = 'RUNNING' AND round = $9`,
      round + 1, outcome.step, outcome.state.key, outcome.state.sha256, JSON.stringify(outcome.metric), outcome.finishing ? 'FINALIZING' : 'RUNNING',
      nowIso(), id, round) > 0;
      if (changed && !outcome.finishing) await this.insertShards(db, id, round + 1, nextShards);
      return changed;
    });
  }

  async succeed(id: string, s: RunSuccess): Promise<boolean> {
    return transaction(this.pool, async (db) => {
      await this.locks.check(db, id);
      const report = s.report ? JSON.stringify(s.report) : null;
      const changed = await run(db, `UPDATE runs SET status = 'SUCCEEDED', accuracy = $1, loss = $2, tuned_params = $3, report = COALESCE($4, report),
        delta_id = $5, updated_at = $6, finished_at = $6 WHERE id = $7 AND status = 'FINALIZING'`,
      s.accuracy, s.loss, s.tunedParams, report, s.delta.id, nowIso(), id) > 0;
      if (!changed) return false;
      if (s.profile) {
        // The probe's own strategy: a name reserved when it started, replaced if taken meanwhile.
        await execute(db, upsert('strategies', 'name', encodeStoredStrategy(s.profile.strategy)));
        await execute(db, upsert('angle_profiles', 'run_id', profileRows.encode(s.profile.record)));
      }
      await execute(db, upsert('deltas', 'run_id', encodeDelta(s.delta)));
      return true;
    });
  }

  async stop(id: string, status: 'CANCELLED' | 'FAILED', error?: string): Promise<boolean> {
    return transaction(this.pool, async (db) => {
      const changed = await run(db, `UPDATE runs SET status = $1, error = $2, waiting = NULL, updated_at = $3, finished_at = $3 WHERE id = $4 AND status IN ${ACTIVE_SQL}`,
        status, error ?? null, nowIso(), id) > 0;
      if (changed) await run(db, "UPDATE shards SET status = 'CANCELLED' WHERE run_id = $1 AND status IN ('PENDING', 'LEASED')", id);
      return changed;
    });
  }

  async setWaiting(id: string, waiting: string | null): Promise<boolean> {
    // The clock asks every second for every run it drives: one read when nothing changes, the fenced write when something does.
    const due = await first(this.pool, "SELECT 1 FROM runs WHERE id = $1 AND status = 'RUNNING' AND waiting IS DISTINCT FROM $2", id, waiting);
    if (!due) return false;
    return transaction(this.pool, async (db) => {
      await this.locks.check(db, id);
      return (await run(db, "UPDATE runs SET waiting = $1 WHERE id = $2 AND status = 'RUNNING' AND waiting IS DISTINCT FROM $1", waiting, id)) > 0;
    });
  }

  async rollback(id: string, to: { round: number; step: number; state: BlobRef }, record: RollbackRecord): Promise<boolean> {
    return transaction(this.pool, async (db) => {
      const row = await first(db, "SELECT * FROM runs WHERE id = $1 AND status IN ('RUNNING', 'FINALIZING') AND round >= $2 FOR UPDATE", id, to.round);
      if (!row) return false;
      const r = decodeRun(row);
      await run(db, `UPDATE runs SET status = 'RUNNING', round = $1, step = $2, state_key = $3, state_sha256 = $4, metrics = $5, round_states = $6,
        rollbacks = (rollbacks::jsonb || jsonb_build_array($7::jsonb))::text, waiting = NULL, updated_at = $8 WHERE id = $9`,
      to.round, to.step, to.state.key, to.state.sha256, JSON.stringify(r.metrics.filter((m) => m.round < to.round)),
      JSON.stringify([...r.roundStates.slice(0, to.round), to.state.sha256]), JSON.stringify(record), nowIso(), id);
      // Later rounds start again from the rolled-back state: what they computed no longer counts.
      await run(db, `UPDATE workers SET current_shard = NULL WHERE current_shard IN (SELECT id FROM shards WHERE run_id = $1 AND round > $2 AND status IN ('PENDING', 'LEASED'))`,
        id, to.round);
      await run(db, "UPDATE shards SET status = 'CANCELLED', worker_id = NULL WHERE run_id = $1 AND round > $2 AND status IN ('PENDING', 'LEASED')", id, to.round);
      await run(db, "UPDATE shards SET verdict = 'VOIDED' WHERE run_id = $1 AND round > $2 AND status = 'DONE' AND COALESCE(verdict, '') NOT IN ('OUTVOTED', 'VOIDED')",
        id, to.round);
      return true;
    });
  }
}
