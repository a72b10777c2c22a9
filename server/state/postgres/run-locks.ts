// A replica's locks on the runs it drives: rows with a holder, a fencing token and an expiry read
// on PostgreSQL's clock, renewed by the holder every fifth of the lease. A replica that is frozen
// (SIGSTOP, a long pause) keeps its connection but stops renewing, so its runs lapse after the
// lease; one whose connection ended (killed, cut off, PostgreSQL restarted) gives them up at once,
// since each holder keeps a session lock on its own name that others may test. Every write of a
// driver carries its fence (`check`), so a late write from a replica that lost a run is refused.
import { randomUUID } from 'node:crypto';
import { LostRunLock } from '../store';
import { Queryable, all, first, run } from './database';

/** Milliseconds since the epoch on the database's clock: replicas' own clocks never decide a lease. */
export const DB_NOW_MS = '(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::bigint';
/** Namespace of the session lock each holder keeps on its own name (distinct from the other advisory locks). */
export const HOLDER_LOCKS = 7_420_118;

interface Held {
  readonly fence: number;
  /** performance.now() until which this replica may act on the lock (the lease, less a margin, from when it was asked for). */
  validUntil: number;
}

export class RunLocks {
  readonly holder = randomUUID();
  private readonly held = new Map<string, Held>();

  constructor(readonly leaseMs: number) {}

  /** Whether this replica holds the run's lock and its lease has not run out by this process's monotonic clock. */
  holds(runId: string): boolean {
    const h = this.held.get(runId);
    return h !== undefined && performance.now() < h.validUntil;
  }

  runs(): string[] {
    return [...this.held.keys()].filter((id) => this.holds(id));
  }

  /**
   * Takes the lock if it is free, this holder's, lapsed, or its holder's connection is gone; says
   * which (false: another replica holds it; 'held': this one did already).
   */
  async take(db: Queryable, runId: string): Promise<false | 'held' | 'free' | 'lapsed' | 'gone'> {
    if (this.holds(runId)) return 'held';
    const askedAt = performance.now();
    let taken = await first<{ fence: number; prior?: string | null }>(db, `WITH prior AS (SELECT holder FROM run_locks WHERE run_id = $1)
      INSERT INTO run_locks (run_id, holder, fence, expires_at) VALUES ($1, $2, nextval('run_fences'), ${DB_NOW_MS} + $3)
      ON CONFLICT (run_id) DO UPDATE SET holder = EXCLUDED.holder, fence = EXCLUDED.fence, expires_at = EXCLUDED.expires_at
      WHERE run_locks.expires_at <= ${DB_NOW_MS} OR run_locks.holder = EXCLUDED.holder RETURNING fence, (SELECT holder FROM prior) AS prior`,
    runId, this.holder, this.leaseMs);
    // A holder still connected that let its lease lapse is frozen or cut off: its connection is ended, so that the turns it
    // holds are freed and its other runs are given up too; when it wakes it reconnects as a new session.
    const lapsed = !!taken?.prior && taken.prior !== this.holder;
    if (lapsed) await endSession(db, taken!.prior!).catch(() => undefined);
    let how: 'free' | 'lapsed' | 'gone' = lapsed ? 'lapsed' : 'free';
    if (!taken) {
      const current = await first<{ holder: string; fence: number }>(db, 'SELECT holder, fence FROM run_locks WHERE run_id = $1', runId);
      if (!current || !(await holderGone(db, current.holder))) return false;
      // Compare-and-set on the fence seen: a holder that came back and took it again meanwhile keeps it.
      taken = await first<{ fence: number }>(db, `UPDATE run_locks SET holder = $2, fence = nextval('run_fences'), expires_at = ${DB_NOW_MS} + $3
        WHERE run_id = $1 AND fence = $4 RETURNING fence`, runId, this.holder, this.leaseMs, current.fence);
      if (!taken) return false;
      how = 'gone';
    }
    this.held.set(runId, { fence: taken.fence, validUntil: this.validUntil(askedAt) });
    return how;
  }

  /** Records this holder as alive now (with every renewal); forgets holders not seen for a day. */
  async beat(db: Queryable): Promise<void> {
    await run(db, `INSERT INTO replicas (holder, seen_at) VALUES ($1, ${DB_NOW_MS})
      ON CONFLICT (holder) DO UPDATE SET seen_at = EXCLUDED.seen_at`, this.holder);
  }

