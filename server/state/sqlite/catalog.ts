// Models, datasets and uploads in SQLite.
import type { DatasetRepository, ModelRepository, UploadRepository } from '../store';
import { DatasetRecord, ModelRecord, Page, UploadRecord, page } from '../records';
import { Db } from './database';
import { decodeDataset, decodeModel, decodeUpload, encodeDataset, encodeModel } from './rows';

/** A page of a table of named things, newest first, optionally filtered by a name substring. */
function named<T>(db: Db, table: 'models' | 'datasets', decodeRow: (row: unknown) => T, search: string | undefined, first: number, offset: number): Page<T> {
  const where = search ? "WHERE name LIKE ? ESCAPE '\\'" : '';
  const args = search ? [`%${search.replace(/[\\%_]/g, (c) => `\\${c}`)}%`] : [];
  const rows = db.prepare(`SELECT * FROM ${table} ${where} ORDER BY created_at DESC LIMIT ? OFFSET ?`).all(...args, first, offset);
  const total = (db.prepare(`SELECT COUNT(*) AS n FROM ${table} ${where}`).get(...args) as { n: number }).n;
  return page(rows.map(decodeRow), total, offset);
}

/** Inserts a row whose name must be unique; false when it is taken. */
function insertNamed(db: Db, table: 'models' | 'datasets', row: Record<string, unknown>): boolean {
  const cols = Object.keys(row);
  return db.prepare(`INSERT OR IGNORE INTO ${table} (${cols.join(', ')}) VALUES (${cols.map((c) => `@${c}`).join(', ')})`).run(row).changes > 0;
}

export class SqliteModels implements ModelRepository {
  constructor(private readonly db: Db) {}

  async insert(model: ModelRecord): Promise<boolean> {
    return insertNamed(this.db, 'models', encodeModel(model));
  }

  async byIdOrName(idOrName: string): Promise<ModelRecord | undefined> {
    const row = this.db.prepare('SELECT * FROM models WHERE id = ? OR name = ? ORDER BY id = ? DESC LIMIT 1').get(idOrName, idOrName, idOrName);
    return row === undefined ? undefined : decodeModel(row);
  }

  async list(search: string | undefined, first: number, offset: number): Promise<Page<ModelRecord>> {
    return named(this.db, 'models', decodeModel, search, first, offset);
  }
}

export class SqliteDatasets implements DatasetRepository {
  constructor(private readonly db: Db) {}

  async insert(dataset: DatasetRecord): Promise<boolean> {
    return insertNamed(this.db, 'datasets', encodeDataset(dataset));
  }

  async byIdOrName(idOrName: string): Promise<DatasetRecord | undefined> {
    const row = this.db.prepare('SELECT * FROM datasets WHERE id = ? OR name = ? ORDER BY id = ? DESC LIMIT 1').get(idOrName, idOrName, idOrName);
    return row === undefined ? undefined : decodeDataset(row);
  }

  async list(search: string | undefined, first: number, offset: number): Promise<Page<DatasetRecord>> {
    return named(this.db, 'datasets', decodeDataset, search, first, offset);
  }
}

export class SqliteUploads implements UploadRepository {
  constructor(private readonly db: Db) {}

  async insert(u: UploadRecord): Promise<void> {
    this.db.prepare('INSERT INTO uploads (id, key, filename, declared_bytes, created_at) VALUES (?, ?, ?, ?, ?)')
      .run(u.id, u.key, u.filename, u.declaredBytes, u.createdAt.toISOString());
  }

  async get(id: string): Promise<UploadRecord | undefined> {
    const row = this.db.prepare('SELECT * FROM uploads WHERE id = ?').get(id);
    return row === undefined ? undefined : decodeUpload(row);
  }
}
