// The angle metric and soups on the shared third-party model, through the platform: a probe's
// angle profile, the derived strategies (smallest and largest angles) against attn-only, ffn-only
// and full under the same budget, and greedy + uniform soups of the partial deltas. Writes
// bench/results/angles-soups-<date>.json. Run: npm run build && node dist/bench/angles-soups.js
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { WorkerProcess, ok, startServer, startWorker, uploadBytes, waitForRun } from '../node/local-platform';

const SHARED_MODEL = join(__dirname, '..', '..', '..', 'shared', 'data', 'vit-mnist-500k');
const FASHION = '/usr/share/datasets/fashion-mnist';
const HYPER = { epochs: 2, lr: 1e-3, batchSize: 32, stepsPerRound: 50, shardsPerRound: 1 };

async function main(): Promise<void> {
  if (!existsSync(join(SHARED_MODEL, 'model.safetensors')) || !existsSync(FASHION)) {
    process.stderr.write('angles-soups: needs ../shared/data/vit-mnist-500k and dataset-fashion-mnist\n');
    process.exit(1);
  }
  const server = await startServer({ PARTUNE_IMPORT_ROOTS: '/usr/share/datasets' });
  const workers: WorkerProcess[] = [startWorker(server, 'w1'), startWorker(server, 'w2')];
  const log = (line: string): void => void process.stderr.write(`[angles-soups] ${line}\n`);
  try {
    const uploadId = await uploadBytes(server, 'model.safetensors', readFileSync(join(SHARED_MODEL, 'model.safetensors')));
    await ok(server.url, server.admin, 'mutation($i: RegisterModelInput!) { registerModel(input: $i) { id } }',
      { i: { name: 'vit-mnist-500k', uploadId, config: JSON.parse(readFileSync(join(SHARED_MODEL, 'config.json'), 'utf8')) } });
    await ok(server.url, server.admin, 'mutation($i: ImportDatasetInput!) { importDataset(input: $i) { id } }',
      { i: { name: 'fashion', format: 'IDX', path: FASHION, trainLimit: 5000, testLimit: 2000 } });
    const start = async (strategy: string): Promise<string> => (await ok(server.url, server.admin, 'mutation($i: StartRunInput!) { startRun(input: $i) { id } }',
      { i: { model: 'vit-mnist-500k', dataset: 'fashion', strategy, hyperParameters: HYPER } })).startRun.id;
    const result = async (id: string): Promise<Record<string, unknown>> => {
      const run = await waitForRun(server, id, 3_600_000);
      if (run.status !== 'SUCCEEDED') throw new Error(`run ${id} ${run.status}: ${run.error}`);
      const { run: r } = await ok(server.url, server.admin, `query($id: ID!) { run(id: $id) { id strategyName tunedParameters totalParameters accuracy createdAt finishedAt delta { bytes } } }`, { id });
      log(`${r.strategyName}: ${(100 * r.accuracy).toFixed(2)}%`);
      return { ...r, seconds: (Date.parse(r.finishedAt) - Date.parse(r.createdAt)) / 1000 };
    };

    log('angle probe (full fine-tuning, 100 steps) and the manual strategies');
    const probe = (await ok(server.url, server.admin, 'mutation($i: AngleProbeInput!) { startAngleProbe(input: $i) { id } }', {
      i: { model: 'vit-mnist-500k', dataset: 'fashion', probeSteps: 100, direction: 'SMALLEST', topK: 3, name: 'angle-smallest-3', hyperParameters: HYPER },
    })).startAngleProbe.id;
    const manual = await Promise.all(['full', 'attn-only', 'ffn-only'].map(start));
    await waitForRun(server, probe, 3_600_000);
    const { angleProfile } = await ok(server.url, undefined, `query($id: ID!) { angleProfile(id: $id) { probe direction topK strategyName
      layers { kind block degrees parameters rank selected } strategy { name tunedParameters attentionLayers ffnLayers deltaBytes } run { accuracy } } }`, { id: probe });
    const { deriveAngleStrategy: largest } = await ok(server.url, server.admin,
      'mutation($p: ID!) { deriveAngleStrategy(profile: $p, name: "angle-largest-3", direction: LARGEST, topK: 3) { name tunedParameters attentionLayers ffnLayers deltaBytes } }', { p: probe });
    const angled = await Promise.all(['angle-smallest-3', 'angle-largest-3'].map(start));
    const runs = [];
    for (const id of [...manual, ...angled]) runs.push(await result(id));

    log('soups of the four partial deltas');
    const partial = runs.filter((r) => r.strategyName !== 'full').map((r) => r.id);
    const soups: Record<string, unknown> = {};
    for (const method of ['GREEDY', 'UNIFORM']) {
      const { createSoup } = await ok(server.url, server.admin, 'mutation($i: CreateSoupInput!) { createSoup(input: $i) { id } }', { i: { runs: partial, method } });
      await waitForRun(server, createSoup.id, 3_600_000);
      const { run } = await ok(server.url, server.admin, `query($id: ID!) { run(id: $id) { soup { method heldOutImages testImages heldOut test ingredients { runId heldOut test } steps { runId score kept } } } }`, { id: createSoup.id });
      soups[method.toLowerCase()] = run.soup;
      log(`${method.toLowerCase()} soup: held-out ${(100 * run.soup.heldOut).toFixed(2)}%, test ${(100 * run.soup.test).toFixed(2)}%`);
    }
    const out = { date: new Date().toISOString(), data: 'Fashion-MNIST, 5,000 train / 2,000 test', hyper: HYPER, angleProfile, derived: { smallest: angleProfile.strategy, largest }, runs, soups };
    const dir = join(__dirname, '..', '..', 'bench', 'results');
    mkdirSync(dir, { recursive: true });
    const file = join(dir, `angles-soups-${out.date.slice(0, 10)}.json`);
    writeFileSync(file, `${JSON.stringify(out, null, 2)}\n`);
    log(`wrote ${file}`);
  } finally {
    await Promise.all(workers.map((w) => w.kill()));
    await server.stop();
  }
}

main().catch((e: Error) => {
  process.stderr.write(`angles-soups: ${e.stack}\n`);
  process.exit(1);
});
