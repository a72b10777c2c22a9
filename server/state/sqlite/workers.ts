// Workers in SQLite.
import type { WorkerRepository } from '../store';
import { BackendChoice, Page, WorkerRecord, page } from '../records';
import { Db, prepared } from './database';
import { TRUSTED_WORKER, decodeWorker } from '../rows';

export class SqliteWorkers implements WorkerRepository {
  constructor(private readonly db: Db) {}

  async insert(w: WorkerRecord): Promise<void> {
    prepared(this.db, `INSERT INTO workers (id, name, kind, backend, last_seen, shards_done, samples, images_per_second, current_shard, trusted, strikes,
      quarantined_at, address, agreed, disagreed, streak, demoted, kernel_class, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
      .run(w.id, w.name, w.kind, w.backend, w.lastSeen.getTime(), w.shardsDone, w.samples, w.imagesPerSecond, w.currentShard, w.trusted ? 1 : 0, w.strikes,
        w.quarantinedAt?.getTime() ?? null, w.address, w.agreed, w.disagreed, w.streak, w.demoted ? 1 : 0, w.kernelClass, w.createdAt.toISOString());
  }

  async get(id: string): Promise<WorkerRecord | undefined> {
    const row = prepared(this.db, 'SELECT * FROM workers WHERE id = ?').get(id);
    return row === undefined ? undefined : decodeWorker(row);
  }

  async countTrustedOthersSince(since: Date, except: string): Promise<number> {
    return (prepared(this.db, `SELECT COUNT(*) AS n FROM workers w WHERE w.last_seen > ? AND w.id != ? AND w.quarantined_at IS NULL
      AND ${TRUSTED_WORKER}`).get(since.getTime(), except) as { n: number }).n;
  }

  async touch(id: string, now: Date): Promise<WorkerRecord | undefined> {
    prepared(this.db, 'UPDATE workers SET last_seen = ? WHERE id = ?').run(now.getTime(), id);
    const row = prepared(this.db, 'SELECT * FROM workers WHERE id = ?').get(id);
    return row === undefined ? undefined : decodeWorker(row);
  }

  async list(since: Date | undefined, first: number, offset: number): Promise<Page<WorkerRecord>> {
    const after = since?.getTime() ?? 0;
    const rows = prepared(this.db, 'SELECT * FROM workers WHERE last_seen > ? ORDER BY created_at DESC LIMIT ? OFFSET ?').all(after, first, offset);
    return page(rows.map(decodeWorker), await this.countSeenSince(new Date(after)), offset);
  }

  async quarantine(id: string, at: Date): Promise<WorkerRecord | undefined> {
    prepared(this.db, 'UPDATE workers SET quarantined_at = COALESCE(quarantined_at, ?) WHERE id = ?').run(at.getTime(), id);
    const row = prepared(this.db, 'SELECT * FROM workers WHERE id = ?').get(id);
    return row === undefined ? undefined : decodeWorker(row);
  }

  async countProvenSince(since: Date): Promise<number> {
    return (prepared(this.db, 'SELECT COUNT(*) AS n FROM workers WHERE last_seen > ? AND (trusted = 1 OR (shards_done > 0 AND quarantined_at IS NULL))')
      .get(since.getTime()) as { n: number }).n;
  }

  async setBackendChoice(id: string, choice: BackendChoice): Promise<void> {
    prepared(this.db, 'UPDATE workers SET backend = ?, backend_choice = ? WHERE id = ?').run(choice.chosen, JSON.stringify(choice), id);
  }

  async countSeenSince(since: Date): Promise<number> {
    return (prepared(this.db, 'SELECT COUNT(*) AS n FROM workers WHERE last_seen > ?').get(since.getTime()) as { n: number }).n;
  }
}
