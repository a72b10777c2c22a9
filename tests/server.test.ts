// The server in-process (the compiled build, as `partune serve` runs it: the compute thread is a
// compiled file) over real HTTP, with an S3 server of the test's own that it can take away:
// internal failures are INTERNAL_SERVER_ERROR with a log line, user errors keep their codes, and a
// compute thread that dies fails only its job and is replaced.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { countParams, exportCheckpoint, initParams, preset, toHost } from '../engine';
import { EmbeddedS3, startEmbeddedS3 } from './support/s3-peer';
import type { RunningServer } from '../server/app';
import { openSqliteState } from '../server/state/sqlite';
import { GqlResult, gql } from '../node/local-platform';
import { useBackend } from './helpers';

const { startServer } = require('../dist/server/app') as typeof import('../server/app');
const { loadConfig } = require('../dist/server/config') as typeof import('../server/config');

jest.setTimeout(120_000);

describe('the server in-process', () => {
  const log: string[] = [];
  let s3: EmbeddedS3;
  let server: RunningServer;
  let admin: string;
  let micro: Uint8Array;

  beforeAll(async () => {
    const dir = mkdtempSync(join(tmpdir(), 'partune-server-'));
    s3 = await startEmbeddedS3(join(dir, 's3'), 'partune');
    const config = loadConfig({}, { dataDir: join(dir, 'data'), port: 0, s3: { endpoint: s3.endpoint, accessKey: 'S3RVER', secretKey: 'S3RVER' } });
    admin = config.adminToken;
    server = await startServer(config, (line) => void log.push(line));
    await useBackend('wasm');
    const c = preset('vit_micro_patch4_28');
    micro = exportCheckpoint(await toHost(initParams(c, 0)), c);
  });
  afterAll(async () => {
    await server?.close();
    await s3?.close().catch(() => undefined);
  });

  const upload = async (bytes: Uint8Array): Promise<string> => {
    const r = await gql(server.url, admin, 'mutation($b: Int!) { createUpload(filename: "m.safetensors", bytes: $b) { id url } }', { b: bytes.length });
    expect((await fetch(r.data!.createUpload.url, { method: 'PUT', body: bytes as Uint8Array<ArrayBuffer> })).ok).toBe(true);
    return r.data!.createUpload.id;
  };
  const register = (name: string, uploadId: string): Promise<GqlResult<Record<string, any>>> =>
    gql(server.url, admin, 'mutation($i: RegisterModelInput!) { registerModel(input: $i) { name parameters } }', { i: { name, uploadId } });

  it('a checkpoint that does not parse is BAD_USER_INPUT, with its reason', async () => {
    const r = await register('garbage', await upload(new TextEncoder().encode('not a safetensors file at all')));
    expect(r.errors?.[0].extensions?.code).toBe('BAD_USER_INPUT');
    expect(r.errors?.[0].message).toMatch(/^checkpoint m\.safetensors \(upload [0-9a-f-]+\): /);
    expect(r.errors?.[0].message.match(/upload [0-9a-f-]+/g)).toHaveLength(1); // the source said once
  });

  it('a compute thread killed mid-job fails that job as an internal error and is replaced', async () => {
    const compute = server.services.platform.compute;
    const uploadId = await upload(micro);
    const pending = register('micro-a', uploadId);
    for (let i = 0; compute.jobsInFlight === 0; i++) {
      if (i > 400) throw new Error('the registration never reached the compute thread');
      await new Promise((r) => setTimeout(r, 5));
    }
    await compute.thread.terminate();
    const r = await pending;
    expect(r.errors?.[0].extensions?.code).toBe('INTERNAL_SERVER_ERROR');
    const ref = /the server log has it as ([0-9a-f]{8})/.exec(r.errors![0].message)![1];
    expect(log.find((l) => l.startsWith(`internal error ${ref} at registerModel`))).toMatch(/the compute thread stopped \(exit code 1\) during this job/);
    expect(compute.starts).toBe(2);
    expect((await register('micro-b', uploadId)).data).toEqual({ registerModel: { name: 'micro-b', parameters: countParams(preset('vit_micro_patch4_28')) } });
  });

  it('object storage going away is INTERNAL_SERVER_ERROR with a log line, not the user\'s fault', async () => {
    const uploadId = await upload(micro);
    await s3.close();
    const r = await register('micro-c', uploadId);
    expect(r.errors?.[0].extensions?.code).toBe('INTERNAL_SERVER_ERROR');
    expect(r.errors?.[0].message).not.toMatch(/ECONNREFUSED|127\.0\.0\.1/); // details stay in the log
    const ref = /the server log has it as ([0-9a-f]{8})/.exec(r.errors![0].message)![1];
    expect(log.find((l) => l.startsWith(`internal error ${ref}`))).toMatch(/ECONNREFUSED/);
    const named = await register('bad name!', uploadId); // the user's error is still theirs
    expect(named.errors?.[0].extensions?.code).toBe('BAD_USER_INPUT');
  });
});

describe('stopping the server', () => {
  it('leaves a run whose step was cut short by the shutdown to resume at the next start, not failed', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'partune-stop-'));
    const config = loadConfig({}, { dataDir: dir, port: 0 });
    const server = await startServer(config, () => undefined);
    await useBackend('wasm');
    const c = preset('vit_micro_patch4_28');
    const bytes = exportCheckpoint(await toHost(initParams(c, 0)), c);
    const created = await gql(server.url, config.adminToken, 'mutation($b: Int!) { createUpload(filename: "m.safetensors", bytes: $b) { id url } }', { b: bytes.length });
    await fetch(created.data!.createUpload.url, { method: 'PUT', body: bytes as Uint8Array<ArrayBuffer> });
    const admin = (query: string, variables: Record<string, unknown>): Promise<GqlResult<Record<string, any>>> => gql(server.url, config.adminToken, query, variables);
    await admin('mutation($i: RegisterModelInput!) { registerModel(input: $i) { id } }', { i: { name: 'micro', uploadId: created.data!.createUpload.id } });
    await admin('mutation($i: ImportDatasetInput!) { importDataset(input: $i) { id } }', { i: { name: 'digits', format: 'MNIST_PACKAGE', trainLimit: 256, testLimit: 64 } });
    const compute = server.services.platform.compute;
    const started = await admin('mutation($i: StartRunInput!) { startRun(input: $i) { id } }', { i: { model: 'micro', dataset: 'digits', strategy: 'attn-only' } });
    for (let i = 0; compute.jobsInFlight === 0; i++) {
      if (i > 400) throw new Error("the run's preparation never reached the compute thread");
      await new Promise((r) => setTimeout(r, 5));
    }
    await server.close(); // the preparation is in flight
    const state = openSqliteState(dir);
    const run = (await state.runs.get(started.data!.startRun.id))!;
    await state.close();
    expect([run.status, run.error]).toEqual(['PREPARING', null]);
  });
});
