// Shards and their leases in PostgreSQL. Every lease transition is guarded by (status, worker,
// attempt): a stale or duplicated call from a worker, to any replica, changes nothing and says so.
// Leases are taken with SELECT ... FOR UPDATE SKIP LOCKED, so replicas leasing at once never wait
// on each other nor hand one shard out twice; what decides an index (a new replica, a verdict)
// first locks that index's rows, so two replicas cannot judge it at once.
import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import type { Release, Settlement, ShardRepository, ShardResult } from '../store';
import { FailureBudget, ShardRecord } from '../records';
import { TRUSTED_WORKER, decodeShard, nowIso } from '../rows';
import { Queryable, all, first, run, transaction } from './database';

/** A lease still held: $1 the shard, $2 its worker, $3 the attempt. */
const HELD = "id = $1 AND status = 'LEASED' AND worker_id = $2 AND attempts = $3";
const INDEX = 'run_id = $1 AND round = $2 AND idx = $3';
/** Replicas an index may have before the run fails for want of agreement. */
const MAX_REPLICAS = 8;
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
      FROM shards WHERE run_id = $1 AND round = $2 AND status != 'CANCELLED' GROUP BY idx) per_index`, runId, round))!.n;
  }

  /** One statement (one round trip, one commit): a fleet's claims arrive together when a round opens. */
  async leaseOldest(worker: { id: string; trusted: boolean; address: string }, memoryBudget: number | undefined, leaseUntil: Date, now: Date): Promise<ShardRecord | undefined> {
    // Never two replicas of an index to one worker, nor to two volunteers of one address.
    const row = await first(this.pool, `WITH next AS (SELECT s.id FROM shards s JOIN runs r ON r.id = s.run_id
        WHERE s.status = 'PENDING' AND r.status = 'RUNNING' AND s.round = r.round AND ($1::bigint IS NULL OR r.memory_need <= $1::bigint)
          AND ($2 OR NOT (s.failed_by::jsonb ? $3))
          AND NOT EXISTS (SELECT 1 FROM shards o JOIN workers w ON w.id = o.worker_id
            WHERE o.run_id = s.run_id AND o.round = s.round AND o.idx = s.idx AND o.id != s.id
              AND (w.id = $3 OR (NOT $2 AND w.trusted = 0 AND w.address = $4)))
        ORDER BY r.created_at, s.round, s.idx, s.replica LIMIT 1 FOR UPDATE OF s SKIP LOCKED),
      leased AS (UPDATE shards SET status = 'LEASED', worker_id = $3, lease_until = $5, attempts = attempts + 1, steps_done = 0, progress_at = $6,
        deadline = NULL WHERE id = (SELECT id FROM next) RETURNING *),
      holder AS (UPDATE workers SET current_shard = leased.id FROM leased WHERE workers.id = $3)
      SELECT * FROM leased`,
    memoryBudget ?? null, worker.trusted, worker.id, worker.address, leaseUntil.getTime(), now.getTime());
    return row === undefined ? undefined : decodeShard(row);
  }

  async lastSpeed(runId: string, workerId: string): Promise<number | undefined> {
    const row = await first<{ ips: number }>(this.pool, `SELECT images_per_second AS ips FROM shards WHERE run_id = $1 AND worker_id = $2 AND status = 'DONE'
      AND images_per_second > 0 ORDER BY completed_at DESC LIMIT 1`, runId, workerId);
    return row?.ips;
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

  async complete(id: string, workerId: string, attempt: number, r: ShardResult): Promise<boolean> {
    return transaction(this.pool, async (db) => {
      const changed = await run(db, `UPDATE shards SET status = 'DONE', result_key = $4, result_sha256 = $5, digest = $6, kernel_class = $7, loss = $8,
        images_per_second = $9, downloaded_bytes = $11, steps_done = to_step - from_step, completed_at = $10 WHERE ${HELD}`,
      id, workerId, attempt, r.update.key, r.update.sha256, r.digest, r.kernelClass, r.loss, r.imagesPerSecond, nowIso(), r.downloadedBytes) > 0;
      if (changed) {
        await run(db, `UPDATE workers SET shards_done = shards_done + 1, samples = samples + $1, images_per_second = $2, kernel_class = $3,
          current_shard = NULL WHERE id = $4`, r.samples, r.imagesPerSecond, r.kernelClass, workerId);
      }
      return changed;
    });
  }

  async addReplica(of: ShardRecord, need: number): Promise<ShardRecord | 'limit' | undefined> {
    return transaction(this.pool, async (db) => {
      const replicas = await all<{ replica: number; verdict: string | null }>(db, `SELECT replica, verdict FROM shards WHERE ${INDEX} FOR UPDATE`,
        of.runId, of.round, of.index);
      const running = await first(db, "SELECT 1 FROM runs WHERE id = $1 AND status = 'RUNNING' AND round = $2", of.runId, of.round);
      if (!running || replicas.some((r) => r.verdict === 'ACCEPTED')) return undefined;
      if (replicas.length >= MAX_REPLICAS) return 'limit';
      const id = randomUUID();
      await run(db, `INSERT INTO shards (id, run_id, round, idx, replica, need, from_step, to_step, status, created_at, pack_key, pack_sha256, pack_bytes)
        SELECT $1, run_id, round, idx, $2, $3, from_step, to_step, 'PENDING', $4, pack_key, pack_sha256, pack_bytes FROM shards WHERE id = $5`,
      id, Math.max(...replicas.map((r) => r.replica)) + 1, need, nowIso(), of.id);
      return read(db, id);
    });
  }

  async setNeed(id: string, workerId: string, attempt: number, need: number): Promise<void> {
    await run(this.pool, `UPDATE shards SET need = $4 WHERE ${HELD}`, id, workerId, attempt, need);
  }

  async settle(s: Settlement, budget: FailureBudget): Promise<boolean> {
    return transaction(this.pool, async (db) => {
      const index = await all<{ verdict: string | null }>(db, `SELECT verdict FROM shards WHERE ${INDEX} FOR UPDATE`, s.runId, s.round, s.index);
      const accepted = index.some((r) => r.verdict === 'ACCEPTED');
      if (s.accept) {
        if (accepted || await run(db, "UPDATE shards SET verdict = 'ACCEPTED' WHERE id = $1 AND status = 'DONE' AND verdict IS NULL", s.accept) === 0) return false;
      }
      for (const id of s.agreed) await run(db, "UPDATE shards SET verdict = 'AGREED' WHERE id = $1 AND status = 'DONE' AND verdict IS NULL", id);
      // Workers in one order, so two settlements never wait on each other's worker rows.
      for (const w of [...s.credit].sort()) await run(db, 'UPDATE workers SET agreed = agreed + 1, streak = streak + 1 WHERE id = $1', w);
      for (const o of s.outvoted) {
        const row = await first<{ worker_id: string }>(db, `UPDATE shards SET verdict = 'OUTVOTED', ${appendReason('$1')}
          WHERE id = $2 AND status = 'DONE' AND verdict IS NULL RETURNING worker_id`, o.reason.slice(0, 1000), o.id);
        if (!row) continue;
        await run(db, `UPDATE workers SET disagreed = disagreed + 1, streak = 0, demoted = trusted, strikes = strikes + 1,
          quarantined_at = CASE WHEN trusted = 0 AND quarantined_at IS NULL AND strikes + 1 >= $1 THEN $2::bigint ELSE quarantined_at END WHERE id = $3`,
        budget.quarantineStrikes, Date.now(), row.worker_id);
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

  async unclaimedChecks(completedBefore: Date): Promise<ShardRecord[]> {
    return (await all(this.pool, `SELECT s.* FROM shards s JOIN runs r ON r.id = s.run_id JOIN workers w ON w.id = s.worker_id
      WHERE s.status = 'DONE' AND s.verdict IS NULL AND s.need = 2 AND s.completed_at < $1 AND r.status = 'RUNNING' AND r.round = s.round
        AND r.hyper::jsonb ->> 'verification' = 'SPOT_CHECK' AND w.quarantined_at IS NULL AND ${TRUSTED_WORKER}
        AND NOT EXISTS (SELECT 1 FROM shards o WHERE o.run_id = s.run_id AND o.round = s.round AND o.idx = s.idx AND o.id != s.id
          AND (o.status = 'LEASED' OR (o.status = 'DONE' AND COALESCE(o.verdict, '') != 'OUTVOTED')))`, completedBefore.toISOString())).map(decodeShard);
  }

  async reverify(workerId: string): Promise<ShardRecord[]> {
    return (await all(this.pool, `UPDATE shards SET verdict = NULL, need = 2 WHERE worker_id = $1 AND verdict = 'ACCEPTED' AND need = 1
        AND EXISTS (SELECT 1 FROM runs r WHERE r.id = shards.run_id AND r.status = 'RUNNING' AND r.round = shards.round) RETURNING *`, workerId)).map(decodeShard);
  }

  /** The release of one lease; run inside a transaction. */
  private async releaseHeld(db: Queryable, id: string, workerId: string, attempt: number, reason: string, budget: FailureBudget): Promise<Release> {
    const row = await first(db, `SELECT * FROM shards WHERE ${HELD} FOR UPDATE`, id, workerId, attempt);
    if (!row) return 'lost';
    const shard = decodeShard(row);
    const worker = await first<{ trusted: number }>(db, 'SELECT trusted FROM workers WHERE id = $1', workerId);
    const trusted = worker?.trusted === 1;
    const failedBy = shard.failedBy.includes(workerId) ? shard.failedBy : [...shard.failedBy, workerId];
    const trustedFailures = shard.trustedFailures + (trusted ? 1 : 0);
    const exhausted = trustedFailures >= 1 && (failedBy.length >= budget.distinctWorkers || trustedFailures >= budget.trustedFailures);
    await run(db, `UPDATE shards SET status = $4, worker_id = NULL, steps_done = 0, progress_at = NULL, deadline = NULL, failed_by = $5, trusted_failures = $6,
      ${appendReason('$7')} WHERE ${HELD}`, id, workerId, attempt, exhausted ? 'CANCELLED' : 'PENDING', JSON.stringify(failedBy), trustedFailures, reason.slice(0, 1000));
    await run(db, `UPDATE workers SET current_shard = CASE WHEN current_shard = $1 THEN NULL ELSE current_shard END, strikes = strikes + 1,
      quarantined_at = CASE WHEN trusted = 0 AND quarantined_at IS NULL AND strikes + 1 >= $2 THEN $3::bigint ELSE quarantined_at END WHERE id = $4`,
    id, budget.quarantineStrikes, Date.now(), workerId);
    return exhausted ? 'exhausted' : 'requeued';
  }

  async release(id: string, workerId: string, attempt: number, reason: string, budget: FailureBudget): Promise<Release> {
    return transaction(this.pool, (db) => this.releaseHeld(db, id, workerId, attempt, reason, budget));
  }

  async expire(now: Date, stalledBefore: Date, budget: FailureBudget): Promise<{ shard: ShardRecord; release: Exclude<Release, 'lost'> }[]> {
    return transaction(this.pool, async (db) => {
      const t = now.getTime();
      // Leases another replica is expiring right now are skipped: it releases them.
      const ended = (await all(db, `SELECT * FROM shards WHERE status = 'LEASED' AND (lease_until < $1 OR deadline < $1 OR progress_at < $2)
        ORDER BY id FOR UPDATE SKIP LOCKED`, t, stalledBefore.getTime())).map(decodeShard);
      const out: { shard: ShardRecord; release: Exclude<Release, 'lost'> }[] = [];
      for (const s of ended) {
        const why = s.deadline && s.deadline.getTime() < t ? 'held past its deadline: lease revoked'
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
          result_sha256 = NULL, digest = NULL, verdict = NULL, steps_done = 0, ${appendReason('$1')} WHERE id = $2 AND status = 'DONE'
          AND EXISTS (SELECT 1 FROM runs r WHERE r.id = shards.run_id AND r.status = 'RUNNING' AND r.round = shards.round)
        RETURNING run_id, round, idx`, reason.slice(0, 1000), id);
      // The replicas that agreed with it are judged again with the new result.
      if (row) await run(db, `UPDATE shards SET verdict = NULL WHERE ${INDEX} AND verdict = 'AGREED'`, row.run_id, row.round, row.idx);
      return row !== undefined;
    });
  }
}

async function read(db: Queryable, id: string): Promise<ShardRecord | undefined> {
  const row = await first(db, 'SELECT * FROM shards WHERE id = $1', id);
  return row === undefined ? undefined : decodeShard(row);
}
