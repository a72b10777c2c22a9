// Models, datasets and uploads in PostgreSQL.
import type pg from 'pg';
import type { DatasetRepository, ModelRepository, UploadRepository } from '../store';
import { DatasetRecord, ModelRecord, Page, UploadRecord, page } from '../records';
import { datasetRows, decodeModel, encodeModel, uploadRows } from '../rows';
import { all, execute, first, insertRow, run } from './database';

/** A table of named things (models, datasets): unique names, looked up by id or name, listed newest first. */
class PgNamed<T extends { id: string }> {
  constructor(
    private readonly pool: pg.Pool, private readonly table: 'models' | 'datasets', private readonly decodeRow: (row: unknown) => T,
    private readonly encodeRow: (record: T) => Record<string, unknown>,
  ) {}

  async insert(record: T): Promise<boolean> {
    return (await execute(this.pool, insertRow(this.table, this.encodeRow(record), 'ON CONFLICT DO NOTHING'))) > 0;
  }

  async byIdOrName(idOrName: string): Promise<T | undefined> {
    const row = await first(this.pool, `SELECT * FROM ${this.table} WHERE id = $1 OR name = $1 ORDER BY (id = $1) DESC LIMIT 1`, idOrName);
    return row === undefined ? undefined : this.decodeRow(row);
  }

  async list(search: string | undefined, count: number, offset: number): Promise<Page<T>> {
    const where = search ? "WHERE name LIKE $1 ESCAPE '\\'" : '';
    const args = search ? [`%${search.replace(/[\\%_]/g, (c) => `\\${c}`)}%`] : [];
    const n = args.length;
    const rows = await all(this.pool, `SELECT * FROM ${this.table} ${where} ORDER BY created_at DESC LIMIT $${n + 1} OFFSET $${n + 2}`, ...args, count, offset);
    const total = (await first<{ n: number }>(this.pool, `SELECT COUNT(*) AS n FROM ${this.table} ${where}`, ...args))!.n;
    return page(rows.map(this.decodeRow), total, offset);
  }
}

export const pgModels = (pool: pg.Pool): ModelRepository => new PgNamed<ModelRecord>(pool, 'models', decodeModel, encodeModel);
export const pgDatasets = (pool: pg.Pool): DatasetRepository => new PgNamed<DatasetRecord>(pool, 'datasets', datasetRows.decode, datasetRows.encode);

export class PgUploads implements UploadRepository {
  constructor(private readonly pool: pg.Pool) {}

  async insert(u: UploadRecord): Promise<void> {
    await execute(this.pool, insertRow('uploads', uploadRows.encode(u)));
  }

  async get(id: string): Promise<UploadRecord | undefined> {
    const row = await first(this.pool, 'SELECT * FROM uploads WHERE id = $1', id);
    return row === undefined ? undefined : uploadRows.decode(row);
  }

  async remove(id: string): Promise<void> {
    await run(this.pool, 'DELETE FROM uploads WHERE id = $1', id);
  }

  async take(id: string, at: Date): Promise<boolean> {
    return (await run(this.pool, 'UPDATE uploads SET used_at = $1 WHERE id = $2 AND used_at IS NULL', at.toISOString(), id)) === 1;
  }

  async pending(owner: string): Promise<{ count: number; bytes: number }> {
    const sql = 'SELECT COUNT(*) AS count, COALESCE(SUM(declared_bytes), 0) AS bytes FROM uploads WHERE owner = $1 AND used_at IS NULL';
    const row = await first<{ count: string; bytes: string }>(this.pool, sql, owner);
    return { count: Number(row?.count ?? 0), bytes: Number(row?.bytes ?? 0) };
  }

  async stale(unusedBefore: Date, usedBefore: Date): Promise<UploadRecord[]> {
    const sql = 'SELECT * FROM uploads WHERE (used_at IS NULL AND created_at < $1) OR used_at < $2 LIMIT 1000';
    return (await all(this.pool, sql, unusedBefore.toISOString(), usedBefore.toISOString())).map(uploadRows.decode);
  }
}
