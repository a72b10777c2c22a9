// A throwaway PostgreSQL cluster for tests: Debian's server binaries, a cluster in a temporary
// directory on a free loopback port, run as the `postgres` user when the tests run as root (the
// server refuses root), stopped and deleted afterwards. Each test takes a fresh database.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';

export interface PostgresCluster {
  /** A new, empty database's URL. */
  database(): Promise<string>;
  stop(): void;
}

/** The newest installed server's binaries, or why there is none. */
function serverBinaries(): string | { reason: string } {
  const root = '/usr/lib/postgresql';
  const versions = existsSync(root) ? readdirSync(root).filter((v) => existsSync(join(root, v, 'bin', 'pg_ctl'))).sort((a, b) => Number(b) - Number(a)) : [];
  return versions.length ? join(root, versions[0], 'bin') : { reason: `no PostgreSQL server under ${root} (apt-get install postgresql)` };
}

/** Why PostgreSQL tests cannot run here, or undefined when they can. */
export function postgresUnavailable(): string | undefined {
  const bin = serverBinaries();
  return typeof bin === 'string' ? undefined : bin.reason;
}

/** Runs one statement on its own connection (behind a store's back, or as the cluster's admin). */
export async function sqlOn(url: string, sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

export async function startPostgres(): Promise<PostgresCluster> {
  const bin = serverBinaries();
  if (typeof bin !== 'string') throw new Error(bin.reason);
  const dir = mkdtempSync(join(tmpdir(), 'partune-pg-'));
  const root = userInfo().uid === 0;
  if (root) {
    const uid = Number(execFileSync('id', ['-u', 'postgres']).toString().trim());
    const gid = Number(execFileSync('id', ['-g', 'postgres']).toString().trim());
    chownSync(dir, uid, gid);
  }
  const as = (tool: string, args: string[]): void => {
    const [cmd, argv] = root ? ['runuser', ['-u', 'postgres', '--', join(bin, tool), ...args]] : [join(bin, tool), args];
    execFileSync(cmd, argv, { stdio: ['ignore', 'ignore', 'pipe'] });
  };
  const data = join(dir, 'data');
  as('initdb', ['-D', data, '-A', 'trust', '-U', 'postgres', '--no-sync', '-E', 'UTF8', '--locale=C']);
  const port = await freePort();
  // Durability is not what these tests check: fsync off makes every commit cheap.
  as('pg_ctl', ['-D', data, '-o', `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200`, '-l', join(dir, 'log'), '-w', 'start']);
  const admin = `postgres://postgres@127.0.0.1:${port}/postgres`;
  return {
    async database() {
      const name = `t_${randomBytes(6).toString('hex')}`;
      await sqlOn(admin, `CREATE DATABASE ${name}`);
      return `postgres://postgres@127.0.0.1:${port}/${name}`;
    },
    stop() {
      try {
        as('pg_ctl', ['-D', data, '-m', 'immediate', 'stop']);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  };
}

/**
 * PostgreSQL for one test file: a cluster started at the first database asked for and stopped
 * after the file; `skip` says why there is none. Call at the file's top level.
 */
export function postgresForThisFile(): { readonly skip?: string; database(): Promise<string> } {
  const skip = postgresUnavailable();
  if (skip) process.stderr.write(`[skip] PostgreSQL: ${skip}\n`);
  let cluster: Promise<PostgresCluster> | undefined;
  afterAll(async () => (await cluster)?.stop());
  return {
    skip,
    database: async () => (await (cluster ??= startPostgres())).database(),
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
