// Shards and their leases in SQLite. Every lease transition is guarded by (status, worker,
// attempt): a stale or duplicated call from a worker changes nothing and says so.
import type { Release, Settlement, ShardRepository, ShardResult } from '../store';
import { FailureBudget, ShardRecord } from '../records';
import { randomUUID } from 'node:crypto';
import { Db, prepared } from './database';
import { TRUSTED_WORKER, decodeShard, nowIso } from '../rows';

const HELD = "status = 'LEASED' AND worker_id = ? AND attempts = ?";
const INDEX = 'run_id = ? AND round = ? AND idx = ?';
/** Replicas an index may have before the run fails for want of agreement. */
const MAX_REPLICAS = 8;

export class SqliteShards implements ShardRepository {
  constructor(private readonly db: Db) {}

  async get(id: string): Promise<ShardRecord | undefined> {
    return this.read(id);
  }

  private read(id: string): ShardRecord | undefined {
    const row = prepared(this.db, 'SELECT * FROM shards WHERE id = ?').get(id);
    return row === undefined ? undefined : decodeShard(row);
  }

  async ofRun(runId: string, round?: number): Promise<ShardRecord[]> {
    const rows = round === undefined
      ? prepared(this.db, 'SELECT * FROM shards WHERE run_id = ? ORDER BY round, idx').all(runId)
      : prepared(this.db, 'SELECT * FROM shards WHERE run_id = ? AND round = ? ORDER BY idx').all(runId, round);
    return rows.map(decodeShard);
  }

  async ofIndex(runId: string, round: number, index: number): Promise<ShardRecord[]> {
    return prepared(this.db, `SELECT * FROM shards WHERE ${INDEX} ORDER BY replica`).all(runId, round, index).map(decodeShard);
  }

  async stepsDone(runId: string, round: number): Promise<number> {
    // Per index, its furthest replica.
    return (prepared(this.db, `SELECT COALESCE(SUM(n), 0) AS n FROM (SELECT MAX(CASE WHEN status = 'DONE' THEN to_step - from_step ELSE steps_done END) AS n
      FROM shards WHERE run_id = ? AND round = ? AND status != 'CANCELLED' GROUP BY idx)`).get(runId, round) as { n: number }).n;
  }

  async leaseOldest(worker: { id: string; trusted: boolean; address: string }, memoryBudget: number | undefined, leaseUntil: Date, now: Date): Promise<ShardRecord | undefined> {
    return this.db.transaction(() => {
      // Never two replicas of an index to one worker, nor to two volunteers of one address.
      const next = prepared(this.db, `SELECT s.id FROM shards s JOIN runs r ON r.id = s.run_id
        WHERE s.status = 'PENDING' AND r.status = 'RUNNING' AND s.round = r.round AND (? IS NULL OR r.memory_need <= ?)
          AND (? = 1 OR NOT EXISTS (SELECT 1 FROM json_each(s.failed_by) f WHERE f.value = ?))
          AND NOT EXISTS (SELECT 1 FROM shards o JOIN workers w ON w.id = o.worker_id
            WHERE o.run_id = s.run_id AND o.round = s.round AND o.idx = s.idx AND o.id != s.id
              AND (w.id = ? OR (? = 0 AND w.trusted = 0 AND w.address = ?)))
        ORDER BY r.created_at, s.round, s.idx, s.replica LIMIT 1`).get(memoryBudget ?? null, memoryBudget ?? null, worker.trusted ? 1 : 0, worker.id,
        worker.id, worker.trusted ? 1 : 0, worker.address) as { id: string } | undefined;
      if (!next) return undefined;
      prepared(this.db, `UPDATE shards SET status = 'LEASED', worker_id = ?, lease_until = ?, attempts = attempts + 1, steps_done = 0, progress_at = ?,
        deadline = NULL WHERE id = ? AND status = 'PENDING'`).run(worker.id, leaseUntil.getTime(), now.getTime(), next.id);
      prepared(this.db, 'UPDATE workers SET current_shard = ? WHERE id = ?').run(next.id, worker.id);
      return this.read(next.id);
    })();
  }

