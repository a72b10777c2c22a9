// The PostgreSQL state store: one database shared by any number of server replicas.
import type { StateStore } from '../store';
import { PgUploads, pgDatasets, pgModels } from './catalog';
import { isTransientDbError, openPool } from './database';
import { PgCoordination } from './coordination';
import { PgResults } from './results';
import { PgRuns } from './runs';
import { PgShards } from './shards';
import { PgAdmissions, PgWorkers } from './workers';

export async function openPostgresState(url: string): Promise<StateStore> {
  const pool = await openPool(url);
  const coordination = new PgCoordination(url, pool);
  return {
    models: pgModels(pool), datasets: pgDatasets(pool), uploads: new PgUploads(pool), runs: new PgRuns(pool),
    shards: new PgShards(pool), workers: new PgWorkers(pool), results: new PgResults(pool),
    coordination, admissions: new PgAdmissions(pool),
    transient: isTransientDbError,
    async close() {
      await coordination.close();
      await pool.end();
    },
  };
}
