// The PostgreSQL state store: one database shared by any number of server replicas.
import type { StateStore } from '../store';
import { keptOnceRead } from '../immutable';
import { PgUploads, pgDatasets, pgModels } from './catalog';
import { isTransientDbError, openLivenessPool, openPool } from './database';
import { PgCoordination } from './coordination';
import { PgResults } from './results';
import { PgRuns } from './runs';
import { PgShards } from './shards';
import { PgAdmissions, PgWorkers } from './workers';

export async function openPostgresState(url: string): Promise<StateStore> {
  const pool = await openPool(url);
  const liveness = openLivenessPool(url);
  const coordination = new PgCoordination(url);
  return {
    models: keptOnceRead(pgModels(pool)), datasets: keptOnceRead(pgDatasets(pool)), uploads: new PgUploads(pool), runs: new PgRuns(pool),
    shards: new PgShards(pool, liveness), workers: new PgWorkers(pool, liveness), results: new PgResults(pool),
    coordination, admissions: new PgAdmissions(pool),
    transient: isTransientDbError,
    async close() {
      await coordination.close();
      await Promise.all([pool.end(), liveness.end()]);
    },
  };
}