  async forgetDeparted(db: Queryable): Promise<void> {
    await run(db, `DELETE FROM replicas WHERE seen_at < ${DB_NOW_MS} - 86400000 OR holder = $1`, this.holder);
  }

  /**
   * Ends the session holding the advisory lock (`space`, `key`) if its holder has not been seen for
   * a lease (frozen): waiting on it would last as long as the freeze.
   */
  async breakStale(db: Queryable, space: number, key: string): Promise<boolean> {
    return (await run(db, `SELECT pg_terminate_backend(t.pid) FROM pg_locks t
      JOIN pg_locks h ON h.pid = t.pid AND h.locktype = 'advisory' AND h.granted AND h.classid = $1
      JOIN replicas r ON (hashtext(r.holder)::bigint & 4294967295)::oid = h.objid
      WHERE t.locktype = 'advisory' AND t.granted AND t.classid = $2 AND t.objid = (hashtext($3)::bigint & 4294967295)::oid
        AND r.seen_at < ${DB_NOW_MS} - $4 AND t.pid <> pg_backend_pid()`, HOLDER_LOCKS, space, key, this.leaseMs)) > 0;
  }

  /** Renews every lock held; returns the runs whose lock was taken by another replica meanwhile. */
  async renew(db: Queryable): Promise<string[]> {
    const ids = new Set(this.held.keys());
    if (!ids.size) return [];
    const askedAt = performance.now();
    const rows = await all<{ run_id: string; fence: number }>(db, `UPDATE run_locks SET expires_at = ${DB_NOW_MS} + $3 WHERE holder = $1 AND run_id = ANY($2)
      RETURNING run_id, fence`, this.holder, [...ids], this.leaseMs);
    const renewed = new Map(rows.map((r) => [r.run_id, r.fence]));
    const lost: string[] = [];
    for (const [id, h] of this.held) {
      if (renewed.get(id) === h.fence) h.validUntil = this.validUntil(askedAt);
      else if (ids.has(id)) {
        this.held.delete(id);
        lost.push(id);
      }
    }
    return lost;
  }

  /**
   * Inside a write's transaction: refuses it (LostRunLock) when this replica believes it drives the
   * run but no longer holds a live lock with its fence, or when another replica holds it. The row
   * is locked for share, so no replica takes the lock before the write commits.
   */
  async check(db: Queryable, runId: string): Promise<void> {
    const row = await first<{ holder: string; fence: number; live: boolean }>(db,
      `SELECT holder, fence, expires_at > ${DB_NOW_MS} AS live FROM run_locks WHERE run_id = $1 FOR SHARE`, runId);
    const mine = this.held.get(runId);
    if (!row && !mine) return; // nobody drives the run
    if (row && mine && row.holder === this.holder && row.fence === mine.fence && row.live) return;
    this.held.delete(runId);
    throw new LostRunLock(`run ${runId}: this replica's lock on it lapsed or another replica took it over; its write is refused`);
  }

  async release(db: Queryable, runId: string): Promise<void> {
    const h = this.held.get(runId);
    if (!h) return;
    this.held.delete(runId);
    await run(db, 'DELETE FROM run_locks WHERE run_id = $1 AND holder = $2 AND fence = $3', runId, this.holder, h.fence);
  }

  async releaseAll(db: Queryable): Promise<void> {
    this.held.clear();
    await run(db, 'DELETE FROM run_locks WHERE holder = $1', this.holder);
  }

  /** Forgets every lock (the connection that proved this holder alive ended): returns the runs given up. */
  forgetAll(): string[] {
    const ids = [...this.held.keys()];
    this.held.clear();
    return ids;
  }

  private validUntil(askedAt: number): number {
    return askedAt + this.leaseMs - Math.min(1000, this.leaseMs / 4);
  }
}

async function endSession(db: Queryable, holder: string): Promise<void> {
  await run(db, `SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = $1
    AND objid = (hashtext($2)::bigint & 4294967295)::oid AND pid <> pg_backend_pid()`, HOLDER_LOCKS, holder);
}

/** Whether the holder's connection is gone: its session lock on its own name is free. */
async function holderGone(db: Queryable, holder: string): Promise<boolean> {
  const { free } = (await first<{ free: boolean }>(db, 'SELECT pg_try_advisory_lock($1, hashtext($2)) AS free', HOLDER_LOCKS, holder))!;
  if (free) await run(db, 'SELECT pg_advisory_unlock($1, hashtext($2))', HOLDER_LOCKS, holder);
  return free;
}
