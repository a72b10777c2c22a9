// The SQLite database under the data directory, its schema as numbered migrations (the version
// is SQLite's user_version): a database of any earlier version is brought up to date at start.
import Database from 'better-sqlite3';
import { join } from 'node:path';

export type Db = Database.Database;

const TABLES = `
CREATE TABLE IF NOT EXISTS models (
  id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, config TEXT NOT NULL, params INTEGER NOT NULL,
  weights_sha256 TEXT NOT NULL, blob_key TEXT NOT NULL, blob_sha256 TEXT NOT NULL, bytes INTEGER NOT NULL,
  source TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS datasets (
  id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, classes INTEGER NOT NULL, height INTEGER NOT NULL, width INTEGER NOT NULL,
  channels INTEGER NOT NULL, train_count INTEGER NOT NULL, test_count INTEGER NOT NULL, shards TEXT NOT NULL,
  source TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
  id TEXT PRIMARY KEY, model_id TEXT NOT NULL, dataset_id TEXT NOT NULL, strategy TEXT NOT NULL, strategy_name TEXT NOT NULL,
  hyper TEXT NOT NULL, plan TEXT, status TEXT NOT NULL, round INTEGER NOT NULL DEFAULT 0, step INTEGER NOT NULL DEFAULT 0,
  state_key TEXT, state_sha256 TEXT, normalization TEXT, num_classes INTEGER, tuned_params INTEGER, total_params INTEGER,
  metrics TEXT NOT NULL DEFAULT '[]', accuracy REAL, loss REAL, delta_id TEXT, error TEXT,
  created_at TEXT NOT NULL, updated_at TEXT NOT NULL, finished_at TEXT);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status);
CREATE TABLE IF NOT EXISTS shards (
  id TEXT PRIMARY KEY, run_id TEXT NOT NULL, round INTEGER NOT NULL, idx INTEGER NOT NULL,
  from_step INTEGER NOT NULL, to_step INTEGER NOT NULL, status TEXT NOT NULL, worker_id TEXT, lease_until INTEGER,
  attempts INTEGER NOT NULL DEFAULT 0, steps_done INTEGER NOT NULL DEFAULT 0, result_key TEXT, result_sha256 TEXT,
  loss REAL, images_per_second REAL, rejections TEXT NOT NULL DEFAULT '[]', created_at TEXT NOT NULL, completed_at TEXT,
  UNIQUE (run_id, round, idx));
CREATE INDEX IF NOT EXISTS shards_status ON shards(status);
CREATE TABLE IF NOT EXISTS workers (
  id TEXT PRIMARY KEY, name TEXT NOT NULL, kind TEXT NOT NULL, backend TEXT NOT NULL, last_seen INTEGER NOT NULL,
  shards_done INTEGER NOT NULL DEFAULT 0, samples INTEGER NOT NULL DEFAULT 0, images_per_second REAL,
  current_shard TEXT, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS deltas (
  id TEXT PRIMARY KEY, run_id TEXT NOT NULL UNIQUE, key TEXT NOT NULL, sha256 TEXT NOT NULL, bytes INTEGER NOT NULL,
  tensors INTEGER NOT NULL, tuned_params INTEGER NOT NULL, dtype TEXT NOT NULL, merged_model_id TEXT, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS strategies (
  name TEXT PRIMARY KEY, spec TEXT NOT NULL, model_id TEXT, source TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS angle_profiles (
  id TEXT PRIMARY KEY, run_id TEXT NOT NULL UNIQUE, model_id TEXT NOT NULL, dataset_id TEXT NOT NULL, probe TEXT NOT NULL,
  angles TEXT NOT NULL, tensor_angles TEXT NOT NULL, direction TEXT NOT NULL, top_k INTEGER NOT NULL, strategy_name TEXT NOT NULL,
  created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS uploads (
  id TEXT PRIMARY KEY, key TEXT NOT NULL, filename TEXT NOT NULL, declared_bytes INTEGER NOT NULL, created_at TEXT NOT NULL);
`;

const columns = (db: Db, table: string): Set<string> => new Set((db.prepare(`PRAGMA table_info(${table})`).all() as { name: string }[]).map((c) => c.name));

