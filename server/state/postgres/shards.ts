// Shards and their leases in PostgreSQL. Every lease transition is guarded by (status, worker,
// attempt): a stale or duplicated call from a worker, to any replica, changes nothing and says so.
// Leases are taken with SELECT ... FOR UPDATE SKIP LOCKED, so replicas leasing at once never wait
// on each other nor hand one shard out twice; what decides an index (a new replica, a verdict)
// first locks that index's rows, so two replicas cannot judge it at once.
import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import type { IndexKey, LeaseCandidate, Release, ReplicaSpec, Settlement, ShardRepository, ShardResult } from '../store';
import { FailureBudget, ShardRecord } from '../records';
import { decodeShard, nowIso } from '../rows';
import { Queryable, all, first, run, transaction } from './database';

/** A lease still held: $1 the shard, $2 its worker, $3 the attempt. */
const HELD = "id = $1 AND status = 'LEASED' AND worker_id = $2 AND attempts = $3";
const INDEX = 'run_id = $1 AND round = $2 AND idx = $3';
/** A verdict a new judgement may replace: none yet, or a candidate already credited. */
const OPEN_VERDICT = "(verdict IS NULL OR verdict = 'AGREED')";
const appendReason = (param: string): string => `rejections = (rejections::jsonb || to_jsonb(${param}::text))::text`;

export class PgShards implements ShardRepository {
  /** `liveness`: for heartbeats' renewals (openLivenessPool). */
  constructor(private readonly pool: pg.Pool, private readonly liveness: pg.Pool) {}

  async get(id: string): Promise<ShardRecord | undefined> {
    return read(this.pool, id);
  }

  async ofRun(runId: string, round?: number): Promise<ShardRecord[]> {
    const rows = round === undefined
      ? await all(this.pool, 'SELECT * FROM shards WHERE run_id = $1 ORDER BY round, idx, replica', runId)
      : await all(this.pool, 'SELECT * FROM shards WHERE run_id = $1 AND round = $2 ORDER BY idx, replica', runId, round);
    return rows.map(decodeShard);
  }

  async ofIndex(runId: string, round: number, index: number): Promise<ShardRecord[]> {
    return (await all(this.pool, `SELECT * FROM shards WHERE ${INDEX} ORDER BY replica`, runId, round, index)).map(decodeShard);
  }

  async stepsDone(runId: string, round: number): Promise<number> {
    // Per index, its furthest replica.
    return (await first<{ n: number }>(this.pool, `SELECT COALESCE(SUM(n), 0)::int AS n FROM (SELECT MAX(CASE WHEN status = 'DONE' THEN to_step - from_step ELSE steps_done END) AS n
      FROM shards WHERE run_id = $1 AND round = $2 AND status != 'CANCELLED' AND COALESCE(verdict, '') != 'VOIDED' GROUP BY idx) per_index`, runId, round))!.n;
  }

  /** One statement (one round trip, one commit): a fleet's claims arrive together when a round opens. */
  async leaseOldest(worker: LeaseCandidate, memoryBudget: number | undefined, leaseUntil: Date, now: Date): Promise<ShardRecord | undefined> {
    const row = await first(this.pool, `WITH next AS (SELECT s.id FROM shards s JOIN runs r ON r.id = s.run_id
        WHERE s.status = 'PENDING' AND r.status = 'RUNNING' AND s.round = r.round AND ($1::bigint IS NULL OR r.memory_need <= $1::bigint)
          AND ($2 OR (s.registered_only = 0 AND (s.need_class IS NULL OR s.need_class = $7) AND NOT (s.failed_by::jsonb ? $3)))
          AND NOT EXISTS (SELECT 1 FROM shards o JOIN workers w ON w.id = o.worker_id
            WHERE o.run_id = s.run_id AND o.round = s.round AND o.idx = s.idx AND o.id != s.id AND COALESCE(o.verdict, '') != 'VOIDED'
              AND (w.id = $3 OR (NOT $2 AND NOT (w.trusted = 1 AND w.demoted = 0) AND (w.party = $4 OR ($8 != '' AND w.origin = $8)))))
        ORDER BY r.created_at, s.round, s.idx, s.replica LIMIT 1 FOR UPDATE OF s SKIP LOCKED),
      leased AS (UPDATE shards SET status = 'LEASED', worker_id = $3, lease_until = $5, attempts = attempts + 1, steps_done = 0, progress_at = $6,
        leased_at = $6, submitted_at = NULL, pending_since = NULL, lease_class = $7, deadline = NULL WHERE id = (SELECT id FROM next) RETURNING *),
      holder AS (UPDATE workers SET current_shard = leased.id FROM leased WHERE workers.id = $3)
      SELECT * FROM leased`,
    memoryBudget ?? null, worker.registered, worker.id, worker.party, leaseUntil.getTime(), now.getTime(), worker.kernelClass, worker.origin);
    return row === undefined ? undefined : decodeShard(row);
  }

