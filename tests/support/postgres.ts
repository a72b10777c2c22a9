// PostgreSQL for the tests (node/postgres-cluster.ts): one cluster per test file, a fresh database
// per test; skipped with the reason where no server is installed.
import { PostgresCluster, postgresUnavailable, startPostgres } from '../../node/postgres-cluster';

export { sqlOn } from '../../node/postgres-cluster';

/**
 * PostgreSQL for one test file: a cluster started at the first database asked for and stopped
 * after the file; `skip` says why there is none. Call at the file's top level.
 */
export function postgresForThisFile(): { readonly skip?: string; database(): Promise<string>; restart(mode?: 'fast' | 'immediate'): Promise<void> } {
  const skip = postgresUnavailable();
  if (skip) process.stderr.write(`[skip] PostgreSQL: ${skip}\n`);
  let cluster: Promise<PostgresCluster> | undefined;
  afterAll(async () => (await cluster)?.stop());
  return {
    skip,
    database: async () => (await (cluster ??= startPostgres())).database(),
    restart: async (mode) => (await (cluster ??= startPostgres())).restart(mode),
  };
}

/** The state stores a platform suite runs on: the server's environment for each (a fresh database per call). */
export function storesUnderTest(): { readonly name: string; readonly skip?: string; env(): Promise<NodeJS.ProcessEnv> }[] {
  const postgres = postgresForThisFile();
  return [
    { name: 'SQLite', env: async () => ({}) },
    { name: 'PostgreSQL', skip: postgres.skip, env: async () => ({ PARTUNE_STATE: await postgres.database() }) },
  ];
}