  async lastSpeed(runId: string, workerId: string): Promise<number | undefined> {
    const row = prepared(this.db, `SELECT images_per_second AS ips FROM shards WHERE run_id = ? AND worker_id = ? AND status = 'DONE'
      AND images_per_second > 0 ORDER BY completed_at DESC LIMIT 1`).get(runId, workerId) as { ips: number } | undefined;
    return row?.ips;
  }

  async setDeadline(id: string, workerId: string, attempt: number, deadline: Date): Promise<void> {
    prepared(this.db, `UPDATE shards SET deadline = ?, lease_until = MIN(lease_until, ?) WHERE id = ? AND ${HELD}`)
      .run(deadline.getTime(), deadline.getTime(), id, workerId, attempt);
  }

  async renew(id: string, workerId: string, attempt: number, stepsDone: number, leaseUntil: Date, now: Date): Promise<boolean> {
    const steps = `MIN(to_step - from_step, MAX(0, ?))`;
    return prepared(this.db, `UPDATE shards SET lease_until = MIN(?, COALESCE(deadline, ?)),
        progress_at = CASE WHEN ${steps} > steps_done THEN ? ELSE progress_at END, steps_done = MAX(steps_done, ${steps})
      WHERE id = ? AND ${HELD}`)
      .run(leaseUntil.getTime(), leaseUntil.getTime(), stepsDone, now.getTime(), stepsDone, id, workerId, attempt).changes > 0;
  }

  async complete(id: string, workerId: string, attempt: number, r: ShardResult): Promise<boolean> {
    return this.db.transaction(() => {
      const changed = prepared(this.db, `UPDATE shards SET status = 'DONE', result_key = ?, result_sha256 = ?, digest = ?, kernel_class = ?, loss = ?,
        images_per_second = ?, downloaded_bytes = ?, steps_done = to_step - from_step, completed_at = ? WHERE id = ? AND ${HELD}`)
        .run(r.update.key, r.update.sha256, r.digest, r.kernelClass, r.loss, r.imagesPerSecond, r.downloadedBytes, nowIso(), id, workerId, attempt).changes > 0;
      if (changed) {
        prepared(this.db, `UPDATE workers SET shards_done = shards_done + 1, samples = samples + ?, images_per_second = ?, kernel_class = ?,
          current_shard = NULL WHERE id = ?`).run(r.samples, r.imagesPerSecond, r.kernelClass, workerId);
      }
      return changed;
    })();
  }

  async addReplica(of: ShardRecord, need: number): Promise<ShardRecord | 'limit' | undefined> {
    return this.db.transaction(() => {
      const index = prepared(this.db, `SELECT COUNT(*) AS n, MAX(replica) AS last, SUM(verdict = 'ACCEPTED') AS accepted FROM shards WHERE ${INDEX}`)
        .get(of.runId, of.round, of.index) as { n: number; last: number; accepted: number };
      const running = prepared(this.db, "SELECT 1 FROM runs WHERE id = ? AND status = 'RUNNING' AND round = ?").get(of.runId, of.round);
      if (!running || index.accepted > 0) return undefined;
      if (index.n >= MAX_REPLICAS) return 'limit';
      const id = randomUUID();
      prepared(this.db, `INSERT INTO shards (id, run_id, round, idx, replica, need, from_step, to_step, status, created_at, pack_key, pack_sha256, pack_bytes)
        SELECT ?, run_id, round, idx, ?, ?, from_step, to_step, 'PENDING', ?, pack_key, pack_sha256, pack_bytes FROM shards WHERE id = ?`).run(id, index.last + 1, need, nowIso(), of.id);
      return this.read(id);
    })();
  }

  async setNeed(id: string, workerId: string, attempt: number, need: number): Promise<void> {
    prepared(this.db, `UPDATE shards SET need = ? WHERE id = ? AND ${HELD}`).run(need, id, workerId, attempt);
  }

