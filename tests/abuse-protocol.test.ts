// A hostile volunteer against the shard protocol and the blob store, during an honest run on a
// real server with a real (trusted) worker process. Each attack gets a precise answer, and the
// honest run's delta is bit for bit the single-process one.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { inspect, parseState, parseVitConfig, preset, presetStrategy, serializeState, tunedShapes } from '../engine';
import { cliJson, gql, ok, registerWorker, waitFor } from '../node/local-platform';
import { signUrl } from '../storage/signed-url';
import { HonestRun, residentMiB, startHonestRun } from './support/honest-run';

jest.setTimeout(300_000);

let h: HonestRun;
/** Long enough for the honest worker on a loaded 2-core machine, short enough for the staller's test to wait out. */
const STALL_SECONDS = 20;
// Attackers wait for work as honest workers do: a claim that only polls loses every shard to them.
const CLAIM = 'mutation { claimShard(kernelClass: "wasm-xnnpack-simd", wait: 20) { shard { id attempt round } job uploadUrl state { url } } }';

beforeAll(async () => {
  h = await startHonestRun({ PARTUNE_QUARANTINE_STRIKES: '3', PARTUNE_STALL_SECONDS: String(STALL_SECONDS) });
});
afterAll(() => h?.close());

const volunteer = async (name: string): Promise<string> => {
  const { volunteerToken } = await ok(h.server.url, undefined, 'mutation { volunteerToken }');
  return (await registerWorker(h.server, name, 'browser', volunteerToken)).credential;
};
const claim = (credential: string): Promise<Record<string, any>> => waitFor('a shard', async () => (await ok(h.server.url, credential, CLAIM)).claimShard, 60_000, 50);
const errorCode = (r: { errors?: { extensions?: { code?: string } }[] }): string | undefined => r.errors?.[0]?.extensions?.code;

