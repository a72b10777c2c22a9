// What finished runs leave, in SQLite: deltas, stored strategies and angle profiles.
import type { ResultRepository } from '../store';
import { AngleProfileRecord, DeltaRecord, StoredStrategy } from '../records';
import { Db, prepared } from './database';
import { decodeDelta, decodeStoredStrategy, encodeStoredStrategy, profileRows } from '../rows';

export class SqliteResults implements ResultRepository {
  constructor(private readonly db: Db) {}

  async deltaOfRun(runId: string): Promise<DeltaRecord | undefined> {
    const row = prepared(this.db, 'SELECT * FROM deltas WHERE run_id = ?').get(runId);
    return row === undefined ? undefined : decodeDelta(row);
  }

  async delta(id: string): Promise<DeltaRecord | undefined> {
    const row = prepared(this.db, 'SELECT * FROM deltas WHERE id = ? OR run_id = ?').get(id, id);
    return row === undefined ? undefined : decodeDelta(row);
  }

  async setMergedModel(deltaId: string, modelId: string): Promise<void> {
    prepared(this.db, 'UPDATE deltas SET merged_model_id = ? WHERE id = ?').run(modelId, deltaId);
  }

  async strategy(name: string): Promise<StoredStrategy | undefined> {
    const row = prepared(this.db, 'SELECT * FROM strategies WHERE name = ?').get(name);
    return row === undefined ? undefined : decodeStoredStrategy(row);
  }

  async strategies(modelId?: string): Promise<StoredStrategy[]> {
    const rows = modelId
      ? prepared(this.db, 'SELECT * FROM strategies WHERE model_id = ? ORDER BY created_at DESC').all(modelId)
      : prepared(this.db, 'SELECT * FROM strategies ORDER BY created_at DESC').all();
    return rows.map(decodeStoredStrategy);
  }

  async insertStrategy(s: StoredStrategy): Promise<boolean> {
    return prepared(this.db, 'INSERT OR IGNORE INTO strategies (name, spec, model_id, source, created_at) VALUES (@name, @spec, @model_id, @source, @created_at)')
      .run(encodeStoredStrategy(s)).changes > 0;
  }

  async profiles(filter: { modelId?: string; datasetId?: string }): Promise<AngleProfileRecord[]> {
    const where: string[] = [];
    const args: string[] = [];
    if (filter.modelId) (where.push('model_id = ?'), args.push(filter.modelId));
    if (filter.datasetId) (where.push('dataset_id = ?'), args.push(filter.datasetId));
    const rows = prepared(this.db, `SELECT * FROM angle_profiles ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY created_at DESC`).all(...args);
    return rows.map(profileRows.decode);
  }

  async profile(id: string): Promise<AngleProfileRecord | undefined> {
    const row = prepared(this.db, 'SELECT * FROM angle_profiles WHERE id = ? OR run_id = ?').get(id, id);
    return row === undefined ? undefined : profileRows.decode(row);
  }
}
