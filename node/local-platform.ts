// The platform as local processes, for tests and benchmarks: a server (`partune serve`) on a free
// port with its own data directory, worker processes, and a GraphQL client that returns errors
// instead of throwing.
import { ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * The CLI as a child process without blocking the event loop: a long spawnSync freezes the test's
 * pooled HTTP connections, which the server may close meanwhile (the next fetch then fails).
 */
export function cliJson(args: string[]): Promise<Record<string, any>> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [CLI, ...args, '--json', '--quiet'], { encoding: 'utf8', maxBuffer: 1 << 24 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`partune ${args.join(' ')}: ${stderr || err.message}`));
      else resolve(JSON.parse(stdout.trim().split('\n').pop()!));
    });
  });
}

/** The built CLI, from dist/node/ (compiled) or from node/ (ts-jest runs sources). */
export const CLI = existsSync(join(__dirname, '..', 'cli', 'main.js')) ? join(__dirname, '..', 'cli', 'main.js') : join(__dirname, '..', 'dist', 'cli', 'main.js');

async function free(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer().once('error', () => resolve(false)).listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

/** A free port on 127.0.0.1. */
export async function freePort(): Promise<number> {
  for (;;) {
    const p = 20000 + Math.floor(Math.random() * 30000);
    if (await free(p)) return p;
  }
}

export interface ServerProcess {
  readonly url: string;
  readonly port: number;
  readonly dataDir: string;
  readonly admin: string;
  readonly worker: string;
  proc: ChildProcess;
  log: string[];
  stop(signal?: NodeJS.Signals): Promise<void>;
  restart(): Promise<void>;
}

/** Runs `script` (the CLI by default) under this Node, its output kept in `log` line by line. */
export function spawnLogged(args: string[], env: NodeJS.ProcessEnv, log: string[], script = CLI): ChildProcess {
  const child = spawn(process.execPath, [script, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const keep = (b: Buffer): void => void log.push(...b.toString().split('\n').filter(Boolean));
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  return child;
}

async function waitForLine(log: string[], pattern: RegExp, child: ChildProcess, from = 0, timeoutMs = 30_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!log.slice(from).some((l) => pattern.test(l))) {
    if (child.exitCode !== null) throw new Error(`process exited (${child.exitCode}):\n${log.join('\n')}`);
    if (Date.now() > end) throw new Error(`timed out waiting for ${pattern}:\n${log.join('\n')}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export async function startServer(env: NodeJS.ProcessEnv = {}, dataDir = mkdtempSync(join(tmpdir(), 'partune-test-'))): Promise<ServerProcess> {
  const port = await freePort();
  const log: string[] = [];
  const args = ['serve', '--workers', '0', '--port', String(port), '--data-dir', dataDir];
  const launch = async (): Promise<ChildProcess> => {
    const from = log.length;
    const proc = spawnLogged(args, env, log);
    await waitForLine(log, /partune server: http/, proc, from);
    return proc;
  };
  const proc = await launch();
  const stored = JSON.parse(readFileSync(join(dataDir, 'tokens.json'), 'utf8')) as { admin: string; worker: string };
  const admin = env.PARTUNE_ADMIN_TOKEN ?? stored.admin;
  const worker = env.PARTUNE_WORKER_TOKEN ?? stored.worker;
  const server: ServerProcess = {
    url: `http://127.0.0.1:${port}/graphql`, port, dataDir, admin, worker, proc, log,
    async stop(signal = 'SIGTERM') {
      if (server.proc.exitCode !== null || server.proc.signalCode !== null) return;
      await new Promise<void>((resolve) => {
        server.proc.once('exit', () => resolve());
        server.proc.kill(signal);
      });
    },
    async restart() {
      log.push('--- restart ---');
      server.proc = await launch();
    },
  };
  return server;
}

export interface StorageProcess {
  /** For the servers' PARTUNE_BLOB_URL. */
  readonly url: string;
  readonly log: string[];
  stop(signal?: NodeJS.Signals): Promise<void>;
  /** Starts it again on the same port and data directory (after a stop: an outage's end). */
  start(): Promise<void>;
}

/** `partune storage serve` on a free port, checking URLs against `secret`. */
export async function startStorage(secret: string, dataDir = mkdtempSync(join(tmpdir(), 'partune-storage-')), env: NodeJS.ProcessEnv = {}): Promise<StorageProcess> {
  const port = await freePort();
  const log: string[] = [];
  const launch = async (): Promise<ChildProcess> => {
    const from = log.length;
    const p = spawnLogged(['storage', 'serve', '--port', String(port), '--data-dir', dataDir], { PARTUNE_SECRET: secret, ...env }, log);
    await waitForLine(log, /partune storage: http/, p, from);
    return p;
  };
  let proc = await launch();
  return {
    url: `http://127.0.0.1:${port}`, log,
    stop: (signal = 'SIGTERM') =>
      new Promise<void>((resolve) => {
        if (proc.exitCode !== null || proc.signalCode !== null) return resolve();
        proc.once('exit', () => resolve());
        proc.kill(signal);
      }),
    start: async () => void (proc = await launch()),
  };
}

export interface WorkerProcess {
  readonly proc: ChildProcess;
  readonly log: string[];
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/** A worker child process with its log, and a kill that resolves once it exited. */
export function asWorkerProcess(proc: ChildProcess, log: string[]): WorkerProcess {
  return {
    proc, log,
    kill: (signal = 'SIGKILL') => new Promise<void>((resolve) => {
      if (proc.exitCode !== null || proc.signalCode !== null) return resolve();
      proc.once('exit', () => resolve());
      proc.kill(signal);
    }),
  };
}

export function startWorker(server: ServerProcess, name: string, extra: string[] = []): WorkerProcess {
  const log: string[] = [];
  return asWorkerProcess(spawnLogged(['worker', '--server', server.url, '--token', server.worker, '--name', name, '--backend', 'wasm', ...extra], {}, log), log);
}

export interface GqlResult<T> { data?: T; errors?: { message: string; extensions?: { code?: string } }[] }

export async function gql<T = Record<string, any>>(url: string, token: string | undefined, query: string, variables: Record<string, unknown> = {}): Promise<GqlResult<T>> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify({ query, variables }),
  });
  return (await res.json()) as GqlResult<T>;
}

/** Data or a thrown error with the GraphQL messages. */
export async function ok<T = Record<string, any>>(url: string, token: string | undefined, query: string, variables: Record<string, unknown> = {}): Promise<T> {
  const r = await gql<T>(url, token, query, variables);
  if (r.errors?.length) throw new Error(r.errors.map((e) => `${e.extensions?.code}: ${e.message}`).join('; '));
  return r.data!;
}

export async function waitFor<T>(what: string, probe: () => Promise<T | undefined | null | false>, timeoutMs = 120_000, everyMs = 250): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export async function uploadBytes(server: ServerProcess, filename: string, bytes: Uint8Array, token = server.admin): Promise<string> {
  const mutation = 'mutation($f: String!, $b: Int!) { createUpload(filename: $f, bytes: $b) { id url } }';
  const { createUpload } = await ok(server.url, token, mutation, { f: filename, b: bytes.length });
  const res = await fetch(createUpload.url, { method: 'PUT', body: bytes as Uint8Array<ArrayBuffer> });
  if (!res.ok) throw new Error(`PUT ${res.status}`);
  return createUpload.id;
}

/** A worker registered by hand (tests that speak the shard protocol themselves): its id and credential. */
export async function registerWorker(server: ServerProcess, name: string, kind: 'node' | 'browser' = 'node', token = server.worker): Promise<{ id: string; credential: string }> {
  const { registerWorker: r } = await ok(server.url, token, 'mutation($n: String!, $k: String!) { registerWorker(name: $n, kind: $k, backend: "none") { worker { id } credential } }', { n: name, k: kind });
  return { id: r.worker.id, credential: r.credential };
}

export const RUN_QUERY = `query($id: ID!) { run(id: $id) { id status error accuracy loss step totalSteps progress round
  metrics { step testAccuracy trainLoss } shards { id round index fromStep toStep status verdict attempt workerId rejections downloadedBytes } delta { id bytes tensors sha256 downloadUrl } } }`;

export async function waitForRun(server: ServerProcess, id: string, timeoutMs = 180_000): Promise<Record<string, any>> {
  return waitFor(`run ${id} to finish`, async () => {
    const r = await gql(server.url, server.admin, RUN_QUERY, { id }).catch(() => undefined); // the server may be restarting
    const run = r?.data?.run;
    return run && ['SUCCEEDED', 'FAILED', 'CANCELLED'].includes(run.status) ? run : undefined;
  }, timeoutMs, 500);
}