  async paces(runId: string, workerId: string): Promise<{ run: number[]; worker: number[] }> {
    const sql = (mine: boolean): string => `SELECT (submitted_at - leased_at) / 1000.0 / (to_step - from_step) AS pace FROM shards
      WHERE run_id = $1 ${mine ? 'AND worker_id = $2' : ''} AND status = 'DONE' AND (verdict IS NULL OR verdict IN ('ACCEPTED', 'AGREED', 'CLOSE')) AND submitted_at IS NOT NULL
        AND leased_at IS NOT NULL ORDER BY completed_at DESC LIMIT 64`;
    const paces = (rows: { pace: string | number }[]): number[] => rows.map((r) => Number(r.pace));
    return { run: paces(await all(this.pool, sql(false), runId)), worker: paces(await all(this.pool, sql(true), runId, workerId)) };
  }

  async setDeadline(id: string, workerId: string, attempt: number, deadline: Date): Promise<void> {
    await run(this.pool, `UPDATE shards SET deadline = $4, lease_until = LEAST(lease_until, $4) WHERE ${HELD}`, id, workerId, attempt, deadline.getTime());
  }

  async renew(id: string, workerId: string, attempt: number, stepsDone: number, leaseUntil: Date, now: Date): Promise<boolean> {
    const steps = 'LEAST(to_step - from_step, GREATEST(0, $4::int))';
    return (await run(this.liveness, `UPDATE shards SET lease_until = LEAST($5::bigint, COALESCE(deadline, $5::bigint)),
        progress_at = CASE WHEN ${steps} > steps_done THEN $6::bigint ELSE progress_at END, steps_done = GREATEST(steps_done, ${steps})
      WHERE ${HELD}`, id, workerId, attempt, stepsDone, leaseUntil.getTime(), now.getTime())) > 0;
  }

  async submit(id: string, workerId: string, attempt: number, now: Date): Promise<boolean> {
    return (await run(this.pool, `UPDATE shards SET submitted_at = COALESCE(submitted_at, $4) WHERE ${HELD}`, id, workerId, attempt, now.getTime())) > 0;
  }

  async complete(id: string, workerId: string, attempt: number, r: ShardResult): Promise<boolean> {
    return transaction(this.pool, async (db) => {
      const changed = await run(db, `UPDATE shards SET status = 'DONE', result_key = $4, result_sha256 = $5, digest = $6, kernel_class = $7, loss = $8,
        images_per_second = $9, downloaded_bytes = $11, steps_done = to_step - from_step, completed_at = $10 WHERE ${HELD}`,
      id, workerId, attempt, r.update.key, r.update.sha256, r.digest, r.kernelClass, r.loss, r.imagesPerSecond, nowIso(), r.downloadedBytes) > 0;
      if (changed) {
        await run(db, 'UPDATE workers SET shards_done = shards_done + 1, samples = samples + $1, images_per_second = $2, current_shard = NULL WHERE id = $3',
          r.samples, r.imagesPerSecond, workerId);
      }
      return changed;
    });
  }

