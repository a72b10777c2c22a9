// The PostgreSQL database shared by every server replica: a connection pool, the schema as
// numbered migrations applied at start under an advisory lock (replicas starting together migrate
// once), and transactions retried when PostgreSQL aborts one for a deadlock or a serialization
// conflict. Rows have the SQLite store's shape (rows.ts decodes both): JSON and ISO times as text
// (times in the C collation, so text order is time order), epoch milliseconds as BIGINT read as
// numbers, flags as 0/1.
import { createHash } from 'node:crypto';
import pg from 'pg';

export type Queryable = pg.Pool | pg.ClientBase;

const TABLES = `
CREATE TABLE models (
  id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, config TEXT NOT NULL, params BIGINT NOT NULL,
  weights_sha256 TEXT NOT NULL, blob_key TEXT NOT NULL, blob_sha256 TEXT NOT NULL, bytes BIGINT NOT NULL,
  source TEXT NOT NULL, created_at TEXT COLLATE "C" NOT NULL);
CREATE TABLE datasets (
  id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, classes INTEGER NOT NULL, height INTEGER NOT NULL, width INTEGER NOT NULL,
  channels INTEGER NOT NULL, train_count INTEGER NOT NULL, test_count INTEGER NOT NULL, shards TEXT NOT NULL,
  source TEXT NOT NULL, created_at TEXT COLLATE "C" NOT NULL);
CREATE TABLE runs (
  id TEXT PRIMARY KEY, kind TEXT NOT NULL, model_id TEXT NOT NULL, dataset_id TEXT NOT NULL, strategy TEXT NOT NULL,
  strategy_name TEXT NOT NULL, hyper TEXT NOT NULL, spec TEXT, report TEXT, plan TEXT, status TEXT NOT NULL,
  round INTEGER NOT NULL DEFAULT 0, step INTEGER NOT NULL DEFAULT 0, state_key TEXT, state_sha256 TEXT, normalization TEXT,
  num_classes INTEGER, tuned_params BIGINT, total_params BIGINT, memory_need BIGINT NOT NULL DEFAULT 0,
  metrics TEXT NOT NULL DEFAULT '[]', accuracy DOUBLE PRECISION, loss DOUBLE PRECISION, delta_id TEXT, error TEXT,
  public SMALLINT NOT NULL DEFAULT 0, created_at TEXT COLLATE "C" NOT NULL, updated_at TEXT COLLATE "C" NOT NULL,
  finished_at TEXT COLLATE "C");
CREATE INDEX runs_status ON runs(status);
CREATE TABLE shards (
  id TEXT PRIMARY KEY, run_id TEXT NOT NULL, round INTEGER NOT NULL, idx INTEGER NOT NULL, replica INTEGER NOT NULL DEFAULT 0,
  need INTEGER NOT NULL DEFAULT 1, verdict TEXT, kernel_class TEXT, digest TEXT,
  from_step INTEGER NOT NULL, to_step INTEGER NOT NULL, status TEXT NOT NULL, worker_id TEXT, lease_until BIGINT,
  attempts INTEGER NOT NULL DEFAULT 0, steps_done INTEGER NOT NULL DEFAULT 0, result_key TEXT, result_sha256 TEXT,
  loss DOUBLE PRECISION, images_per_second DOUBLE PRECISION, rejections TEXT NOT NULL DEFAULT '[]',
  created_at TEXT COLLATE "C" NOT NULL, completed_at TEXT COLLATE "C",
  failed_by TEXT NOT NULL DEFAULT '[]', trusted_failures INTEGER NOT NULL DEFAULT 0, progress_at BIGINT, deadline BIGINT,
  UNIQUE (run_id, round, idx, replica));
CREATE INDEX shards_status ON shards(status);
CREATE INDEX shards_worker ON shards(worker_id);
-- One accepted result per index, whatever replicas race to settle it.
CREATE UNIQUE INDEX shards_accepted ON shards(run_id, round, idx) WHERE verdict = 'ACCEPTED';
CREATE TABLE workers (
  id TEXT PRIMARY KEY, name TEXT NOT NULL, kind TEXT NOT NULL, backend TEXT NOT NULL, last_seen BIGINT NOT NULL,
  shards_done INTEGER NOT NULL DEFAULT 0, samples BIGINT NOT NULL DEFAULT 0, images_per_second DOUBLE PRECISION,
  current_shard TEXT, trusted SMALLINT NOT NULL DEFAULT 0, strikes INTEGER NOT NULL DEFAULT 0, quarantined_at BIGINT,
  address TEXT NOT NULL DEFAULT '', agreed INTEGER NOT NULL DEFAULT 0, disagreed INTEGER NOT NULL DEFAULT 0,
  streak INTEGER NOT NULL DEFAULT 0, demoted SMALLINT NOT NULL DEFAULT 0, kernel_class TEXT, created_at TEXT COLLATE "C" NOT NULL);
CREATE INDEX workers_last_seen ON workers(last_seen);
CREATE TABLE deltas (
  id TEXT PRIMARY KEY, run_id TEXT NOT NULL UNIQUE, key TEXT NOT NULL, sha256 TEXT NOT NULL, bytes BIGINT NOT NULL,
  tensors INTEGER NOT NULL, tuned_params BIGINT NOT NULL, dtype TEXT NOT NULL, merged_model_id TEXT, created_at TEXT COLLATE "C" NOT NULL);
CREATE TABLE strategies (
  name TEXT PRIMARY KEY, spec TEXT NOT NULL, model_id TEXT, source TEXT NOT NULL, created_at TEXT COLLATE "C" NOT NULL);
CREATE TABLE angle_profiles (
  id TEXT PRIMARY KEY, run_id TEXT NOT NULL UNIQUE, model_id TEXT NOT NULL, dataset_id TEXT NOT NULL, probe TEXT NOT NULL,
  angles TEXT NOT NULL, tensor_angles TEXT NOT NULL, direction TEXT NOT NULL, top_k INTEGER NOT NULL, strategy_name TEXT NOT NULL,
  created_at TEXT COLLATE "C" NOT NULL);
CREATE TABLE uploads (
  id TEXT PRIMARY KEY, key TEXT NOT NULL, filename TEXT NOT NULL, declared_bytes BIGINT NOT NULL, created_at TEXT COLLATE "C" NOT NULL);
CREATE INDEX uploads_created ON uploads(created_at);
`;

