// A throwaway PostgreSQL cluster for the tests and the fleet bench: Debian's server binaries, a
// cluster in a temporary directory on a free loopback port, run as the `postgres` user when run
// as root (the server refuses root), stopped and deleted afterwards. Each caller takes a fresh
// database.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chownSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { freePort } from './local-platform';

export interface PostgresCluster {
  /** A new, empty database's URL. */
  database(): Promise<string>;
  /** The server's main process id (its backends are its children). */
  postmaster(): number;
  /** `pg_ctl restart` (`fast` by default, `immediate`: a crash and its recovery): every connection is cut, the server is back when it returns. */
  restart(mode?: 'fast' | 'immediate'): void;
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

/** `durable`: fsync on, as a deployment runs (the tests check no durability and run without). */
export async function startPostgres(opts: { durable?: boolean } = {}): Promise<PostgresCluster> {
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
  const fsync = opts.durable ? 'on' : 'off';
  as('pg_ctl', ['-D', data, '-o', `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=${fsync} -c max_connections=200`, '-l', join(dir, 'log'), '-w', 'start']);
  const admin = `postgres://postgres@127.0.0.1:${port}/postgres`;
  return {
    postmaster: () => Number(readFileSync(join(data, 'postmaster.pid'), 'utf8').split('\n')[0]),
    async database() {
      const name = `t_${randomBytes(6).toString('hex')}`;
      await sqlOn(admin, `CREATE DATABASE ${name}`);
      return `postgres://postgres@127.0.0.1:${port}/${name}`;
    },
    restart(mode = 'fast') {
      as('pg_ctl', ['-D', data, '-m', mode, '-l', join(dir, 'log'), '-w', 'restart']);
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