  async addReplica(of: ShardRecord, spec: ReplicaSpec): Promise<ShardRecord | undefined> {
    return transaction(this.pool, async (db) => {
      const replicas = await all<{ replica: number; verdict: string | null }>(db, `SELECT replica, verdict FROM shards WHERE ${INDEX} FOR UPDATE`,
        of.runId, of.round, of.index);
      const running = await first(db, "SELECT 1 FROM runs WHERE id = $1 AND status = 'RUNNING' AND round = $2", of.runId, of.round);
      if (!running || replicas.some((r) => r.verdict === 'ACCEPTED')) return undefined;
      const id = randomUUID();
      await run(db, `INSERT INTO shards (id, run_id, round, idx, replica, need, need_class, registered_only, from_step, to_step, status, created_at, pending_since,
          pack_key, pack_sha256, pack_bytes)
        SELECT $1, run_id, round, idx, $2, $3, $4, $5, from_step, to_step, 'PENDING', $6, $7, pack_key, pack_sha256, pack_bytes FROM shards WHERE id = $8`,
      id, Math.max(...replicas.map((r) => r.replica)) + 1, spec.need, spec.needClass, spec.registeredOnly ? 1 : 0, nowIso(), Date.now(), of.id);
      return read(db, id);
    });
  }

  async relax(id: string): Promise<boolean> {
    return (await run(this.pool, "UPDATE shards SET need_class = NULL, pending_since = $2 WHERE id = $1 AND status = 'PENDING' AND need_class IS NOT NULL", id, Date.now())) > 0;
  }

  async setNeed(id: string, workerId: string, attempt: number, need: number): Promise<void> {
    await run(this.pool, `UPDATE shards SET need = $4 WHERE ${HELD}`, id, workerId, attempt, need);
  }

  async settle(s: Settlement, budget: FailureBudget): Promise<boolean> {
    return transaction(this.pool, async (db) => {
      const index = await all<{ verdict: string | null }>(db, `SELECT verdict FROM shards WHERE ${INDEX} FOR UPDATE`, s.runId, s.round, s.index);
      const accepted = index.some((r) => r.verdict === 'ACCEPTED');
      if (s.accept) {
        if (accepted || await run(db, `UPDATE shards SET verdict = 'ACCEPTED', votes = $2, required = $3 WHERE id = $1 AND status = 'DONE' AND ${OPEN_VERDICT}`,
          s.accept.id, s.accept.votes, s.accept.required) === 0) return false;
      }
      for (const id of s.agreed) await run(db, `UPDATE shards SET verdict = 'AGREED' WHERE id = $1 AND status = 'DONE' AND ${OPEN_VERDICT}`, id);
      for (const id of s.close) await run(db, `UPDATE shards SET verdict = 'CLOSE' WHERE id = $1 AND status = 'DONE' AND ${OPEN_VERDICT}`, id);
      const outvoted: { workerId: string; kernelClass: string }[] = [];
      for (const o of s.outvoted) {
        const row = await first<{ worker_id: string; kernel_class: string }>(db, `UPDATE shards SET verdict = 'OUTVOTED', ${appendReason('$1')}
          WHERE id = $2 AND status = 'DONE' AND (verdict IS NULL OR verdict IN ('AGREED', 'ACCEPTED')) RETURNING worker_id, kernel_class`, o.reason.slice(0, 1000), o.id);
        if (row) outvoted.push({ workerId: row.worker_id, kernelClass: row.kernel_class });
      }
      // Workers in one order, so two settlements never wait on each other's worker rows.
      for (const c of [...s.credit].sort((a, b) => a.workerId.localeCompare(b.workerId))) {
        await run(db, 'UPDATE workers SET agreed = agreed + 1, streak = streak + 1 WHERE id = $1', c.workerId);
        await run(db, `INSERT INTO worker_classes (worker_id, kernel_class, agreed, streak) VALUES ($1, $2, 1, 1)
          ON CONFLICT (worker_id, kernel_class) DO UPDATE SET agreed = worker_classes.agreed + 1, streak = worker_classes.streak + 1`, c.workerId, c.kernelClass);
      }
      for (const o of outvoted.sort((a, b) => a.workerId.localeCompare(b.workerId))) {
        await run(db, `UPDATE workers SET disagreed = disagreed + 1, streak = 0, demoted = trusted, strikes = strikes + 1,
          quarantined_at = CASE WHEN trusted = 0 AND quarantined_at IS NULL AND strikes + 1 >= $1 THEN $2::bigint ELSE quarantined_at END WHERE id = $3`,
        budget.quarantineStrikes, Date.now(), o.workerId);
        await run(db, `INSERT INTO worker_classes (worker_id, kernel_class, disagreed) VALUES ($1, $2, 1)
          ON CONFLICT (worker_id, kernel_class) DO UPDATE SET disagreed = worker_classes.disagreed + 1, streak = 0`, o.workerId, o.kernelClass);
      }
      if (s.accept || accepted) {
        // Settled: replicas still open are not needed.
        await run(db, `UPDATE workers SET current_shard = NULL WHERE current_shard IN (SELECT id FROM shards WHERE ${INDEX} AND status IN ('PENDING', 'LEASED'))`,
          s.runId, s.round, s.index);
        await run(db, `UPDATE shards SET status = 'CANCELLED', worker_id = NULL WHERE ${INDEX} AND status IN ('PENDING', 'LEASED')`, s.runId, s.round, s.index);
      }
      return true;
    });
  }

