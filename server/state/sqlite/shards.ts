// Shards and their leases in SQLite. Every lease transition is guarded by (status, worker,
// attempt): a stale or duplicated call from a worker changes nothing and says so.
import type { Release, ShardRepository } from '../store';
import { BlobRef, ShardRecord } from '../records';
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

  async leaseOldest(workerId: string, memoryBudget: number | undefined, leaseUntil: Date): Promise<ShardRecord | undefined> {
    return this.db.transaction(() => {
      const next = prepared(this.db, `SELECT s.id FROM shards s JOIN runs r ON r.id = s.run_id
        WHERE s.status = 'PENDING' AND r.status = 'RUNNING' AND s.round = r.round AND (? IS NULL OR r.memory_need <= ?)
        ORDER BY r.created_at, s.round, s.idx LIMIT 1`).get(memoryBudget ?? null, memoryBudget ?? null) as { id: string } | undefined;
      if (!next) return undefined;
      prepared(this.db, "UPDATE shards SET status = 'LEASED', worker_id = ?, lease_until = ?, attempts = attempts + 1, steps_done = 0 WHERE id = ? AND status = 'PENDING'")
        .run(workerId, leaseUntil.getTime(), next.id);
      prepared(this.db, 'UPDATE workers SET current_shard = ? WHERE id = ?').run(next.id, workerId);
      return this.read(next.id);
    })();
  }

  async renew(id: string, workerId: string, attempt: number, stepsDone: number, leaseUntil: Date): Promise<boolean> {
    return prepared(this.db, `UPDATE shards SET lease_until = ?, steps_done = MIN(to_step - from_step, MAX(0, ?)) WHERE id = ? AND ${HELD}`)
      .run(leaseUntil.getTime(), stepsDone, id, workerId, attempt).changes > 0;
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
  private releaseHeld(id: string, workerId: string, attempt: number, reason: string, maxAttempts: number): Release {
    const back = prepared(this.db, `UPDATE shards SET status = CASE WHEN attempts >= ? THEN 'CANCELLED' ELSE 'PENDING' END, worker_id = NULL, steps_done = 0,
      rejections = json_insert(rejections, '$[#]', ?) WHERE id = ? AND ${HELD}`).run(maxAttempts, reason.slice(0, 1000), id, workerId, attempt);
    if (!back.changes) return 'lost';
    prepared(this.db, 'UPDATE workers SET current_shard = NULL WHERE id = ? AND current_shard = ?').run(workerId, id);
    return attempt >= maxAttempts ? 'exhausted' : 'requeued';
  }

  async release(id: string, workerId: string, attempt: number, reason: string, maxAttempts: number): Promise<Release> {
    return this.db.transaction(() => this.releaseHeld(id, workerId, attempt, reason, maxAttempts))();
  }

  async expire(now: Date, maxAttempts: number): Promise<{ shard: ShardRecord; release: Exclude<Release, 'lost'> }[]> {
    return this.db.transaction(() => {
      const expired = prepared(this.db, "SELECT * FROM shards WHERE status = 'LEASED' AND lease_until < ?").all(now.getTime()).map(decodeShard);
      const out: { shard: ShardRecord; release: Exclude<Release, 'lost'> }[] = [];
      for (const s of expired) {
        const release = this.releaseHeld(s.id, s.workerId!, s.attempts, `attempt ${s.attempts}: lease expired (worker ${s.workerId} silent)`, maxAttempts);
        if (release !== 'lost') out.push({ shard: this.read(s.id)!, release });
      }
      return out;
    })();
  }
}
