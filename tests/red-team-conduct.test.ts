// Verified compute against volunteers that cheat other than by lying in the open, on a live
// `partune serve` with real worker processes, each from its own /24 on loopback unless said:
// three sybils of one /24 against a registered worker, a false kernel class with 1e-3 noise,
// lies told only on check replicas, volunteers who fail a shard first so that one crash of a
// registered worker would fail the run, and heartbeats of fake progress. Every run must end as
// the honest run did, bit for bit.
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ServerProcess, WorkerProcess, cliJson, ok, startServer, startWorker, uploadBytes, waitFor, waitForRun } from '../node/local-platform';
import { heldOf, liesOf, startVolunteer } from '../bench/fleet';
import { deltaTensors, sameDelta } from '../bench/trust-fleet';

jest.setTimeout(600_000);

const STALL_SECONDS = 8;
const tmp = mkdtempSync(join(tmpdir(), 'partune-red-conduct-'));
// Two rounds of one shard of 16 steps: long enough that fake progress could go on past the stall window.
const HYPER = { maxSteps: 32, batchSize: 32, stepsPerRound: 16, shardsPerRound: 1, seed: 0, admitVolunteers: true };
const SHARDS = 'query($id: ID!) { run(id: $id) { shards { id round index replica status verdict workerId kernelClass rejections } } }';

type Row = {
  id: string;
  round: number;
  index: number;
  replica: number;
  status: string;
  verdict: string | null;
  workerId: string | null;
  kernelClass: string | null;
  rejections: string[];
};

let server: ServerProcess;
let reference: Map<string, Buffer>;
const processes: WorkerProcess[] = [];

async function startRun(mode: Record<string, unknown>): Promise<string> {
  return (
    await ok(server.url, server.admin, 'mutation($i: StartRunInput!) { startRun(input: $i) { id } }', {
      i: { model: 'micro', dataset: 'digits', strategy: 'attn-only', hyperParameters: { ...HYPER, ...mode } },
    })
  ).startRun.id;
}

/** The run ends as the honest run did; its shard rows. */
async function honestly(runId: string): Promise<Row[]> {
  const run = await waitForRun(server, runId, 400_000);
  expect([run.status, run.error]).toEqual(['SUCCEEDED', null]);
  expect(sameDelta(deltaTensors(new Uint8Array(await (await fetch(run.delta.downloadUrl)).arrayBuffer())), reference)).toBe(true);
  return (await ok(server.url, server.admin, SHARDS, { id: runId })).run.shards;
}

const workersNamed = async (prefix: string): Promise<Record<string, any>[]> =>
  (
    await ok(
      server.url,
      server.admin,
      '{ workers(first: 40) { items { id name trust party strikes agreed disagreed classes { kernelClass agreed disagreed } } } }',
    )
  ).workers.items.filter((w: { name: string }) => w.name.startsWith(prefix));

const used = (rows: Row[], ids: Set<string>): Row[] => rows.filter((r) => (r.verdict === 'ACCEPTED' || r.verdict === 'AGREED') && ids.has(r.workerId!));

/** Stops every process of the last test; they stay in the electorate until they age out (lease seconds). */
async function stopAll(): Promise<void> {
  await Promise.all(processes.splice(0).map((p) => p.kill('SIGTERM')));
  await new Promise((r) => setTimeout(r, 11_000));
}

beforeAll(async () => {
  const micro = join(tmp, 'micro.safetensors');
  await cliJson(['convert', '--checkpoint', 'random:vit_micro_patch4_28', '--out', micro]);
  server = await startServer({ PARTUNE_WAIT_SECONDS: '3', PARTUNE_LEASE_SECONDS: '10', PARTUNE_STALL_SECONDS: String(STALL_SECONDS) });
  const uploadId = await uploadBytes(server, 'micro.safetensors', readFileSync(micro));
  await ok(server.url, server.admin, 'mutation($i: RegisterModelInput!) { registerModel(input: $i) { id } }', { i: { name: 'micro', uploadId } });
  await ok(server.url, server.admin, 'mutation($i: ImportDatasetInput!) { importDataset(input: $i) { id } }', {
    i: { name: 'digits', format: 'MNIST_PACKAGE', trainLimit: 512, testLimit: 200 },
  });
  processes.push(startWorker(server, 'reference'));
  reference = deltaTensors(
    new Uint8Array(await (await fetch((await waitForRun(server, await startRun({ verification: 'NONE' }), 300_000)).delta.downloadUrl)).arrayBuffer()),
  );
  await stopAll();
});