/** Migration i brings a database from version i to i + 1. */
const MIGRATIONS: ((db: Db) => void)[] = [
  // 1: the tables, and the run columns added before versions were numbered.
  (db) => {
    db.exec(TABLES);
    const have = columns(db, 'runs');
    if (!have.has('kind')) db.exec("ALTER TABLE runs ADD COLUMN kind TEXT NOT NULL DEFAULT 'FINETUNE'");
    if (!have.has('spec')) db.exec('ALTER TABLE runs ADD COLUMN spec TEXT');
    if (!have.has('report')) db.exec('ALTER TABLE runs ADD COLUMN report TEXT');
  },
  // 2: hyper-parameters under the engine's option names (evalLimit -> testLimit), none for soups;
  // the memory a run's shard needs as a column, so a lease can filter on it in one statement.
  (db) => {
    db.exec(`UPDATE runs SET hyper = json_set(json_remove(hyper, '$.evalLimit'), '$.testLimit', json_extract(hyper, '$.evalLimit'))
      WHERE json_extract(hyper, '$.evalLimit') IS NOT NULL`);
    db.exec("UPDATE runs SET hyper = '{}' WHERE kind = 'SOUP'");
    db.exec('ALTER TABLE runs ADD COLUMN memory_need INTEGER NOT NULL DEFAULT 0');
    db.exec(`UPDATE runs SET memory_need = 4 * (SELECT bytes FROM models m WHERE m.id = runs.model_id)
      + (SELECT COALESCE(SUM(json_extract(s.value, '$.bytes')), 0) FROM datasets d, json_each(d.shards) s
         WHERE d.id = runs.dataset_id AND json_extract(s.value, '$.split') = 'train')`);
    db.exec('CREATE INDEX IF NOT EXISTS shards_run ON shards(run_id, round)');
  },
  // 3: who may be trusted: workers know whether an admin token registered them, their strikes and
  // quarantine; shards know which workers failed them, and leases their last progress and deadline;
  // runs may be public.
  (db) => {
    db.exec(`ALTER TABLE workers ADD COLUMN trusted INTEGER NOT NULL DEFAULT 0;
      ALTER TABLE workers ADD COLUMN strikes INTEGER NOT NULL DEFAULT 0;
      ALTER TABLE workers ADD COLUMN quarantined_at INTEGER;
      ALTER TABLE shards ADD COLUMN failed_by TEXT NOT NULL DEFAULT '[]';
      ALTER TABLE shards ADD COLUMN trusted_failures INTEGER NOT NULL DEFAULT 0;
      ALTER TABLE shards ADD COLUMN progress_at INTEGER;
      ALTER TABLE shards ADD COLUMN deadline INTEGER;
      ALTER TABLE runs ADD COLUMN public INTEGER NOT NULL DEFAULT 0;
      CREATE INDEX IF NOT EXISTS uploads_created ON uploads(created_at);`);
  },
  // 4: verified compute. A shard may have several replicas (so the table is rebuilt without its
  // one-row-per-index key); each records what it needs, its verdict, kernel class and digest.
  // Workers record their address, agreements and trust. Finished shards were accepted as they were.
  (db) => {
    db.exec(`CREATE TABLE shards_v4 (
        id TEXT PRIMARY KEY, run_id TEXT NOT NULL, round INTEGER NOT NULL, idx INTEGER NOT NULL, replica INTEGER NOT NULL DEFAULT 0,
        need INTEGER NOT NULL DEFAULT 1, verdict TEXT, kernel_class TEXT, digest TEXT,
        from_step INTEGER NOT NULL, to_step INTEGER NOT NULL, status TEXT NOT NULL, worker_id TEXT, lease_until INTEGER,
        attempts INTEGER NOT NULL DEFAULT 0, steps_done INTEGER NOT NULL DEFAULT 0, result_key TEXT, result_sha256 TEXT,
        loss REAL, images_per_second REAL, rejections TEXT NOT NULL DEFAULT '[]', created_at TEXT NOT NULL, completed_at TEXT,
        failed_by TEXT NOT NULL DEFAULT '[]', trusted_failures INTEGER NOT NULL DEFAULT 0, progress_at INTEGER, deadline INTEGER,
        UNIQUE (run_id, round, idx, replica));
      INSERT INTO shards_v4 (id, run_id, round, idx, verdict, from_step, to_step, status, worker_id, lease_until, attempts, steps_done, result_key,
        result_sha256, loss, images_per_second, rejections, created_at, completed_at, failed_by, trusted_failures, progress_at, deadline)
      SELECT id, run_id, round, idx, CASE WHEN status = 'DONE' THEN 'ACCEPTED' END, from_step, to_step, status, worker_id, lease_until, attempts,
        steps_done, result_key, result_sha256, loss, images_per_second, rejections, created_at, completed_at, failed_by, trusted_failures,
        progress_at, deadline FROM shards;
      DROP TABLE shards;
      ALTER TABLE shards_v4 RENAME TO shards;
      CREATE INDEX shards_status ON shards(status);
      CREATE INDEX shards_run ON shards(run_id, round, idx);
      CREATE INDEX shards_worker ON shards(worker_id);
      ALTER TABLE workers ADD COLUMN address TEXT NOT NULL DEFAULT '';
      ALTER TABLE workers ADD COLUMN agreed INTEGER NOT NULL DEFAULT 0;
      ALTER TABLE workers ADD COLUMN disagreed INTEGER NOT NULL DEFAULT 0;
      ALTER TABLE workers ADD COLUMN streak INTEGER NOT NULL DEFAULT 0;
      ALTER TABLE workers ADD COLUMN demoted INTEGER NOT NULL DEFAULT 0;
      ALTER TABLE workers ADD COLUMN kernel_class TEXT;`);
  },
  // 5: a shard's window pack (the training records its steps read, which its worker downloads
  // instead of the whole split; none for shards planned before), and what its worker downloaded.
  (db) => {
    db.exec(`ALTER TABLE shards ADD COLUMN pack_key TEXT;
      ALTER TABLE shards ADD COLUMN pack_sha256 TEXT;
      ALTER TABLE shards ADD COLUMN pack_bytes INTEGER;
      ALTER TABLE shards ADD COLUMN downloaded_bytes INTEGER;`);
  },
  // 6: how a worker chose its backend, with the timings it measured.
  (db) => db.exec('ALTER TABLE workers ADD COLUMN backend_choice TEXT'),
  // 7: verified compute against collusion. Workers belong to a group (network prefix, token; rows
  // from before count by their address) and earn trust per kernel class; a replica knows the class
  // it was claimed with and may be reserved for one class or for registered workers, records the
  // votes behind an accepted result, when its lease began and was completed, and since when it has
  // waited; a run records why it waits, each round's starting state and its rollbacks.
  (db) => {
    db.exec(`ALTER TABLE workers ADD COLUMN party TEXT NOT NULL DEFAULT '';
      ALTER TABLE workers ADD COLUMN origin TEXT NOT NULL DEFAULT '';
      UPDATE workers SET party = 'host:' || address;
      CREATE TABLE worker_classes (worker_id TEXT NOT NULL, kernel_class TEXT NOT NULL, agreed INTEGER NOT NULL DEFAULT 0,
        disagreed INTEGER NOT NULL DEFAULT 0, streak INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (worker_id, kernel_class));
      ALTER TABLE shards ADD COLUMN lease_class TEXT;
      ALTER TABLE shards ADD COLUMN need_class TEXT;
      ALTER TABLE shards ADD COLUMN registered_only INTEGER NOT NULL DEFAULT 0;
      ALTER TABLE shards ADD COLUMN votes INTEGER;
      ALTER TABLE shards ADD COLUMN required INTEGER;
      ALTER TABLE shards ADD COLUMN leased_at INTEGER;
      ALTER TABLE shards ADD COLUMN submitted_at INTEGER;
      ALTER TABLE shards ADD COLUMN pending_since INTEGER;
      UPDATE shards SET pending_since = CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) WHERE status = 'PENDING';
      UPDATE shards SET lease_class = kernel_class WHERE kernel_class IS NOT NULL;
      ALTER TABLE runs ADD COLUMN waiting TEXT;
      ALTER TABLE runs ADD COLUMN round_states TEXT NOT NULL DEFAULT '[]';
      ALTER TABLE runs ADD COLUMN rollbacks TEXT NOT NULL DEFAULT '[]';`);
  },
  // 8: a dataset may be private (its runs never admit volunteers).
  (db) => db.exec('ALTER TABLE datasets ADD COLUMN private INTEGER NOT NULL DEFAULT 0'),
  // 9: a dataset's class names (JSON), when its source named them.
  (db) => db.exec('ALTER TABLE datasets ADD COLUMN class_names TEXT'),
  // 10: who created an upload (only they may use it; readers' pending uploads are counted) and when it was used
  // (its bytes stay until its URL has expired, so that a PUT after use rewrites them rather than leaving a file behind).
  (db) => db.exec("ALTER TABLE uploads ADD COLUMN owner TEXT NOT NULL DEFAULT 'admin'; ALTER TABLE uploads ADD COLUMN used_at TEXT; " +
    'CREATE INDEX uploads_owner ON uploads(owner)'),
];

export const SCHEMA_VERSION = MIGRATIONS.length;

export function openDatabase(dataDir: string): Db {
  const db = new Database(join(dataDir, 'partune.sqlite'));
  db.pragma('journal_mode = WAL');
  db.pragma('busy_timeout = 5000');
  migrate(db);
  return db;
}

export function migrate(db: Db): void {
  const version = db.pragma('user_version', { simple: true }) as number;
  if (version > SCHEMA_VERSION) throw new Error(`the database is at schema version ${version}, newer than this server's ${SCHEMA_VERSION}: upgrade partune`);
  for (let v = version; v < SCHEMA_VERSION; v++) {
    db.transaction(() => {
      MIGRATIONS[v](db);
      db.pragma(`user_version = ${v + 1}`);
    })();
  }
}

const statements = new WeakMap<Db, Map<string, Database.Statement>>();

/** The statement for `sql`, compiled once per database (the repositories' SQL is a small fixed set). */
export function prepared(db: Db, sql: string): Database.Statement {
  let cache = statements.get(db);
  if (!cache) statements.set(db, (cache = new Map()));
  let statement = cache.get(sql);
  if (!statement) cache.set(sql, (statement = db.prepare(sql)));
  return statement;
}
