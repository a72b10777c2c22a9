// The shard protocol: workers register, claim a shard under a lease, heartbeat, upload their
// update by presigned URL and complete. Expired leases return shards to the queue; completions are
// idempotent; an update with the wrong tensors, shapes, dtype or values is rejected and re-issued.
import { randomUUID } from 'node:crypto';
import { inspect, parseState, tunedShapes } from '../../engine';
import { keys, sha256 } from '../../storage';
import { DatasetShard, RunRow, ShardRow, WorkerRow, nowIso, parseJson } from '../db';
import { badInput, conflict, notFound } from '../errors';
import { Platform } from '../platform';
import { Catalog, Page, page } from './catalog';
import { Hyper, trainOptions } from './plan';
import { Runs, modelConfig } from './runs';

/** A shard that failed this many times fails its run: the fault is the job, not the workers. */
const MAX_ATTEMPTS = 5;
const ONLINE_MS = 30_000;

export interface Download { readonly url: string; readonly sha256: string; readonly bytes: number }

export interface Assignment {
  readonly shard: ShardRow;
  readonly leaseUntil: Date;
  /** Everything the engine needs besides the downloads: strategy, classes, normalisation, options, window. */
  readonly job: Record<string, unknown>;
  readonly model: Download;
  readonly train: Download[];
  readonly state: Download;
  readonly uploadUrl: string;
}

export class Shards {
  constructor(private readonly p: Platform, private readonly catalog: Catalog, private readonly runs: Runs) {}

  // ---- workers
  register(name: string, kind: string, backend: string): WorkerRow {
    if (!['node', 'browser'].includes(kind)) throw badInput("kind must be 'node' or 'browser'");
    const row: WorkerRow = {
      id: randomUUID(), name: name.slice(0, 80), kind, backend: backend.slice(0, 80), last_seen: Date.now(), shards_done: 0, samples: 0,
      images_per_second: null, current_shard: null, created_at: nowIso(),
    };
    this.p.db.prepare(`INSERT INTO workers VALUES (@id, @name, @kind, @backend, @last_seen, @shards_done, @samples, @images_per_second, @current_shard, @created_at)`).run(row);
    this.p.log(`worker ${row.name} (${kind}, ${backend}) joined`);
    return row;
  }

  worker(id: string): WorkerRow {
    const row = this.p.db.prepare('SELECT * FROM workers WHERE id = ?').get(id) as WorkerRow | undefined;
    if (!row) throw notFound(`worker ${id} is not registered (register again)`);
    this.p.db.prepare('UPDATE workers SET last_seen = ? WHERE id = ?').run(Date.now(), id);
    return row;
  }

  workers(onlineOnly: boolean, first: number, offset: number): Page<WorkerRow> {
    const since = onlineOnly ? Date.now() - ONLINE_MS : 0;
    const rows = this.p.db.prepare('SELECT * FROM workers WHERE last_seen > ? ORDER BY created_at DESC LIMIT ? OFFSET ?').all(since, first, offset) as WorkerRow[];
    const total = (this.p.db.prepare('SELECT COUNT(*) AS n FROM workers WHERE last_seen > ?').get(since) as { n: number }).n;
    return page(rows, total, offset);
  }

  onlineCount(): number {
    return (this.p.db.prepare('SELECT COUNT(*) AS n FROM workers WHERE last_seen > ?').get(Date.now() - ONLINE_MS) as { n: number }).n;
  }

  isOnline = (w: WorkerRow): boolean => w.last_seen > Date.now() - ONLINE_MS;

  // ---- shards
  shardsOf(runId: string, round?: number): ShardRow[] {
    return (round === undefined
      ? this.p.db.prepare('SELECT * FROM shards WHERE run_id = ? ORDER BY round, idx').all(runId)
      : this.p.db.prepare('SELECT * FROM shards WHERE run_id = ? AND round = ? ORDER BY idx').all(runId, round)) as ShardRow[];
  }

  /** Returns expired leases to the queue; run by a timer and before each claim. */
  expireLeases(): number {
    const expired = this.p.db.prepare("SELECT * FROM shards WHERE status = 'LEASED' AND lease_until < ?").all(Date.now()) as ShardRow[];
    for (const s of expired) {
      const changed = this.p.db.prepare("UPDATE shards SET status = 'PENDING', worker_id = NULL, steps_done = 0, rejections = ? WHERE id = ? AND status = 'LEASED' AND attempts = ?")
        .run(JSON.stringify([...parseJson<string[]>(s.rejections, []), `attempt ${s.attempts}: lease expired (worker ${s.worker_id} silent)`]), s.id, s.attempts);
      if (changed.changes) this.runs.emit(this.runs.get(s.run_id), 'WARNING', { message: `shard ${s.round}.${s.idx}: lease of worker ${s.worker_id} expired; re-issued` });
    }
    return expired.length;
  }