  async settle(s: Settlement, budget: FailureBudget): Promise<boolean> {
    return this.db.transaction(() => {
      if (s.accept) {
        const taken = prepared(this.db, `SELECT 1 FROM shards WHERE ${INDEX} AND verdict = 'ACCEPTED'`).get(s.runId, s.round, s.index);
        if (taken || prepared(this.db, "UPDATE shards SET verdict = 'ACCEPTED' WHERE id = ? AND status = 'DONE' AND verdict IS NULL").run(s.accept).changes === 0) return false;
      }
      for (const id of s.agreed) prepared(this.db, "UPDATE shards SET verdict = 'AGREED' WHERE id = ? AND status = 'DONE' AND verdict IS NULL").run(id);
      for (const w of s.credit) prepared(this.db, 'UPDATE workers SET agreed = agreed + 1, streak = streak + 1 WHERE id = ?').run(w);
      for (const o of s.outvoted) {
        const row = prepared(this.db, `UPDATE shards SET verdict = 'OUTVOTED', rejections = json_insert(rejections, '$[#]', ?)
          WHERE id = ? AND status = 'DONE' AND verdict IS NULL RETURNING worker_id`).get(o.reason.slice(0, 1000), o.id) as { worker_id: string } | undefined;
        if (!row) continue;
        prepared(this.db, `UPDATE workers SET disagreed = disagreed + 1, streak = 0, demoted = trusted, strikes = strikes + 1,
          quarantined_at = CASE WHEN trusted = 0 AND quarantined_at IS NULL AND strikes + 1 >= ? THEN ? ELSE quarantined_at END WHERE id = ?`)
          .run(budget.quarantineStrikes, Date.now(), row.worker_id);
      }
      if (s.accept || prepared(this.db, `SELECT 1 FROM shards WHERE ${INDEX} AND verdict = 'ACCEPTED'`).get(s.runId, s.round, s.index)) {
        // Settled: replicas still open are not needed.
        prepared(this.db, `UPDATE workers SET current_shard = NULL WHERE current_shard IN (SELECT id FROM shards WHERE ${INDEX} AND status IN ('PENDING', 'LEASED'))`)
          .run(s.runId, s.round, s.index);
        prepared(this.db, `UPDATE shards SET status = 'CANCELLED', worker_id = NULL WHERE ${INDEX} AND status IN ('PENDING', 'LEASED')`).run(s.runId, s.round, s.index);
      }
      return true;
    })();
  }

  async unclaimedChecks(completedBefore: Date): Promise<ShardRecord[]> {
    return prepared(this.db, `SELECT s.* FROM shards s JOIN runs r ON r.id = s.run_id JOIN workers w ON w.id = s.worker_id
      WHERE s.status = 'DONE' AND s.verdict IS NULL AND s.need = 2 AND s.completed_at < ? AND r.status = 'RUNNING' AND r.round = s.round
        AND json_extract(r.hyper, '$.verification') = 'SPOT_CHECK' AND w.quarantined_at IS NULL AND ${TRUSTED_WORKER}
        AND NOT EXISTS (SELECT 1 FROM shards o WHERE o.run_id = s.run_id AND o.round = s.round AND o.idx = s.idx AND o.id != s.id
          AND (o.status = 'LEASED' OR (o.status = 'DONE' AND COALESCE(o.verdict, '') != 'OUTVOTED')))`)
      .all(completedBefore.toISOString()).map(decodeShard);
  }

  async reverify(workerId: string): Promise<ShardRecord[]> {
    return prepared(this.db, `UPDATE shards SET verdict = NULL, need = 2 WHERE worker_id = ? AND verdict = 'ACCEPTED' AND need = 1
        AND EXISTS (SELECT 1 FROM runs r WHERE r.id = shards.run_id AND r.status = 'RUNNING' AND r.round = shards.round) RETURNING *`)
      .all(workerId).map(decodeShard);
  }

