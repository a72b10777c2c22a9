// The shard protocol's guarded transitions against a real `partune serve` process, driven over
// GraphQL by hand (no worker process): a lease ends once however its completions interleave, and
// leases that keep lapsing end the run instead of re-issuing its shard forever.
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect, parseState, parseVitConfig, preset, presetStrategy, serializeState, tunedShapes } from '../engine';
import { GqlResult, ServerProcess, cliJson, gql, ok, startServer, uploadBytes, waitFor } from '../node/local-platform';

jest.setTimeout(120_000);

const tmp = mkdtempSync(join(tmpdir(), 'partune-protocol-'));
const MICRO = join(tmp, 'micro.safetensors');
const CLAIM = 'mutation($w: ID!) { claimShard(workerId: $w) { shard { id attempt round } job uploadUrl state { url } } }';

async function setUp(server: ServerProcess): Promise<string> {
  const uploadId = await uploadBytes(server, 'micro.safetensors', readFileSync(MICRO));
  await ok(server.url, server.admin, 'mutation($i: RegisterModelInput!) { registerModel(input: $i) { id } }', { i: { name: 'micro', uploadId } });
  await ok(server.url, server.admin, 'mutation($i: ImportDatasetInput!) { importDataset(input: $i) { id } }',
    { i: { name: 'digits', format: 'MNIST_PACKAGE', trainLimit: 256, testLimit: 64 } });
  const { startRun } = await ok(server.url, server.admin, 'mutation($i: StartRunInput!) { startRun(input: $i) { id } }',
    { i: { model: 'micro', dataset: 'digits', strategy: 'attn-only', hyperParameters: { epochs: 1, stepsPerRound: 8, shardsPerRound: 1 } } });
  return startRun.id;
}

const register = async (server: ServerProcess): Promise<string> =>
  (await ok(server.url, server.worker, 'mutation { registerWorker(name: "by-hand", kind: "node", backend: "none") { id } }')).registerWorker.id;

const claim = (server: ServerProcess, workerId: string): Promise<Record<string, any>> =>
  waitFor('a shard', async () => (await ok(server.url, server.worker, CLAIM, { w: workerId })).claimShard, 30_000);

beforeAll(async () => {
  await cliJson(['convert', '--checkpoint', 'random:vit_micro_patch4_28', '--out', MICRO]);
});

describe('the shard protocol', () => {
  let server: ServerProcess;
  afterEach(() => server?.stop());

  it('two completions of one lease at once are accepted once: the worker is credited once', async () => {
    server = await startServer();
    await setUp(server);
    const workerId = await register(server);
    const a = await claim(server, workerId);
    // A valid update: the round's state as it is, labelled for this shard (8 steps of 32 images).
    const config = parseVitConfig({ ...preset('vit_micro_patch4_28'), numClasses: 10 });
    const start = parseState(new Uint8Array(await (await fetch(a.state.url)).arrayBuffer()), tunedShapes(config, inspect(presetStrategy('attn-only'), config).tuned));
    const update = serializeState({ ...start, label: { run: a.job.runId, round: 0, shard: a.shard.id, samples: 256 } });
    expect((await fetch(a.uploadUrl, { method: 'PUT', body: update as Uint8Array<ArrayBuffer> })).ok).toBe(true);
    const complete = (): Promise<GqlResult<Record<string, any>>> => gql(server.url, server.worker,
      'mutation($w: ID!, $s: ID!, $a: Int!) { completeShard(workerId: $w, shardId: $s, attempt: $a, loss: 1, imagesPerSecond: 5) { status } }',
      { w: workerId, s: a.shard.id, a: a.shard.attempt });
    const answers = await Promise.all([complete(), complete(), complete()]);
    expect(answers.map((r) => r.errors ?? r.data!.completeShard.status)).toEqual(['DONE', 'DONE', 'DONE']);
    const { workers } = await ok(server.url, undefined, '{ workers { items { id shardsDone samples } } }');
    expect(workers.items.find((w: { id: string }) => w.id === workerId)).toEqual({ id: workerId, shardsDone: 1, samples: 256 });
  });

  it('a shard whose leases keep lapsing fails its run after five attempts', async () => {
    server = await startServer({ PARTUNE_LEASE_SECONDS: '1' });
    const runId = await setUp(server);
    const workerId = await register(server);
    for (let attempt = 1; attempt <= 5; attempt++) {
      expect((await claim(server, workerId)).shard.attempt).toBe(attempt);
      await new Promise((r) => setTimeout(r, 1300)); // silent: no heartbeat, the lease lapses
    }
    const run = await waitFor('the run to fail', async () => {
      const { run: r } = await ok(server.url, undefined, 'query($id: ID!) { run(id: $id) { status error shards { status rejections } } }', { id: runId });
      return r.status === 'FAILED' && r;
    }, 10_000);
    expect(run.error).toMatch(/shard 0\.0 failed 5 times; last: attempt 5: lease expired/);
    expect(run.shards.map((s: { status: string }) => s.status)).toEqual(['CANCELLED']);
    expect(run.shards[0].rejections).toHaveLength(5);
    expect((await ok(server.url, server.worker, CLAIM, { w: workerId })).claimShard).toBeNull();
  });
});