  async unsettle(key: IndexKey, voided: readonly string[], candidates: readonly string[]): Promise<boolean> {
    return transaction(this.pool, async (db) => {
      if (!(await first(db, "SELECT 1 FROM runs WHERE id = $1 AND status IN ('RUNNING', 'FINALIZING')", key.runId))) return false;
      await all(db, `SELECT id FROM shards WHERE ${INDEX} FOR UPDATE`, key.runId, key.round, key.index);
      await run(db, `UPDATE shards SET verdict = 'VOIDED' WHERE id = ANY($4) AND ${INDEX} AND verdict IN ('ACCEPTED', 'AGREED')`, key.runId, key.round, key.index, [...voided]);
      await run(db, `UPDATE shards SET verdict = 'AGREED', votes = NULL, required = NULL WHERE id = ANY($4) AND ${INDEX} AND verdict IN ('ACCEPTED', 'AGREED')`,
        key.runId, key.round, key.index, [...candidates]);
      // Results judged against the withdrawn one are judged again against the next.
      await run(db, `UPDATE shards SET verdict = NULL WHERE ${INDEX} AND verdict = 'CLOSE'`, key.runId, key.round, key.index);
      return true;
    });
  }

  async stalled(runIds: readonly string[], before: Date): Promise<IndexKey[]> {
    const rows = await all<{ run_id: string; round: number; idx: number }>(this.pool, `SELECT DISTINCT s.run_id, s.round, s.idx FROM shards s JOIN runs r ON r.id = s.run_id
      WHERE r.status = 'RUNNING' AND s.round = r.round AND s.run_id = ANY($1)
        AND ((s.status = 'PENDING' AND s.pending_since < $2)
          OR (s.status = 'LEASED' AND s.submitted_at IS NULL AND s.leased_at < $2)
          OR (s.status = 'DONE' AND s.verdict IS NULL AND s.completed_at < $3 AND NOT EXISTS (SELECT 1 FROM shards o
            WHERE o.run_id = s.run_id AND o.round = s.round AND o.idx = s.idx AND o.status = 'PENDING')))`,
    [...runIds], before.getTime(), before.toISOString());
    return rows.map((r) => ({ runId: r.run_id, round: r.round, index: r.idx }));
  }

  async supported(workerIds: readonly string[]): Promise<ShardRecord[]> {
    return (await all(this.pool, "SELECT * FROM shards WHERE worker_id = ANY($1) AND verdict IN ('ACCEPTED', 'AGREED')", [...workerIds])).map(decodeShard);
  }