describe('a hostile volunteer during an honest run', () => {
  it("another worker's lease is FORBIDDEN: heartbeats, completions and failures in its name", async () => {
    const spoofer = await volunteer('spoofer');
    const honest = await waitFor('the honest worker to hold a shard', async () => {
      const { run, workers } = await ok(h.server.url, h.server.admin, 'query($id: ID!) { run(id: $id) { shards { id status attempt workerId } } workers { items { id name } } }', { id: h.runId });
      const id = workers.items.find((w: any) => w.name === 'honest')?.id;
      return run.shards.find((s: any) => s.status === 'LEASED' && s.workerId === id);
    }, 60_000, 50);
    const vars = { s: honest.id, a: honest.attempt };
    const calls = [
      'mutation($s: ID!, $a: Int!) { heartbeat(shardId: $s, attempt: $a, stepsDone: 1) { cancelled } }',
      'mutation($s: ID!, $a: Int!) { completeShard(shardId: $s, attempt: $a, loss: 0.1, imagesPerSecond: 9999, kernelClass: "wasm-xnnpack-simd") { id } }',
      'mutation($s: ID!, $a: Int!) { failShard(shardId: $s, attempt: $a, message: "x") }',
    ];
    for (const q of calls) expect(errorCode(await gql(h.server.url, spoofer, q, vars))).toBe('FORBIDDEN');
    // The shared worker token and a volunteer token name no worker: the protocol takes a credential.
    expect(errorCode(await gql(h.server.url, h.server.worker, CLAIM))).toBe('FORBIDDEN');
    // A credential for a made-up worker id does not verify.
    const forged = `wkc_${'x'.repeat(36)}.${'A'.repeat(43)}`;
    expect(errorCode(await gql(h.server.url, forged, CLAIM))).toBe('UNAUTHENTICATED');
  });

  it('failing every shard it claims gets it quarantined, and never fails the run', async () => {
    const saboteur = await volunteer('saboteur');
    for (let i = 0; i < 3; i++) {
      const a = await claim(saboteur);
      expect(await ok(h.server.url, saboteur, 'mutation($s: ID!, $a: Int!) { failShard(shardId: $s, attempt: $a, message: "sabotage") }',
        { s: a.shard.id, a: a.shard.attempt })).toEqual({ failShard: true });
    }
    const fourth = await gql(h.server.url, saboteur, CLAIM);
    expect([errorCode(fourth), fourth.errors?.[0].message]).toEqual(['FORBIDDEN', expect.stringMatching(/quarantined after 3 failed, rejected or revoked leases/)]);
    const { run } = await ok(h.server.url, h.server.admin, 'query($id: ID!) { run(id: $id) { status } }', { id: h.runId });
    expect(run.status).not.toBe('FAILED');
    const { workers } = await ok(h.server.url, h.server.admin, '{ workers { items { name trusted strikes quarantined } } }');
    expect(workers.items.find((w: any) => w.name === 'saboteur')).toEqual({ name: 'saboteur', trusted: false, strikes: 3, quarantined: true });
  });

  it('heartbeats without progress lose the lease after the stall window', async () => {
    const staller = await volunteer('staller');
    const a = await claim(staller);
    const beat = (): Promise<Record<string, any>> => ok(h.server.url, staller, 'mutation($s: ID!, $a: Int!) { heartbeat(shardId: $s, attempt: $a, stepsDone: 0) { cancelled reason } }',
      { s: a.shard.id, a: a.shard.attempt });
    const lost = await waitFor('the lease to be revoked', async () => {
      const { heartbeat } = await beat();
      return heartbeat.cancelled && heartbeat;
    }, 120_000, 1000);
    // Unless the honest worker's replica of the same shard settled it first.
    expect(lost.reason).toMatch(/no progress for \d+ s: lease revoked|other replicas settled the shard/);
    const stalled = /no progress for (\d+) s/.exec(lost.reason);
    if (stalled) expect(Number(stalled[1])).toBeGreaterThanOrEqual(STALL_SECONDS); // never before the window
  });

  it('updates no AdamW steps could make (scaled, sign-flipped, zeroed, noise) are rejected, naming the worker', async () => {
    const config = parseVitConfig({ ...preset('vit_micro_patch4_28'), numClasses: 10 });
    const shapes = tunedShapes(config, inspect(presetStrategy('attn-only'), config).tuned);
    let seed = 7;
    const noise = (): number => ((seed = (seed * 16807) % 2147483647) / 2147483647 - 0.5) * 0.2;
    const lies: [string, (x: number) => number][] = [['x100', (x) => 100 * x], ['sign', (x) => -x], ['zeros', () => 0], ['noise', (x) => x + noise()]];
    const ids: string[] = [];
    for (const [name, spoil] of lies) {
      const { volunteerToken } = await ok(h.server.url, undefined, 'mutation { volunteerToken }');
      const liar = await registerWorker(h.server, `liar-${name}`, 'browser', volunteerToken);
      ids.push(liar.id);
      const a = await claim(liar.credential);
      // Its form is perfect: the round's state, moved on by the shard's step count and labelled for it.
      const start = parseState(new Uint8Array(await (await fetch(a.state.url)).arrayBuffer()), shapes);
      const steps = a.job.window.to - a.job.window.from;
      const params = new Map([...start.params].map(([k, t]) => [k, { shape: t.shape, data: Float32Array.from(t.data, spoil) }]));
      const update = serializeState({ params, optimizer: { ...start.optimizer, step: start.optimizer.step + steps }, label: { run: h.runId, round: a.shard.round, shard: a.shard.id, samples: steps * 32 } });
      expect((await fetch(a.uploadUrl, { method: 'PUT', body: update as Uint8Array<ArrayBuffer> })).status).toBe(200);
      const r = await gql(h.server.url, liar.credential, 'mutation($s: ID!, $a: Int!) { completeShard(shardId: $s, attempt: $a, loss: 0.5, imagesPerSecond: 100, kernelClass: "wasm-xnnpack-simd") { id } }', { s: a.shard.id, a: a.shard.attempt });
      expect({ name, code: errorCode(r), message: r.errors?.[0].message }).toEqual({ name, code: 'BAD_USER_INPUT', message: expect.stringMatching(/not what \d+ AdamW steps from the round's state can make: .* moved/) });
    }
    const { run } = await ok(h.server.url, h.server.admin, 'query($id: ID!) { run(id: $id) { shards { rejections } } }', { id: h.runId });
    const reasons = run.shards.flatMap((s: { rejections: string[] }) => s.rejections);
    for (const id of ids) expect(reasons.some((r: string) => r.includes(`by worker ${id}: update rejected: not what`))).toBe(true);
  });

  it('the honest run completes with the same delta as without the attacker; the server stayed small', async () => {
    const result = await h.finish();
    expect(result).toEqual({ status: 'SUCCEEDED', identical: true, accuracy: result.reference, reference: result.reference });
    expect(residentMiB(h.server)).toBeLessThan(1024);
  });
});

describe('the blob store checks who is asking', () => {
  const secret = (): string => (JSON.parse(readFileSync(join(h.server.dataDir, 'tokens.json'), 'utf8')) as { secret: string }).secret;
  const origin = (): string => h.server.url.replace('/graphql', '');

  it('refuses unsigned, expired, wrongly signed, other-key and other-method requests', async () => {
    const { run } = await ok(h.server.url, h.server.admin, 'query($id: ID!) { run(id: $id) { delta { downloadUrl sha256 } } }', { id: h.runId });
    const url = new URL(run.delta.downloadUrl);
    const key = url.pathname.replace(/^\/blobs\//, '');
    expect((await fetch(url)).status).toBe(200);
    const status = async (u: string, init?: RequestInit): Promise<[number, string]> => {
      const res = await fetch(u, init);
      return [res.status, (await res.text()).trim()];
    };
    expect(await status(`${origin()}/blobs/${key}`)).toEqual([403, 'unsigned request: ask the server for a URL']);
    const expired = signUrl(`${origin()}/blobs`, secret(), { method: 'GET', key, expires: Math.floor(Date.now() / 1000) - 1 });
    expect(await status(expired)).toEqual([403, 'URL expired']);
    url.searchParams.set('expires', String(Number(url.searchParams.get('expires')) + 3600));
    expect(await status(url.href)).toEqual([403, 'signature does not match this method, key and expiry']);
    const other = new URL(run.delta.downloadUrl);
    other.pathname = other.pathname.replace(/deltas\/.*/, `checkpoints/${'0'.repeat(64)}.safetensors`);
    expect((await status(other.href))[0]).toBe(403);
    expect((await status(run.delta.downloadUrl, { method: 'PUT', body: 'garbage' }))[0]).toBe(403);
    expect((await status(run.delta.downloadUrl, { method: 'DELETE' }))[0]).toBe(403);
    expect((await status(`${origin()}/blobs/${key}`, { method: 'PUT', body: 'overwrite' }))[0]).toBe(403); // anonymous overwrite
    const bytes = new Uint8Array(await (await fetch(run.delta.downloadUrl)).arrayBuffer());
    const digest = Buffer.from(await crypto.subtle.digest('SHA-256', bytes)).toString('hex');
    expect(digest).toBe(run.delta.sha256);
    expect((await status(`${origin()}/blobs/../tokens.json?sig=x&expires=9999999999`))[0]).toBeGreaterThanOrEqual(400);
  });

  it('answers CORS preflights only for the configured origins', async () => {
    const { run } = await ok(h.server.url, h.server.admin, 'query($id: ID!) { run(id: $id) { delta { downloadUrl } } }', { id: h.runId });
    const res = await fetch(run.delta.downloadUrl, { method: 'OPTIONS', headers: { origin: 'https://evil.example', 'access-control-request-method': 'PUT' } });
    expect([res.status, res.headers.get('access-control-allow-origin')]).toEqual([403, null]);
  });

  it('an accepted update is kept where no worker writes: a re-PUT to its slot after completion changes nothing', async () => {
    await h.worker.kill();
    const { startRun } = await ok(h.server.url, h.server.admin, 'mutation($i: StartRunInput!) { startRun(input: $i) { id } }',
      { i: { model: 'micro', dataset: 'digits', strategy: 'attn-only', hyperParameters: { maxSteps: 8, stepsPerRound: 8, shardsPerRound: 1, admitVolunteers: true } } });
    const { credential } = await registerWorker(h.server, 'by-hand');
    const a = await claim(credential);
    const config = parseVitConfig({ ...preset('vit_micro_patch4_28'), numClasses: 10 });
    const start = parseState(new Uint8Array(await (await fetch(a.state.url)).arrayBuffer()), tunedShapes(config, inspect(presetStrategy('attn-only'), config).tuned));
    // A lazy update (no movement, the step count advanced) is within AdamW's reach: it is accepted.
    const update = serializeState({ ...start, optimizer: { ...start.optimizer, step: start.optimizer.step + 8 }, label: { run: startRun.id, round: 0, shard: a.shard.id, samples: 256 } });
    expect((await fetch(a.uploadUrl, { method: 'PUT', body: update as Uint8Array<ArrayBuffer> })).status).toBe(200);
    expect((await fetch(a.uploadUrl, { method: 'PUT', body: update as Uint8Array<ArrayBuffer> })).status).toBe(200); // a retried upload, same bytes
    await ok(h.server.url, credential, 'mutation($s: ID!, $a: Int!) { completeShard(shardId: $s, attempt: $a, loss: 1, imagesPerSecond: 5, kernelClass: "wasm-xnnpack-simd") { status } }', { s: a.shard.id, a: a.shard.attempt });
    // The slot was given back once checked: garbage PUT there lands in a slot nothing reads again (the sweep deletes it).
    const garbage = new Uint8Array(update.length).fill(7);
    expect((await fetch(a.uploadUrl, { method: 'PUT', body: garbage })).status).toBe(200);
    const again = await ok(h.server.url, credential, 'mutation($s: ID!, $a: Int!) { completeShard(shardId: $s, attempt: $a, loss: 1, imagesPerSecond: 5, kernelClass: "wasm-xnnpack-simd") { status } }', { s: a.shard.id, a: a.shard.attempt });
    expect(again.completeShard.status).toBe('DONE'); // the completion is not judged again
    const run = await waitFor('the run to end', async () => {
      const { run: r } = await ok(h.server.url, h.server.admin, 'query($id: ID!) { run(id: $id) { status error } }', { id: startRun.id });
      return ['SUCCEEDED', 'FAILED'].includes(r.status) && r;
    }, 120_000);
    expect(run).toEqual({ status: 'SUCCEEDED', error: null });
  });

  it('a delta altered on disk is refused by `partune delta download`', async () => {
    const stored = join(h.server.dataDir, 'blobs', 'objects', 'deltas', `${h.runId}.safetensors`);
    const original = readFileSync(stored);
    writeFileSync(stored, Buffer.from(original.map((b, i) => (i === 100 ? b ^ 0xff : b))));
    await expect(cliJson(['delta', 'download', '--server', h.server.url, '--token', h.server.admin, '--run', h.runId, '--out', join(h.tmp, 'tampered.safetensors')]))
      .rejects.toThrow(/SHA-256 [0-9a-f]{12}… is not the recorded/);
    writeFileSync(stored, original);
  });
});