  /**
   * What a worker holds for a shard of this run: the base weights, gradients and two AdamW moments
   * (at most four copies of the model) and the training split; activations come on top.
   */
  memoryNeed(run: RunRow): number {
    const model = this.catalog.model(run.model_id);
    const train = parseJson<DatasetShard[]>(this.catalog.dataset(run.dataset_id).shards, []).filter((s) => s.split === 'train');
    return 4 * model.bytes + train.reduce((n, s) => n + s.bytes, 0);
  }

  /** Leases the oldest pending shard that fits the worker's memory budget (bytes), if it gave one. */
  async claim(workerId: string, memoryBudget?: number): Promise<Assignment | null> {
    const internal = this.worker(workerId).kind === 'node'; // browsers get URLs on S3_PUBLIC_ENDPOINT
    this.expireLeases();
    const leaseMs = this.p.config.leaseSeconds * 1000;
    const shard = this.p.db.transaction((): ShardRow | undefined => {
      const pending = this.p.db.prepare(`SELECT s.* FROM shards s JOIN runs r ON r.id = s.run_id
        WHERE s.status = 'PENDING' AND r.status = 'RUNNING' AND s.round = r.round ORDER BY r.created_at, s.round, s.idx LIMIT 100`).all() as ShardRow[];
      const s = pending.find((c) => memoryBudget === undefined || this.memoryNeed(this.runs.get(c.run_id)) <= memoryBudget);
      if (!s) return undefined;
      this.p.db.prepare("UPDATE shards SET status = 'LEASED', worker_id = ?, lease_until = ?, attempts = attempts + 1, steps_done = 0 WHERE id = ?")
        .run(workerId, Date.now() + leaseMs, s.id);
      this.p.db.prepare('UPDATE workers SET current_shard = ? WHERE id = ?').run(s.id, workerId);
      return this.p.db.prepare('SELECT * FROM shards WHERE id = ?').get(s.id) as ShardRow;
    })();
    if (!shard) return null;
    const run = this.runs.get(shard.run_id);
    const model = this.catalog.model(run.model_id);
    const dataset = this.catalog.dataset(run.dataset_id);
    const hyper = parseJson<Hyper>(run.hyper, {} as Hyper);
    const seconds = this.p.config.urlSeconds;
    const get = async (key: string, sha: string, bytes: number): Promise<Download> => ({ url: await this.p.store.presignGet(key, seconds, internal), sha256: sha, bytes });
    const stateInfo = await this.p.store.stat(run.state_key!);
    const assignment: Assignment = {
      shard,
      leaseUntil: new Date(shard.lease_until!),
      job: {
        runId: run.id, round: shard.round, shardId: shard.id, attempt: shard.attempts, strategy: JSON.parse(run.strategy), numClasses: run.num_classes,
        normalization: JSON.parse(run.normalization!), options: trainOptions(hyper), trainLimit: hyper.trainLimit, window: { from: shard.from_step, to: shard.to_step },
        heartbeatSeconds: Math.max(1, Math.floor(this.p.config.leaseSeconds / 4)),
      },
      model: await get(model.blob_key, model.blob_sha256, model.bytes),
      train: await Promise.all(parseJson<DatasetShard[]>(dataset.shards, []).filter((s) => s.split === 'train').map((s) => get(s.key, s.sha256, s.bytes))),
      state: await get(run.state_key!, run.state_sha256!, stateInfo?.bytes ?? 0),
      uploadUrl: await this.p.store.presignPut(keys.shardUpdate(run.id, shard.id, shard.attempts), seconds, internal),
    };
    this.runs.emit(run, 'SHARD', { message: `shard ${shard.round}.${shard.idx} (steps ${shard.from_step}-${shard.to_step}) leased to worker ${workerId}` });
    return assignment;
  }

  private leased(workerId: string, shardId: string, attempt: number): { shard: ShardRow; run: RunRow } | { lost: string } {
    const shard = this.p.db.prepare('SELECT * FROM shards WHERE id = ?').get(shardId) as ShardRow | undefined;
    if (!shard) throw notFound(`shard ${shardId} not found`);
    const run = this.runs.get(shard.run_id);
    if (shard.status === 'CANCELLED' || run.status === 'CANCELLED') return { lost: 'the run was cancelled' };
    if (shard.status !== 'LEASED' || shard.worker_id !== workerId || shard.attempts !== attempt) return { lost: 'the lease expired and the shard was re-issued' };
    return { shard, run };
  }

  heartbeat(workerId: string, shardId: string, attempt: number, stepsDone: number, loss: number | undefined): { cancelled: boolean; reason?: string; leaseUntil?: Date } {
    this.worker(workerId);
    const l = this.leased(workerId, shardId, attempt);
    if ('lost' in l) return { cancelled: true, reason: l.lost };
    const until = Date.now() + this.p.config.leaseSeconds * 1000;
    const steps = Math.max(0, Math.min(l.shard.to_step - l.shard.from_step, Math.floor(stepsDone)));
    this.p.db.prepare('UPDATE shards SET lease_until = ?, steps_done = ? WHERE id = ?').run(until, steps, shardId);
    this.runs.emit(l.run, 'SHARD', { trainLoss: Number.isFinite(loss) ? loss : undefined });
    return { cancelled: false, leaseUntil: new Date(until) };
  }

