// Verified compute against a live `partune serve`: a fleet in which a quarter of the workers lie
// (real worker processes, each from its own /24 on loopback), two volunteers of one /24 who
// collude by hand, and an honest fleet with both cores busy. Under QUORUM every run must come out
// bit for bit as the same run computed by trusted workers alone, every lie must be rejected with a
// reason naming its worker, and the liars must end untrusted.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect, parseState, parseVitConfig, preset, presetStrategy, serializeState, tunedShapes } from '../engine';
import { ServerProcess, WorkerProcess, cliJson, ok, startServer, startWorker, uploadBytes, waitFor, waitForRun } from '../node/local-platform';
import { heldOf, liesOf, startVolunteer } from '../bench/fleet';
import { AddressedClient } from '../bench/fleet-worker';
import { deltaTensors, sameDelta } from '../bench/trust-fleet';
import type { TypedDocument } from '../protocol/typed-document';

jest.setTimeout(600_000);

const tmp = mkdtempSync(join(tmpdir(), 'partune-red-team-'));
// Two shards of 2 steps per round, 8 rounds: room for every liar to lie several times.
const FLEET_RUN = { epochs: 2, batchSize: 32, stepsPerRound: 4, shardsPerRound: 2, seed: 0 };
const COLLUSION_RUN = { maxSteps: 4, batchSize: 32, stepsPerRound: 4, shardsPerRound: 1, seed: 0 };
const SHARDS = 'query($id: ID!) { run(id: $id) { shards { id index round replica workerId status verdict need kernelClass rejections } } }';

type Row = { id: string; index: number; round: number; replica: number; workerId: string | null; status: string; verdict: string | null; rejections: string[] };

let server: ServerProcess;
const processes: WorkerProcess[] = [];

const gql = <R = Record<string, any>>(client: AddressedClient, query: string, variables: Record<string, unknown> = {}): Promise<R> =>
  client.request(query as TypedDocument<R, Record<string, unknown>>, variables);

async function startRun(hyper: Record<string, unknown>): Promise<string> {
  return (
    await ok(server.url, server.admin, 'mutation($i: StartRunInput!) { startRun(input: $i) { id } }', {
      i: { model: 'micro', dataset: 'digits', strategy: 'attn-only', hyperParameters: { admitVolunteers: true, ...hyper } },
    })
  ).startRun.id;
}

async function tensorsOf(runId: string): Promise<Map<string, Buffer>> {
  const run = await waitForRun(server, runId, 500_000);
  expect([run.status, run.error]).toEqual(['SUCCEEDED', null]);
  return deltaTensors(new Uint8Array(await (await fetch(run.delta.downloadUrl)).arrayBuffer()));
}

const rowsOf = async (runId: string): Promise<Row[]> => (await ok(server.url, server.admin, SHARDS, { id: runId })).run.shards;

const workersById = async (): Promise<Map<string, Record<string, any>>> =>
  new Map(
    (await ok(server.url, server.admin, '{ workers(first: 100) { items { id name trust agreed disagreed strikes quarantined } } }')).workers.items.map(
      (w: { id: string }) => [w.id, w],
    ),
  );

beforeAll(async () => {
  const micro = join(tmp, 'micro.safetensors');
  await cliJson(['convert', '--checkpoint', 'random:vit_micro_patch4_28', '--out', micro]);
  server = await startServer();
  const uploadId = await uploadBytes(server, 'micro.safetensors', readFileSync(micro));
  await ok(server.url, server.admin, 'mutation($i: RegisterModelInput!) { registerModel(input: $i) { id } }', { i: { name: 'micro', uploadId } });
  await ok(server.url, server.admin, 'mutation($i: ImportDatasetInput!) { importDataset(input: $i) { id } }', {
    i: { name: 'digits', format: 'MNIST_PACKAGE', trainLimit: 512, testLimit: 200 },
  });
});

afterAll(async () => {
  await Promise.all(processes.map((p) => p.kill()));
  await server?.stop();
});

const reference: Record<string, Map<string, Buffer>> = {};

