// Both state stores, the same suite: SQLite on a real database file and PostgreSQL on a real
// server. Rows are decoded once and a bad one is an error naming where it went wrong; every
// conditional transition refuses a stale caller; databases are migrated in place.
import Database from 'better-sqlite3';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseVitConfig, preset } from '../engine';
import { DecodeError } from '../protocol/decode';
import { parseRunOptions } from '../protocol/run-options';
import type { DatasetRecord, ModelRecord, RunRecord } from '../server/state/records';
import { SCHEMA_VERSION } from '../server/state/sqlite/database';
import { openSqliteState } from '../server/state/sqlite';
import type { StateStore } from '../server/state/store';
import { openPostgresState } from '../server/state/postgres';
import { PG_SCHEMA_VERSION } from '../server/state/postgres/database';
import { postgresForThisFile, sqlOn } from './support/postgres';
import pg from 'pg';
import { describeUnless } from './support/skip';

const MB = 2 ** 20;

function model(id: string, bytes = 10 * MB): ModelRecord {
  return {
    id, name: `m-${id}`, config: preset('vit_micro_patch4_28'), params: 1, weightsSha256: 'w', blob: { key: `k-${id}`, sha256: 's', bytes },
    source: 'test', createdAt: new Date(),
  };
}

const dataset: DatasetRecord = {
  id: 'd', name: 'digits', classes: 10, height: 28, width: 28, channels: 1, trainCount: 100, testCount: 10, source: 'test', createdAt: new Date(),
  shards: [{ split: 'train', key: 'tr', sha256: 'a', count: 100, bytes: 5 * MB }, { split: 'test', key: 'te', sha256: 'b', count: 10, bytes: MB }],
};

function run(id: string, modelId: string, at: number, memoryNeed = 0): RunRecord {
  return {
    id, spec: { kind: 'FINETUNE', options: parseRunOptions({ epochs: 1, testLimit: 5 }) }, modelId, datasetId: 'd', strategy: { kind: 'preset', name: 'attn-only' },
    strategyName: 'attn-only', status: 'PREPARING', plan: null, round: 0, step: 0, state: null, normalization: null, numClasses: 10, tunedParams: 5,
    totalParams: 9, memoryNeed, metrics: [], accuracy: null, loss: null, deltaId: null, error: null, public: false, createdAt: new Date(at), updatedAt: new Date(at), finishedAt: null,
  };
}

const plan = { trainImages: 100, stepsPerEpoch: 3, totalSteps: 3, shardsPerRound: 1, rounds: [[0, 3]] as [number, number][] };
const start = { plan, state: { key: 'state-0', sha256: 'x' }, normalization: { mean: [0.5], std: [0.25] } };
const pack = { key: 'windows/p.safetensors', sha256: 'p', bytes: 3 * 32 * 785 };
const oneShard = [{ index: 0, replica: 0, need: 1, fromStep: 0, toStep: 3, pack }];
const budget = { distinctWorkers: 3, trustedFailures: 3, quarantineStrikes: 2 };
const FAR = new Date(0);
const trustedW1 = { id: 'w1', trusted: true, address: '10.0.0.1' };
const volunteer = (id: string, address = '10.0.0.9') => ({ id, trusted: false, address });

/** A store on a fresh database, and a way to write to that database behind the store's back. */
interface Opened {
  readonly state: StateStore;
  raw(sql: string): Promise<void>;
}

const postgres = postgresForThisFile();

const STORES: [string, (() => Promise<Opened>) | string][] = [
  ['SQLite', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'partune-state-'));
    return {
      state: openSqliteState(dir),
      async raw(sql) {
        const db = new Database(join(dir, 'partune.sqlite'));
        db.exec(sql);
        db.close();
      },
    };
  }],
  ['PostgreSQL', postgres.skip ?? (async () => {
    const url = await postgres.database();
    return { state: await openPostgresState(url), raw: (sql) => sqlOn(url, sql) };
  })],
];

