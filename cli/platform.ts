// The platform from the command line: `serve` (server + local worker processes), `worker`, and
// client commands that talk GraphQL to a server (register a model, import a dataset, start and
// follow a run, download a delta).
import { spawn, ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { availableParallelism, hostname } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';
import { loadConfig } from '../server/config';
import { startServer } from '../server/app';
import { PartuneWorker } from '../worker/worker';
import { GraphQLClient, GraphQLRequestError } from '../worker/client';
import { subscribe } from '../worker/ws-client';
import {
  Aggregation, CreateUpload, DatasetFormat, DeltaDownload, HyperParametersInput, ImportDataset, MergeDelta, Normalize, RegisterModel, RunProgress, RunResult, Verification,
  RunResultResult, StartRun, TokenCheck,
} from '../protocol/operations';
import { Options, configFrom, need, num, optionalInt, say, str } from './commands';
import { openCheckpoint } from '../node/checkpoints';
import { BackendChoice, selectBackend } from '../node/backend';
import { NodeBackends } from '../node/worker-backends';
import { exportCheckpoint, parseTrainOptions } from '../engine';
import { UsageError, flagOf, givenTrainOptions, withFlags } from './options';
import { ProgressBar } from './progress';
import { uploadPhotos } from './upload';

export async function serveCommand(o: Options): Promise<Record<string, unknown>> {
  const config = loadConfig({ ...process.env, ...(str(o, 'state') ? { PARTUNE_STATE: str(o, 'state') } : {}) }, {
    ...(str(o, 'port') ? { port: num(o, 'port', 4000, true) } : {}),
    ...(str(o, 'data-dir') ? { dataDir: str(o, 'data-dir') } : {}),
  });
  const server = await startServer(config, (line) => say(o, line));
  say(o, `admin token:  ${config.adminToken}`);
  say(o, `worker token: ${config.workerToken}`);
  const origin = server.url.replace(/\/graphql$/, '');
  say(o, `dashboard:    ${origin}/?token=${config.adminToken}`);
  say(o, `API explorer: ${origin}/graphiql?token=${config.adminToken} (GraphiQL, served by this server)`);
  const count = num(o, 'workers', 1, true);
  // Local workers share this machine's cores: each gets its part for the native BLAS.
  const threads = str(o, 'threads') ?? String(Math.max(1, Math.floor(availableParallelism() / Math.max(1, count))));
  const workers: ChildProcess[] = [];
  let stopping = false;
  const startWorker = (i: number): void => {
    const child = spawn(process.execPath, [join(__dirname, 'main.js'), 'worker', '--server', server.url, '--token', config.workerToken,
      '--name', `local-${i}`, '--backend', str(o, 'backend') ?? 'auto', '--threads', threads, ...(str(o, 'blas') ? ['--blas', str(o, 'blas')!] : [])], { stdio: ['ignore', 'inherit', 'inherit'] });
    workers[i] = child;
    child.on('exit', (code, signal) => {
      if (stopping) return;
      say(o, `local worker ${i} exited (${signal ?? code}); restarting it`);
      setTimeout(() => !stopping && startWorker(i), 2000);
    });
  };
  for (let i = 0; i < count; i++) startWorker(i);
  if (count) say(o, `${count} local worker process(es) started`);
  await new Promise<void>((done) => {
    const stop = (): void => {
      if (stopping) return;
      stopping = true;
      say(o, 'stopping');
      for (const w of workers) w?.kill('SIGTERM');
      void server.close().finally(done);
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  return { command: 'serve', url: server.url };
}

/** A refused token or an unreachable server is said at once, before the backends are measured. */
async function checkWorkerToken(server: string, token: string): Promise<void> {
  try {
    await new GraphQLClient(server, token, { patienceMs: 10_000 }).request(TokenCheck, {});
  } catch (e) {
    if (!(e instanceof GraphQLRequestError)) throw e; // unreachable: its own message
    if (e.code === 'UNAUTHENTICATED') throw new Error(`--token: ${e.message}`);
    if (e.code?.startsWith('HTTP_')) throw new Error(`--server ${server} is not a Partune server: ${e.message}`);
    // FORBIDDEN: a worker or volunteer token, which may not list workers: as it should be.
  }
}

export async function workerCommand(o: Options): Promise<Record<string, unknown>> {
  const server = need(o, 'server');
  const token = str(o, 'token') ?? process.env.PARTUNE_WORKER_TOKEN ?? need(o, 'token');
  await checkWorkerToken(server, token);
  const backends = await NodeBackends.open((str(o, 'backend') ?? 'auto') as BackendChoice, { blas: str(o, 'blas'), threads: optionalInt(o, 'threads') });
  const backend = backends.info;
  say(o, `[worker ${str(o, 'name') ?? process.pid}] backend: ${backend.name} (${backend.detail}); kernel class ${backend.kernelClass}`);
  const controller = new AbortController();
  process.once('SIGTERM', () => controller.abort());
  process.once('SIGINT', () => controller.abort());
  const worker = new PartuneWorker({
    server, token,
    name: str(o, 'name') ?? `${hostname()}-${process.pid}`, kind: 'node', backend: backend.name, kernelClass: backend.kernelClass,
    prepare: ({ config, strategy, batchSize }) => backends.forModel(config, strategy, batchSize),
    backendChoice: () => backends.report,
    log: (line) => say(o, `[worker ${str(o, 'name') ?? process.pid}] ${line}`), signal: controller.signal,
    maxShards: optionalInt(o, 'max-shards'),
    memoryBudget: str(o, 'memory-mib') === undefined ? undefined : num(o, 'memory-mib', 0, true) * 2 ** 20,
  });
  await worker.run();
  return { command: 'worker', shards: worker.shardsDone, samples: worker.samples };
}

/** The admin token: --token, $PARTUNE_TOKEN, or the local server's data directory. */
function adminToken(o: Options): string {
  const given = str(o, 'token') ?? process.env.PARTUNE_TOKEN;
  if (given) return given;
  const file = join(resolve(str(o, 'data-dir') ?? process.env.PARTUNE_DATA_DIR ?? 'partune-data'), 'tokens.json');
  if (existsSync(file)) return (JSON.parse(readFileSync(file, 'utf8')) as { admin: string }).admin;
  throw new Error('no token: pass --token (printed by `partune serve`), set PARTUNE_TOKEN, or name the server\'s data directory '
    + `(--data-dir or PARTUNE_DATA_DIR; looked in ${file})`);
}

export const client = (o: Options): GraphQLClient =>
  new GraphQLClient(str(o, 'server') ?? process.env.PARTUNE_SERVER ?? 'http://127.0.0.1:4000/graphql', adminToken(o), { patienceMs: 10_000 });

async function uploadBytes(c: GraphQLClient, filename: string, bytes: Uint8Array): Promise<string> {
  const { createUpload } = await c.request(CreateUpload, { filename, bytes: bytes.length });
  const res = await fetch(createUpload.url, { method: 'PUT', body: bytes as Uint8Array<ArrayBuffer> });
  if (!res.ok) throw new Error(`upload of ${filename} failed: HTTP ${res.status}`);
  return createUpload.id;
}

const uploadFile = (c: GraphQLClient, path: string): Promise<string> => uploadBytes(c, basename(path), readFileSync(path));

export async function modelRegisterCommand(o: Options): Promise<Record<string, unknown>> {
  const c = client(o);
  const spec = need(o, 'checkpoint');
  const config = configFrom(o);
  let uploadId: string;
  if (spec.startsWith('random:')) {
    // Made here, as every command makes random:PRESET (drawn on the host: the same on any backend), and uploaded in the canonical form.
    await selectBackend('cpu');
    const ckpt = await openCheckpoint(spec, { config });
    uploadId = await uploadBytes(c, `${spec.slice('random:'.length)}.safetensors`, exportCheckpoint(ckpt.weights, ckpt.config));
  } else {
    if (!existsSync(spec)) throw new Error(`checkpoint ${spec} not found`);
    uploadId = await uploadFile(c, spec);
  }
  const { registerModel: m } = await c.request(RegisterModel, { input: { name: need(o, 'name'), uploadId, config } });
  say(o, `model ${m.name} (${m.id}): ${m.parameters.toLocaleString('en-US')} parameters, weights ${m.weightsSha256.slice(0, 12)}`);
  return { command: 'model register', ...m };
}

const FORMATS: readonly DatasetFormat[] = ['IDX', 'CIFAR10', 'MNIST_PACKAGE', 'FOLDER'];

/** The regular files a local dataset path names: the file, or the files directly in the directory. */
function datasetFiles(path: string): string[] {
  if (!existsSync(path)) throw new Error(`${path} not found`);
  if (statSync(path).isFile()) return [path];
  const files = readdirSync(path).map((f) => join(path, f)).filter((f) => statSync(f).isFile());
  if (!files.length) throw new Error(`${path} holds no files`);
  return files;
}

/** --path: local files, uploaded; --server-path: a path the server reads itself (under its PARTUNE_IMPORT_ROOTS). */
export async function datasetImportCommand(o: Options): Promise<Record<string, unknown>> {
  const c = client(o);
  const format = need(o, 'format').toUpperCase().replace('-', '_') as DatasetFormat;
  if (!FORMATS.includes(format)) throw new Error('--format must be idx, cifar10, mnist-package or folder');
  const local = str(o, 'path');
  if (local && !existsSync(local)) throw new Error(`${local} not found`);
  const folder = format === 'FOLDER';
  if (!folder && ['storage-size', 'skip-bad', 'test-fraction'].some((k) => o[k] !== undefined)) {
    throw new Error('--storage-size, --skip-bad and --test-fraction are for --format folder');
  }
  const uploads = !local
    ? undefined
    : folder
      ? [{ uploadId: await uploadPhotos(c, local, Boolean(o.quiet)) }]
      : await Promise.all(datasetFiles(local).map(async (f) => ({ uploadId: await uploadFile(c, f) })));
  // The server does not know which model the photos are for: 256 suits a 224 model; a 32 px one trains 64x faster on 32.
  const stored = str(o, 'storage-size') ? `${str(o, 'storage-size')} px` : '256 px (the default, for a 224 model; --storage-size S for another)';
  if (folder) say(o, `decoding the photos on the server at ${stored}…`);
  const { importDataset: d } = await c.request(ImportDataset, {
    input: {
      name: need(o, 'name'), format, path: str(o, 'server-path'), uploads, trainLimit: optionalInt(o, 'train-limit'), testLimit: optionalInt(o, 'test-limit'),
      private: o.private === true ? true : undefined,
      ...(folder && {
        storageSize: optionalInt(o, 'storage-size'), skipBad: o['skip-bad'] === true ? true : undefined,
        testFraction: str(o, 'test-fraction') === undefined ? undefined : num(o, 'test-fraction', 0.2),
      }),
    },
  });
  say(o, `dataset ${d.name} (${d.id}): ${d.trainImages} train / ${d.testImages} test images, ${d.classes} classes, stored at ${d.width}x${d.height}`);
  const left = /\((skipped .*|ignored .*)\)$/.exec(d.source ?? '');
  if (left) say(o, left[1]);
  if (d.classNames?.length) say(o, `classes: ${d.classNames.slice(0, 10).join(', ')}${d.classNames.length > 10 ? ', …' : ''}`);
  return { command: 'dataset import', ...d };
}

/** --shards-per-round N, or auto: as many as workers are online when the run starts. */
function shardsOption(o: Options): Pick<HyperParametersInput, 'shardsPerRound' | 'autoShards'> {
  return str(o, 'shards-per-round')?.toLowerCase() === 'auto' ? { autoShards: true } : { shardsPerRound: optionalInt(o, 'shards-per-round') };
}

const AGGREGATIONS: readonly Aggregation[] = ['FEDAVG', 'MEDIAN', 'TRIMMED_MEAN', 'CENTERED_CLIP'];
const VERIFICATIONS: readonly Verification[] = ['NONE', 'SPOT_CHECK', 'QUORUM'];

/** A flag naming one of the API's enum values (kebab or snake case, any letter case); exit 2 for another. */
function choiceOf<T extends string>(o: Options, flag: string, allowed: readonly T[]): T | undefined {
  const raw = str(o, flag);
  if (raw === undefined) return undefined;
  const value = raw.toUpperCase().replace(/-/g, '_') as T;
  const names = allowed.map((a) => a.toLowerCase().replace(/_/g, '-')).join(', ');
  if (!allowed.includes(value)) throw new UsageError(`--${flag}: unknown value '${raw}'; choose one of ${names}`);
  return value;
}

/** The run's options as given by flags: the engine's (--epochs, --test-limit, ...), checked here as finetune checks them, and the rounds'. */
function runOptionsFrom(o: Options): HyperParametersInput {
  const given = givenTrainOptions(o) as HyperParametersInput;
  withFlags(() => parseTrainOptions(given as Record<string, unknown>));
  return {
    ...given, stepsPerRound: optionalInt(o, 'steps-per-round'), ...shardsOption(o), normalize: given.normalize?.toUpperCase() as Normalize | undefined,
    aggregation: choiceOf(o, 'aggregation', AGGREGATIONS),
    verification: choiceOf(o, 'verification', VERIFICATIONS),
    quorum: optionalInt(o, 'quorum'),
    spotCheckRate: str(o, 'spot-check-rate') === undefined ? undefined : num(o, 'spot-check-rate', 0),
    admitVolunteers: o['admit-volunteers'] === true ? true : undefined,
  };
}

export async function runCommand(o: Options): Promise<Record<string, unknown>> {
  const c = client(o);
  const input = { model: need(o, 'model'), dataset: need(o, 'dataset'), strategy: need(o, 'strategy'), hyperParameters: runOptionsFrom(o) };
  const { startRun: run } = await c.request(StartRun, { input }).catch((e: Error) => {
    // The server's word on a round option (hyperParameters.quorum: ...) is a value error of its flag.
    const flagged = /^(?:hyperParameters\.([a-zA-Z]+)|(strategy)): ([\s\S]*)$/;
    const m = e instanceof GraphQLRequestError && e.code === 'BAD_USER_INPUT' ? flagged.exec(e.message) : null;
    throw m ? new UsageError(`${flagOf(m[1] ?? m[2])}: ${m[3]}`) : e;
  });
  say(o, `run ${run.id}: ${run.strategyName}, ${(run.tunedParameters ?? 0).toLocaleString('en-US')} of ${(run.totalParameters ?? 0).toLocaleString('en-US')} parameters tuned`);
  const shards = (run.hyperParameters as { shardsPerRound?: number } | null)?.shardsPerRound;
  say(o, `shards per round: ${shards}${str(o, 'shards-per-round')?.toLowerCase() === 'auto' ? ' (auto: the workers online now)' : ''}`);
  if (!o.wait) return { command: 'run', ...run };
  const final = await follow(o, c, run.id);
  if (final.status !== 'SUCCEEDED' || !final.delta || final.accuracy === null) throw new Error(`run ${run.id} ${final.status}: ${final.error ?? ''}`);
  say(o, `top-1 ${(final.accuracy * 100).toFixed(2)}%; delta ${(final.delta.bytes / 1024).toFixed(1)} KiB (${final.delta.tensors} tensors)`);
  const out = str(o, 'out');
  if (out) {
    await saveDelta(final.delta, out);
    say(o, `delta saved to ${out}`);
  }
  return { command: 'run', ...final, out };
}

type FinalRun = NonNullable<RunResultResult['run']>;

/** Follows a run with a progress bar from its subscription (polling as a safety net) until it ends. */
async function follow(o: Options, c: GraphQLClient, runId: string): Promise<FinalRun> {
  const bar = new ProgressBar('steps', 1, Boolean(o.quiet));
  const ws = createClient({ url: c.url.replace(/^http/, 'ws'), webSocketImpl: WebSocket, connectionParams: { authorization: `Bearer ${adminToken(o)}` }, retryAttempts: 1000 });
  const terminal = ['SUCCEEDED', 'FAILED', 'CANCELLED'];
  try {
    return await new Promise<FinalRun>((resolveRun, reject) => {
      let settled = false;
      let waiting: string | null = null;
      const check = async (): Promise<void> => {
        const { run } = await c.request(RunResult, { id: runId });
        // A run that cannot move on says why (verified compute needs a worker that is not online).
        if (run.waiting !== waiting) bar.note(run.waiting ? `waiting: ${run.waiting}` : 'no longer waiting');
        waiting = run.waiting;
        bar.update(run.step, { status: run.status.toLowerCase() }, Math.max(1, run.totalSteps));
        if (terminal.includes(run.status) && !settled) {
          settled = true;
          bar.done(`run ${run.status.toLowerCase()}`);
          resolveRun(run);
        }
      };
      subscribe(ws, RunProgress, { runId }, {
        next: ({ runEvents: e }) => {
          const fields: Record<string, string> = {};
          if (e.trainLoss !== null) fields.loss = e.trainLoss.toFixed(4);
          if (e.testAccuracy !== null) fields['top-1'] = `${(e.testAccuracy * 100).toFixed(2)}%`;
          bar.update(e.step, fields, Math.max(1, e.totalSteps));
          if (terminal.includes(e.status) || e.kind === 'WAITING' || e.kind === 'STATUS') void check().catch(reject);
        },
        // The poll below carries on.
      });
      const poll = async (): Promise<void> => {
        while (!settled) {
          await check().catch((e: Error) => say(o, `(poll: ${e.message})`));
          await new Promise((r) => setTimeout(r, 3000));
        }
      };
      void poll();
    });
  } finally {
    await ws.dispose();
  }
}

/** Downloads a delta, refusing a failed request, a wrong size or a digest that is not the one recorded; written whole or not at all. */
async function saveDelta(delta: { downloadUrl: string; bytes: number; sha256: string }, out: string): Promise<void> {
  const res = await fetch(delta.downloadUrl);
  if (!res.ok) throw new Error(`delta download failed: HTTP ${res.status}`);
  const bytes = new Uint8Array(await res.arrayBuffer());
  if (bytes.length !== delta.bytes) throw new Error(`delta download: got ${bytes.length} bytes, the run recorded ${delta.bytes}`);
  const digest = createHash('sha256').update(bytes).digest('hex');
  if (digest !== delta.sha256) throw new Error(`delta download: SHA-256 ${digest.slice(0, 12)}… is not the recorded ${delta.sha256.slice(0, 12)}…; the stored file was altered`);
  writeFileSync(`${out}.partial`, bytes);
  renameSync(`${out}.partial`, out);
}

export async function deltaDownloadCommand(o: Options): Promise<Record<string, unknown>> {
  const c = client(o);
  const { delta } = await c.request(DeltaDownload, { id: need(o, 'run') });
  const out = need(o, 'out');
  await saveDelta(delta, out);
  say(o, `delta ${delta.id} saved to ${out} (${(delta.bytes / 1024).toFixed(1)} KiB)`);
  return { command: 'delta download', out, ...delta };
}

export async function deltaMergeCommand(o: Options): Promise<Record<string, unknown>> {
  const c = client(o);
  const { mergeDelta: m } = await c.request(MergeDelta, { id: need(o, 'run'), name: need(o, 'name') });
  say(o, `merged into model ${m.name} (${m.id}), weights ${m.weightsSha256.slice(0, 12)}`);
  return { command: 'delta merge', ...m };
}
