// Platform benchmarks against real processes: GraphQL latency under concurrent polling (idle, and
// while a worker trains on the same 2 cores), and the shard protocol's overhead against one process
// training the same run. Writes bench/results/platform-<date>.json. Run: npm run bench:platform
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI, ServerProcess, WorkerProcess, ok, startServer, startWorker, uploadBytes, waitForRun } from '../node/local-platform';

const SHARED_MODEL = join(__dirname, '..', '..', '..', 'shared', 'data', 'vit-mnist-500k');
const quick = process.argv.includes('--quick');

function cli(args: string[]): Record<string, any> {
  const r = spawnSync(process.execPath, [CLI, ...args, '--json', '--quiet'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`partune ${args.join(' ')}: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!);
}

const percentile = (sorted: number[], p: number): number => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];

/** `clients` loops, each polling a run's progress back to back for `seconds`. */
async function pollLoad(server: ServerProcess, runId: string, clients: number, seconds: number): Promise<Record<string, number>> {
  const latencies: number[] = [];
  let errors = 0;
  const end = Date.now() + seconds * 1000;
  const body = JSON.stringify({ query: 'query($id: ID!) { run(id: $id) { id status step totalSteps progress metrics { step testAccuracy } } }', variables: { id: runId } });
  await Promise.all(Array.from({ length: clients }, async () => {
    while (Date.now() < end) {
      const t0 = performance.now();
      try {
        const res = await fetch(server.url, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${server.admin}` }, body });
        const json = (await res.json()) as { errors?: unknown };
        if (json.errors) errors++;
      } catch {
        errors++;
      }
      latencies.push(performance.now() - t0);
    }
  }));
  latencies.sort((a, b) => a - b);
  return {
    clients, seconds, requests: latencies.length, errors, requestsPerSecond: latencies.length / seconds,
    p50Ms: percentile(latencies, 50), p95Ms: percentile(latencies, 95), p99Ms: percentile(latencies, 99), maxMs: latencies[latencies.length - 1],
  };
}

interface Setup { name: string; checkpoint: string; config?: string; data: string; format: string; path?: string; trainLimit: number; testLimit: number; epochs: number }

async function register(server: ServerProcess, s: Setup): Promise<void> {
  const uploadId = await uploadBytes(server, 'model.safetensors', readFileSync(s.checkpoint));
  await ok(server.url, server.admin, 'mutation($i: RegisterModelInput!) { registerModel(input: $i) { id } }',
    { i: { name: s.name, uploadId, config: s.config ? JSON.parse(readFileSync(s.config, 'utf8')) : undefined } });
  await ok(server.url, server.admin, 'mutation($i: ImportDatasetInput!) { importDataset(input: $i) { id } }',
    { i: { name: `${s.name}-data`, format: s.format, path: s.path, trainLimit: s.trainLimit, testLimit: s.testLimit } });
}

/** The same run through the platform (one worker, one shard per round) and in one process. */
async function overhead(server: ServerProcess, s: Setup, stepsPerRound: number): Promise<Record<string, unknown>> {
  const t0 = Date.now();
  const { startRun } = await ok(server.url, server.admin, 'mutation($i: StartRunInput!) { startRun(input: $i) { id } }', {
    i: { model: s.name, dataset: `${s.name}-data`, strategy: 'attn-only', hyperParameters: { epochs: s.epochs, stepsPerRound, shardsPerRound: 1 } },
  });
  const run = await waitForRun(server, startRun.id, 1_800_000);
  const platformSeconds = (Date.now() - t0) / 1000;
  const t1 = Date.now();
  const single = cli(['finetune', '--checkpoint', s.checkpoint, ...(s.config ? ['--config', s.config] : []), '--data', s.data, '--strategy', 'attn-only',
    '--train-limit', String(s.trainLimit), '--test-limit', String(s.testLimit), '--epochs', String(s.epochs), '--backend', 'wasm', '--out', join(tmpdir(), `single-${Date.now()}.safetensors`)]);
  const singleSeconds = (Date.now() - t1) / 1000;
  return {
    model: s.name, strategy: 'attn-only', trainImages: s.trainLimit, testImages: s.testLimit, epochs: s.epochs, stepsPerRound, rounds: run.shards.length,
    platformSeconds, singleProcessSeconds: singleSeconds, overhead: platformSeconds / singleSeconds,
    platformAccuracy: run.accuracy, singleProcessAccuracy: single.accuracy, identical: run.accuracy === single.accuracy,
  };
}

