// Verified compute against colluding volunteers, on a live `partune serve` with real worker
// processes, each volunteer from its own /24 (127.0.N.2) so each is one independent group. The
// colluders tell lies that pass every bound (the move reversed, or the state left unmoved), chosen
// by the shard so they agree bit for bit (with 25 %, one of them after farming trust with honest
// results; with 50 %, a farmer's honest results would be honest votes). Under SPOT_CHECK, QUORUM 2 and QUORUM 3, with 25 % and 50 % liars,
// with and without a registered worker online: every run ends with the honest run's delta bit for
// bit, or, where the liars hold half the groups and no registered worker is online, WAITS with its
// reason and accepts no lie. Honest workers end with no strikes.
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';
import { ServerProcess, WorkerProcess, cliJson, ok, startServer, startWorker, uploadBytes, waitFor, waitForRun } from '../node/local-platform';
import { liesOf, startVolunteer } from '../bench/fleet';
import { deltaTensors, sameDelta } from '../bench/trust-fleet';

jest.setTimeout(900_000);

const tmp = mkdtempSync(join(tmpdir(), 'partune-red-matrix-'));
// Two rounds of two shards of two steps: every index is replicated and judged.
const HYPER = { maxSteps: 8, batchSize: 32, stepsPerRound: 4, shardsPerRound: 2, seed: 0, admitVolunteers: true };
const MODES = [{ verification: 'SPOT_CHECK' }, { verification: 'QUORUM', quorum: 2 }, { verification: 'QUORUM', quorum: 3 }] as const;
const RUN = `query($id: ID!) { run(id: $id) { id status waiting error delta { downloadUrl }
  shards { id round index replica status verdict workerId rejections } } }`;

let server: ServerProcess;
const processes: WorkerProcess[] = [];
let reference: Map<string, Buffer>;
let nextPrefix = 10;

type Row = { id: string; round: number; index: number; status: string; verdict: string | null; workerId: string | null; rejections: string[] };

async function startRun(mode: Record<string, unknown>): Promise<string> {
  return (
    await ok(server.url, server.admin, 'mutation($i: StartRunInput!) { startRun(input: $i) { id } }', {
      i: { model: 'micro', dataset: 'digits', strategy: 'attn-only', hyperParameters: { ...HYPER, ...mode } },
    })
  ).startRun.id;
}

const runOf = async (id: string): Promise<Record<string, any>> => (await ok(server.url, server.admin, RUN, { id })).run;

const workers = async (): Promise<Record<string, any>[]> =>
  (await ok(server.url, server.admin, '{ workers(first: 100) { items { id name trust party agreed disagreed strikes } } }')).workers.items;

/** `honest` honest volunteers and `liars` colluders, each in a /24 of its own. */
function fleet(tag: string, honest: number, liars: number, farms: boolean): { honest: WorkerProcess[]; liars: WorkerProcess[] } {
  const at = (): string => `127.0.${nextPrefix++}.2`;
  const h = Array.from({ length: honest }, (_, i) => startVolunteer(server, at(), `honest-${tag}-${i}`));
  // With `farms`, the first colluder builds a record with three honest results before it lies.
  const l = Array.from({ length: liars }, (_, i) =>
    startVolunteer(server, at(), `liar-${tag}-${i}`, { lie: 'collude', honestFirst: farms && i === 0 ? 3 : 0 }),
  );
  processes.push(...h, ...l);
  return { honest: h, liars: l };
}

/** No result of a liar was used, and each run either ended as the honest run did or waits. */
async function judgeRuns(ids: string[], expect_: 'SUCCEEDED' | 'WAITING'): Promise<void> {
  const liarIds = new Set((await workers()).filter((w) => w.name.startsWith('liar-')).map((w) => w.id as string));
  for (const id of ids) {
    const run = expect_ === 'SUCCEEDED' ? await waitForRun(server, id, 600_000) : await runOf(id);
    const rows: Row[] = (await runOf(id)).shards;
    expect({ id, used: rows.filter((r) => (r.verdict === 'ACCEPTED' || r.verdict === 'AGREED') && liarIds.has(r.workerId!)) }).toEqual({ id, used: [] });
    if (expect_ === 'WAITING') {
      expect([run.status, run.waiting]).toEqual([
        'WAITING',
        expect.stringMatching(/^round \d+ shard \d+ needs \d+ results that agree bit for bit from independent groups/),
      ]);
      continue;
    }
    expect([run.status, run.error]).toEqual(['SUCCEEDED', null]);
    expect(sameDelta(deltaTensors(new Uint8Array(await (await fetch(run.delta.downloadUrl)).arrayBuffer())), reference)).toBe(true);
  }
}