describe.each(STORES)('%s state store', (_name, open) => {
  if (typeof open === 'string') {
    it.skip(`skipped: ${open}`, () => undefined);
    return;
  }
  let state: StateStore;
  let raw: Opened['raw'];
  const worker = {
    id: 'w1', name: 'w1', kind: 'node' as const, backend: 'wasm', lastSeen: new Date(), shardsDone: 0, samples: 0, imagesPerSecond: null, currentShard: null,
    trusted: true, strikes: 0, quarantinedAt: null, address: '10.0.0.1', agreed: 0, disagreed: 0, streak: 0, demoted: false, kernelClass: null, backendChoice: null,
    createdAt: new Date(),
  };

  beforeEach(async () => {
    ({ state, raw } = await open());
    await state.models.insert(model('m'));
    await state.datasets.insert(dataset);
    await state.workers.insert(worker);
  });
  afterEach(() => state.close());

  it('round-trips records, JSON columns included', async () => {
    const r = run('r1', 'm', 1);
    await state.runs.insert(r);
    expect(await state.runs.get('r1')).toEqual(r);
    const stored = model('n');
    await state.models.insert(stored);
    expect(await state.models.byIdOrName('m-n')).toEqual(stored);
    expect((await state.datasets.byIdOrName('digits'))!.shards).toEqual(dataset.shards);
    expect(await state.models.insert({ ...model('other'), name: 'm-n' })).toBe(false); // the name is taken
    const choice = {
      chosen: 'wasm', detail: 'WebAssembly, products on engine GEMM (fma, 2 threads)', how: 'measured', model: '28x1/p4,d64x6h4m128,c10,attn-only,b32',
      timings: [{ backend: 'wasm', detail: 'WebAssembly', imagesPerSecond: 211.5, note: null }, { backend: 'webgpu', detail: 'WebGPU on google swiftshader', imagesPerSecond: null, note: 'never chosen: a fallback adapter' }],
    };
    await state.workers.setBackendChoice('w1', choice);
    expect(await state.workers.get('w1')).toEqual({ ...worker, backend: 'wasm', backendChoice: choice, lastSeen: expect.any(Date), createdAt: expect.any(Date) });
  });

  it('lists runs newest first by status, kind, model and visibility, with the total that matches', async () => {
    await state.models.insert(model('other'));
    await state.runs.insert(run('old', 'm', 1));
    await state.runs.insert(run('new', 'other', 2));
    await state.runs.insert(run('stopped', 'm', 3));
    await state.runs.stop('stopped', 'CANCELLED');
    await state.runs.setPublic('old', true);
    const ids = async (filter: Parameters<StateStore['runs']['list']>[0], first = 10, offset = 0): Promise<[string[], number]> => {
      const p = await state.runs.list(filter, first, offset);
      return [p.items.map((r) => r.id), p.total];
    };
    expect(await ids({})).toEqual([['stopped', 'new', 'old'], 3]);
    expect(await ids({ modelId: 'm' })).toEqual([['stopped', 'old'], 2]);
    expect(await ids({ modelId: 'm', status: 'PREPARING' })).toEqual([['old'], 1]);
    expect(await ids({ publicOnly: true, kind: 'FINETUNE', datasetId: 'd' })).toEqual([['old'], 1]);
    expect(await ids({ kind: 'SOUP' })).toEqual([[], 0]);
    expect(await ids({}, 1, 1)).toEqual([['new'], 3]);
  });

  it('a row that does not decode is an error naming its table, id and column', async () => {
    await state.runs.insert(run('r1', 'm', 1));
    await raw(`UPDATE runs SET hyper = '{"epochs": 0}' WHERE id = 'r1'`);
    await expect(state.runs.get('r1')).rejects.toThrow(new DecodeError('runs row r1: hyper: the number of epochs must be an integer from 1 to 10000 (got 0)'));
    await raw(`UPDATE runs SET hyper = '{}', metrics = 'not json' WHERE id = 'r1'`);
    await expect(state.runs.get('r1')).rejects.toThrow('runs row r1: metrics: is not JSON');
    await raw(`UPDATE runs SET metrics = '[]', plan = '{"trainImages": 64, "stepsPerEpoch": 2, "totalSteps": 2, "shardsPerRound": 1, "rounds": [[2, 0]]}' WHERE id = 'r1'`);
    await expect(state.runs.get('r1')).rejects.toThrow('runs row r1: plan.rounds: must be a list of [from, to) step windows');
    await raw(`UPDATE runs SET plan = NULL, status = 'LOST' WHERE id = 'r1'`);
    await expect(state.runs.list({}, 10, 0)).rejects.toThrow(/runs row r1: status: /);
    await raw(`UPDATE models SET config = '{}' WHERE id = 'm'`);
    await expect(state.models.byIdOrName('m')).rejects.toThrow(/models row m: config: /);
  });

  it('transitions refuse a run that moved on: a cancel wins over a late start, round or success', async () => {
    await state.runs.insert(run('r1', 'm', 1));
    expect(await state.runs.stop('r1', 'CANCELLED')).toBe(true);
    expect(await state.runs.start('r1', start, oneShard)).toBe(false);
    expect(await state.shards.ofRun('r1')).toEqual([]);
    expect(await state.runs.stop('r1', 'FAILED', 'late')).toBe(false);

    await state.runs.insert(run('r2', 'm', 2));
    expect(await state.runs.start('r2', start, oneShard)).toBe(true);
    const outcome = { state: { key: 'state-1', sha256: 'y' }, step: 3, metric: { step: 3, epoch: 1, round: 0, at: 'now' }, finishing: true };
    expect(await state.runs.completeRound('r2', 1, outcome, [])).toBe(false); // not at round 1
    expect(await state.runs.completeRound('r2', 0, outcome, [])).toBe(true);
    expect(await state.runs.completeRound('r2', 0, outcome, [])).toBe(false); // applied once
    const after = (await state.runs.get('r2'))!;
    expect([after.status, after.round, after.metrics]).toEqual(['FINALIZING', 1, [outcome.metric]]);
    expect(await state.runs.stop('r2', 'CANCELLED')).toBe(true);
    const delta = { id: 'delta', runId: 'r2', blob: { key: 'k', sha256: 's', bytes: 1 }, tensors: 1, tunedParams: 1, dtype: 'F32' as const, mergedModelId: null, createdAt: new Date() };
    expect(await state.runs.succeed('r2', { accuracy: 1, loss: 0, tunedParams: 1, delta })).toBe(false);
    expect(await state.results.deltaOfRun('r2')).toBeUndefined();
  });

  it('leases the oldest pending shard that fits the memory budget, as one more attempt', async () => {
    await state.models.insert(model('big', 100 * MB));
    await state.runs.insert(run('big', 'big', 1, 405 * MB));
    await state.runs.insert(run('small', 'm', 2, 45 * MB));
    for (const id of ['big', 'small']) await state.runs.start(id, start, oneShard);
    const until = new Date(Date.now() + 60_000);
    expect((await state.shards.leaseOldest(trustedW1, 100 * MB, until, new Date()))!.runId).toBe('small');
    expect(await state.shards.leaseOldest(trustedW1, 100 * MB, until, new Date())).toBeUndefined();
    const big = (await state.shards.leaseOldest(trustedW1, undefined, until, new Date()))!;
    expect([big.runId, big.status, big.workerId, big.attempts]).toEqual(['big', 'LEASED', 'w1', 1]);
  });

  it('a lease ends once: completion by its holder only, twice counts once; failures and expiries count attempts', async () => {
    await state.runs.insert(run('r1', 'm', 1));
    await state.runs.start('r1', start, oneShard);
    const until = new Date(Date.now() + 60_000);
    const first = (await state.shards.leaseOldest(trustedW1, undefined, until, new Date()))!;
    const result = { update: { key: 'u', sha256: 'h' }, digest: 'd', kernelClass: 'wasm-xnnpack-simd', loss: 1, imagesPerSecond: 2, samples: 96, downloadedBytes: 1234 };
    expect(await state.shards.complete(first.id, 'w2', 1, result)).toBe(false); // not the holder
    expect(await state.shards.complete(first.id, 'w1', 2, result)).toBe(false); // not this attempt
    expect(await state.shards.release(first.id, 'w1', 1, 'attempt 1 failed', budget)).toBe('requeued');
    expect(await state.shards.release(first.id, 'w1', 1, 'attempt 1 failed again', budget)).toBe('lost');
    await state.shards.leaseOldest(trustedW1, undefined, new Date(Date.now() - 1), new Date()); // attempt 2, already lapsed
    expect((await state.shards.expire(new Date(), FAR, budget)).map((e) => e.release)).toEqual(['requeued']);
    await state.shards.leaseOldest(trustedW1, undefined, until, new Date()); // attempt 3
    expect(await state.shards.lastSpeed('r1', 'w1')).toBeUndefined();
    expect(await state.shards.complete(first.id, 'w1', 3, result)).toBe(true);
    expect(await state.shards.complete(first.id, 'w1', 3, result)).toBe(false);
    expect([await state.shards.lastSpeed('r1', 'w1'), await state.shards.lastSpeed('r1', 'w2')]).toEqual([2, undefined]); // what a deadline is measured by
    const done = (await state.shards.get(first.id))!;
    expect([done.status, done.attempts, done.rejections]).toEqual(['DONE', 3, ['attempt 1 failed', 'attempt 2: lease expired (worker w1)']]);
    expect([done.pack, done.downloadedBytes]).toEqual([pack, 1234]);
    const w = (await state.workers.touch('w1', new Date()))!;
    expect([w.shardsDone, w.samples, w.currentShard]).toEqual([1, 96, null]);
  });

  it('a shard whose leases by a trusted worker keep lapsing is cancelled at its budget, not re-issued forever', async () => {
    await state.runs.insert(run('r1', 'm', 1));
    await state.runs.start('r1', start, oneShard);
    const releases = [];
    for (let i = 0; i < 3; i++) {
      await state.shards.leaseOldest(trustedW1, undefined, new Date(Date.now() - 1), new Date());
      releases.push(...(await state.shards.expire(new Date(), FAR, budget)).map((e) => e.release));
    }
    expect(releases).toEqual(['requeued', 'requeued', 'exhausted']);
    expect((await state.shards.ofRun('r1'))[0].status).toBe('CANCELLED');
    expect(await state.shards.leaseOldest(trustedW1, undefined, new Date(Date.now() + 60_000), new Date())).toBeUndefined();
  });

  it('volunteers: a failure never reaches a volunteer twice, fails no run alone, and quarantines at the strike budget', async () => {
    await state.runs.insert(run('r1', 'm', 1));
    await state.runs.start('r1', start, oneShard);
    const until = new Date(Date.now() + 60_000);
    for (const id of ['v1', 'v2', 'v3', 'v4']) await state.workers.insert({ ...worker, id, name: id, trusted: false });
    for (const id of ['v1', 'v2', 'v3']) {
      const s = (await state.shards.leaseOldest(volunteer(id), undefined, until, new Date()))!;
      expect(await state.shards.release(s.id, id, s.attempts, `${id} gave up`, budget)).toBe('requeued');
      expect(await state.shards.leaseOldest(volunteer(id), undefined, until, new Date())).toBeUndefined(); // not the one it failed
    }
    const again = (await state.shards.get((await state.shards.ofRun('r1'))[0].id))!;
    expect([again.status, again.failedBy, again.trustedFailures]).toEqual(['PENDING', ['v1', 'v2', 'v3'], 0]);
    // A trusted failure on top of three distinct ones exhausts it.
    const s = (await state.shards.leaseOldest(trustedW1, undefined, until, new Date()))!;
    expect(await state.shards.release(s.id, 'w1', s.attempts, 'trusted gave up', budget)).toBe('exhausted');
    // v1's second strike quarantines it; a trusted worker is never quarantined.
    await state.runs.insert(run('r2', 'm', 2));
    await state.runs.start('r2', start, oneShard);
    const t = (await state.shards.leaseOldest(volunteer('v1'), undefined, until, new Date()))!;
    await state.shards.release(t.id, 'v1', t.attempts, 'again', budget);
    const v1 = (await state.workers.touch('v1', new Date()))!;
    expect([v1.strikes, v1.quarantinedAt instanceof Date]).toEqual([2, true]);
    expect((await state.workers.touch('w1', new Date()))!.quarantinedAt).toBeNull();
  });

  it('replicas: never two of one index to a worker or to two volunteers of one address; a verdict settles the index at once', async () => {
    await state.runs.insert(run('r1', 'm', 1));
    const quorum = [0, 1, 2].map((replica) => ({ index: 0, replica, need: 2, fromStep: 0, toStep: 3, pack }));
    await state.runs.start('r1', start, quorum);
    for (const [id, address] of [['v1', '10.0.0.9'], ['v2', '10.0.0.9'], ['v3', '10.0.0.7']]) await state.workers.insert({ ...worker, id, name: id, trusted: false, address });
    const until = new Date(Date.now() + 60_000);
    const a = (await state.shards.leaseOldest(volunteer('v1'), undefined, until, new Date()))!;
    expect(await state.shards.leaseOldest(volunteer('v1'), undefined, until, new Date())).toBeUndefined(); // its own index
    expect(await state.shards.leaseOldest(volunteer('v2'), undefined, until, new Date())).toBeUndefined(); // v1's address
    const b = (await state.shards.leaseOldest(volunteer('v3', '10.0.0.7'), undefined, until, new Date()))!;
    const c = (await state.shards.leaseOldest(trustedW1, undefined, until, new Date()))!; // registered workers share hosts freely
    expect([a.replica, b.replica, c.replica]).toEqual([0, 1, 2]);
    const result = (digest: string) => ({ update: { key: `u-${digest}`, sha256: digest }, digest, kernelClass: 'k', loss: 1, imagesPerSecond: 2, samples: 96, downloadedBytes: 1234 });
    expect(await state.shards.complete(a.id, 'v1', 1, result('lie'))).toBe(true);
    expect(await state.shards.complete(b.id, 'v3', 1, result('honest'))).toBe(true);
    const settlement = { runId: 'r1', round: 0, index: 0, accept: b.id, agreed: [], credit: ['v3'], outvoted: [{ id: a.id, reason: 'attempt 1 by worker v1: outvoted' }] };
    expect(await state.shards.settle(settlement, budget)).toBe(true);
    expect(await state.shards.settle(settlement, budget)).toBe(false); // judged once
    const rows = await state.shards.ofIndex('r1', 0, 0);
    expect(rows.map((r) => [r.status, r.verdict])).toEqual([['DONE', 'OUTVOTED'], ['DONE', 'ACCEPTED'], ['CANCELLED', null]]);
    expect(rows[0].rejections).toEqual(['attempt 1 by worker v1: outvoted']);
    expect(await state.shards.addReplica(rows[1], 2)).toBeUndefined(); // settled: no more replicas
    const [v1, v3, w1] = await Promise.all(['v1', 'v3', 'w1'].map(async (id) => (await state.workers.get(id))!));
    expect([v1.disagreed, v1.streak, v1.strikes, v3.agreed, v3.streak, w1.currentShard]).toEqual([1, 0, 1, 1, 1, null]);
  });

  it('replicas: an index takes at most 8; an outvoted worker\'s unchecked results are judged again', async () => {
    await state.runs.insert(run('r1', 'm', 1));
    await state.runs.start('r1', start, oneShard);
    const [first] = await state.shards.ofRun('r1');
    for (let i = 1; i < 8; i++) expect(typeof (await state.shards.addReplica(first, 2))).toBe('object');
    expect(await state.shards.addReplica(first, 2)).toBe('limit');
    const replicas = await state.shards.ofIndex('r1', 0, 0);
    expect(replicas.map((r) => r.need)).toEqual([1, 2, 2, 2, 2, 2, 2, 2]);
    expect(replicas.every((r) => JSON.stringify(r.pack) === JSON.stringify(pack))).toBe(true); // every replica reads the same records

    await state.runs.insert(run('r2', 'm', 2));
    await state.runs.start('r2', start, oneShard);
    await state.shards.leaseOldest(trustedW1, undefined, new Date(Date.now() + 60_000), new Date()); // r1's first replica
    const s = (await state.shards.leaseOldest(trustedW1, undefined, new Date(Date.now() + 60_000), new Date()))!;
    expect(s.runId).toBe('r2');
    await state.shards.complete(s.id, 'w1', 1, { update: { key: 'u', sha256: 'h' }, digest: 'd', kernelClass: 'k', loss: 1, imagesPerSecond: 2, samples: 96, downloadedBytes: 1234 });
    expect(await state.shards.settle({ runId: 'r2', round: 0, index: 0, accept: s.id, agreed: [], credit: [], outvoted: [] }, budget)).toBe(true);
    const again = await state.shards.reverify('w1');
    expect(again.map((r) => [r.id, r.verdict, r.need])).toEqual([[s.id, null, 2]]);
    expect(await state.shards.reverify('w1')).toEqual([]);
  });

  it('a trusted worker\'s check that nobody takes up is found, not one being computed', async () => {
    await state.runs.insert(run('r1', 'm', 1));
    await state.runs.start('r1', start, oneShard);
    await state.workers.insert({ ...worker, id: 'v1', name: 'v1', trusted: false, address: '10.0.0.9' });
    const until = new Date(Date.now() + 60_000);
    const mine = (await state.shards.leaseOldest(trustedW1, undefined, until, new Date()))!;
    await state.shards.setNeed(mine.id, 'w1', 1, 2); // picked for a spot check
    const check = await state.shards.addReplica(mine, 1);
    await state.shards.complete(mine.id, 'w1', 1, { update: { key: 'u', sha256: 'h' }, digest: 'd', kernelClass: 'k', loss: 1, imagesPerSecond: 2, samples: 96, downloadedBytes: 1234 });
    const later = new Date(Date.now() + 1000);
    expect((await state.shards.unclaimedChecks(later)).map((r) => r.id)).toEqual([mine.id]);
    expect((await state.shards.leaseOldest(volunteer('v1'), undefined, until, new Date()))!.id).toBe(typeof check === 'object' ? check.id : 'no replica');
    expect(await state.shards.unclaimedChecks(later)).toEqual([]); // the check is being computed
  });

  it('a lease without progress since the stall time, or past its deadline, ends; progress keeps it', async () => {
    await state.runs.insert(run('r1', 'm', 1));
    await state.runs.start('r1', start, oneShard);
    const t0 = new Date(Date.now() - 10_000);
    const until = new Date(Date.now() + 60_000);
    const s = (await state.shards.leaseOldest(trustedW1, undefined, until, t0))!;
    expect(await state.shards.renew(s.id, 'w1', 1, 0, until, new Date())).toBe(true); // alive, but no step done
    expect(await state.shards.expire(new Date(), new Date(t0.getTime() - 1), budget)).toEqual([]);
    expect(await state.shards.renew(s.id, 'w1', 1, 2, until, new Date())).toBe(true); // two steps: progress now
    expect(await state.shards.expire(new Date(), new Date(Date.now() - 5_000), budget)).toEqual([]);
    const stalled = await state.shards.expire(new Date(Date.now() + 10_000), new Date(Date.now() + 5_000), budget);
    expect(stalled.map((e) => e.shard.rejections.at(-1))).toEqual([expect.stringMatching(/^attempt 1: no progress for \d+ s: lease revoked/)]);
    const next = (await state.shards.leaseOldest(trustedW1, undefined, until, new Date()))!;
    await state.shards.setDeadline(next.id, 'w1', 2, new Date(Date.now() + 1_000));
    expect(await state.shards.renew(next.id, 'w1', 2, 3, until, new Date())).toBe(true);
    expect((await state.shards.get(next.id))!.leaseUntil!.getTime()).toBeLessThanOrEqual(Date.now() + 1_000); // never past the deadline
    const overdue = await state.shards.expire(new Date(Date.now() + 2_000), FAR, budget);
    expect(overdue.map((e) => e.shard.rejections.at(-1))).toEqual([expect.stringMatching(/^attempt 2: held past its deadline/)]);
  });
});

