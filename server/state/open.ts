// The state store a server's settings name: PostgreSQL when given a URL (shared by replicas),
// else the embedded SQLite file under the data directory.
import type { ServerConfig } from '../config';
import { openPostgresState } from './postgres';
import { openSqliteState } from './sqlite';
import type { StateStore } from './store';

export async function openState(config: Pick<ServerConfig, 'state' | 'dataDir'> & Partial<Pick<ServerConfig, 'runLockSeconds'>>): Promise<StateStore> {
  return config.state ? openPostgresState(config.state, { runLockSeconds: config.runLockSeconds }) : openSqliteState(config.dataDir);
}