beforeAll(async () => {
  const micro = join(tmp, 'micro.safetensors');
  await cliJson(['convert', '--checkpoint', 'random:vit_micro_patch4_28', '--out', micro]);
  // Escalation after 3 s of waiting; a worker counts as online for 20 s after it was last seen.
  server = await startServer({ PARTUNE_WAIT_SECONDS: '3', PARTUNE_LEASE_SECONDS: '20' });
  const uploadId = await uploadBytes(server, 'micro.safetensors', readFileSync(micro));
  await ok(server.url, server.admin, 'mutation($i: RegisterModelInput!) { registerModel(input: $i) { id } }', { i: { name: 'micro', uploadId } });
  await ok(server.url, server.admin, 'mutation($i: ImportDatasetInput!) { importDataset(input: $i) { id } }', {
    i: { name: 'digits', format: 'MNIST_PACKAGE', trainLimit: 512, testLimit: 200 },
  });
  const trusted = startWorker(server, 'reference');
  reference = deltaTensors(
    new Uint8Array(await (await fetch((await waitForRun(server, await startRun({ verification: 'NONE' }), 300_000)).delta.downloadUrl)).arrayBuffer()),
  );
  await trusted.kill('SIGTERM');
});

afterAll(async () => {
  await Promise.all(processes.map((p) => p.kill()));
  await server?.stop();
});

describe('colluding volunteers under SPOT_CHECK, QUORUM 2 and QUORUM 3', () => {
  it('25 % liars (2 of 8 groups), no registered worker: every run is the honest run bit for bit', async () => {
    const f = fleet('quarter', 6, 2, true);
    await judgeRuns(await Promise.all(MODES.map(startRun)), 'SUCCEEDED');
    process.stdout.write(`red team (25 %, volunteers only): ${f.liars.flatMap(liesOf).length} lies told\n`);
  });

  it('25 % liars with a registered worker online: every run is the honest run bit for bit', async () => {
    processes.push(startWorker(server, 'registered-quarter'));
    await judgeRuns(await Promise.all(MODES.map(startRun)), 'SUCCEEDED');
    await processes.pop()!.kill('SIGTERM');
  });

  it('50 % liars, no registered worker: every run waits with its reason and uses no lie; a registered worker then settles them as the honest run', async () => {
    // The earlier fleet is stopped and ages out of the electorate.
    await Promise.all(processes.splice(0).map((p) => p.kill('SIGTERM')));
    await new Promise((r) => setTimeout(r, 21_000));
    const events: { runId: string; kind: string; message: string | null }[] = [];
    const ws = createClient({ url: server.url.replace('http', 'ws'), webSocketImpl: WebSocket, connectionParams: { authorization: `Bearer ${server.admin}` } });
    ws.subscribe(
      { query: 'subscription { runEvents { runId kind message } }' },
      { next: (m) => void events.push(m.data!.runEvents as any), error: () => undefined, complete: () => undefined },
    );
    const f = fleet('half', 4, 4, false);
    const ids = await Promise.all(MODES.map(startRun));
    for (const id of ids) await waitFor(`run ${id} to wait`, async () => (await runOf(id)).status === 'WAITING', 300_000, 500);
    await judgeRuns(ids, 'WAITING');
    for (const id of ids) expect(events.some((e) => e.runId === id && e.kind === 'WAITING' && /needs \d+ results/.test(e.message ?? ''))).toBe(true);
    await ws.dispose();
    processes.push(startWorker(server, 'registered-half'));
    await judgeRuns(ids, 'SUCCEEDED');
    process.stdout.write(`red team (50 %): ${f.liars.flatMap(liesOf).length} lies told, none used; the registered worker settled ${ids.length} waiting runs\n`);
  });

  it('honest volunteers end with no strikes and no disagreements; the colluders that lied were caught', async () => {
    const all = await workers();
    for (const w of all.filter((x) => x.name.startsWith('honest-'))) expect([w.name, w.strikes, w.disagreed]).toEqual([w.name, 0, 0]);
    const liars = all.filter((x) => x.name.startsWith('liar-'));
    expect(liars.some((w) => w.disagreed > 0)).toBe(true);
    for (const w of liars) expect(w.trust).not.toBe('REGISTERED');
  });
});