  /** Validates the uploaded update; accepts it once (repeats are no-ops), or rejects and re-issues. */
  async complete(workerId: string, shardId: string, attempt: number, loss: number, imagesPerSecond: number): Promise<ShardRow> {
    this.worker(workerId);
    const done = this.p.db.prepare('SELECT * FROM shards WHERE id = ?').get(shardId) as ShardRow | undefined;
    if (done?.status === 'DONE' && done.worker_id === workerId && done.attempts === attempt) return done; // a retried completion
    const l = this.leased(workerId, shardId, attempt);
    if ('lost' in l) throw conflict(`shard ${shardId}: ${l.lost}; its result is not used`);
    const { shard, run } = l;
    const key = keys.shardUpdate(run.id, shard.id, attempt);
    let digest: string;
    try {
      const info = await this.p.store.stat(key);
      if (!info) throw new Error('nothing was uploaded to the shard\'s URL');
      const bytes = await this.p.store.get(key);
      digest = sha256(bytes);
      const config = modelConfig(this.catalog.model(run.model_id), run.num_classes!);
      const expected = tunedShapes(config, inspect(JSON.parse(run.strategy), config).tuned);
      const update = parseState(bytes, expected, 'update');
      const hyper = parseJson<Hyper>(run.hyper, {} as Hyper);
      const want = { run: run.id, round: shard.round, shard: shard.id, samples: (shard.to_step - shard.from_step) * hyper.batchSize };
      for (const k of ['run', 'round', 'shard', 'samples'] as const) {
        if (update.label[k] !== want[k]) throw new Error(`it claims ${k} ${update.label[k]}, this shard is ${k} ${want[k]}`);
      }
      if (!Number.isFinite(loss)) throw new Error(`reported loss ${loss}`);
    } catch (e) {
      const reason = `attempt ${attempt} by worker ${workerId}: ${(e as Error).message}`;
      const requeued = shard.attempts >= MAX_ATTEMPTS ? 'CANCELLED' : 'PENDING';
      this.p.db.prepare('UPDATE shards SET status = ?, worker_id = NULL, steps_done = 0, rejections = ? WHERE id = ?')
        .run(requeued, JSON.stringify([...parseJson<string[]>(shard.rejections, []), reason]), shard.id);
      this.p.db.prepare('UPDATE workers SET current_shard = NULL WHERE id = ?').run(workerId);
      this.runs.emit(run, 'WARNING', { message: `shard ${shard.round}.${shard.idx}: update rejected (${reason})` });
      if (requeued === 'CANCELLED') this.runs.fail(run.id, `shard ${shard.round}.${shard.idx} failed ${MAX_ATTEMPTS} times; last: ${reason}`);
      throw badInput(`update rejected: ${(e as Error).message}; the shard is re-issued`);
    }
    const samples = (shard.to_step - shard.from_step) * parseJson<Hyper>(run.hyper, {} as Hyper).batchSize;
    this.p.db.transaction(() => {
      this.p.db.prepare(`UPDATE shards SET status = 'DONE', result_key = ?, result_sha256 = ?, loss = ?, images_per_second = ?, steps_done = to_step - from_step, completed_at = ?
        WHERE id = ?`).run(key, digest, loss, imagesPerSecond, nowIso(), shard.id);
      this.p.db.prepare(`UPDATE workers SET shards_done = shards_done + 1, samples = samples + ?, images_per_second = ?, current_shard = NULL WHERE id = ?`)
        .run(samples, imagesPerSecond, workerId);
    })();
    this.runs.emit(run, 'SHARD', { trainLoss: loss, message: `shard ${shard.round}.${shard.idx} done by worker ${workerId} (${imagesPerSecond.toFixed(1)} img/s)` });
    void this.runs.advance(run.id);
    return this.p.db.prepare('SELECT * FROM shards WHERE id = ?').get(shardId) as ShardRow;
  }

  /** A worker gives a shard back (it hit an error): re-issued, and counted towards failing the run. */
  fail(workerId: string, shardId: string, attempt: number, message: string): boolean {
    this.worker(workerId);
    const l = this.leased(workerId, shardId, attempt);
    if ('lost' in l) return false;
    const { shard, run } = l;
    const reason = `attempt ${attempt} by worker ${workerId} failed: ${message.slice(0, 500)}`;
    const status = shard.attempts >= MAX_ATTEMPTS ? 'CANCELLED' : 'PENDING';
    this.p.db.prepare('UPDATE shards SET status = ?, worker_id = NULL, steps_done = 0, rejections = ? WHERE id = ?')
      .run(status, JSON.stringify([...parseJson<string[]>(shard.rejections, []), reason]), shard.id);
    this.p.db.prepare('UPDATE workers SET current_shard = NULL WHERE id = ?').run(workerId);
    this.runs.emit(run, 'WARNING', { message: `shard ${shard.round}.${shard.idx}: ${reason}` });
    if (status === 'CANCELLED') this.runs.fail(run.id, `shard ${shard.round}.${shard.idx} failed ${MAX_ATTEMPTS} times; last: ${reason}`);
    return true;
  }
}