describe('a fleet with liars, under QUORUM', () => {
  it('trusted workers alone compute the reference runs (no verification)', async () => {
    const trusted = [startWorker(server, 'trusted-1'), startWorker(server, 'trusted-2')];
    const [fleet, collusion] = [await startRun({ ...FLEET_RUN, verification: 'NONE' }), await startRun({ ...COLLUSION_RUN, verification: 'NONE' })];
    reference.fleet = await tensorsOf(fleet);
    reference.collusion = await tensorsOf(collusion);
    await Promise.all(trusted.map((w) => w.kill('SIGTERM')));
  });

  it("two colluding volunteers of one /24 are one group: the second gets no replica of the first one's shard, whose forgery registered workers outvote", async () => {
    const runId = await startRun({ ...COLLUSION_RUN, verification: 'QUORUM', quorum: 2 });
    const config = parseVitConfig({ ...preset('vit_micro_patch4_28'), numClasses: 10 });
    const shapes = tunedShapes(config, inspect(presetStrategy('attn-only'), config).tuned);
    const colluders: { id: string; client: AddressedClient }[] = [];
    for (const address of ['127.0.12.2', '127.0.12.3']) {
      const anonymous = new AddressedClient(server.url, undefined, address);
      const token = (await gql(anonymous, 'mutation { volunteerToken }')).volunteerToken;
      const joined = (
        await gql(
          new AddressedClient(server.url, token, address),
          'mutation { registerWorker(name: "colluder", kind: "browser", backend: "wasm") { worker { id } credential } }',
        )
      ).registerWorker;
      colluders.push({ id: joined.worker.id as string, client: new AddressedClient(server.url, joined.credential, address) });
    }
    // The first takes a replica and returns a forgery within every bound: the round's state unmoved,
    // the step count advanced. The second, of the same /24, is one group with it: no replica of that shard is its to take.
    const claim = (c: (typeof colluders)[number], wait: number) =>
      gql(c.client, `mutation { claimShard(kernelClass: "wasm-xnnpack-simd", wait: ${wait}) { shard { id attempt round } job uploadUrl state { url } } }`);
    const a = await waitFor('a replica', async () => (await claim(colluders[0], 1)).claimShard, 60_000);
    const start = parseState(new Uint8Array(await (await fetch(a.state.url)).arrayBuffer()), shapes);
    const forged = serializeState({
      ...start,
      optimizer: { ...start.optimizer, step: start.optimizer.step + 4 },
      label: { run: runId, round: a.shard.round, shard: a.shard.id, samples: 4 * 32 },
    });
    expect((await fetch(a.uploadUrl, { method: 'PUT', body: forged as Uint8Array<ArrayBuffer> })).status).toBe(200);
    await gql(
      colluders[0].client,
      'mutation($s: ID!, $a: Int!) { completeShard(shardId: $s, attempt: $a, loss: 2.3, imagesPerSecond: 50, kernelClass: "wasm-xnnpack-simd") { id } }',
      { s: a.shard.id, a: a.shard.attempt },
    );
    expect((await claim(colluders[1], 2)).claimShard).toBeNull();
    const waiting = await rowsOf(runId);
    expect(waiting.map((r) => [r.replica, r.status, r.verdict])).toEqual([
      [0, 'DONE', null],
      [1, 'PENDING', null],
    ]);
    processes.push(startWorker(server, 'trusted-3'), startWorker(server, 'trusted-4'));
    expect(sameDelta(await tensorsOf(runId), reference.collusion)).toBe(true);
    const rows = await rowsOf(runId);
    const outvoted = rows.filter((r) => r.verdict === 'OUTVOTED');
    expect(outvoted.map((r) => r.workerId)).toEqual([colluders[0].id]);
    expect(rows.some((r) => r.workerId === colluders[1].id)).toBe(false);
    for (const r of outvoted) expect(r.rejections).toEqual([expect.stringMatching(new RegExp(`^attempt 1 by worker ${r.workerId}: outvoted: it`))]);
    const workers = await workersById();
    expect(workers.get(colluders[0].id)).toMatchObject({ trust: 'UNTRUSTED', agreed: 0, disagreed: 1, strikes: 1 });
    const accepted = rows.find((r) => r.verdict === 'ACCEPTED')!;
    expect(workers.get(accepted.workerId!)!.trust).toBe('REGISTERED');
  });

  it('a quarter of the fleet lies (moments x1e30, scaled, reversed, zeros, replayed, 1e-3 noise): every lie is rejected, the run is unchanged', async () => {
    const honest = [2, 3, 4, 5].map((n, i) => startVolunteer(server, `127.0.${n}.2`, `honest-${i}`));
    // Each lies in turn in one way after another until quarantined: the first from moments x1e30, the second from zeros.
    const liars = [6, 7].map((n, i) => startVolunteer(server, `127.0.${n}.2`, `liar-${i}`, { lie: 'cycle', offset: i === 0 ? 7 : 3 }));
    processes.push(...honest, ...liars);
    const runId = await startRun({ ...FLEET_RUN, verification: 'QUORUM', quorum: 2 });
    expect(sameDelta(await tensorsOf(runId), reference.fleet)).toBe(true);

    const rows = await rowsOf(runId);
    const workers = await workersById();
    const liarIds = new Set([...workers.values()].filter((w) => w.name.startsWith('liar-')).map((w) => w.id as string));
    const lies = liars.flatMap(liesOf);
    // Every lie that reached the server was rejected with a reason naming its worker; the others
    // came after their shard was settled and were refused as late.
    for (const l of lies) {
      const row = rows.find((r) => r.id === l.shard)!;
      const named = row.rejections.some((reason) => [...liarIds].some((id) => reason.includes(`worker ${id}`)));
      expect({ lie: l, named: named || row.status === 'CANCELLED' }).toEqual({ lie: l, named: true });
    }
    expect(rows.filter((r) => (r.verdict === 'ACCEPTED' || r.verdict === 'AGREED') && liarIds.has(r.workerId!))).toEqual([]);
    const reasons = rows.flatMap((r) => r.rejections).filter((reason) => [...liarIds].some((id) => reason.includes(`worker ${id}`)));
    expect(reasons.some((r) => r.includes('update rejected: not what'))).toBe(true); // caught by the bounds
    if (lies.some((l) => l.mode === 'moments'))
      expect(reasons.some((r) => /update rejected: .*exp_avg_sq .* is more than \d+ steps of gradients clipped/.test(r))).toBe(true);
    expect(reasons.some((r) => r.includes('outvoted'))).toBe(true); // caught by replication
    for (const id of liarIds) expect(['UNTRUSTED', 'QUARANTINED']).toContain(workers.get(id)!.trust);
    for (const w of workers.values()) if (w.name.startsWith('honest-')) expect(w.disagreed).toBe(0);
    const modes = new Set(lies.map((l) => l.mode));
    process.stdout.write(
      `red team: ${lies.length} lies (${[...modes].join(', ')}), ${reasons.length} rejections naming a liar, ${rows.length} replicas for ${new Set(rows.map((r) => `${r.round}.${r.index}`)).size} shards\n`,
    );
    expect(modes.size).toBeGreaterThanOrEqual(4);
  });
});

