// Shards and their leases in SQLite. Every lease transition is guarded by (status, worker,
// attempt): a stale or duplicated call from a worker changes nothing and says so.
import type { Release, ShardRepository } from '../store';
import { BlobRef, FailureBudget, ShardRecord } from '../records';
import { Db, nowIso, prepared } from './database';
import { decodeShard } from './rows';

const HELD = "status = 'LEASED' AND worker_id = ? AND attempts = ?";

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

  async stepsDone(runId: string, round: number): Promise<number> {
    return (prepared(this.db, "SELECT COALESCE(SUM(CASE WHEN status = 'DONE' THEN to_step - from_step ELSE steps_done END), 0) AS n FROM shards WHERE run_id = ? AND round = ?")
      .get(runId, round) as { n: number }).n;
  }

  async leaseOldest(worker: { id: string; trusted: boolean }, memoryBudget: number | undefined, leaseUntil: Date, now: Date): Promise<ShardRecord | undefined> {
    return this.db.transaction(() => {
      const next = prepared(this.db, `SELECT s.id FROM shards s JOIN runs r ON r.id = s.run_id
        WHERE s.status = 'PENDING' AND r.status = 'RUNNING' AND s.round = r.round AND (? IS NULL OR r.memory_need <= ?)
          AND (? = 1 OR NOT EXISTS (SELECT 1 FROM json_each(s.failed_by) f WHERE f.value = ?))
        ORDER BY r.created_at, s.round, s.idx LIMIT 1`).get(memoryBudget ?? null, memoryBudget ?? null, worker.trusted ? 1 : 0, worker.id) as { id: string } | undefined;
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

  async complete(id: string, workerId: string, attempt: number, r: { update: BlobRef; loss: number; imagesPerSecond: number; samples: number }): Promise<boolean> {
    return this.db.transaction(() => {
      const changed = prepared(this.db, `UPDATE shards SET status = 'DONE', result_key = ?, result_sha256 = ?, loss = ?, images_per_second = ?,
        steps_done = to_step - from_step, completed_at = ? WHERE id = ? AND ${HELD}`)
        .run(r.update.key, r.update.sha256, r.loss, r.imagesPerSecond, nowIso(), id, workerId, attempt).changes > 0;
      if (changed) {
        prepared(this.db, 'UPDATE workers SET shards_done = shards_done + 1, samples = samples + ?, images_per_second = ?, current_shard = NULL WHERE id = ?')
          .run(r.samples, r.imagesPerSecond, workerId);
      }
      return changed;
    })();
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
    return prepared(this.db, `UPDATE shards SET status = 'PENDING', worker_id = NULL, result_key = NULL, result_sha256 = NULL, steps_done = 0,
      rejections = json_insert(rejections, '$[#]', ?) WHERE id = ? AND status = 'DONE'
        AND EXISTS (SELECT 1 FROM runs r WHERE r.id = shards.run_id AND r.status = 'RUNNING' AND r.round = shards.round)`).run(reason.slice(0, 1000), id).changes > 0;
  }
}