/** Migration i brings a database from version i to i + 1 (version 1 is the SQLite store's version 4, 3 its 5, 4 its 6, 5 its 7, 6 its 8, 8 its 9, 9 its 10). */
const MIGRATIONS: string[] = [
  TABLES,
  // 2: volunteer admissions counted in the database, so every replica sees the same count.
  'CREATE TABLE admissions (key TEXT NOT NULL, minute BIGINT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (key, minute))',
  // 3: a shard's window pack (what its worker downloads instead of the whole split), and what its worker downloaded.
  'ALTER TABLE shards ADD COLUMN pack_key TEXT, ADD COLUMN pack_sha256 TEXT, ADD COLUMN pack_bytes BIGINT, ADD COLUMN downloaded_bytes BIGINT',
  // 4: how a worker chose its backend, with the timings it measured (the SQLite store's 6).
  'ALTER TABLE workers ADD COLUMN backend_choice TEXT',
  // 5: verified compute against collusion (the SQLite store's 7): worker groups and trust per kernel
  // class; replicas' declared class, reservations, votes, lease times and waits; runs' waiting
  // reason, round states and rollbacks.
  `ALTER TABLE workers ADD COLUMN party TEXT NOT NULL DEFAULT '', ADD COLUMN origin TEXT NOT NULL DEFAULT '';
   UPDATE workers SET party = 'host:' || address;
   CREATE TABLE worker_classes (worker_id TEXT NOT NULL, kernel_class TEXT NOT NULL, agreed INTEGER NOT NULL DEFAULT 0,
     disagreed INTEGER NOT NULL DEFAULT 0, streak INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (worker_id, kernel_class));
   ALTER TABLE shards ADD COLUMN lease_class TEXT, ADD COLUMN need_class TEXT, ADD COLUMN registered_only SMALLINT NOT NULL DEFAULT 0,
     ADD COLUMN votes INTEGER, ADD COLUMN required INTEGER, ADD COLUMN leased_at BIGINT, ADD COLUMN submitted_at BIGINT, ADD COLUMN pending_since BIGINT;
   UPDATE shards SET pending_since = (EXTRACT(EPOCH FROM now()) * 1000)::bigint WHERE status = 'PENDING';
   UPDATE shards SET lease_class = kernel_class WHERE kernel_class IS NOT NULL;
   ALTER TABLE runs ADD COLUMN waiting TEXT, ADD COLUMN round_states TEXT NOT NULL DEFAULT '[]', ADD COLUMN rollbacks TEXT NOT NULL DEFAULT '[]';`,
  // 6: a dataset may be private (its runs never admit volunteers; the SQLite store's 8).
  'ALTER TABLE datasets ADD COLUMN private SMALLINT NOT NULL DEFAULT 0',
  // 7: run locks as leases with fencing tokens (run-locks.ts), in place of session advisory locks,
  // which a frozen replica's open connection kept for good. SQLite has no counterpart: one process drives all.
  // Replicas say they are alive in `replicas`, so that a turn held by a frozen one can be broken.
  `CREATE SEQUENCE run_fences;
   CREATE TABLE run_locks (run_id TEXT PRIMARY KEY, holder TEXT NOT NULL, fence BIGINT NOT NULL, expires_at BIGINT NOT NULL);
   CREATE TABLE replicas (holder TEXT PRIMARY KEY, seen_at BIGINT NOT NULL);`,
  // 8: a dataset's class names (JSON), when its source named them (the SQLite store's 9).
  'ALTER TABLE datasets ADD COLUMN class_names TEXT',
  // 9: who created an upload, and when it was used (the SQLite store's 10).
  "ALTER TABLE uploads ADD COLUMN owner TEXT NOT NULL DEFAULT 'admin'; ALTER TABLE uploads ADD COLUMN used_at TEXT; " +
    'CREATE INDEX uploads_owner ON uploads(owner)',
];

