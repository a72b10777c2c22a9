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

/** `runLockSeconds`: how long a replica's lock on a run lasts unless renewed (config.ts). */
export async function openPostgresState(url: string, opts: { runLockSeconds?: number } = {}): Promise<StateStore> {
  const leaseMs = (opts.runLockSeconds ?? 10) * 1000;
  const pool = await openPool(url, leaseMs);
  const liveness = openLivenessPool(url);
  const coordination = new PgCoordination(url, leaseMs);
  return {
    models: keptOnceRead(pgModels(pool)), datasets: keptOnceRead(pgDatasets(pool)), uploads: new PgUploads(pool), runs: new PgRuns(pool, coordination.locks),
    shards: new PgShards(pool, liveness), workers: new PgWorkers(pool, liveness), results: new PgResults(pool),
    coordination, admissions: new PgAdmissions(pool),
    transient: isTransientDbError,
    async close() {
      await coordination.close();
      await Promise.all([pool.end(), liveness.end()]);
    },
  };
}
