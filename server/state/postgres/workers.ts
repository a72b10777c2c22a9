// Workers in PostgreSQL, and the volunteer admissions counted per client address.
import type pg from 'pg';
import type { AdmissionCounter, WorkerRepository } from '../store';
import { BackendChoice, Page, WorkerRecord, page } from '../records';
import { REGISTERED_WORKER, decodeClasses, decodeWorker } from '../rows';
import { all, first, run } from './database';

export class PgWorkers implements WorkerRepository {
  /** `liveness`: for last-seen times (openLivenessPool). */
  constructor(private readonly pool: pg.Pool, private readonly liveness: pg.Pool) {}

  async insert(w: WorkerRecord): Promise<void> {
    await run(this.pool, `INSERT INTO workers (id, name, kind, backend, last_seen, shards_done, samples, images_per_second, current_shard, trusted, strikes,
      quarantined_at, address, party, origin, agreed, disagreed, streak, demoted, kernel_class, created_at)
      VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)`,
    w.id, w.name, w.kind, w.backend, w.lastSeen.getTime(), w.shardsDone, w.samples, w.imagesPerSecond, w.currentShard, w.trusted ? 1 : 0, w.strikes,
    w.quarantinedAt?.getTime() ?? null, w.address, w.party, w.origin, w.agreed, w.disagreed, w.streak, w.demoted ? 1 : 0, w.kernelClass, w.createdAt.toISOString());
  }

  /** Rows decoded with their classes. */
  private async withClasses(rows: Record<string, unknown>[]): Promise<WorkerRecord[]> {
    const ids = rows.map((r) => r.id as string);
    const classes = decodeClasses(ids.length ? await all(this.pool, 'SELECT * FROM worker_classes WHERE worker_id = ANY($1) ORDER BY kernel_class', ids) : []);
    return rows.map((r) => decodeWorker(r, classes.get(r.id as string)));
  }

  async get(id: string): Promise<WorkerRecord | undefined> {
    const row = await first(this.pool, 'SELECT * FROM workers WHERE id = $1', id);
    return row === undefined ? undefined : (await this.withClasses([row]))[0];
  }

  async registeredSince(since: Date, except: readonly string[]): Promise<number> {
    return (await first<{ n: number }>(this.pool, `SELECT COUNT(*) AS n FROM workers w WHERE w.last_seen > $1 AND ${REGISTERED_WORKER} AND NOT (w.id = ANY($2))`,
      since.getTime(), [...except]))!.n;
  }

  async untrustedSince(since: Date): Promise<{ party: string; origin: string }[]> {
    return all(this.pool, 'SELECT party, origin FROM workers w WHERE w.last_seen > $1 AND w.quarantined_at IS NULL AND NOT (w.trusted = 1 AND w.demoted = 0)', since.getTime());
  }

  async touch(id: string, now: Date): Promise<WorkerRecord | undefined> {
    const row = await first(this.liveness, 'UPDATE workers SET last_seen = $1 WHERE id = $2 RETURNING *', now.getTime(), id);
    return row === undefined ? undefined : (await this.withClasses([row]))[0];
  }

  async setBackendChoice(id: string, choice: BackendChoice): Promise<void> {
    await run(this.pool, 'UPDATE workers SET backend = $1, backend_choice = $2 WHERE id = $3', choice.chosen, JSON.stringify(choice), id);
  }

  async setKernelClass(id: string, kernelClass: string): Promise<void> {
    await run(this.pool, 'UPDATE workers SET kernel_class = $1 WHERE id = $2', kernelClass, id);
  }

  async list(since: Date | undefined, count: number, offset: number): Promise<Page<WorkerRecord>> {
    const after = since?.getTime() ?? 0;
    const rows = await all(this.pool, 'SELECT * FROM workers WHERE last_seen > $1 ORDER BY created_at DESC LIMIT $2 OFFSET $3', after, count, offset);
    return page(await this.withClasses(rows), await this.countSeenSince(new Date(after)), offset);
  }

  async quarantine(id: string, at: Date): Promise<WorkerRecord | undefined> {
    await run(this.pool, 'UPDATE workers SET quarantined_at = COALESCE(quarantined_at, $1) WHERE id = $2', at.getTime(), id);
    return this.get(id);
  }

  async provenSince(since: Date): Promise<{ registered: number; untrusted: { party: string; origin: string }[] }> {
    const registered = (await first<{ n: number }>(this.pool, `SELECT COUNT(*) AS n FROM workers w WHERE w.last_seen > $1 AND ${REGISTERED_WORKER}`, since.getTime()))!.n;
    const untrusted = await all<{ party: string; origin: string }>(this.pool, `SELECT party, origin FROM workers w WHERE w.last_seen > $1 AND w.shards_done > 0
      AND w.quarantined_at IS NULL AND NOT (w.trusted = 1 AND w.demoted = 0)`, since.getTime());
    return { registered, untrusted };
  }

  async countSeenSince(since: Date): Promise<number> {
    return (await first<{ n: number }>(this.pool, 'SELECT COUNT(*) AS n FROM workers WHERE last_seen > $1', since.getTime()))!.n;
  }
}

/** Admissions per key and minute in one table, so replicas share the limit; past minutes are pruned as each new one starts. */
export class PgAdmissions implements AdmissionCounter {
  private window = 0;

  constructor(private readonly pool: pg.Pool) {}

  async take(key: string, perMinute: number, now: Date): Promise<boolean> {
    const window = Math.floor(now.getTime() / 60_000);
    if (window !== this.window) {
      this.window = window;
      await run(this.pool, 'DELETE FROM admissions WHERE minute < $1', window);
    }
    const row = await first<{ n: number }>(this.pool, `INSERT INTO admissions (key, minute, n) VALUES ($1, $2, 1)
      ON CONFLICT (key, minute) DO UPDATE SET n = admissions.n + 1 RETURNING n`, key, window);
    return row!.n <= perMinute;
  }
}
