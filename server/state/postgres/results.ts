// What finished runs leave, in PostgreSQL: deltas, stored strategies and angle profiles.
import type pg from 'pg';
import type { ResultRepository } from '../store';
import { AngleProfileRecord, DeltaRecord, StoredStrategy } from '../records';
import { decodeDelta, decodeStoredStrategy, encodeStoredStrategy, profileRows } from '../rows';
import { all, execute, first, insertRow, run } from './database';

export class PgResults implements ResultRepository {
  constructor(private readonly pool: pg.Pool) {}

  async deltaOfRun(runId: string): Promise<DeltaRecord | undefined> {
    const row = await first(this.pool, 'SELECT * FROM deltas WHERE run_id = $1', runId);
    return row === undefined ? undefined : decodeDelta(row);
  }

  async delta(id: string): Promise<DeltaRecord | undefined> {
    const row = await first(this.pool, 'SELECT * FROM deltas WHERE id = $1 OR run_id = $1', id);
    return row === undefined ? undefined : decodeDelta(row);
  }

  async setMergedModel(deltaId: string, modelId: string): Promise<void> {
    await run(this.pool, 'UPDATE deltas SET merged_model_id = $1 WHERE id = $2', modelId, deltaId);
  }

  async strategy(name: string): Promise<StoredStrategy | undefined> {
    const row = await first(this.pool, 'SELECT * FROM strategies WHERE name = $1', name);
    return row === undefined ? undefined : decodeStoredStrategy(row);
  }

  async strategies(modelId?: string): Promise<StoredStrategy[]> {
    const rows = modelId
      ? await all(this.pool, 'SELECT * FROM strategies WHERE model_id = $1 ORDER BY created_at DESC', modelId)
      : await all(this.pool, 'SELECT * FROM strategies ORDER BY created_at DESC');
    return rows.map(decodeStoredStrategy);
  }

  async insertStrategy(s: StoredStrategy): Promise<boolean> {
    return (await execute(this.pool, insertRow('strategies', encodeStoredStrategy(s), 'ON CONFLICT DO NOTHING'))) > 0;
  }

  async profiles(filter: { modelId?: string; datasetId?: string }): Promise<AngleProfileRecord[]> {
    const where: string[] = [];
    const args: string[] = [];
    if (filter.modelId) (args.push(filter.modelId), where.push(`model_id = $${args.length}`));
    if (filter.datasetId) (args.push(filter.datasetId), where.push(`dataset_id = $${args.length}`));
    const rows = await all(this.pool, `SELECT * FROM angle_profiles ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY created_at DESC`, ...args);
    return rows.map(profileRows.decode);
  }

  async profile(id: string): Promise<AngleProfileRecord | undefined> {
    const row = await first(this.pool, 'SELECT * FROM angle_profiles WHERE id = $1 OR run_id = $1', id);
    return row === undefined ? undefined : profileRows.decode(row);
  }
}