export const PG_SCHEMA_VERSION = MIGRATIONS.length;

/** Any constant: the advisory lock replicas take while migrating. */
const MIGRATION_LOCK = 7_420_115;

// BIGINT columns (times in ms, byte counts) and COUNT(*) as numbers: every value stays below 2^53.
const INT8 = 20;
export const types = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === INT8 ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format)) as typeof pg.types.getTypeParser,
};

/** Connections per replica: enough for a round's claims and completions in flight at once. */
const POOL_SIZE = 20;
const LIVENESS_POOL_SIZE = 4;

/**
 * `idleTransactionMs`: PostgreSQL ends a connection left inside a transaction for longer (its
 * replica frozen mid-write), so that the rows it locked do not hold the other replicas up.
 */
export async function openPool(url: string, idleTransactionMs: number): Promise<pg.Pool> {
  const options = `-c idle_in_transaction_session_timeout=${Math.ceil(idleTransactionMs)}`;
  const pool = survivesRestarts(new pg.Pool({ connectionString: url, max: POOL_SIZE, types, connectionTimeoutMillis: 10_000, options }));
  try {
    await migrate(pool);
  } catch (e) {
    await pool.end();
    throw e;
  }
  return pool;
}

/**
 * Connections for liveness writes only (a worker last seen, a lease renewed by a heartbeat), which
 * commit without waiting for the disk: a crash of PostgreSQL may lose the last fraction of a second
 * of them, which reads as a worker that went quiet (its lease lapses and the shard is re-issued),
 * while a fleet's heartbeats no longer queue for the WAL flush ahead of claims and completions.
 */
export function openLivenessPool(url: string): pg.Pool {
  const options = '-c synchronous_commit=off';
  return survivesRestarts(new pg.Pool({ connectionString: url, max: LIVENESS_POOL_SIZE, types, connectionTimeoutMillis: 10_000, options }));
}

/**
 * A connection's 'error' (PostgreSQL restarted under it) must not end the process: an idle one's
 * the pool reports (and replaces the connection), a checked-out one's is also its query's failure,
 * which the caller sees. Without a listener on each connection the event would be unhandled.
 */