describe('SQLite migrations', () => {
  it('bring a database from before versioned migrations up to date: option names, memory need', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'partune-legacy-'));
    const db = new Database(join(dir, 'partune.sqlite'));
    // The tables as the first releases made them (no kind, spec, report or memory_need column).
    db.exec(`CREATE TABLE models (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, config TEXT NOT NULL, params INTEGER NOT NULL, weights_sha256 TEXT NOT NULL,
        blob_key TEXT NOT NULL, blob_sha256 TEXT NOT NULL, bytes INTEGER NOT NULL, source TEXT NOT NULL, created_at TEXT NOT NULL);
      CREATE TABLE datasets (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, classes INTEGER NOT NULL, height INTEGER NOT NULL, width INTEGER NOT NULL,
        channels INTEGER NOT NULL, train_count INTEGER NOT NULL, test_count INTEGER NOT NULL, shards TEXT NOT NULL, source TEXT NOT NULL, created_at TEXT NOT NULL);
      CREATE TABLE runs (id TEXT PRIMARY KEY, model_id TEXT NOT NULL, dataset_id TEXT NOT NULL, strategy TEXT NOT NULL, strategy_name TEXT NOT NULL,
        hyper TEXT NOT NULL, plan TEXT, status TEXT NOT NULL, round INTEGER NOT NULL DEFAULT 0, step INTEGER NOT NULL DEFAULT 0, state_key TEXT, state_sha256 TEXT,
        normalization TEXT, num_classes INTEGER, tuned_params INTEGER, total_params INTEGER, metrics TEXT NOT NULL DEFAULT '[]', accuracy REAL, loss REAL,
        delta_id TEXT, error TEXT, created_at TEXT NOT NULL, updated_at TEXT NOT NULL, finished_at TEXT);`);
    const config = JSON.stringify(parseVitConfig(preset('vit_micro_patch4_28')));
    db.prepare(`INSERT INTO models VALUES ('m', 'micro', ?, 1, 'w', 'k', 's', ${10 * MB}, 'test', '2026-01-01T00:00:00.000Z')`).run(config);
    db.prepare(`INSERT INTO datasets VALUES ('d', 'digits', 10, 28, 28, 1, 100, 10, ?, 'test', '2026-01-01T00:00:00.000Z')`).run(JSON.stringify(dataset.shards));
    db.prepare(`INSERT INTO runs (id, model_id, dataset_id, strategy, strategy_name, hyper, status, num_classes, created_at, updated_at)
      VALUES ('r1', 'm', 'd', '{"kind":"preset","name":"attn-only"}', 'attn-only', ?, 'SUCCEEDED', 10, '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z')`)
      .run(JSON.stringify({ epochs: 2, batchSize: 32, lr: 0.001, minLr: 1e-6, weightDecay: 0.05, labelSmoothing: 0.1, clipGrad: 1, seed: 0, cropPadding: 0,
        flip: false, stepsPerRound: 8, shardsPerRound: 1, trainLimit: 64, evalLimit: 40, normalize: 'auto' }));
    db.close();

    const state = openSqliteState(dir);
    const r = (await state.runs.get('r1'))!;
    expect(r.spec.kind).toBe('FINETUNE');
    expect(r.spec.kind === 'FINETUNE' && [r.spec.options.testLimit, r.spec.options.trainLimit, r.spec.options.epochs]).toEqual([40, 64, 2]);
    expect(r.memoryNeed).toBe(4 * 10 * MB + 5 * MB);
    await state.close();
    const check = new Database(join(dir, 'partune.sqlite'));
    expect(check.pragma('user_version', { simple: true })).toBe(SCHEMA_VERSION);
    check.close();
    const again = openSqliteState(dir); // an up-to-date database opens unchanged
    expect((await again.runs.get('r1'))!.memoryNeed).toBe(r.memoryNeed);
    await again.close();
  });
});