afterEach(stopAll);

afterAll(async () => {
  await Promise.all(processes.map((p) => p.kill()));
  await server?.stop();
});

it('three sybils of one /24 returning unmoved states never outvote a registered worker (spotCheckRate 1)', async () => {
  const sybils = [2, 3, 4].map((n, i) => startVolunteer(server, `127.0.20.${n}`, `sybil-${i}`, { lie: 'lazy' }));
  processes.push(...sybils, startWorker(server, 'registered-s'));
  const rows = await honestly(await startRun({ verification: 'SPOT_CHECK', spotCheckRate: 1 }));
  const all = await workersNamed('');
  const ids = new Set(all.filter((w) => w.name.startsWith('sybil-')).map((w) => w.id as string));
  expect(used(rows, ids)).toEqual([]);
  expect(new Set(all.filter((w) => ids.has(w.id)).map((w) => w.party))).toEqual(new Set(['127.0.20.0/24']));
  expect(all.find((w) => w.name === 'registered-s')).toMatchObject({ trust: 'REGISTERED', strikes: 0, disagreed: 0 });
  process.stdout.write(`sybils: ${sybils.flatMap(liesOf).length} unmoved states returned, none used\n`);
});

it('a false kernel class with 1e-3 noise: close to the truth, never used, never credited; honest volunteers of the true class are', async () => {
  const fakes = [21, 22].map((n, i) => startVolunteer(server, `127.0.${n}.2`, `fake-${i}`, { lie: 'noise3', kernelClass: 'webgl2-f32:fake_gpu' }));
  const honest = [23, 24].map((n, i) => startVolunteer(server, `127.0.${n}.2`, `honest-f${i}`));
  processes.push(...fakes, ...honest, startWorker(server, 'registered-f'));
  const rows = await honestly(await startRun({ verification: 'QUORUM', quorum: 2 }));
  const liars = await workersNamed('fake-');
  expect(used(rows, new Set(liars.map((w) => w.id)))).toEqual([]);
  for (const w of liars) {
    expect(w.trust).not.toBe('EARNED');
    // No agreement credited in any class (a CLOSE result is neither credited nor struck).
    expect(w.classes.filter((c: { agreed: number }) => c.agreed > 0)).toEqual([]);
  }
  // Their results were judged across classes at most: each is CLOSE or OUTVOTED, or was refused as late.
  const theirs = rows.filter((r) => liars.some((w) => w.id === r.workerId) && r.status === 'DONE');
  expect(theirs.every((r) => r.kernelClass === 'webgl2-f32:fake_gpu' && ['CLOSE', 'OUTVOTED', null].includes(r.verdict))).toBe(true);
  for (const w of await workersNamed('honest-f')) expect([w.strikes, w.disagreed]).toEqual([0, 0]);
});

it('colluders who lie only on check replicas are caught by the check, under SPOT_CHECK', async () => {
  const liars = [25, 26].map((n, i) => startVolunteer(server, `127.0.${n}.2`, `checker-${i}`, { lie: 'collude', checkOnly: true }));
  const honest = [27, 28].map((n, i) => startVolunteer(server, `127.0.${n}.2`, `honest-c${i}`));
  processes.push(...liars, ...honest, startWorker(server, 'registered-c'));
  const rows = await honestly(await startRun({ verification: 'SPOT_CHECK', spotCheckRate: 1 }));
  // Their honest results on first replicas may be used; no lie is.
  const lies = liars.flatMap(liesOf);
  expect(rows.filter((r) => lies.some((l) => l.shard === r.id) && (r.verdict === 'ACCEPTED' || r.verdict === 'AGREED'))).toEqual([]);
  for (const l of lies) expect(rows.find((r) => r.id === l.shard)!.replica).toBeGreaterThan(0);
  for (const w of await workersNamed('honest-c')) expect([w.strikes, w.disagreed]).toEqual([0, 0]);
});

