// Claims that wait for work: an idle worker asks once and is answered when shards open, not by
// asking every second; a signal for n shards wakes about n waiting claims, the longest waiting
// first; a claim whose client went away takes nothing; a stopping server answers every waiting
// claim at once.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exportCheckpoint, initParams, preset, toHost } from '../engine';
import type { RunningServer } from '../server/app';
import { ClaimWaiters } from '../server/shards/claim-waiters';
import { ok } from '../node/local-platform';
import { useBackend } from './helpers';

const { startServer } = require('../dist/server/app') as typeof import('../server/app');
const { loadConfig } = require('../dist/server/config') as typeof import('../server/config');

jest.setTimeout(120_000);

describe('claim waiters', () => {
  it('a signal for n shards wakes the longest waiting, half again as many plus one; the rest wait out their time', async () => {
    const waiters = new ClaimWaiters();
    const woken: number[] = [];
    const tickets = Array.from({ length: 10 }, (_, i) => waiters.ticket(i < 9 ? 60_000 : 50));
    tickets.forEach((t, i) => void t.woken.then(() => woken.push(i)));
    waiters.wake(2); // ceil(2 * 1.5) + 1 = 4
    await new Promise((r) => setTimeout(r, 100));
    expect(woken).toEqual([0, 1, 2, 3, 9]); // and the last by its timeout
    waiters.close();
    await new Promise((r) => setTimeout(r, 0));
    expect(woken.sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    let after = false;
    void waiters.ticket(60_000).woken.then(() => (after = true));
    await new Promise((r) => setTimeout(r, 0));
    expect(after).toBe(true); // once stopped, nothing waits
  });
});

describe('a waiting claim on a real server', () => {
  let server: RunningServer;
  let admin: string;
  let worker: string;
  let ghost: string;
  beforeAll(async () => {
    const dir = mkdtempSync(join(tmpdir(), 'partune-claims-'));
    const config = loadConfig({}, { dataDir: dir, port: 0 });
    admin = config.adminToken;
    server = await startServer(config, () => undefined);
    await useBackend('wasm');
    const c = preset('vit_micro_patch4_28');
    const micro = exportCheckpoint(await toHost(initParams(c, 0)), c);
    const { createUpload } = await ok(server.url, admin, 'mutation($b: Int!) { createUpload(filename: "m.safetensors", bytes: $b) { id url } }', { b: micro.length });
    await fetch(createUpload.url, { method: 'PUT', body: micro as Uint8Array<ArrayBuffer> });
    await ok(server.url, admin, 'mutation($i: RegisterModelInput!) { registerModel(input: $i) { id } }', { i: { name: 'micro', uploadId: createUpload.id } });
    await ok(server.url, admin, 'mutation($i: ImportDatasetInput!) { importDataset(input: $i) { id } }', { i: { name: 'digits', format: 'MNIST_PACKAGE', trainLimit: 256, testLimit: 64 } });
    const register = async (name: string): Promise<string> =>
      (await ok(server.url, config.workerToken, 'mutation($n: String!) { registerWorker(name: $n, kind: "node", backend: "none") { credential } }', { n: name })).registerWorker.credential;
    worker = await register('w');
    ghost = await register('ghost');
  });
  afterAll(() => server?.close());

  const CLAIM = 'mutation($w: Int) { claimShard(kernelClass: "wasm-xnnpack-simd", wait: $w) { shard { round attempt } } }';
  const claim = async (wait: number): Promise<{ shard: { round: number; attempt: number } } | null> => (await ok(server.url, worker, CLAIM, { w: wait })).claimShard;

  it('answers null at the end of its wait when there is no work', async () => {
    const t = Date.now();
    expect(await claim(1)).toBeNull();
    expect(Date.now() - t).toBeGreaterThanOrEqual(900);
    expect(Date.now() - t).toBeLessThan(5000);
  });

  it('answers as soon as a run opens its shards, long before its wait ends; a claim whose client left takes nothing', async () => {
    // The ghost waits longest, so it would be woken first, but its client hangs up.
    const hangUp = new AbortController();
    const ghostClaim = fetch(server.url, {
      method: 'POST', signal: hangUp.signal, headers: { 'content-type': 'application/json', authorization: `Bearer ${ghost}` }, body: JSON.stringify({ query: CLAIM, variables: { w: 20 } }),
    }).catch(() => 'hung up');
    await new Promise((r) => setTimeout(r, 200));
    hangUp.abort();
    expect(await ghostClaim).toBe('hung up');
    const t = Date.now();
    const waiting = claim(20);
    await new Promise((r) => setTimeout(r, 300));
    await ok(server.url, admin, 'mutation($i: StartRunInput!) { startRun(input: $i) { id } }',
      { i: { model: 'micro', dataset: 'digits', strategy: 'attn-only', hyperParameters: { epochs: 1, batchSize: 32, shardsPerRound: 1 } } });
    expect((await waiting)?.shard).toEqual({ round: 0, attempt: 1 });
    expect(Date.now() - t).toBeLessThan(10_000);
  });

  it('a stopping server answers a waiting claim at once', async () => {
    const t = Date.now();
    const waiting = claim(20); // the worker holds round 0's only shard: nothing for it now
    await new Promise((r) => setTimeout(r, 300));
    await server.close();
    expect(await waiting).toBeNull();
    expect(Date.now() - t).toBeLessThan(5000);
  });
});
