// End to end over HTTP with the third-party vit-mnist-500k: register it, import Fashion-MNIST,
// fine-tune attn-only on two worker processes while following the run by subscription, then
// download the delta by its URL, apply it with the CLI and evaluate: the accuracy the run reported.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';
import { FASHION_MNIST_DIR } from '../node/data';
import { VIT_MNIST, describeIfExists } from './helpers';
import { CLI, ServerProcess, WorkerProcess, ok, startServer, startWorker, uploadBytes, waitForRun } from '../node/local-platform';

jest.setTimeout(400_000);

const both = existsSync(FASHION_MNIST_DIR) ? VIT_MNIST : FASHION_MNIST_DIR;

describeIfExists(both, 'platform end to end on the third-party model (vit-mnist-500k -> Fashion-MNIST)', () => {
  let server: ServerProcess;
  const workers: WorkerProcess[] = [];
  const tmp = mkdtempSync(join(tmpdir(), 'partune-e2e-'));

  beforeAll(async () => {
    server = await startServer({ PARTUNE_IMPORT_ROOTS: FASHION_MNIST_DIR });
    workers.push(startWorker(server, 'node-1'), startWorker(server, 'node-2'));
  });
  afterAll(async () => {
    await Promise.all(workers.map((w) => w.kill()));
    await server?.stop();
  });

  it('register, import, attn-only on two workers, follow, download, apply, evaluate', async () => {
    const config = JSON.parse(readFileSync(join(VIT_MNIST, 'config.json'), 'utf8'));
    const uploadId = await uploadBytes(server, 'model.safetensors', readFileSync(join(VIT_MNIST, 'model.safetensors')));
    const { registerModel } = await ok(server.url, server.admin, 'mutation($i: RegisterModelInput!) { registerModel(input: $i) { id parameters weightsSha256 strategies { name tunedParameters deltaBytes } } }',
      { i: { name: 'vit-mnist-500k', uploadId, config } });
    expect(registerModel.parameters).toBe(499_722);
    expect(registerModel.strategies.find((s: any) => s.name === 'attn-only').tunedParameters).toBe(395_018);
    const { importDataset } = await ok(server.url, server.admin, 'mutation($i: ImportDatasetInput!) { importDataset(input: $i) { id classes trainImages testImages } }',
      { i: { name: 'fashion', format: 'IDX', path: FASHION_MNIST_DIR, trainLimit: 2048, testLimit: 1000 } });
    expect(importDataset).toMatchObject({ classes: 10, trainImages: 2048, testImages: 1000 });

    const events: Record<string, any>[] = [];
    const ws = createClient({ url: server.url.replace('http', 'ws'), webSocketImpl: WebSocket, connectionParams: { authorization: `Bearer ${server.admin}` } });
    ws.subscribe({ query: 'subscription { runEvents { runId kind status progress trainLoss testAccuracy message } }' }, {
      next: (m) => void events.push(m.data!.runEvents as Record<string, any>), error: () => undefined, complete: () => undefined,
    });
    await new Promise((r) => setTimeout(r, 300));
    const { startRun } = await ok(server.url, server.admin, 'mutation($i: StartRunInput!) { startRun(input: $i) { id tunedParameters } }',
      { i: { model: 'vit-mnist-500k', dataset: 'fashion', strategy: 'attn-only', hyperParameters: { epochs: 2, lr: 1e-3, stepsPerRound: 16, shardsPerRound: 2 } } });
    const run = await waitForRun(server, startRun.id, 360_000);
    await ws.dispose();
    expect(run.status).toBe('SUCCEEDED');
    expect(run.accuracy).toBeGreaterThan(0.5); // chance is 0.1 and the head starts from scratch (61.1% measured)
    const mine = events.filter((e) => e.runId === startRun.id);
    expect(mine.filter((e) => e.kind === 'SHARD').length).toBeGreaterThan(4);
    expect(mine.at(-1)).toMatchObject({ status: 'SUCCEEDED', progress: 1 });
    const { workers: ws2 } = await ok(server.url, server.admin, '{ workers { items { name shardsDone samples imagesPerSecond } } }');
    for (const w of ws2.items) expect(w.shardsDone).toBeGreaterThan(0); // both took part

    const deltaFile = join(tmp, 'delta.safetensors');
    writeFileSync(deltaFile, new Uint8Array(await (await fetch(run.delta.downloadUrl)).arrayBuffer()));
    const merged = join(tmp, 'merged.safetensors');
    const configFile = join(tmp, 'config.json');
    writeFileSync(configFile, JSON.stringify(config));
    const cli = (args: string[]) => {
      const r = spawnSync(process.execPath, [CLI, ...args, '--json', '--quiet'], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(r.stderr);
      return JSON.parse(r.stdout.trim().split('\n').pop()!);
    };
    cli(['delta', 'apply', '--checkpoint', join(VIT_MNIST, 'model.safetensors'), '--config', configFile, '--delta', deltaFile, '--out', merged]);
    const evaluated = cli(['eval', '--checkpoint', merged, '--data', 'fashion-mnist', '--test-limit', '1000', '--seed', '0', '--backend', 'wasm']);
    expect(evaluated.accuracy).toBe(run.accuracy);

    process.stderr.write(`[e2e] vit-mnist-500k -> Fashion-MNIST attn-only on 2 workers: top-1 ${(run.accuracy * 100).toFixed(2)}%, ` +
      `delta ${(run.delta.bytes / 1024).toFixed(1)} KiB; workers ${ws2.items.map((w: any) => `${w.name} ${w.shardsDone} shards ${w.imagesPerSecond?.toFixed(1)} img/s`).join(', ')}\n`);
  });
});