describeUnless(postgres.skip)('PostgreSQL shared by replicas', () => {
  it('replicas opening one new database at once migrate it once; a newer schema is refused', async () => {
    const url = await postgres.database();
    const replicas = await Promise.all([1, 2, 3].map(() => openPostgresState(url)));
    await replicas[0].models.insert(model('m'));
    expect((await replicas[2].models.byIdOrName('m'))!.id).toBe('m');
    await Promise.all(replicas.map((r) => r.close()));
    await sqlOn(url, `UPDATE partune_schema SET version = ${PG_SCHEMA_VERSION + 1}`);
    await expect(openPostgresState(url)).rejects.toThrow(`the database is at schema version ${PG_SCHEMA_VERSION + 1}, newer than this server's ${PG_SCHEMA_VERSION}`);
  });

  it('a connection PostgreSQL ends is a passing error, a bad statement is not; the store carries on after losing its connections', async () => {
    const url = await postgres.database();
    const state = await openPostgresState(url);
    await state.models.insert(model('m'));
    const victim = new pg.Client({ connectionString: url });
    await victim.connect();
    victim.on('error', () => undefined);
    const lost = victim.query('SELECT pg_sleep(30)').then(() => undefined, (e: unknown) => e);
    await new Promise((r) => setTimeout(r, 200));
    await sqlOn(url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)'");
    const error = await lost;
    expect((error as { code?: string }).code).toBe('57P01'); // terminated by an administrator: what a restarting server does
    expect(state.transient(error)).toBe(true);
    const bad = await sqlOn(url, 'SELEC 1').then(() => undefined, (e: unknown) => e);
    expect(state.transient(bad)).toBe(false);
    await victim.end().catch(() => undefined);

    await sqlOn(url, 'SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()');
    await new Promise((r) => setTimeout(r, 300));
    expect((await state.models.byIdOrName('m'))!.id).toBe('m'); // the pool opened a new connection
    await state.close();
  });

  it('leases racing from two replicas hand out every shard exactly once', async () => {
    const url = await postgres.database();
    const [a, b] = await Promise.all([openPostgresState(url), openPostgresState(url)]);
    await a.models.insert(model('m'));
    await a.datasets.insert(dataset);
    const workers = Array.from({ length: 8 }, (_, i) => ({ id: `w${i}`, trusted: true, address: `10.0.0.${i}` }));
    for (const w of workers) {
      await a.workers.insert({
        id: w.id, name: w.id, kind: 'node', backend: 'wasm', lastSeen: new Date(), shardsDone: 0, samples: 0, imagesPerSecond: null, currentShard: null,
        trusted: true, strikes: 0, quarantinedAt: null, address: w.address, agreed: 0, disagreed: 0, streak: 0, demoted: false, kernelClass: null, backendChoice: null, createdAt: new Date(),
      });
    }
    await a.runs.insert(run('r', 'm', 1));
    const shards = Array.from({ length: 40 }, (_, i) => ({ index: i, replica: 0, need: 1, fromStep: i, toStep: i + 1, pack: null }));
    await a.runs.start('r', start, shards);
    const until = new Date(Date.now() + 60_000);
    const leased: string[] = [];
    // Each worker claims through its own replica until nothing is left, all at once.
    await Promise.all(workers.map(async (w, i) => {
      const replica = i % 2 ? a : b;
      for (;;) {
        const s = await replica.shards.leaseOldest(w, undefined, until, new Date());
        if (!s) return;
        leased.push(s.id);
        expect(await replica.shards.complete(s.id, w.id, s.attempts, { update: { key: `u${s.index}`, sha256: 'x' }, digest: 'd', kernelClass: 'cpu', loss: 1, imagesPerSecond: 1, samples: 1, downloadedBytes: null })).toBe(true);
      }
    }));
    expect(leased.length).toBe(40);
    expect(new Set(leased).size).toBe(40);
    expect((await a.shards.ofRun('r')).every((s) => s.status === 'DONE' && s.attempts === 1)).toBe(true);
    await Promise.all([a.close(), b.close()]);
  });
});
