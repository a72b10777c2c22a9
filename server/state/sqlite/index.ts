// The SQLite state store: the embedded default, one file under the data directory.
import type { StateStore } from '../store';
import { keptOnceRead } from '../immutable';
import { InProcessAdmissions, InProcessCoordination } from '../in-process';
import { openDatabase } from './database';
import { SqliteUploads, sqliteDatasets, sqliteModels } from './catalog';
import { SqliteRuns } from './runs';
import { SqliteShards } from './shards';
import { SqliteWorkers } from './workers';
import { SqliteResults } from './results';

export function openSqliteState(dataDir: string): StateStore {
  const db = openDatabase(dataDir);
  return {
    models: keptOnceRead(sqliteModels(db)), datasets: keptOnceRead(sqliteDatasets(db)), uploads: new SqliteUploads(db), runs: new SqliteRuns(db),
    shards: new SqliteShards(db), workers: new SqliteWorkers(db), results: new SqliteResults(db),
    coordination: new InProcessCoordination(), admissions: new InProcessAdmissions(),
    transient: (e) => ['SQLITE_BUSY', 'SQLITE_LOCKED'].includes((e as { code?: string }).code ?? ''),
    async close() {
      db.close();
    },
  };
}