it("volunteers' failures never fail a run: two fail every shard they take, then a registered worker crashes on one", async () => {
  processes.push(...[29, 30].map((n, i) => startVolunteer(server, `127.0.${n}.2`, `prefail-${i}`, { prefail: 1000 })));
  const runId = await startRun({ verification: 'SPOT_CHECK' });
  const rowsNow = async (): Promise<Row[]> => (await ok(server.url, server.admin, SHARDS, { id: runId })).run.shards;
  const failures = (r: Row): number => r.rejections.filter((x) => x.includes('failed: out of memory')).length;
  const failed = await waitFor('a shard failed twice by volunteers', async () => (await rowsNow()).find((r) => failures(r) >= 2), 120_000, 100);
  const crashing = startWorker(server, 'registered-crash');
  processes.push(crashing);
  await waitFor(
    'the registered worker to hold it',
    async () => {
      const id = (await workersNamed('registered-crash'))[0]?.id;
      return (await rowsNow()).some((r) => r.id === failed.id && r.status === 'LEASED' && r.workerId === id);
    },
    120_000,
    50,
  );
  await crashing.kill('SIGKILL');
  processes.push(startWorker(server, 'registered-after'));
  const rows = await honestly(runId);
  const crashed = rows.find((r) => r.id === failed.id)!;
  const reasons = crashed.rejections.join('\n');
  expect(reasons).toMatch(/failed: out of memory[\s\S]*failed: out of memory/);
  // The crashed lease lapsed (one registered failure of five), or the sibling's result settled the shard first.
  if (crashed.status !== 'CANCELLED')
    expect(reasons).toMatch(new RegExp(`(lease expired|no progress).*\\(worker ${(await workersNamed('registered-crash'))[0].id}\\)`));
});

it('heartbeats of fake progress hold a lease no longer than the deadline the run shows, never past the stall window', async () => {
  const faker = startVolunteer(server, '127.0.31.2', 'faker', { fakeProgress: true });
  processes.push(faker);
  // QUORUM 2: the registered worker's result waits for the faker's replica until its lease ends.
  const runId = await startRun({ verification: 'QUORUM', quorum: 2 });
  await waitFor(
    'the faker to hold a lease',
    async () => ((await ok(server.url, server.admin, SHARDS, { id: runId })).run.shards as Row[]).some((r) => r.status === 'LEASED'),
    60_000,
    100,
  );
  processes.push(startWorker(server, 'registered-p'));
  await honestly(runId);
  const held = await waitFor('a lease the faker lost', async () => heldOf(faker).length > 0 && heldOf(faker), 20_000);
  // 16 steps, one a second, then the stall window: 24 s "in progress". The deadline, from the pace the
  // registered worker showed (floored at the stall window), ends it first (about 8 s on a quiet machine;
  // a loaded one slows that pace, and so lengthens the deadline); a starved faker's ticks may instead miss
  // the stall window, which ends it no later. Never does a heartbeat keep it past those.
  for (const h of held)
    expect(h).toEqual({ shard: h.shard, seconds: expect.any(Number), why: expect.stringMatching(/deadline|settled|no progress for \d+ s/) });
  expect(Math.max(...held.map((h) => h.seconds))).toBeLessThan(16 + STALL_SECONDS + 10);
  process.stdout.write(
    `fake progress: ${held.length} leases held for at most ${Math.max(...held.map((h) => h.seconds)).toFixed(1)} s (stall window ${STALL_SECONDS} s): ${held.map((h) => h.why).join('; ')}\n`,
  );
});
