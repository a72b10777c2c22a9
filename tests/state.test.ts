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
  id: 'd', name: 'digits', classes: 10, height: 28, width: 28, channels: 1, trainCount: 100, testCount: 10, source: 'test', private: false,
  createdAt: new Date(),
  classNames: null,
  shards: [{ split: 'train', key: 'tr', sha256: 'a', count: 100, bytes: 5 * MB }, { split: 'test', key: 'te', sha256: 'b', count: 10, bytes: MB }],
};

function run(id: string, modelId: string, at: number, memoryNeed = 0): RunRecord {
  return {
    id, spec: { kind: 'FINETUNE', options: parseRunOptions({ epochs: 1, testLimit: 5 }) }, modelId, datasetId: 'd', strategy: { kind: 'preset', name: 'attn-only' },
    strategyName: 'attn-only', status: 'PREPARING', plan: null, round: 0, step: 0, state: null, normalization: null, numClasses: 10, tunedParams: 5,
    totalParams: 9, memoryNeed, metrics: [], accuracy: null, loss: null, deltaId: null, error: null, public: false, waiting: null, roundStates: [], rollbacks: [],
    createdAt: new Date(at), updatedAt: new Date(at), finishedAt: null,
  };
}

const plan = { trainImages: 100, stepsPerEpoch: 3, totalSteps: 3, shardsPerRound: 1, rounds: [[0, 3]] as [number, number][] };
const start = { plan, state: { key: 'state-0', sha256: 'x' }, normalization: { mean: [0.5], std: [0.25] } };
const pack = { key: 'windows/p.safetensors', sha256: 'p', bytes: 3 * 32 * 785 };
const oneShard = [{ index: 0, replica: 0, need: 1, fromStep: 0, toStep: 3, pack, registeredOnly: false }];
const budget = { registeredFailures: 3, quarantineStrikes: 2 };
const FAR = new Date(0);
const K = 'wasm-gemm-fma';
const trustedW1 = { id: 'w1', registered: true, party: '10.0.0.0/24', origin: '', kernelClass: K };
const volunteer = (id: string, party = '10.0.9.0/24', kernelClass = K, origin = `token:${id}`) => ({ id, registered: false, party, origin, kernelClass });
const result = (digest: string, kernelClass = K) => ({ update: { key: `u-${digest}`, sha256: digest }, digest, kernelClass, loss: 1, imagesPerSecond: 2, samples: 96, downloadedBytes: 1234 });

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
    trusted: true, strikes: 0, quarantinedAt: null, address: '10.0.0.1', party: '10.0.0.0/24', origin: '', agreed: 0, disagreed: 0, streak: 0, demoted: false,
    kernelClass: null, classes: [], backendChoice: null, createdAt: new Date(),
  };
  const addVolunteer = (id: string, party = '10.0.9.0/24', origin = `token:${id}`) => state.workers.insert({ ...worker, id, name: id, trusted: false, party, origin });

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
    expect([first.leaseClass, first.leasedAt instanceof Date, first.pendingSince]).toEqual([K, true, null]);
    expect(await state.shards.complete(first.id, 'w2', 1, result('d'))).toBe(false); // not the holder
    expect(await state.shards.complete(first.id, 'w1', 2, result('d'))).toBe(false); // not this attempt
    expect(await state.shards.release(first.id, 'w1', 1, 'attempt 1 failed', budget)).toBe('requeued');
    expect((await state.shards.get(first.id))!.pendingSince).toBeInstanceOf(Date); // waiting again, from now
    expect(await state.shards.release(first.id, 'w1', 1, 'attempt 1 failed again', budget)).toBe('lost');
    await state.shards.leaseOldest(trustedW1, undefined, new Date(Date.now() - 1), new Date()); // attempt 2, already lapsed
    expect((await state.shards.expire(new Date(), FAR, FAR, budget)).map((e) => e.release)).toEqual(['requeued']);
    await state.shards.leaseOldest(trustedW1, undefined, until, new Date(Date.now() - 3000)); // attempt 3, leased 3 s ago
    expect(await state.shards.submit(first.id, 'w1', 3, new Date())).toBe(true);
    expect(await state.shards.complete(first.id, 'w1', 3, result('d'))).toBe(true);
    expect(await state.shards.complete(first.id, 'w1', 3, result('d'))).toBe(false);
    expect((await state.shards.paces('r1', 'w1')).run).toHaveLength(1); // completed, not outvoted: its pace counts before it is judged
    expect(await state.shards.settle({ runId: 'r1', round: 0, index: 0, accept: { id: first.id, votes: 1, required: 1 }, agreed: [], close: [], credit: [], outvoted: [] }, budget)).toBe(true);
    const paces = await state.shards.paces('r1', 'w1');
    expect([paces.run.length, paces.worker.length]).toEqual([1, 1]);
    expect(paces.run[0]).toBeGreaterThan(0.9); // 3 s over 3 steps, as the server measured it
    expect(paces.run[0]).toBeLessThan(1.5);
    const done = (await state.shards.get(first.id))!;
    expect([done.status, done.attempts, done.rejections, done.verdict, done.votes, done.required]).toEqual(['DONE', 3, ['attempt 1 failed', 'attempt 2: lease expired (worker w1)'], 'ACCEPTED', 1, 1]);
    expect([done.pack, done.downloadedBytes]).toEqual([pack, 1234]);
    const w = (await state.workers.touch('w1', new Date()))!;
    expect([w.shardsDone, w.samples, w.currentShard]).toEqual([1, 96, null]);
  });

  it('a shard whose leases by a registered worker keep lapsing is cancelled at its budget, not re-issued forever', async () => {
    await state.runs.insert(run('r1', 'm', 1));
    await state.runs.start('r1', start, oneShard);
    const releases = [];
    for (let i = 0; i < 3; i++) {
      await state.shards.leaseOldest(trustedW1, undefined, new Date(Date.now() - 1), new Date());
      releases.push(...(await state.shards.expire(new Date(), FAR, FAR, budget)).map((e) => e.release));
    }
    expect(releases).toEqual(['requeued', 'requeued', 'exhausted']);
    expect((await state.shards.ofRun('r1'))[0].status).toBe('CANCELLED');
    expect(await state.shards.leaseOldest(trustedW1, undefined, new Date(Date.now() + 60_000), new Date())).toBeUndefined();
  });

  it("a completed lease's clock stops: only a check that never ends releases it", async () => {
    await state.runs.insert(run('r1', 'm', 1));
    await state.runs.start('r1', start, oneShard);
    const s = (await state.shards.leaseOldest(trustedW1, undefined, new Date(Date.now() + 1000), new Date()))!;
    await state.shards.setDeadline(s.id, 'w1', 1, new Date(Date.now() + 1000));
    expect(await state.shards.submit(s.id, 'w1', 1, new Date())).toBe(true);
    const later = new Date(Date.now() + 60_000);
    // Past its lease, its deadline and the stall window: not released while the server checks it.
    expect(await state.shards.expire(later, later, new Date(Date.now() - 600_000), budget)).toEqual([]);
    const gone = await state.shards.expire(later, later, later, budget);
    expect(gone.map((e) => e.shard.rejections.at(-1))).toEqual([expect.stringMatching(/^attempt 1: its update was never judged/)]);
  });

  it("a run that admits no volunteers: its shards go to registered workers only, and a private dataset's flag is kept", async () => {
    await state.runs.insert(run('r1', 'm', 1));
    await state.runs.start('r1', start, [{ ...oneShard[0], registeredOnly: true }]);
    await addVolunteer('v1');
    const until = new Date(Date.now() + 60_000);
    expect(await state.shards.leaseOldest(volunteer('v1'), undefined, until, new Date())).toBeUndefined();
    const leased = (await state.shards.leaseOldest(trustedW1, undefined, until, new Date()))!;
    expect([leased.runId, leased.registeredOnly]).toEqual(['r1', true]);
    await state.datasets.insert({ ...dataset, id: 'p', name: 'private-photos', private: true });
    expect([(await state.datasets.byIdOrName('p'))!.private, (await state.datasets.byIdOrName('d'))!.private]).toEqual([true, false]);
  });

  it('only registered workers\' failures fail a shard: a volunteer strikes itself alone', async () => {
    await state.runs.insert(run('r1', 'm', 1));
    await state.runs.start('r1', start, oneShard);
    const until = new Date(Date.now() + 60_000);
    for (const id of ['v1', 'v2', 'v3', 'v4']) await addVolunteer(id, `10.0.${id.slice(1)}.0/24`);
    for (const id of ['v1', 'v2', 'v3', 'v4']) {
      const s = (await state.shards.leaseOldest(volunteer(id, `10.0.${id.slice(1)}.0/24`), undefined, until, new Date()))!;
      expect(await state.shards.release(s.id, id, s.attempts, `${id} gave up`, budget)).toBe('requeued');
      expect(await state.shards.leaseOldest(volunteer(id, `10.0.${id.slice(1)}.0/24`), undefined, until, new Date())).toBeUndefined(); // not the one it failed
    }
    const again = (await state.shards.get((await state.shards.ofRun('r1'))[0].id))!;
    expect([again.status, again.failedBy, again.trustedFailures]).toEqual(['PENDING', ['v1', 'v2', 'v3', 'v4'], 0]);
    // Four volunteer failures and a registered one: still not the budget of three registered failures.
    let s = (await state.shards.leaseOldest(trustedW1, undefined, until, new Date()))!;
    expect(await state.shards.release(s.id, 'w1', s.attempts, 'a crash', budget)).toBe('requeued');
    s = (await state.shards.leaseOldest(trustedW1, undefined, until, new Date()))!;
    expect(await state.shards.release(s.id, 'w1', s.attempts, 'a crash', budget)).toBe('requeued');
    s = (await state.shards.leaseOldest(trustedW1, undefined, until, new Date()))!;
    expect(await state.shards.release(s.id, 'w1', s.attempts, 'a crash', budget)).toBe('exhausted');
    // v1's second strike quarantines it; a registered worker is never quarantined.
    await state.runs.insert(run('r2', 'm', 2));
    await state.runs.start('r2', start, oneShard);
    const t = (await state.shards.leaseOldest(volunteer('v1', '10.0.1.0/24'), undefined, until, new Date()))!;
    await state.shards.release(t.id, 'v1', t.attempts, 'again', budget);
    const v1 = (await state.workers.touch('v1', new Date()))!;
    expect([v1.strikes, v1.quarantinedAt instanceof Date]).toEqual([2, true]);
    expect((await state.workers.touch('w1', new Date()))!.quarantinedAt).toBeNull();
    expect((await state.workers.untrustedSince(FAR)).map((w) => w.party).sort()).toEqual(['10.0.2.0/24', '10.0.3.0/24', '10.0.4.0/24']);
  });

  it('replicas: never two of one index to one worker or one group (prefix or token); reserved replicas go to their class or to registered workers', async () => {
    await state.runs.insert(run('r1', 'm', 1));
    const quorum = [0, 1, 2, 3].map((replica) => ({ index: 0, replica, need: 2, fromStep: 0, toStep: 3, pack, registeredOnly: false }));
    await state.runs.start('r1', start, quorum);
    await addVolunteer('v1', '10.0.9.0/24', 'token:a');
    await addVolunteer('v2', '10.0.9.0/24', 'token:b'); // v1's prefix
    await addVolunteer('v3', '10.0.7.0/24', 'token:a'); // v1's token
    await addVolunteer('v4', '10.0.6.0/24', 'token:c');
    const until = new Date(Date.now() + 60_000);
    const lease = (c: ReturnType<typeof volunteer> | typeof trustedW1) => state.shards.leaseOldest(c, undefined, until, new Date());
    const a = (await lease(volunteer('v1', '10.0.9.0/24', K, 'token:a')))!;
    expect(await lease(volunteer('v1', '10.0.9.0/24', K, 'token:a'))).toBeUndefined(); // its own index
    expect(await lease(volunteer('v2', '10.0.9.0/24', K, 'token:b'))).toBeUndefined(); // v1's prefix
    expect(await lease(volunteer('v3', '10.0.7.0/24', K, 'token:a'))).toBeUndefined(); // v1's token
    const b = (await lease(volunteer('v4', '10.0.6.0/24', K, 'token:c')))!;
    const c = (await lease(trustedW1))!; // registered workers share networks freely
    expect([a.replica, b.replica, c.replica]).toEqual([0, 1, 2]);
    expect(await state.shards.complete(a.id, 'v1', 1, result('lie'))).toBe(true);
    expect(await state.shards.complete(b.id, 'v4', 1, result('honest'))).toBe(true);
    expect(await state.shards.complete(c.id, 'w1', 1, result('honest-other-class', 'wasm-blas:x'))).toBe(true);
    const settlement = {
      runId: 'r1', round: 0, index: 0, accept: { id: b.id, votes: 2, required: 2 }, agreed: [], close: [c.id], credit: [{ workerId: 'v4', kernelClass: K }],
      outvoted: [{ id: a.id, reason: 'attempt 1 by worker v1: outvoted' }],
    };
    expect(await state.shards.settle(settlement, budget)).toBe(true);
    expect(await state.shards.settle(settlement, budget)).toBe(false); // judged once
    const rows = await state.shards.ofIndex('r1', 0, 0);
    expect(rows.map((r) => [r.status, r.verdict])).toEqual([['DONE', 'OUTVOTED'], ['DONE', 'ACCEPTED'], ['DONE', 'CLOSE'], ['CANCELLED', null]]);
    expect(rows[0].rejections).toEqual(['attempt 1 by worker v1: outvoted']);
    expect(await state.shards.addReplica(rows[1], { need: 2, needClass: null, registeredOnly: false })).toBeUndefined(); // settled: no more replicas
    const [v1, v4, w1] = await Promise.all(['v1', 'v4', 'w1'].map(async (id) => (await state.workers.get(id))!));
    expect([v1.disagreed, v1.streak, v1.strikes, v4.agreed, v4.streak, w1.currentShard, w1.strikes]).toEqual([1, 0, 1, 1, 1, null, 0]);
    expect([v1.classes, v4.classes]).toEqual([[{ kernelClass: K, agreed: 0, disagreed: 1, streak: 0 }], [{ kernelClass: K, agreed: 1, disagreed: 0, streak: 1 }]]);

    // Reservations: a replica for one kernel class, and one for registered workers.
    await state.runs.insert(run('r2', 'm', 2));
    await state.runs.start('r2', start, oneShard);
    const [first] = await state.shards.ofRun('r2');
    const forClass = (await state.shards.addReplica(first, { need: 2, needClass: 'webgpu:x', registeredOnly: false }))!;
    const forRegistered = (await state.shards.addReplica(first, { need: 2, needClass: null, registeredOnly: true }))!;
    expect([forClass.replica, forRegistered.replica, forClass.needClass, forRegistered.registeredOnly]).toEqual([1, 2, 'webgpu:x', true]);
    expect((await lease(volunteer('v2', '10.0.9.0/24', K, 'token:b')))!.id).toBe(first.id); // the open one
    expect(await lease(volunteer('v4', '10.0.6.0/24', K, 'token:c'))).toBeUndefined(); // another class's, and registered only
    expect(await state.shards.relax(forClass.id)).toBe(true);
    expect((await lease(volunteer('v4', '10.0.6.0/24', K, 'token:c')))!.id).toBe(forClass.id);
    expect((await lease(trustedW1))!.id).toBe(forRegistered.id);
  });

  it('support withdrawn: an accepted index goes back to judgement; supported results are found by worker', async () => {
    await state.runs.insert(run('r1', 'm', 1));
    await state.runs.start('r1', start, [0, 1].map((replica) => ({ index: 0, replica, need: 2, fromStep: 0, toStep: 3, pack, registeredOnly: false })));
    await addVolunteer('v1', '10.0.1.0/24');
    await addVolunteer('v2', '10.0.2.0/24');
    const until = new Date(Date.now() + 60_000);
    const a = (await state.shards.leaseOldest(volunteer('v1', '10.0.1.0/24'), undefined, until, new Date()))!;
    const b = (await state.shards.leaseOldest(volunteer('v2', '10.0.2.0/24'), undefined, until, new Date()))!;
    await state.shards.complete(a.id, 'v1', 1, result('same'));
    await state.shards.complete(b.id, 'v2', 1, result('same'));
    await state.shards.settle({ runId: 'r1', round: 0, index: 0, accept: { id: a.id, votes: 2, required: 2 }, agreed: [b.id], close: [], credit: [], outvoted: [] }, budget);
    expect((await state.shards.supported(['v1'])).map((r) => r.id)).toEqual([a.id]);
    expect((await state.shards.supported(['v1', 'v2'])).map((r) => r.id).sort()).toEqual([a.id, b.id].sort());
    expect(await state.shards.unsettle({ runId: 'r1', round: 0, index: 0 }, [a.id], [b.id])).toBe(true);
    const rows = await state.shards.ofIndex('r1', 0, 0);
    expect(rows.map((r) => [r.verdict, r.votes])).toEqual([['VOIDED', 2], ['AGREED', null]]);
    expect(await state.shards.supported(['v1'])).toEqual([]);
    // Stalled: an index whose results are all in and unjudged, or whose replica waits, since before.
    expect(await state.shards.stalled(['r1'], new Date(Date.now() + 1000))).toEqual([]); // AGREED: judged, nothing open
    const more = (await state.shards.addReplica(rows[0], { need: 2, needClass: K, registeredOnly: false }))!;
    expect(more.replica).toBe(2);
    expect(await state.shards.stalled(['r1'], new Date(Date.now() - 60_000))).toEqual([]);
    expect(await state.shards.stalled(['r1'], new Date(Date.now() + 1000))).toEqual([{ runId: 'r1', round: 0, index: 0 }]);
    expect(await state.shards.stalled(['elsewhere'], new Date(Date.now() + 1000))).toEqual([]);
    // A lease held since before counts too (the verification decides whether it is overdue).
    await state.shards.leaseOldest(volunteer('v3', '10.0.3.0/24', K, 'token:c'), undefined, new Date(Date.now() + 60_000), new Date());
    expect((await state.shards.ofIndex('r1', 0, 0)).map((r) => r.status)).toContain('LEASED');
    expect(await state.shards.stalled(['r1'], new Date(Date.now() - 60_000))).toEqual([]);
    expect(await state.shards.stalled(['r1'], new Date(Date.now() + 1000))).toEqual([{ runId: 'r1', round: 0, index: 0 }]);
  });

  it('a rollback returns a run to a round: its state, metrics and rollbacks recorded, later rounds void, replicas numbered on', async () => {
    await state.runs.insert(run('r1', 'm', 1));
    const two = { ...plan, totalSteps: 6, stepsPerEpoch: 6, rounds: [[0, 3], [3, 6]] as [number, number][] };
    await state.runs.start('r1', { ...start, plan: two }, oneShard);
    const s0 = (await state.shards.leaseOldest(trustedW1, undefined, new Date(Date.now() + 60_000), new Date()))!;
    await state.shards.complete(s0.id, 'w1', 1, result('r0'));
    await state.shards.settle({ runId: 'r1', round: 0, index: 0, accept: { id: s0.id, votes: 1, required: 1 }, agreed: [], close: [], credit: [], outvoted: [] }, budget);
    const metric = { step: 3, epoch: 0.5, round: 0, trainLoss: 2, at: new Date().toISOString() };
    const next = [{ index: 0, replica: 0, need: 1, fromStep: 3, toStep: 6, pack, registeredOnly: false }];
    expect(await state.runs.completeRound('r1', 0, { state: { key: 'state-1', sha256: 'y' }, step: 3, metric, finishing: false }, next)).toBe(true);
    const s1 = (await state.shards.leaseOldest(trustedW1, undefined, new Date(Date.now() + 60_000), new Date()))!;
    await state.shards.complete(s1.id, 'w1', 1, result('r1'));
    expect((await state.runs.get('r1'))!.roundStates).toEqual(['x', 'y']);
    expect(await state.runs.setWaiting('r1', 'round 1 shard 0 waits')).toBe(true);
    expect(await state.runs.setWaiting('r1', 'round 1 shard 0 waits')).toBe(false); // unchanged
    const record = { at: new Date().toISOString(), fromRound: 1, toRound: 0, reason: 'a liar caught' };
    expect(await state.runs.rollback('r1', { round: 1, step: 3, state: { key: 'state-1', sha256: 'y' } }, record)).toBe(true);
    expect(await state.runs.rollback('r1', { round: 2, step: 6, state: { key: 's', sha256: 's' } }, record)).toBe(false); // not past where it is
    expect(await state.shards.unsettle({ runId: 'r1', round: 0, index: 0 }, [s0.id], [])).toBe(true);
    expect(await state.runs.rollback('r1', { round: 0, step: 0, state: { key: 'state-0', sha256: 'x' } }, record)).toBe(true);
    const r = (await state.runs.get('r1'))!;
    expect([r.status, r.round, r.step, r.state, r.metrics, r.roundStates, r.waiting, r.rollbacks]).toEqual([
      'RUNNING', 0, 0, { key: 'state-0', sha256: 'x' }, [], ['x'], null, [record, record],
    ]);
    expect((await state.shards.get(s1.id))!.verdict).toBe('VOIDED'); // computed from a state that no longer counts
    // Round 1 again: its new replica is numbered after the voided one.
    await state.runs.completeRound('r1', 0, { state: { key: 'state-1', sha256: 'z' }, step: 3, metric, finishing: false }, next);
    const round1 = await state.shards.ofIndex('r1', 1, 0);
    expect(round1.map((x) => [x.replica, x.status, x.verdict])).toEqual([[0, 'DONE', 'VOIDED'], [1, 'PENDING', null]]);
    expect(await state.shards.stepsDone('r1', 1)).toBe(0);
  });

  it('a lease without progress since the stall time, or past its deadline, ends; progress keeps it', async () => {
    await state.runs.insert(run('r1', 'm', 1));
    await state.runs.start('r1', start, oneShard);
    const t0 = new Date(Date.now() - 10_000);
    const until = new Date(Date.now() + 60_000);
    const s = (await state.shards.leaseOldest(trustedW1, undefined, until, t0))!;
    expect(await state.shards.renew(s.id, 'w1', 1, 0, until, new Date())).toBe(true); // alive, but no step done
    expect(await state.shards.expire(new Date(), new Date(t0.getTime() - 1), FAR, budget)).toEqual([]);
    expect(await state.shards.renew(s.id, 'w1', 1, 2, until, new Date())).toBe(true); // two steps: progress now
    expect(await state.shards.expire(new Date(), new Date(Date.now() - 5_000), FAR, budget)).toEqual([]);
    const stalled = await state.shards.expire(new Date(Date.now() + 10_000), new Date(Date.now() + 5_000), FAR, budget);
    expect(stalled.map((e) => e.shard.rejections.at(-1))).toEqual([expect.stringMatching(/^attempt 1: no progress for \d+ s: lease revoked/)]);
    const next = (await state.shards.leaseOldest(trustedW1, undefined, until, new Date()))!;
    await state.shards.setDeadline(next.id, 'w1', 2, new Date(Date.now() + 1_000));
    expect(await state.shards.renew(next.id, 'w1', 2, 3, until, new Date())).toBe(true);
    expect((await state.shards.get(next.id))!.leaseUntil!.getTime()).toBeLessThanOrEqual(Date.now() + 1_000); // never past the deadline
    const overdue = await state.shards.expire(new Date(Date.now() + 2_000), FAR, FAR, budget);
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
    const workers = Array.from({ length: 8 }, (_, i) => ({ id: `w${i}`, registered: true, address: `10.0.0.${i}`, party: '10.0.0.0/24', origin: '', kernelClass: 'cpu' }));
    for (const w of workers) {
      await a.workers.insert({
        id: w.id, name: w.id, kind: 'node', backend: 'wasm', lastSeen: new Date(), shardsDone: 0, samples: 0, imagesPerSecond: null, currentShard: null,
        trusted: true, strikes: 0, quarantinedAt: null, address: w.address, party: w.party, origin: '', agreed: 0, disagreed: 0, streak: 0, demoted: false, kernelClass: null,
        classes: [], backendChoice: null, createdAt: new Date(),
      });
    }
    await a.runs.insert(run('r', 'm', 1));
    const shards = Array.from({ length: 40 }, (_, i) => ({ index: i, replica: 0, need: 1, fromStep: i, toStep: i + 1, pack: null, registeredOnly: false }));
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
