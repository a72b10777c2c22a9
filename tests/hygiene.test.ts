// What strangers leave behind and what they may see: 1,024 rejected uploads and an abandoned one
// leave the blob store as it was; a run that does not admit volunteers gives a volunteer's worker
// process nothing to lease and nothing to download; credentials that expire are renewed by a
// working worker, and a rotated secret's tokens live through the overlap only.
import { existsSync, mkdtempSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AddressedClient } from '../bench/fleet-worker';
import { startVolunteer } from '../bench/fleet';
import { ClaimShard, CompleteShard, RegisterWorker, VolunteerToken } from '../protocol/operations';
import { ServerProcess, WorkerProcess, cliJson, gql, ok, startServer, startWorker, uploadBytes, waitFor, waitForRun } from '../node/local-platform';

jest.setTimeout(600_000);

const tmp = mkdtempSync(join(tmpdir(), 'partune-hygiene-'));
const micro = join(tmp, 'micro.safetensors');
beforeAll(() => cliJson(['convert', '--checkpoint', 'random:vit_micro_patch4_28', '--out', micro]));

async function catalog(server: ServerProcess): Promise<void> {
  const uploadId = await uploadBytes(server, 'micro.safetensors', readFileSync(micro));
  await ok(server.url, server.admin, 'mutation($i: RegisterModelInput!) { registerModel(input: $i) { id } }', { i: { name: 'micro', uploadId } });
  await importDigits(server);
}

const importDigits = (server: ServerProcess, more: Record<string, unknown> = {}): Promise<unknown> =>
  ok(server.url, server.admin, 'mutation($i: ImportDatasetInput!) { importDataset(input: $i) { id } }', {
    i: { name: 'digits', format: 'MNIST_PACKAGE', trainLimit: 1024, testLimit: 200, ...more },
  });

const startRun = async (server: ServerProcess, hyper: Record<string, unknown>, dataset = 'digits'): Promise<string> =>
  (
    await ok(server.url, server.admin, 'mutation($i: StartRunInput!) { startRun(input: $i) { id } }', {
      i: { model: 'micro', dataset, strategy: 'attn-only', hyperParameters: hyper },
    })
  ).startRun.id;

/** The bytes of the files under `dir` (directories' own sizes aside). */
const bytesUnder = (dir: string): number =>
  readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((d) => d.isFile())
    .reduce((n, d) => n + statSync(join(d.parentPath, d.name)).size, 0);
const slotsOf = (server: ServerProcess): string[] => {
  const dir = join(server.dataDir, 'blobs', 'objects', 'slots');
  return existsSync(dir)
    ? readdirSync(dir, { recursive: true })
        .map(String)
        .filter((f) => f.endsWith('.safetensors'))
    : [];
};

describe('upload slots are given back', () => {
  let server: ServerProcess;
  afterAll(() => server?.stop());

  it('1,024 rejected uploads and an abandoned one: the blob store is back to its bytes, no slot left', async () => {
    server = await startServer({
      PARTUNE_VOLUNTEERS_PER_MINUTE: '100000',
      PARTUNE_VOLUNTEERS_TOTAL_PER_MINUTE: '100000',
      PARTUNE_QUARANTINE_STRIKES: '100000',
      PARTUNE_LEASE_SECONDS: '10', // the test's own claim-upload-complete must fit in one on a loaded machine
      PARTUNE_STALL_SECONDS: '10',
      PARTUNE_UPLOAD_TTL_SECONDS: '2',
    });
    await catalog(server);
    const runId = await startRun(server, { maxSteps: 64, batchSize: 8, stepsPerRound: 64, shardsPerRound: 64, verification: 'NONE', admitVolunteers: true });
    await waitFor(
      'the round to be planned',
      async () => (await ok(server.url, server.admin, 'query($id: ID!) { run(id: $id) { status } }', { id: runId })).run.status === 'RUNNING',
    );
    const blobs = join(server.dataDir, 'blobs');
    const before = bytesUnder(blobs);
    const garbage = new Uint8Array(4096).map((_, i) => (i * 31) % 256);
    let rejected = 0;
    await Promise.all(
      Array.from({ length: 16 }, async (_, v) => {
        const address = `127.0.${80 + v}.2`;
        const { volunteerToken } = await new AddressedClient(server.url, undefined, address).request(VolunteerToken, { invitation: null });
        const { registerWorker } = await new AddressedClient(server.url, volunteerToken, address).request(RegisterWorker, {
          name: `v${v}`,
          kind: 'browser',
          backend: 'wasm',
        });
        const client = new AddressedClient(server.url, registerWorker.credential, address);
        // Each volunteer fails every shard once (a shard it failed is never offered to it again).
        for (let mine = 0; mine < 64;) {
          const { claimShard: c } = await client.request(ClaimShard, { kernelClass: 'wasm-gemm-fma', memoryBudget: null, wait: 1, backend: null });
          if (!c) continue;
          mine++;
          expect((await fetch(c.uploadUrl, { method: 'PUT', body: garbage })).status).toBe(200);
          const done = await client
            .request(CompleteShard, {
              shardId: c.shard.id,
              attempt: c.shard.attempt,
              loss: 2,
              imagesPerSecond: 10,
              kernelClass: 'wasm-gemm-fma',
              downloadedBytes: null,
            })
            .then(
              () => 'accepted',
              (e: Error) => e.message,
            );
          expect(done).toMatch(/update rejected/);
          rejected++;
        }
      }),
    );
    expect(rejected).toBe(1024);
    expect(slotsOf(server)).toEqual([]); // each deleted once checked
    // An abandoned upload: claimed, uploaded, never completed. Its lease lapses; the sweep deletes it.
    const address = '127.0.99.2';
    const { volunteerToken } = await new AddressedClient(server.url, undefined, address).request(VolunteerToken, { invitation: null });
    const { registerWorker } = await new AddressedClient(server.url, volunteerToken, address).request(RegisterWorker, {
      name: 'abandons',
      kind: 'browser',
      backend: 'wasm',
    });
    const { claimShard: c } = await new AddressedClient(server.url, registerWorker.credential, address).request(ClaimShard, {
      kernelClass: 'wasm-gemm-fma',
      memoryBudget: null,
      wait: 0,
      backend: null,
    });
    await fetch(c!.uploadUrl, { method: 'PUT', body: garbage });
    expect(slotsOf(server)).toHaveLength(1);
    await waitFor('the sweep to delete the abandoned slot', async () => slotsOf(server).length === 0, 30_000, 250);
    const after = bytesUnder(blobs);
    process.stdout.write(
      `slots: ${rejected} rejected uploads and 1 abandoned; blob store ${before} -> ${after} bytes; tmp ${readdirSync(join(blobs, 'tmp')).length} files\n`,
    );
    expect(after).toBe(before);
    expect(readdirSync(join(blobs, 'tmp'))).toEqual([]);
    // Cancelled, the run keeps its last state only: its 64 window packs go.
    await ok(server.url, server.admin, 'mutation($id: ID!) { cancelRun(id: $id) { id } }', { id: runId });
    const left = (): string[] =>
      readdirSync(join(blobs, 'objects', 'runs', runId), { recursive: true, withFileTypes: true }).filter((d) => d.isFile()).map((d) => d.name);
    await waitFor('the cancelled run\'s packs to be deleted', async () => left().length === 1, 30_000, 250);
    expect(left()).toEqual(['state-0000.safetensors']);
  });
});

