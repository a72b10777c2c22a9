// Run metadata in SQLite under the data directory: a restarted server lists every run and
// resumes the unfinished ones. Blobs live in object storage; rows only name them.
import Database from 'better-sqlite3';
import { join } from 'node:path';

export type Db = Database.Database;

const SCHEMA = `
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

export function openDb(dataDir: string): Db {
  const db = new Database(join(dataDir, 'partune.sqlite'));
  db.pragma('journal_mode = WAL');
  db.pragma('busy_timeout = 5000');
  db.exec(SCHEMA);
  migrate(db);
  return db;
}

/** Columns added after the first release: added in place to older databases. */
function migrate(db: Db): void {
  const columns = new Set((db.prepare('PRAGMA table_info(runs)').all() as { name: string }[]).map((c) => c.name));
  if (!columns.has('kind')) db.exec("ALTER TABLE runs ADD COLUMN kind TEXT NOT NULL DEFAULT 'FINETUNE'");
  if (!columns.has('spec')) db.exec('ALTER TABLE runs ADD COLUMN spec TEXT');
  if (!columns.has('report')) db.exec('ALTER TABLE runs ADD COLUMN report TEXT');
}

export const nowIso = (): string => new Date().toISOString();
export const parseJson = <T>(s: string | null | undefined, fallback: T): T => (s ? (JSON.parse(s) as T) : fallback);

export interface ModelRow {
  id: string; name: string; config: string; params: number; weights_sha256: string; blob_key: string; blob_sha256: string;
  bytes: number; source: string; created_at: string;
}
export interface DatasetShard { split: 'train' | 'test'; key: string; sha256: string; count: number; bytes: number }
export interface DatasetRow {
  id: string; name: string; classes: number; height: number; width: number; channels: number; train_count: number;
  test_count: number; shards: string; source: string; created_at: string;
}
export type RunKind = 'FINETUNE' | 'ANGLE_PROBE' | 'SOUP';
export type RunStatus = 'PREPARING' | 'RUNNING' | 'FINALIZING' | 'SUCCEEDED' | 'FAILED' | 'CANCELLED';
export const ACTIVE: readonly RunStatus[] = ['PREPARING', 'RUNNING', 'FINALIZING'];
export interface RunRow {
  id: string; model_id: string; dataset_id: string; strategy: string; strategy_name: string; hyper: string; plan: string | null;
  status: RunStatus; round: number; step: number; state_key: string | null; state_sha256: string | null; normalization: string | null;
  num_classes: number | null; tuned_params: number | null; total_params: number | null; metrics: string; accuracy: number | null;
  loss: number | null; delta_id: string | null; error: string | null; created_at: string; updated_at: string; finished_at: string | null;
  kind: RunKind;
  /** ANGLE_PROBE: the selection to derive; SOUP: method, ingredients, held-out size. */
  spec: string | null;
  /** SOUP: per-ingredient and soup accuracies, greedy steps. */
  report: string | null;
}
export interface StrategyRow { name: string; spec: string; model_id: string | null; source: string; created_at: string }
export interface AngleProfileRow {
  id: string; run_id: string; model_id: string; dataset_id: string; probe: string; angles: string; tensor_angles: string;
  direction: string; top_k: number; strategy_name: string; created_at: string;
}
export type ShardStatus = 'PENDING' | 'LEASED' | 'DONE' | 'CANCELLED';
export interface ShardRow {
  id: string; run_id: string; round: number; idx: number; from_step: number; to_step: number; status: ShardStatus;
  worker_id: string | null; lease_until: number | null; attempts: number; steps_done: number; result_key: string | null;
  result_sha256: string | null; loss: number | null; images_per_second: number | null; rejections: string; created_at: string;
  completed_at: string | null;
}
export interface WorkerRow {
  id: string; name: string; kind: string; backend: string; last_seen: number; shards_done: number; samples: number;
  images_per_second: number | null; current_shard: string | null; created_at: string;
}
export interface DeltaRow {
  id: string; run_id: string; key: string; sha256: string; bytes: number; tensors: number; tuned_params: number; dtype: string;
  merged_model_id: string | null; created_at: string;
}
export interface UploadRow { id: string; key: string; filename: string; declared_bytes: number; created_at: string }
