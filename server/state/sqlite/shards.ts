// Shards and their leases in SQLite. Every lease transition is guarded by (status, worker,
// attempt): a stale or duplicated call from a worker changes nothing and says so.
import type { IndexKey, LeaseCandidate, Release, ReplicaSpec, Settlement, ShardRepository, ShardResult } from '../store';
import { FailureBudget, ShardRecord } from '../records';
import { randomUUID } from 'node:crypto';
import { Db, prepared } from './database';
import { decodeShard, nowIso } from '../rows';

const HELD = "status = 'LEASED' AND worker_id = ? AND attempts = ?";
const INDEX = 'run_id = ? AND round = ? AND idx = ?';
/** A verdict a new judgement may replace: none yet, or a candidate already credited. */
const OPEN_VERDICT = "(verdict IS NULL OR verdict = 'AGREED')";

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
      ? prepared(this.db, 'SELECT * FROM shards WHERE run_id = ? ORDER BY round, idx, replica').all(runId)
      : prepared(this.db, 'SELECT * FROM shards WHERE run_id = ? AND round = ? ORDER BY idx, replica').all(runId, round);
    return rows.map(decodeShard);
  }

  async ofIndex(runId: string, round: number, index: number): Promise<ShardRecord[]> {
    return prepared(this.db, `SELECT * FROM shards WHERE ${INDEX} ORDER BY replica`).all(runId, round, index).map(decodeShard);
  }

  async stepsDone(runId: string, round: number): Promise<number> {
    // Per index, its furthest replica.
    return (prepared(this.db, `SELECT COALESCE(SUM(n), 0) AS n FROM (SELECT MAX(CASE WHEN status = 'DONE' THEN to_step - from_step ELSE steps_done END) AS n
      FROM shards WHERE run_id = ? AND round = ? AND status != 'CANCELLED' AND COALESCE(verdict, '') != 'VOIDED' GROUP BY idx)`).get(runId, round) as { n: number }).n;
  }

  async leaseOldest(worker: LeaseCandidate, memoryBudget: number | undefined, leaseUntil: Date, now: Date): Promise<ShardRecord | undefined> {
    return this.db.transaction(() => {
      const next = prepared(this.db, `SELECT s.id FROM shards s JOIN runs r ON r.id = s.run_id
        WHERE s.status = 'PENDING' AND r.status = 'RUNNING' AND s.round = r.round AND (@budget IS NULL OR r.memory_need <= @budget)
          AND (@registered = 1 OR (s.registered_only = 0 AND (s.need_class IS NULL OR s.need_class = @class)
            AND NOT EXISTS (SELECT 1 FROM json_each(s.failed_by) f WHERE f.value = @id)))
          AND NOT EXISTS (SELECT 1 FROM shards o JOIN workers w ON w.id = o.worker_id
            WHERE o.run_id = s.run_id AND o.round = s.round AND o.idx = s.idx AND o.id != s.id AND COALESCE(o.verdict, '') != 'VOIDED'
              AND (w.id = @id OR (@registered = 0 AND NOT (w.trusted = 1 AND w.demoted = 0) AND (w.party = @party OR (@origin != '' AND w.origin = @origin)))))
        ORDER BY r.created_at, s.round, s.idx, s.replica LIMIT 1`).get({
        budget: memoryBudget ?? null, registered: worker.registered ? 1 : 0, class: worker.kernelClass, id: worker.id, party: worker.party, origin: worker.origin,
      }) as { id: string } | undefined;
      if (!next) return undefined;
      prepared(this.db, `UPDATE shards SET status = 'LEASED', worker_id = ?, lease_until = ?, attempts = attempts + 1, steps_done = 0, progress_at = ?,
        leased_at = ?, submitted_at = NULL, pending_since = NULL, lease_class = ?, deadline = NULL WHERE id = ? AND status = 'PENDING'`)
        .run(worker.id, leaseUntil.getTime(), now.getTime(), now.getTime(), worker.kernelClass, next.id);
      prepared(this.db, 'UPDATE workers SET current_shard = ? WHERE id = ?').run(next.id, worker.id);
      return this.read(next.id);
    })();
  }

  async paces(runId: string, workerId: string): Promise<{ run: number[]; worker: number[] }> {
    const sql = (mine: boolean): string => `SELECT (submitted_at - leased_at) / 1000.0 / (to_step - from_step) AS pace FROM shards
      WHERE run_id = ? ${mine ? 'AND worker_id = ?' : ''} AND status = 'DONE' AND (verdict IS NULL OR verdict IN ('ACCEPTED', 'AGREED', 'CLOSE')) AND submitted_at IS NOT NULL
        AND leased_at IS NOT NULL ORDER BY completed_at DESC LIMIT 64`;
    const paces = (rows: unknown[]): number[] => (rows as { pace: number }[]).map((r) => r.pace);
    return { run: paces(prepared(this.db, sql(false)).all(runId)), worker: paces(prepared(this.db, sql(true)).all(runId, workerId)) };
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

  async submit(id: string, workerId: string, attempt: number, now: Date): Promise<boolean> {
    return prepared(this.db, `UPDATE shards SET submitted_at = COALESCE(submitted_at, ?) WHERE id = ? AND ${HELD}`).run(now.getTime(), id, workerId, attempt).changes > 0;
  }

  async complete(id: string, workerId: string, attempt: number, r: ShardResult): Promise<boolean> {
    return this.db.transaction(() => {
      const changed = prepared(this.db, `UPDATE shards SET status = 'DONE', result_key = ?, result_sha256 = ?, digest = ?, kernel_class = ?, loss = ?,
        images_per_second = ?, downloaded_bytes = ?, steps_done = to_step - from_step, completed_at = ? WHERE id = ? AND ${HELD}`)
        .run(r.update.key, r.update.sha256, r.digest, r.kernelClass, r.loss, r.imagesPerSecond, r.downloadedBytes, nowIso(), id, workerId, attempt).changes > 0;
      if (changed) {
        prepared(this.db, `UPDATE workers SET shards_done = shards_done + 1, samples = samples + ?, images_per_second = ?, current_shard = NULL WHERE id = ?`)
          .run(r.samples, r.imagesPerSecond, workerId);
      }
      return changed;
    })();
  }

  async addReplica(of: ShardRecord, spec: ReplicaSpec): Promise<ShardRecord | undefined> {
    return this.db.transaction(() => {
      const index = prepared(this.db, `SELECT MAX(replica) AS last, SUM(verdict = 'ACCEPTED') AS accepted FROM shards WHERE ${INDEX}`)
        .get(of.runId, of.round, of.index) as { last: number; accepted: number };
      const running = prepared(this.db, "SELECT 1 FROM runs WHERE id = ? AND status = 'RUNNING' AND round = ?").get(of.runId, of.round);
      if (!running || index.accepted > 0) return undefined;
      const id = randomUUID();
      prepared(this.db, `INSERT INTO shards (id, run_id, round, idx, replica, need, need_class, registered_only, from_step, to_step, status, created_at,
          pending_since, pack_key, pack_sha256, pack_bytes)
        SELECT ?, run_id, round, idx, ?, ?, ?, ?, from_step, to_step, 'PENDING', ?, ?, pack_key, pack_sha256, pack_bytes FROM shards WHERE id = ?`)
        .run(id, index.last + 1, spec.need, spec.needClass, spec.registeredOnly ? 1 : 0, nowIso(), Date.now(), of.id);
      return this.read(id);
    })();
  }

  async relax(id: string): Promise<boolean> {
    return prepared(this.db, "UPDATE shards SET need_class = NULL, pending_since = ? WHERE id = ? AND status = 'PENDING' AND need_class IS NOT NULL")
      .run(Date.now(), id).changes > 0;
  }

  async setNeed(id: string, workerId: string, attempt: number, need: number): Promise<void> {
    prepared(this.db, `UPDATE shards SET need = ? WHERE id = ? AND ${HELD}`).run(need, id, workerId, attempt);
  }

  async settle(s: Settlement, budget: FailureBudget): Promise<boolean> {
    return this.db.transaction(() => {
      if (s.accept) {
        const taken = prepared(this.db, `SELECT 1 FROM shards WHERE ${INDEX} AND verdict = 'ACCEPTED'`).get(s.runId, s.round, s.index);
        if (taken || prepared(this.db, `UPDATE shards SET verdict = 'ACCEPTED', votes = ?, required = ? WHERE id = ? AND status = 'DONE' AND ${OPEN_VERDICT}`)
          .run(s.accept.votes, s.accept.required, s.accept.id).changes === 0) return false;
      }
      for (const id of s.agreed) prepared(this.db, `UPDATE shards SET verdict = 'AGREED' WHERE id = ? AND status = 'DONE' AND ${OPEN_VERDICT}`).run(id);
      for (const id of s.close) prepared(this.db, `UPDATE shards SET verdict = 'CLOSE' WHERE id = ? AND status = 'DONE' AND ${OPEN_VERDICT}`).run(id);
      for (const c of s.credit) {
        prepared(this.db, 'UPDATE workers SET agreed = agreed + 1, streak = streak + 1 WHERE id = ?').run(c.workerId);
        prepared(this.db, `INSERT INTO worker_classes (worker_id, kernel_class, agreed, streak) VALUES (?, ?, 1, 1)
          ON CONFLICT (worker_id, kernel_class) DO UPDATE SET agreed = agreed + 1, streak = streak + 1`).run(c.workerId, c.kernelClass);
      }
      for (const o of s.outvoted) {
        const row = prepared(this.db, `UPDATE shards SET verdict = 'OUTVOTED', rejections = json_insert(rejections, '$[#]', ?)
          WHERE id = ? AND status = 'DONE' AND (verdict IS NULL OR verdict IN ('AGREED', 'ACCEPTED')) RETURNING worker_id, kernel_class`)
          .get(o.reason.slice(0, 1000), o.id) as { worker_id: string; kernel_class: string } | undefined;
        if (!row) continue;
        prepared(this.db, `UPDATE workers SET disagreed = disagreed + 1, streak = 0, demoted = trusted, strikes = strikes + 1,
          quarantined_at = CASE WHEN trusted = 0 AND quarantined_at IS NULL AND strikes + 1 >= ? THEN ? ELSE quarantined_at END WHERE id = ?`)
          .run(budget.quarantineStrikes, Date.now(), row.worker_id);
        prepared(this.db, `INSERT INTO worker_classes (worker_id, kernel_class, disagreed) VALUES (?, ?, 1)
          ON CONFLICT (worker_id, kernel_class) DO UPDATE SET disagreed = disagreed + 1, streak = 0`).run(row.worker_id, row.kernel_class);
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

  async unsettle(key: IndexKey, voided: readonly string[], candidates: readonly string[]): Promise<boolean> {
    return this.db.transaction(() => {
      if (!prepared(this.db, "SELECT 1 FROM runs WHERE id = ? AND status IN ('RUNNING', 'FINALIZING')").get(key.runId)) return false;
      const k = [key.runId, key.round, key.index];
      for (const id of voided) prepared(this.db, `UPDATE shards SET verdict = 'VOIDED' WHERE id = ? AND ${INDEX} AND verdict IN ('ACCEPTED', 'AGREED')`).run(id, ...k);
      for (const id of candidates) {
        prepared(this.db, `UPDATE shards SET verdict = 'AGREED', votes = NULL, required = NULL WHERE id = ? AND ${INDEX} AND verdict IN ('ACCEPTED', 'AGREED')`).run(id, ...k);
      }
      // Results judged against the withdrawn one are judged again against the next.
      prepared(this.db, `UPDATE shards SET verdict = NULL WHERE ${INDEX} AND verdict = 'CLOSE'`).run(...k);
      return true;
    })();
  }

  async stalled(runIds: readonly string[], before: Date): Promise<IndexKey[]> {
    const rows = prepared(this.db, `SELECT DISTINCT s.run_id, s.round, s.idx FROM shards s JOIN runs r ON r.id = s.run_id
      WHERE r.status = 'RUNNING' AND s.round = r.round AND s.run_id IN (SELECT value FROM json_each(?))
        AND ((s.status = 'PENDING' AND s.pending_since < ?)
          OR (s.status = 'LEASED' AND s.submitted_at IS NULL AND s.leased_at < ?)
          OR (s.status = 'DONE' AND s.verdict IS NULL AND s.completed_at < ? AND NOT EXISTS (SELECT 1 FROM shards o
            WHERE o.run_id = s.run_id AND o.round = s.round AND o.idx = s.idx AND o.status = 'PENDING')))`)
      .all(JSON.stringify(runIds), before.getTime(), before.getTime(), before.toISOString()) as { run_id: string; round: number; idx: number }[];
    return rows.map((r) => ({ runId: r.run_id, round: r.round, index: r.idx }));
  }

  async supported(workerIds: readonly string[]): Promise<ShardRecord[]> {
    return prepared(this.db, "SELECT * FROM shards WHERE worker_id IN (SELECT value FROM json_each(?)) AND verdict IN ('ACCEPTED', 'AGREED')")
      .all(JSON.stringify(workerIds)).map(decodeShard);
  }

  /** The release of one lease; run inside a transaction. */
  private releaseHeld(id: string, workerId: string, attempt: number, reason: string, budget: FailureBudget): Release {
    const shard = this.read(id);
    const worker = prepared(this.db, 'SELECT trusted, demoted, quarantined_at FROM workers WHERE id = ?').get(workerId) as
      { trusted: 0 | 1; demoted: 0 | 1; quarantined_at: number | null } | undefined;
    if (!shard || shard.status !== 'LEASED' || shard.workerId !== workerId || shard.attempts !== attempt) return 'lost';
    // Only a registered worker's failures count toward failing the run.
    const registered = worker?.trusted === 1 && worker.demoted === 0 && worker.quarantined_at === null;
    const failedBy = shard.failedBy.includes(workerId) ? shard.failedBy : [...shard.failedBy, workerId];
    const trustedFailures = shard.trustedFailures + (registered ? 1 : 0);
    const exhausted = trustedFailures >= budget.registeredFailures;
    prepared(this.db, `UPDATE shards SET status = ?, worker_id = NULL, steps_done = 0, progress_at = NULL, deadline = NULL, submitted_at = NULL,
      pending_since = ?, failed_by = ?, trusted_failures = ?, rejections = json_insert(rejections, '$[#]', ?) WHERE id = ? AND ${HELD}`)
      .run(exhausted ? 'CANCELLED' : 'PENDING', Date.now(), JSON.stringify(failedBy), trustedFailures, reason.slice(0, 1000), id, workerId, attempt);
    prepared(this.db, `UPDATE workers SET current_shard = CASE WHEN current_shard = ? THEN NULL ELSE current_shard END, strikes = strikes + 1,
      quarantined_at = CASE WHEN trusted = 0 AND quarantined_at IS NULL AND strikes + 1 >= ? THEN ? ELSE quarantined_at END WHERE id = ?`)
      .run(id, budget.quarantineStrikes, Date.now(), workerId);
    return exhausted ? 'exhausted' : 'requeued';
  }

  async release(id: string, workerId: string, attempt: number, reason: string, budget: FailureBudget): Promise<Release> {
    return this.db.transaction(() => this.releaseHeld(id, workerId, attempt, reason, budget))();
  }

  async expire(now: Date, stalledBefore: Date, submittedBefore: Date, budget: FailureBudget): Promise<{ shard: ShardRecord; release: Exclude<Release, 'lost'> }[]> {
    return this.db.transaction(() => {
      const t = now.getTime();
      // A completed lease's clock stopped when its worker completed it: only a check that never ended releases it.
      const ended = prepared(this.db, `SELECT * FROM shards WHERE status = 'LEASED'
        AND ((submitted_at IS NULL AND (lease_until < ? OR deadline < ? OR progress_at < ?)) OR submitted_at < ?)`)
        .all(t, t, stalledBefore.getTime(), submittedBefore.getTime()).map(decodeShard);
      const out: { shard: ShardRecord; release: Exclude<Release, 'lost'> }[] = [];
      for (const s of ended) {
        const why = s.submittedAt ? 'its update was never judged (the server stopped while checking it): re-issued'
          : s.deadline && s.deadline.getTime() < t ? 'held past its deadline: lease revoked'
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
        votes = NULL, required = NULL, steps_done = 0, submitted_at = NULL, pending_since = ?, rejections = json_insert(rejections, '$[#]', ?) WHERE id = ? AND status = 'DONE'
          AND EXISTS (SELECT 1 FROM runs r WHERE r.id = shards.run_id AND r.status = 'RUNNING' AND r.round = shards.round)
        RETURNING run_id, round, idx`).get(Date.now(), reason.slice(0, 1000), id) as { run_id: string; round: number; idx: number } | undefined;
      // The replicas that agreed with it are judged again with the new result.
      if (row) prepared(this.db, `UPDATE shards SET verdict = NULL WHERE ${INDEX} AND verdict IN ('AGREED', 'CLOSE')`).run(row.run_id, row.round, row.idx);
      return row !== undefined;
    })();
  }
}