describe('an honest fleet on a busy machine, with the default lease', () => {
  it('finishes, and no worker is struck while the server checks its update', async () => {
    await Promise.all(processes.splice(0).map((p) => p.kill('SIGTERM')));
    const busy = cpus().map(() => spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' }));
    try {
      const fleet = [startWorker(server, 'loaded-registered'), ...[30, 31].map((n, i) => startVolunteer(server, `127.0.${n}.2`, `loaded-${i}`))];
      processes.push(...fleet);
      const runId = await startRun({ ...FLEET_RUN, verification: 'SPOT_CHECK' });
      expect(sameDelta(await tensorsOf(runId), reference.fleet)).toBe(true);
      const workers = [...(await workersById()).values()].filter((w) => w.name.startsWith('loaded-'));
      expect(workers.map((w) => [w.name, w.strikes, w.disagreed])).toEqual(workers.map((w) => [w.name, 0, 0]));
    } finally {
      for (const b of busy) b.kill('SIGKILL');
    }
  });
});

describe('fake progress under the default stall window (300 s)', () => {
  it('a lease held by heartbeats that claim progress is overdue at the pace the run shows: another group computes the shard meanwhile', async () => {
    await Promise.all(processes.splice(0).map((p) => p.kill('SIGTERM')));
    const faker = startVolunteer(server, '127.0.40.2', 'faker', { fakeProgress: true });
    processes.push(faker);
    const t0 = Date.now();
    const runId = await startRun({ ...COLLUSION_RUN, verification: 'SPOT_CHECK' });
    await waitFor('the faker to hold a lease', async () => (await rowsOf(runId)).some((r) => r.status === 'LEASED'), 60_000, 100);
    processes.push(...[41, 42].map((n, i) => startVolunteer(server, `127.0.${n}.2`, `patient-${i}`)));
    expect(sameDelta(await tensorsOf(runId), reference.collusion)).toBe(true);
    const seconds = (Date.now() - t0) / 1000;
    // Ended well before the stall window would have revoked the faker's lease.
    expect(seconds).toBeLessThan(200);
    process.stdout.write(
      `fake progress, default stall window: the run ended in ${seconds.toFixed(0)} s; the faker's leases: ${JSON.stringify(heldOf(faker))}\n`,
    );
  });
});
