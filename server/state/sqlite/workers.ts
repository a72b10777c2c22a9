// Workers in SQLite, with their record per kernel class.
import type { WorkerRepository } from '../store';
import { BackendChoice, Page, WorkerRecord, page } from '../records';
import { Db, prepared } from './database';
import { REGISTERED_WORKER, decodeClasses, decodeWorker } from '../rows';

export class SqliteWorkers implements WorkerRepository {
  constructor(private readonly db: Db) {}

  async insert(w: WorkerRecord): Promise<void> {
    prepared(this.db, `INSERT INTO workers (id, name, kind, backend, last_seen, shards_done, samples, images_per_second, current_shard, trusted, strikes,
      quarantined_at, address, party, origin, agreed, disagreed, streak, demoted, kernel_class, created_at)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
      .run(w.id, w.name, w.kind, w.backend, w.lastSeen.getTime(), w.shardsDone, w.samples, w.imagesPerSecond, w.currentShard, w.trusted ? 1 : 0, w.strikes,
        w.quarantinedAt?.getTime() ?? null, w.address, w.party, w.origin, w.agreed, w.disagreed, w.streak, w.demoted ? 1 : 0, w.kernelClass, w.createdAt.toISOString());
  }

  /** Rows decoded with their classes. */
  private withClasses(rows: unknown[]): WorkerRecord[] {
    const ids = rows.map((r) => (r as { id: string }).id);
    const classes = decodeClasses(ids.length ? prepared(this.db, 'SELECT * FROM worker_classes WHERE worker_id IN (SELECT value FROM json_each(?)) ORDER BY kernel_class')
      .all(JSON.stringify(ids)) : []);
    return rows.map((r) => decodeWorker(r, classes.get((r as { id: string }).id)));
  }

  async get(id: string): Promise<WorkerRecord | undefined> {
    const row = prepared(this.db, 'SELECT * FROM workers WHERE id = ?').get(id);
    return row === undefined ? undefined : this.withClasses([row])[0];
  }

  async registeredSince(since: Date, except: readonly string[]): Promise<number> {
    return (prepared(this.db, `SELECT COUNT(*) AS n FROM workers w WHERE w.last_seen > ? AND ${REGISTERED_WORKER}
      AND w.id NOT IN (SELECT value FROM json_each(?))`).get(since.getTime(), JSON.stringify(except)) as { n: number }).n;
  }

  async untrustedSince(since: Date): Promise<{ party: string; origin: string }[]> {
    return prepared(this.db, `SELECT party, origin FROM workers w WHERE w.last_seen > ? AND w.quarantined_at IS NULL AND NOT (w.trusted = 1 AND w.demoted = 0)`)
      .all(since.getTime()) as { party: string; origin: string }[];
  }

  async touch(id: string, now: Date): Promise<WorkerRecord | undefined> {
    prepared(this.db, 'UPDATE workers SET last_seen = ? WHERE id = ?').run(now.getTime(), id);
    return this.get(id);
  }

  async list(since: Date | undefined, first: number, offset: number): Promise<Page<WorkerRecord>> {
    const after = since?.getTime() ?? 0;
    const rows = prepared(this.db, 'SELECT * FROM workers WHERE last_seen > ? ORDER BY created_at DESC LIMIT ? OFFSET ?').all(after, first, offset);
    return page(this.withClasses(rows), await this.countSeenSince(new Date(after)), offset);
  }

  async quarantine(id: string, at: Date): Promise<WorkerRecord | undefined> {
    prepared(this.db, 'UPDATE workers SET quarantined_at = COALESCE(quarantined_at, ?) WHERE id = ?').run(at.getTime(), id);
    return this.get(id);
  }

  async provenSince(since: Date): Promise<{ registered: number; untrusted: { party: string; origin: string }[] }> {
    const registered = (prepared(this.db, `SELECT COUNT(*) AS n FROM workers w WHERE w.last_seen > ? AND ${REGISTERED_WORKER}`).get(since.getTime()) as { n: number }).n;
    const untrusted = prepared(this.db, `SELECT party, origin FROM workers w WHERE w.last_seen > ? AND w.shards_done > 0 AND w.quarantined_at IS NULL
      AND NOT (w.trusted = 1 AND w.demoted = 0)`).all(since.getTime()) as { party: string; origin: string }[];
    return { registered, untrusted };
  }

  async setBackendChoice(id: string, choice: BackendChoice): Promise<void> {
    prepared(this.db, 'UPDATE workers SET backend = ?, backend_choice = ? WHERE id = ?').run(choice.chosen, JSON.stringify(choice), id);
  }

  async setKernelClass(id: string, kernelClass: string): Promise<void> {
    prepared(this.db, 'UPDATE workers SET kernel_class = ? WHERE id = ?').run(kernelClass, id);
  }

  async countSeenSince(since: Date): Promise<number> {
    return (prepared(this.db, 'SELECT COUNT(*) AS n FROM workers WHERE last_seen > ?').get(since.getTime()) as { n: number }).n;
  }
}