describe('who sees a run’s data', () => {
  let server: ServerProcess;
  const processes: WorkerProcess[] = [];
  afterAll(async () => {
    for (const p of processes) await p.kill();
    await server?.stop();
  });

  it('a volunteer process on a run that admits no volunteers leases nothing and downloads nothing; a private dataset never admits them', async () => {
    // Credentials that live 36 s (a shard on a loaded machine fits in one): the registered worker must renew its own to finish the run.
    server = await startServer({ PARTUNE_CREDENTIAL_HOURS: '0.01', PARTUNE_LEASE_SECONDS: '15', PARTUNE_STALL_SECONDS: '30' });
    await catalog(server);
    await importDigits(server, { name: 'private-digits', private: true });
    const volunteer = startVolunteer(server, '127.0.98.2', 'stranger');
    processes.push(volunteer);
    const runId = await startRun(server, { epochs: 2, batchSize: 32, stepsPerRound: 8, seed: 0 });
    await waitFor('the volunteer to have registered and asked', async () => volunteer.log.some((l) => /registered/.test(l)), 60_000, 100);
    await new Promise((r) => setTimeout(r, 3000));
    const registered = startWorker(server, 'registered');
    processes.push(registered);
    const said = (): string => `worker: ${registered.log.slice(-15).join('\n')}\nserver: ${server.log.slice(-15).join('\n')}`;
    const run = await waitForRun(server, runId, 300_000).catch((e: Error) => {
      throw new Error(`${e.message}\n${said()}`);
    });
    expect({ status: run.status, error: run.error, why: run.status === 'SUCCEEDED' ? '' : said() }).toEqual({ status: 'SUCCEEDED', error: null, why: '' });
    const shards = await ok(server.url, server.admin, 'query($id: ID!) { run(id: $id) { shards { workerId } } workers(first: 100) { items { id name } } }', {
      id: runId,
    });
    const strangerIds = shards.workers.items.filter((w: { name: string }) => w.name === 'stranger').map((w: { id: string }) => w.id);
    expect(strangerIds).toHaveLength(1);
    expect(shards.run.shards.filter((s: { workerId: string }) => strangerIds.includes(s.workerId))).toEqual([]);
    expect(volunteer.log.filter((l) => /claimed|download/.test(l))).toEqual([]);
    expect(registered.log.filter((l) => /credential renewed/.test(l)).length).toBeGreaterThan(0);
    const denied = await gql(server.url, server.admin, 'mutation($i: StartRunInput!) { startRun(input: $i) { id } }', {
      i: { model: 'micro', dataset: 'private-digits', strategy: 'attn-only', hyperParameters: { admitVolunteers: true } },
    });
    expect([denied.errors?.[0].extensions?.code, denied.errors?.[0].message]).toEqual(['BAD_USER_INPUT', expect.stringMatching(/'private-digits' is private/)]);
    process.stdout.write(
      `admission: run ${run.status} by the registered worker ` +
        `(credential renewed ${registered.log.filter((l) => /credential renewed/.test(l)).length} times); ` +
        'the volunteer leased nothing\n',
    );
  });
});