function survivesRestarts(pool: pg.Pool): pg.Pool {
  pool.on('error', () => undefined);
  pool.on('connect', (client) => void client.on('error', () => undefined));
  return pool;
}

export async function migrate(pool: pg.Pool): Promise<void> {
  const client = await pool.connect();
  try {
    await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK]);
    await client.query('CREATE TABLE IF NOT EXISTS partune_schema (version INTEGER NOT NULL)');
    const row = (await client.query<{ version: number }>('SELECT version FROM partune_schema')).rows[0];
    if (!row) await client.query('INSERT INTO partune_schema (version) VALUES (0)');
    const version = row?.version ?? 0;
    if (version > PG_SCHEMA_VERSION) throw new Error(`the database is at schema version ${version}, newer than this server's ${PG_SCHEMA_VERSION}: upgrade partune`);
    for (let v = version; v < PG_SCHEMA_VERSION; v++) {
      await client.query('BEGIN');
      try {
        await client.query(MIGRATIONS[v]);
        await client.query('UPDATE partune_schema SET version = $1', [v + 1]);
        await client.query('COMMIT');
      } catch (e) {
        await client.query('ROLLBACK');
        throw e;
      }
    }
  } finally {
    await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK]).catch(() => undefined);
    client.release();
  }
}

const names = new Map<string, string>();

/** A named statement per SQL text, so each connection parses and plans it once. */
function statement(sql: string, values: readonly unknown[]): pg.QueryConfig {
  let name = names.get(sql);
  if (!name) names.set(sql, (name = `p${createHash('sha1').update(sql).digest('hex').slice(0, 20)}`));
  return { name, text: sql, values: values as unknown[] };
}

export async function all<T = Record<string, unknown>>(db: Queryable, sql: string, ...values: unknown[]): Promise<T[]> {
  return (await db.query(statement(sql, values))).rows as T[];
}

export async function first<T = Record<string, unknown>>(db: Queryable, sql: string, ...values: unknown[]): Promise<T | undefined> {
  return (await all<T>(db, sql, ...values))[0];
}

/** Rows changed. */
export async function run(db: Queryable, sql: string, ...values: unknown[]): Promise<number> {
  return (await db.query(statement(sql, values))).rowCount ?? 0;
}

/** An INSERT of a row's columns as $1..$n, and its values. */
export function insertRow(table: string, row: Record<string, unknown>, tail = ''): [string, unknown[]] {
  const cols = Object.keys(row);
  return [`INSERT INTO ${table} (${cols.join(', ')}) VALUES (${cols.map((_, i) => `$${i + 1}`).join(', ')}) ${tail}`, Object.values(row)];
}

/** Runs a statement built with its values (an INSERT of a record's row); rows changed. */
export async function execute(db: Queryable, [sql, values]: [string, unknown[]]): Promise<number> {
  return run(db, sql, ...values);
}

/**
 * A connection lost or refused (PostgreSQL restarting, a network cut, no free connection): the
 * pool opens a new one for the next query.
 */
export function isTransientDbError(e: unknown): boolean {
  const { code, message } = e as { code?: string; message?: string };
  return (code !== undefined && (code.startsWith('08') || ['57P01', '57P02', '57P03', '53300', 'ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT'].includes(code)))
    || /Connection terminated|timeout exceeded when trying to connect|is not queryable|Query read timeout/i.test(message ?? '');
}

/** PostgreSQL's codes for a transaction it aborted to break a deadlock or a serialization conflict: safe to run again. */
const RETRYABLE = new Set(['40P01', '40001']);

export async function transaction<T>(pool: pg.Pool, body: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    const client = await pool.connect();
    try {
      await client.query('BEGIN');
      const result = await body(client);
      await client.query('COMMIT');
      return result;
    } catch (e) {
      await client.query('ROLLBACK').catch(() => undefined);
      if (attempt >= 5 || !RETRYABLE.has((e as { code?: string }).code ?? '')) throw e;
    } finally {
      client.release();
    }
  }
}
