// The shard protocol's guarded transitions against a real `partune serve` process, driven over
// GraphQL by hand (no worker process): a lease ends once however its completions interleave, and
// leases of a registered worker that keep lapsing end the run instead of re-issuing its shard forever.
import { mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect, parseState, parseVitConfig, preset, presetStrategy, serializeState, tunedShapes } from '../engine';
import { GqlResult, ServerProcess, cliJson, gql, ok, registerWorker, startServer, uploadBytes, waitFor } from '../node/local-platform';

jest.setTimeout(120_000);

const tmp = mkdtempSync(join(tmpdir(), 'partune-protocol-'));
const MICRO = join(tmp, 'micro.safetensors');
const CLAIM = 'mutation { claimShard(kernelClass: "wasm-xnnpack-simd") { shard { id attempt round } job uploadUrl state { url } } }';

async function setUp(server: ServerProcess, hyper: Record<string, unknown> = { epochs: 1, stepsPerRound: 8, shardsPerRound: 1 }): Promise<string> {
  const uploadId = await uploadBytes(server, 'micro.safetensors', readFileSync(MICRO));
  await ok(server.url, server.admin, 'mutation($i: RegisterModelInput!) { registerModel(input: $i) { id } }', { i: { name: 'micro', uploadId } });
  await ok(server.url, server.admin, 'mutation($i: ImportDatasetInput!) { importDataset(input: $i) { id } }',
    { i: { name: 'digits', format: 'MNIST_PACKAGE', trainLimit: 256, testLimit: 64 } });
  const { startRun } = await ok(server.url, server.admin, 'mutation($i: StartRunInput!) { startRun(input: $i) { id } }',
    { i: { model: 'micro', dataset: 'digits', strategy: 'attn-only', hyperParameters: hyper } });
  return startRun.id;
}

/** A valid update for a claimed shard: the round's state unmoved, its step count advanced by the shard's steps, labelled for the shard. */
async function noOpUpdate(a: Record<string, any>, samples: number): Promise<Uint8Array> {
  const config = parseVitConfig({ ...preset('vit_micro_patch4_28'), numClasses: 10 });
  const start = parseState(new Uint8Array(await (await fetch(a.state.url)).arrayBuffer()), tunedShapes(config, inspect(presetStrategy('attn-only'), config).tuned));
  const steps = a.job.window.to - a.job.window.from;
  return serializeState({ ...start, optimizer: { ...start.optimizer, step: start.optimizer.step + steps }, label: { run: a.job.runId, round: a.shard.round, shard: a.shard.id, samples } });
}

const claim = (server: ServerProcess, credential: string): Promise<Record<string, any>> =>
  waitFor('a shard', async () => (await ok(server.url, credential, CLAIM)).claimShard, 30_000);

beforeAll(async () => {
  await cliJson(['convert', '--checkpoint', 'random:vit_micro_patch4_28', '--out', MICRO]);
});