  /** The release of one lease; run inside a transaction. */
  private releaseHeld(id: string, workerId: string, attempt: number, reason: string, budget: FailureBudget): Release {
    const shard = this.read(id);
    const worker = prepared(this.db, 'SELECT trusted FROM workers WHERE id = ?').get(workerId) as { trusted: 0 | 1 } | undefined;
    if (!shard || shard.status !== 'LEASED' || shard.workerId !== workerId || shard.attempts !== attempt) return 'lost';
    const trusted = worker?.trusted === 1;
    const failedBy = shard.failedBy.includes(workerId) ? shard.failedBy : [...shard.failedBy, workerId];
    const trustedFailures = shard.trustedFailures + (trusted ? 1 : 0);
    const exhausted = trustedFailures >= 1 && (failedBy.length >= budget.distinctWorkers || trustedFailures >= budget.trustedFailures);
    prepared(this.db, `UPDATE shards SET status = ?, worker_id = NULL, steps_done = 0, progress_at = NULL, deadline = NULL, failed_by = ?, trusted_failures = ?,
      rejections = json_insert(rejections, '$[#]', ?) WHERE id = ? AND ${HELD}`)
      .run(exhausted ? 'CANCELLED' : 'PENDING', JSON.stringify(failedBy), trustedFailures, reason.slice(0, 1000), id, workerId, attempt);
    prepared(this.db, `UPDATE workers SET current_shard = CASE WHEN current_shard = ? THEN NULL ELSE current_shard END, strikes = strikes + 1,
      quarantined_at = CASE WHEN trusted = 0 AND quarantined_at IS NULL AND strikes + 1 >= ? THEN ? ELSE quarantined_at END WHERE id = ?`)
      .run(id, budget.quarantineStrikes, Date.now(), workerId);
    return exhausted ? 'exhausted' : 'requeued';
  }

  async release(id: string, workerId: string, attempt: number, reason: string, budget: FailureBudget): Promise<Release> {
    return this.db.transaction(() => this.releaseHeld(id, workerId, attempt, reason, budget))();
  }

  async expire(now: Date, stalledBefore: Date, budget: FailureBudget): Promise<{ shard: ShardRecord; release: Exclude<Release, 'lost'> }[]> {
    return this.db.transaction(() => {
      const t = now.getTime();
      const ended = prepared(this.db, `SELECT * FROM shards WHERE status = 'LEASED' AND (lease_until < ? OR deadline < ? OR progress_at < ?)`)
        .all(t, t, stalledBefore.getTime()).map(decodeShard);
      const out: { shard: ShardRecord; release: Exclude<Release, 'lost'> }[] = [];
      for (const s of ended) {
        const why = s.deadline && s.deadline.getTime() < t ? 'held past its deadline: lease revoked'
          : s.progressAt && s.progressAt < stalledBefore ? `no progress for ${Math.round((t - s.progressAt.getTime()) / 1000)} s: lease revoked`
          : 'lease expired';
        const release = this.releaseHeld(s.id, s.workerId!, s.attempts, `attempt ${s.attempts}: ${why} (worker ${s.workerId})`, budget);
        if (release !== 'lost') out.push({ shard: this.read(s.id)!, release });
      }
      return out;
    })();
  }

  async reopen(id: string, reason: string): Promise<boolean> {
    return this.db.transaction(() => {
      const row = prepared(this.db, `UPDATE shards SET status = 'PENDING', worker_id = NULL, result_key = NULL, result_sha256 = NULL, digest = NULL, verdict = NULL,
        steps_done = 0, rejections = json_insert(rejections, '$[#]', ?) WHERE id = ? AND status = 'DONE'
          AND EXISTS (SELECT 1 FROM runs r WHERE r.id = shards.run_id AND r.status = 'RUNNING' AND r.round = shards.round)
        RETURNING run_id, round, idx`).get(reason.slice(0, 1000), id) as { run_id: string; round: number; idx: number } | undefined;
      // The replicas that agreed with it are judged again with the new result.
      if (row) prepared(this.db, `UPDATE shards SET verdict = NULL WHERE ${INDEX} AND verdict = 'AGREED'`).run(row.run_id, row.round, row.idx);
      return row !== undefined;
    })();
  }
}
