// Models, datasets and uploads in SQLite.
import type { DatasetRepository, ModelRepository, UploadRepository } from '../store';
import { DatasetRecord, ModelRecord, Page, UploadRecord, page } from '../records';
import { Db, prepared } from './database';
import { datasetRows, decodeModel, encodeModel, uploadRows } from '../rows';

/** A table of named things (models, datasets): unique names, looked up by id or name, listed newest first. */
class SqliteNamed<T extends { id: string }> {
  constructor(
    private readonly db: Db, private readonly table: 'models' | 'datasets', private readonly decodeRow: (row: unknown) => T,
    private readonly encodeRow: (record: T) => Record<string, unknown>,
  ) {}

  /** False when the name is taken. */
  async insert(record: T): Promise<boolean> {
    const row = this.encodeRow(record);
    const cols = Object.keys(row);
    return prepared(this.db, `INSERT OR IGNORE INTO ${this.table} (${cols.join(', ')}) VALUES (${cols.map((c) => `@${c}`).join(', ')})`).run(row).changes > 0;
  }

  async byIdOrName(idOrName: string): Promise<T | undefined> {
    const row = prepared(this.db, `SELECT * FROM ${this.table} WHERE id = ? OR name = ? ORDER BY id = ? DESC LIMIT 1`).get(idOrName, idOrName, idOrName);
    return row === undefined ? undefined : this.decodeRow(row);
  }

  /** Newest first, optionally those whose name contains `search`. */
  async list(search: string | undefined, first: number, offset: number): Promise<Page<T>> {
    const where = search ? "WHERE name LIKE ? ESCAPE '\\'" : '';
    const args = search ? [`%${search.replace(/[\\%_]/g, (c) => `\\${c}`)}%`] : [];
    const rows = prepared(this.db, `SELECT * FROM ${this.table} ${where} ORDER BY created_at DESC LIMIT ? OFFSET ?`).all(...args, first, offset);
    const total = (prepared(this.db, `SELECT COUNT(*) AS n FROM ${this.table} ${where}`).get(...args) as { n: number }).n;
    return page(rows.map(this.decodeRow), total, offset);
  }
}

export const sqliteModels = (db: Db): ModelRepository => new SqliteNamed<ModelRecord>(db, 'models', decodeModel, encodeModel);
export const sqliteDatasets = (db: Db): DatasetRepository => new SqliteNamed<DatasetRecord>(db, 'datasets', datasetRows.decode, datasetRows.encode);

export class SqliteUploads implements UploadRepository {
  constructor(private readonly db: Db) {}

  async insert(u: UploadRecord): Promise<void> {
    const sql = 'INSERT INTO uploads (id, key, filename, declared_bytes, owner, used_at, created_at) '
      + 'VALUES (@id, @key, @filename, @declared_bytes, @owner, @used_at, @created_at)';
    prepared(this.db, sql).run(uploadRows.encode(u));
  }

  async get(id: string): Promise<UploadRecord | undefined> {
    const row = prepared(this.db, 'SELECT * FROM uploads WHERE id = ?').get(id);
    return row === undefined ? undefined : uploadRows.decode(row);
  }

  async remove(id: string): Promise<void> {
    prepared(this.db, 'DELETE FROM uploads WHERE id = ?').run(id);
  }

  async take(id: string, at: Date): Promise<boolean> {
    return prepared(this.db, 'UPDATE uploads SET used_at = ? WHERE id = ? AND used_at IS NULL').run(at.toISOString(), id).changes === 1;
  }

  async pending(owner: string): Promise<{ count: number; bytes: number }> {
    const sql = 'SELECT COUNT(*) AS count, COALESCE(SUM(declared_bytes), 0) AS bytes FROM uploads WHERE owner = ? AND used_at IS NULL';
    const row = prepared(this.db, sql).get(owner) as { count: number; bytes: number };
    return { count: Number(row.count), bytes: Number(row.bytes) };
  }

  async stale(unusedBefore: Date, usedBefore: Date): Promise<UploadRecord[]> {
    const sql = 'SELECT * FROM uploads WHERE (used_at IS NULL AND created_at < ?) OR used_at < ? LIMIT 1000';
    return prepared(this.db, sql).all(unusedBefore.toISOString(), usedBefore.toISOString()).map(uploadRows.decode);
  }
}