describe('the shard protocol', () => {
  let server: ServerProcess;
  afterEach(() => server?.stop());

  it('two completions of one lease at once are accepted once: the worker is credited once', async () => {
    server = await startServer();
    await setUp(server);
    const { id: workerId, credential } = await registerWorker(server, 'by-hand');
    const a = await claim(server, credential);
    const update = await noOpUpdate(a, 8 * 32);
    expect((await fetch(a.uploadUrl, { method: 'PUT', body: update as Uint8Array<ArrayBuffer> })).ok).toBe(true);
    const complete = (): Promise<GqlResult<Record<string, any>>> => gql(server.url, credential,
      'mutation($s: ID!, $a: Int!) { completeShard(shardId: $s, attempt: $a, loss: 1, imagesPerSecond: 5, kernelClass: "wasm-xnnpack-simd") { status } }', { s: a.shard.id, a: a.shard.attempt });
    const answers = await Promise.all([complete(), complete(), complete()]);
    expect(answers.map((r) => r.errors ?? r.data!.completeShard.status)).toEqual(['DONE', 'DONE', 'DONE']);
    const { workers } = await ok(server.url, server.admin, '{ workers { items { id shardsDone samples } } }');
    expect(workers.items.find((w: { id: string }) => w.id === workerId)).toEqual({ id: workerId, shardsDone: 1, samples: 256 });
  });

  it('an accepted update whose stored bytes no longer match re-issues its shard; the run goes on', async () => {
    server = await startServer();
    const runId = await setUp(server, { maxSteps: 8, stepsPerRound: 8, shardsPerRound: 2 });
    const { credential } = await registerWorker(server, 'by-hand');
    const complete = async (a: Record<string, any>): Promise<void> => {
      expect((await fetch(a.uploadUrl, { method: 'PUT', body: (await noOpUpdate(a, 4 * 32)) as Uint8Array<ArrayBuffer> })).status).toBe(200);
      await ok(server.url, credential, 'mutation($s: ID!, $a: Int!) { completeShard(shardId: $s, attempt: $a, loss: 1, imagesPerSecond: 5, kernelClass: "wasm-xnnpack-simd") { status } }', { s: a.shard.id, a: a.shard.attempt });
    };
    const first = await claim(server, credential);
    const second = await claim(server, credential);
    await complete(first);
    // The first update's accepted copy rots on disk before the round is aggregated.
    const updates = join(server.dataDir, 'blobs', 'objects', 'runs', runId, 'updates');
    const [file] = readdirSync(updates);
    writeFileSync(join(updates, file), Buffer.from('rotten'));
    await complete(second);
    const again = await claim(server, credential);
    expect([again.shard.id, again.shard.attempt]).toEqual([first.shard.id, 2]);
    await complete(again);
    const run = await waitFor('the run to end', async () => {
      const { run: r } = await ok(server.url, server.admin, 'query($id: ID!) { run(id: $id) { status shards { rejections } } }', { id: runId });
      return ['SUCCEEDED', 'FAILED'].includes(r.status) && r;
    }, 60_000);
    expect(run.status).toBe('SUCCEEDED');
    expect(run.shards.flatMap((s: { rejections: string[] }) => s.rejections)).toEqual([expect.stringMatching(/update of shard 0\.0 is unusable \(object '.*' is corrupt: SHA-256/)]);
  });

  it("a banned worker's lease ends at once and its shard is re-issued to another", async () => {
    server = await startServer();
    const runId = await setUp(server);
    const banned = await registerWorker(server, 'to-ban');
    const a = await claim(server, banned.credential);
    await ok(server.url, server.admin, 'mutation($id: ID!) { banWorker(id: $id) { quarantined currentShard } }', { id: banned.id });
    const { run } = await ok(server.url, server.admin, 'query($id: ID!) { run(id: $id) { shards { id status rejections } } }', { id: runId });
    expect(run.shards).toEqual([{ id: a.shard.id, status: 'PENDING', rejections: [`attempt 1: its worker was banned (worker ${banned.id})`] }]);
    const beat = await gql(server.url, banned.credential, 'mutation($s: ID!) { heartbeat(shardId: $s, attempt: 1, stepsDone: 1) { cancelled } }', { s: a.shard.id });
    expect(beat.data).toEqual({ heartbeat: { cancelled: true } });
    const other = await registerWorker(server, 'other');
    expect((await claim(server, other.credential)).shard).toEqual({ id: a.shard.id, attempt: 2, round: 0 });
  });

  it("a claim's backend report lands on the worker's row; a malformed one is refused with the field named", async () => {
    server = await startServer();
    const { credential } = await registerWorker(server, 'reporter');
    const CLAIM_WITH = 'mutation($b: BackendChoiceInput) { claimShard(kernelClass: "wasm-xnnpack-simd", backend: $b) { shard { id } } }';
    const report = {
      chosen: 'wasm', detail: 'WebAssembly, products on engine GEMM (fma, 2 threads)', how: 'measured', model: '28x1/p4,d64x4h4m128,c10,attn-only,b32',
      timings: [{ backend: 'wasm', detail: 'WebAssembly', imagesPerSecond: 212.5 }, { backend: 'webgpu', detail: 'WebGPU on google swiftshader', imagesPerSecond: null, note: 'never chosen: a fallback adapter' }],
    };
    expect((await ok(server.url, credential, CLAIM_WITH, { b: report })).claimShard).toBeNull(); // no run: nothing to lease
    const { workers } = await ok(server.url, server.admin, '{ workers { items { name backend backendChoice { chosen how model timings { backend imagesPerSecond note } } } } }');
    expect(workers.items.find((w: { name: string }) => w.name === 'reporter')).toEqual({
      name: 'reporter', backend: 'wasm',
      backendChoice: { chosen: 'wasm', how: 'measured', model: report.model, timings: [{ backend: 'wasm', imagesPerSecond: 212.5, note: null }, { backend: 'webgpu', imagesPerSecond: null, note: 'never chosen: a fallback adapter' }] },
    });
    const refused = async (b: Record<string, unknown>): Promise<string> => {
      const r = await gql(server.url, credential, CLAIM_WITH, { b });
      return `${r.errors?.[0]?.extensions?.code}: ${r.errors?.[0]?.message}`;
    };
    expect(await refused({ ...report, how: 'guessed' })).toMatch(/^BAD_USER_INPUT: backend.how must be one of forced, measured, remembered, only one/);
    expect(await refused({ ...report, timings: Array(9).fill(report.timings[0]) })).toMatch(/^BAD_USER_INPUT: backend.timings has 9 entries; at most 8/);
    expect(await refused({ ...report, timings: [{ ...report.timings[0], imagesPerSecond: -1 }] })).toMatch(/^BAD_USER_INPUT: backend.timings.imagesPerSecond must be a finite number/);
    expect(await refused({ ...report, detail: 'x'.repeat(301) })).toMatch(/^BAD_USER_INPUT: backend.detail is longer than 300 characters/);
  });

  it('a shard whose leases by a registered worker keep lapsing fails its run after five attempts', async () => {
    server = await startServer({ PARTUNE_LEASE_SECONDS: '1' });
    const runId = await setUp(server);
    const { credential } = await registerWorker(server, 'by-hand');
    for (let attempt = 1; attempt <= 5; attempt++) {
      expect((await claim(server, credential)).shard.attempt).toBe(attempt);
      await new Promise((r) => setTimeout(r, 1300)); // silent: no heartbeat, the lease lapses
    }
    const run = await waitFor('the run to fail', async () => {
      const { run: r } = await ok(server.url, server.admin, 'query($id: ID!) { run(id: $id) { status error shards { status rejections } } }', { id: runId });
      return r.status === 'FAILED' && r;
    }, 10_000);
    expect(run.error).toMatch(/shard 0\.0 failed 5 times on registered workers \(5 failures in all\); last: attempt 5: lease expired/);
    expect(run.shards.map((s: { status: string }) => s.status)).toEqual(['CANCELLED']);
    expect(run.shards[0].rejections).toHaveLength(5);
    expect((await ok(server.url, credential, CLAIM)).claimShard).toBeNull();
  });
});
