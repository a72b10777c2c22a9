// The PostgreSQL state store: one database shared by any number of server replicas.
import type { StateStore } from '../store';
import { PgUploads, pgDatasets, pgModels } from './catalog';
import { isTransientDbError, openPool } from './database';
import { holdDriverLock } from './driver';
import { PgResults } from './results';
import { PgRuns } from './runs';
import { PgShards } from './shards';
import { PgWorkers } from './workers';

export async function openPostgresState(url: string): Promise<StateStore> {
  const pool = await openPool(url);
  let driver: { release(): Promise<void> } | undefined;
  return {
    models: pgModels(pool), datasets: pgDatasets(pool), uploads: new PgUploads(pool), runs: new PgRuns(pool),
    shards: new PgShards(pool), workers: new PgWorkers(pool), results: new PgResults(pool),
    async holdDriver(events) {
      driver ??= await holdDriverLock(url, events);
    },
    transient: isTransientDbError,
    async close() {
      await driver?.release();
      await pool.end();
    },
  };
}
