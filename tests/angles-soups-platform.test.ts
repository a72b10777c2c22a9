// Angle probes and soups as platform runs, against real processes: a probe's profile and derived
// strategy (stored by name, usable by startRun, counts exact), soups of partial deltas with their
// held-out and test scores, and the arithmetic a soup must keep through the whole pipeline.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect, loadCheckpoint, parseDelta, parseStrategy } from '../engine';
import { CLI, ServerProcess, WorkerProcess, gql, ok, startServer, startWorker, uploadBytes, waitForRun } from '../node/local-platform';

jest.setTimeout(300_000);

const tmp = mkdtempSync(join(tmpdir(), 'partune-angles-'));
const MICRO = join(tmp, 'micro.safetensors');
const SOUP_RUN = `query($id: ID!) { run(id: $id) { id kind status accuracy tunedParameters soup { method heldOutImages testImages heldOut test
  ingredients { runId heldOut test } steps { runId score kept } } delta { downloadUrl } } }`;

describe('angle probes and soups on the platform', () => {
  let server: ServerProcess;
  const workers: WorkerProcess[] = [];
  const runs: Record<string, Record<string, any>> = {};

  const start = async (strategy: string): Promise<string> =>
    (await ok(server.url, server.admin, 'mutation($i: StartRunInput!) { startRun(input: $i) { id } }',
      { i: { model: 'micro', dataset: 'digits', strategy, hyperParameters: { epochs: 1, stepsPerRound: 16, shardsPerRound: 1 } } })).startRun.id;
  const finished = async (id: string, query?: string): Promise<Record<string, any>> => {
    const done = await waitForRun(server, id);
    expect({ id, status: done.status, error: done.error }).toEqual({ id, status: 'SUCCEEDED', error: null });
    return query ? (await ok(server.url, server.admin, query, { id })).run : done;
  };

  beforeAll(async () => {
    const r = spawnSync(process.execPath, [CLI, 'convert', '--checkpoint', 'random:vit_micro_patch4_28', '--out', MICRO, '--quiet']);
    if (r.status !== 0) throw new Error(r.stderr.toString());
    server = await startServer();
    const uploadId = await uploadBytes(server, 'micro.safetensors', readFileSync(MICRO));
    await ok(server.url, server.admin, 'mutation($i: RegisterModelInput!) { registerModel(input: $i) { id } }', { i: { name: 'micro', uploadId } });
    await ok(server.url, server.admin, 'mutation($i: ImportDatasetInput!) { importDataset(input: $i) { id } }',
      { i: { name: 'digits', format: 'MNIST_PACKAGE', trainLimit: 1024, testLimit: 400 } });
    workers.push(startWorker(server, 'a'), startWorker(server, 'b'));
    const ids = Object.fromEntries(await Promise.all(['attn-only', 'ffn-only', 'first-half'].map(async (s) => [s, await start(s)])));
    for (const [s, id] of Object.entries(ids)) runs[s] = await finished(id as string);
  });
  afterAll(async () => {
    await Promise.all(workers.map((w) => w.kill()));
    await server?.stop();
  });

  it('a probe stores its angle profile and a named strategy that runs use, with exact counts', async () => {
    const { startAngleProbe } = await ok(server.url, server.admin, 'mutation($i: AngleProbeInput!) { startAngleProbe(input: $i) { id kind strategyName } }',
      { i: { model: 'micro', dataset: 'digits', probeSteps: 16, direction: 'SMALLEST', topK: 2, name: 'micro-angle-s2', hyperParameters: { stepsPerRound: 8, shardsPerRound: 2 } } });
    expect(startAngleProbe).toMatchObject({ kind: 'ANGLE_PROBE', strategyName: 'full' });
    await finished(startAngleProbe.id);
    // A probe that is not public: its profile, and the run behind it, are for readers only.
    const anonymous = await gql(server.url, undefined, 'query($id: ID!) { angleProfile(id: $id) { runId } }', { id: startAngleProbe.id });
    expect(anonymous.errors?.[0].extensions?.code).toBe('FORBIDDEN');
    expect((await ok(server.url, undefined, '{ angleProfiles { runId run { id public } } }')).angleProfiles).toEqual([]);
    const { angleProfile: p } = await ok(server.url, server.admin, `query($id: ID!) { angleProfile(id: $id) { runId direction topK probe strategyName
      layers { kind block degrees parameters selected rank } tensorAngles strategy { name spec tunedParameters attentionLayers ffnLayers } } }`, { id: startAngleProbe.id });
    const { config } = await loadCheckpoint(new Uint8Array(readFileSync(MICRO)));
    expect(p.layers).toHaveLength(2 * config.depth);
    expect(p.probe).toMatchObject({ steps: 16 });
    for (const kind of ['attn', 'ffn']) {
      const group = p.layers.filter((l: any) => l.kind === kind);
      expect(group.map((l: any) => l.rank).sort()).toEqual(Array.from({ length: config.depth }, (_, i) => i + 1)); // ranked within the group
      const chosen = group.filter((l: any) => l.selected);
      expect(chosen).toHaveLength(2);
      const smallest = [...group].sort((x: any, y: any) => x.degrees - y.degrees).slice(0, 2).map((l: any) => l.block).sort();
      expect(chosen.map((l: any) => l.block).sort()).toEqual(smallest);
      for (const l of group) expect(l.degrees).toBeGreaterThan(0);
    }
    expect(p.strategy.name).toBe('micro-angle-s2');
    expect(p.strategy.tunedParameters).toBe(inspect(parseStrategy(p.strategy.spec), { ...config, numClasses: 10 }).tunedParams);
    expect(Object.keys(p.tensorAngles)).toContain('blocks.0.attn.qkv.weight');

    const id = await start('micro-angle-s2');
    const run = await finished(id);
    const { run: r } = await ok(server.url, server.admin, 'query($id: ID!) { run(id: $id) { strategyName tunedParameters } }', { id });
    expect(r).toEqual({ strategyName: 'micro-angle-s2', tunedParameters: p.strategy.tunedParameters });
    expect(run.accuracy).toBeGreaterThan(0);

    const { deriveAngleStrategy: d } = await ok(server.url, server.admin, `mutation($p: ID!) { deriveAngleStrategy(profile: $p, name: "micro-angle-l1", direction: LARGEST, topK: 1) { name tunedParameters attentionLayers ffnLayers } }`, { p: startAngleProbe.id });
    const largest = (kind: string) => p.layers.filter((l: any) => l.kind === kind).sort((x: any, y: any) => y.degrees - x.degrees)[0].block;
    expect(d).toMatchObject({ name: 'micro-angle-l1', attentionLayers: [largest('attn')], ffnLayers: [largest('ffn')] });
    const again = await gql(server.url, server.admin, `mutation($p: ID!) { deriveAngleStrategy(profile: $p, name: "micro-angle-l1", direction: LARGEST, topK: 1) { name } }`, { p: startAngleProbe.id });
    expect(again.errors?.[0].extensions?.code).toBe('CONFLICT');
  });

  it('a greedy soup of three partial deltas reports each ingredient and keeps the best first', async () => {
    const ids = ['attn-only', 'ffn-only', 'first-half'].map((s) => runs[s].id);
    const { createSoup } = await ok(server.url, server.admin, 'mutation($i: CreateSoupInput!) { createSoup(input: $i) { id kind } }', { i: { runs: ids, method: 'GREEDY' } });
    const soup = await finished(createSoup.id, SOUP_RUN);
    const report = soup.soup;
    expect(report).toMatchObject({ method: 'GREEDY', heldOutImages: 200, testImages: 200 });
    expect(report.ingredients.map((i: any) => i.runId).sort()).toEqual([...ids].sort());
    const best = [...report.ingredients].sort((x: any, y: any) => y.heldOut - x.heldOut)[0];
    expect(report.steps[0]).toEqual({ runId: best.runId, score: best.heldOut, kept: true });
    expect(report.heldOut).toBeGreaterThanOrEqual(best.heldOut); // greedy never accepts a drop
    expect(soup.accuracy).toBe(report.test);
    const delta = parseDelta(new Uint8Array(await (await fetch(soup.delta.downloadUrl)).arrayBuffer()));
    expect(delta.manifest.soup?.method).toBe('greedy');
    process.stderr.write(`[soup] ${report.ingredients.map((i: any) => `${i.runId.slice(0, 8)} ${(100 * i.heldOut).toFixed(1)}/${(100 * i.test).toFixed(1)}`).join(', ')}; greedy ${(100 * report.heldOut).toFixed(1)}/${(100 * report.test).toFixed(1)}\n`);
  });

  it('a uniform soup of one delta is that delta; ingredients of another model are refused', async () => {
    const { createSoup } = await ok(server.url, server.admin, 'mutation($i: CreateSoupInput!) { createSoup(input: $i) { id } }', { i: { runs: [runs['attn-only'].id], method: 'UNIFORM' } });
    const soup = await finished(createSoup.id, SOUP_RUN);
    expect(soup.soup.test).toBe(soup.soup.ingredients[0].test);
    const one = parseDelta(new Uint8Array(await (await fetch(soup.delta.downloadUrl)).arrayBuffer()));
    const ingredient = parseDelta(new Uint8Array(await (await fetch(runs['attn-only'].delta.downloadUrl)).arrayBuffer()));
    for (const [k, t] of ingredient.tensors) expect(Buffer.compare(Buffer.from(one.tensors.get(k)!.data.buffer), Buffer.from(t.data.buffer))).toBe(0);

    const merged = await ok(server.url, server.admin, 'mutation($id: ID!) { mergeDelta(id: $id, name: "micro-2") { id } }', { id: runs['ffn-only'].id });
    expect(merged.mergeDelta.id).toBeTruthy();
    const other = (await ok(server.url, server.admin, 'mutation($i: StartRunInput!) { startRun(input: $i) { id } }',
      { i: { model: 'micro-2', dataset: 'digits', strategy: 'linear-probe', hyperParameters: { epochs: 1, stepsPerRound: 32, shardsPerRound: 1 } } })).startRun.id;
    await finished(other);
    const refused = await gql(server.url, server.admin, 'mutation($i: CreateSoupInput!) { createSoup(input: $i) { id } }', { i: { runs: [runs['attn-only'].id, other] } });
    expect(refused.errors?.[0]).toMatchObject({ extensions: { code: 'BAD_USER_INPUT' }, message: expect.stringMatching(/another model/) });
  });
});