  /** The release of one lease; run inside a transaction. */
  private async releaseHeld(db: Queryable, id: string, workerId: string, attempt: number, reason: string, budget: FailureBudget): Promise<Release> {
    const row = await first(db, `SELECT * FROM shards WHERE ${HELD} FOR UPDATE`, id, workerId, attempt);
    if (!row) return 'lost';
    const shard = decodeShard(row);
    const worker = await first<{ trusted: number; demoted: number; quarantined_at: number | null }>(db, 'SELECT trusted, demoted, quarantined_at FROM workers WHERE id = $1', workerId);
    // Only a registered worker's failures count toward failing the run.
    const registered = worker?.trusted === 1 && worker.demoted === 0 && worker.quarantined_at === null;
    const failedBy = shard.failedBy.includes(workerId) ? shard.failedBy : [...shard.failedBy, workerId];
    const trustedFailures = shard.trustedFailures + (registered ? 1 : 0);
    const exhausted = trustedFailures >= budget.registeredFailures;
    await run(db, `UPDATE shards SET status = $4, worker_id = NULL, steps_done = 0, progress_at = NULL, deadline = NULL, submitted_at = NULL, pending_since = $8,
      failed_by = $5, trusted_failures = $6, ${appendReason('$7')} WHERE ${HELD}`,
    id, workerId, attempt, exhausted ? 'CANCELLED' : 'PENDING', JSON.stringify(failedBy), trustedFailures, reason.slice(0, 1000), Date.now());
    await run(db, `UPDATE workers SET current_shard = CASE WHEN current_shard = $1 THEN NULL ELSE current_shard END, strikes = strikes + 1,
      quarantined_at = CASE WHEN trusted = 0 AND quarantined_at IS NULL AND strikes + 1 >= $2 THEN $3::bigint ELSE quarantined_at END WHERE id = $4`,
    id, budget.quarantineStrikes, Date.now(), workerId);
    return exhausted ? 'exhausted' : 'requeued';
  }

  async release(id: string, workerId: string, attempt: number, reason: string, budget: FailureBudget): Promise<Release> {
    return transaction(this.pool, (db) => this.releaseHeld(db, id, workerId, attempt, reason, budget));
  }

  async expire(now: Date, stalledBefore: Date, submittedBefore: Date, budget: FailureBudget): Promise<{ shard: ShardRecord; release: Exclude<Release, 'lost'> }[]> {
    return transaction(this.pool, async (db) => {
      const t = now.getTime();
      // Leases another replica is expiring right now are skipped: it releases them. A completed
      // lease's clock stopped when its worker completed it: only a check that never ended releases it.
      const ended = (await all(db, `SELECT * FROM shards WHERE status = 'LEASED'
        AND ((submitted_at IS NULL AND (lease_until < $1 OR deadline < $1 OR progress_at < $2)) OR submitted_at < $3)
        ORDER BY id FOR UPDATE SKIP LOCKED`, t, stalledBefore.getTime(), submittedBefore.getTime())).map(decodeShard);
      const out: { shard: ShardRecord; release: Exclude<Release, 'lost'> }[] = [];
      for (const s of ended) {
        const why = s.submittedAt ? 'its update was never judged (the server stopped while checking it): re-issued'
          : s.deadline && s.deadline.getTime() < t ? 'held past its deadline: lease revoked'
          : s.progressAt && s.progressAt < stalledBefore ? `no progress for ${Math.round((t - s.progressAt.getTime()) / 1000)} s: lease revoked`
          : 'lease expired';
        const release = await this.releaseHeld(db, s.id, s.workerId!, s.attempts, `attempt ${s.attempts}: ${why} (worker ${s.workerId})`, budget);
        if (release !== 'lost') out.push({ shard: (await read(db, s.id))!, release });
      }
      return out;
    });
  }

  async reopen(id: string, reason: string): Promise<boolean> {
    return transaction(this.pool, async (db) => {
      const row = await first<{ run_id: string; round: number; idx: number }>(db, `UPDATE shards SET status = 'PENDING', worker_id = NULL, result_key = NULL,
          result_sha256 = NULL, digest = NULL, verdict = NULL, votes = NULL, required = NULL, steps_done = 0, submitted_at = NULL, pending_since = $3,
          ${appendReason('$1')} WHERE id = $2 AND status = 'DONE'
          AND EXISTS (SELECT 1 FROM runs r WHERE r.id = shards.run_id AND r.status = 'RUNNING' AND r.round = shards.round)
        RETURNING run_id, round, idx`, reason.slice(0, 1000), id, Date.now());
      // The replicas that agreed with it are judged again with the new result.
      if (row) await run(db, `UPDATE shards SET verdict = NULL WHERE ${INDEX} AND verdict IN ('AGREED', 'CLOSE')`, row.run_id, row.round, row.idx);
      return row !== undefined;
    });
  }
}

async function read(db: Queryable, id: string): Promise<ShardRecord | undefined> {
  const row = await first(db, 'SELECT * FROM shards WHERE id = $1', id);
  return row === undefined ? undefined : decodeShard(row);
}