async function main(): Promise<void> {
  const tmp = mkdtempSync(join(tmpdir(), 'partune-bench-'));
  const micro = join(tmp, 'micro.safetensors');
  cli(['convert', '--checkpoint', 'random:vit_micro_patch4_28', '--out', micro]);
  const setups: Setup[] = [{ name: 'micro', checkpoint: micro, data: 'mnist', format: 'MNIST_PACKAGE', trainLimit: 2048, testLimit: 1000, epochs: 2 }];
  if (!quick && existsSync(join(SHARED_MODEL, 'model.safetensors')) && existsSync('/usr/share/datasets/fashion-mnist')) {
    setups.push({
      name: 'vit-mnist-500k', checkpoint: join(SHARED_MODEL, 'model.safetensors'), config: join(SHARED_MODEL, 'config.json'), data: 'fashion-mnist',
      format: 'IDX', path: '/usr/share/datasets/fashion-mnist', trainLimit: 2048, testLimit: 1000, epochs: 1,
    });
  } else {
    process.stderr.write('[platform-bench] the vit-mnist-500k case is skipped (--quick, or ../shared/data or dataset-fashion-mnist absent)\n');
  }
  const server = await startServer({ PARTUNE_IMPORT_ROOTS: '/usr/share/datasets' });
  const workers: WorkerProcess[] = [];
  try {
    for (const s of setups) await register(server, s);
    const seconds = quick ? 3 : 10;
    process.stderr.write('[platform-bench] GraphQL latency, idle server\n');
    const { startRun: { id: idleRun } } = await ok(server.url, server.admin, 'mutation($i: StartRunInput!) { startRun(input: $i) { id } }', {
      i: { model: 'micro', dataset: 'micro-data', strategy: 'attn-only', hyperParameters: { epochs: 20, stepsPerRound: 8, shardsPerRound: 1 } },
    });
    const latency: Record<string, unknown>[] = [];
    for (const clients of [1, 50, 200]) latency.push({ state: 'idle (run queued, no worker)', ...(await pollLoad(server, idleRun, clients, seconds)) });
    workers.push(startWorker(server, 'bench-1'));
    await new Promise((r) => setTimeout(r, 3000));
    process.stderr.write('[platform-bench] GraphQL latency while a worker trains\n');
    latency.push({ state: 'one worker training on the same 2 cores', ...(await pollLoad(server, idleRun, 200, seconds)) });
    await ok(server.url, server.admin, 'mutation($id: ID!) { cancelRun(id: $id) { status } }', { id: idleRun });

    const protocol: Record<string, unknown>[] = [];
    for (const s of setups) {
      for (const stepsPerRound of quick ? [16] : [8, 32]) {
        process.stderr.write(`[platform-bench] shard-protocol overhead: ${s.name}, ${stepsPerRound} steps per round\n`);
        protocol.push(await overhead(server, s, stepsPerRound));
      }
    }
    const out = {
      date: new Date().toISOString(), node: process.version, cpus: cpus().length, cpu: cpus()[0]?.model, quick,
      notes: 'latency: clients poll run(id) back to back over loopback; overhead: platform wall time (queue, downloads, rounds, evaluation, delta) / one `partune finetune` process, same run',
      latency, protocol,
    };
    mkdirSync(join(__dirname, '..', '..', 'bench', 'results'), { recursive: true });
    const file = join(__dirname, '..', '..', 'bench', 'results', `platform-${out.date.slice(0, 10)}${quick ? '-quick' : ''}.json`);
    writeFileSync(file, `${JSON.stringify(out, null, 2)}\n`);
    for (const l of latency) process.stderr.write(`latency ${JSON.stringify(l)}\n`);
    for (const p of protocol) process.stderr.write(`protocol ${JSON.stringify(p)}\n`);
    process.stderr.write(`wrote ${file}\n`);
  } finally {
    await Promise.all(workers.map((w) => w.kill()));
    await server.stop();
  }
}

main().catch((e: Error) => {
  process.stderr.write(`platform bench: ${e.stack}\n`);
  process.exit(1);
});
