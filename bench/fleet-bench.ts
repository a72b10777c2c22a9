// The fleet simulator: N simulated workers (bench/sim-worker.ts) against real `partune serve`
// processes, with churn (a share of the workers leaving without notice every minute, as many new
// ones joining), on (a) one server on SQLite or (b) R replicas on PostgreSQL with the blob store
// in its own process. Measures claims/s, claim and complete latency, rounds per minute, the
// coordinator's time per round, shards lost or applied twice (from the state store after the
// run), and CPU and memory per server process, PostgreSQL and the simulator itself.
// Writes bench/results/fleet-<date>.json.
// Run: npm run bench:fleet -- --workers 1000[,2000] --replicas 2 --state postgres [--minutes 2] [--churn 0.1] [--compute-ms 3000]
//        [--wait 20] [--blobs server|local]
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';
import { TrainingState, inspect, parseVitConfig, preset, tunedShapes } from '../engine';
import { ServerProcess, StorageProcess, cliJson, ok, startServer, startStorage, uploadBytes, waitFor } from '../node/local-platform';
import { PostgresCluster, startPostgres } from '../node/postgres-cluster';
import { MAX_SHARDS_PER_ROUND } from '../protocol/run-options';
import { openState } from '../server/state/open';
import { FleetRecord, SimWorker } from './sim-worker';
import { ProcessMeter, round, summary, withChildren } from './fleet-measure';

const arg = (k: string, fallback: string): string => { const i = process.argv.indexOf(`--${k}`); return i > 0 ? process.argv[i + 1] : fallback; };
const STATE = arg('state', 'sqlite') as 'sqlite' | 'postgres';
const REPLICAS = Number(arg('replicas', '1'));
const MINUTES = Number(arg('minutes', '2'));
const CHURN = Number(arg('churn', '0.1'));
const COMPUTE_MS = Number(arg('compute-ms', '3000'));
/** What real workers send (worker/worker.ts); 0 measures the polling of clients that do not wait. */
const WAIT_SECONDS = Number(arg('wait', '20'));
/** Where blobs live on PostgreSQL: `partune storage serve` (replicas need it), or the one server's own store. */
const BLOBS = arg('blobs', 'server') as 'server' | 'local';
const CHURN_TICK_MS = 6000;
const WARMUP_MS = 15_000;

/** One step per shard, as many shards a round as half the fleet up to the server's limit: the rest keep asking. */
const shardsPerRound = (workers: number): number => Math.min(MAX_SHARDS_PER_ROUND, Math.max(1, Math.floor(workers / 2)));

interface Platform {
  servers: ServerProcess[];
  runId: string;
  postgres?: PostgresCluster;
  stateEnv: { state?: string; dataDir: string };
  stopServers(): Promise<void>;
  /** The blob store and PostgreSQL, once the state has been audited. */
  stopServices(): Promise<void>;
}

async function platform(workers: number): Promise<Platform> {
  if (STATE === 'sqlite' && REPLICAS !== 1) throw new Error('SQLite is one server\'s store: --replicas 1 (or --state postgres)');
  const tmp = mkdtempSync(join(tmpdir(), 'partune-fleet-'));
  const micro = join(tmp, 'micro.safetensors');
  await cliJson(['convert', '--checkpoint', 'random:vit_micro_patch4_28', '--out', micro]);
  const shared = { PARTUNE_SECRET: 'fleet-bench-secret', PARTUNE_ADMIN_TOKEN: 'adm_fleet', PARTUNE_WORKER_TOKEN: 'wrk_fleet' };
  // A dead worker's lease lapses in 10 s, so churn costs a round little.
  const base = { ...shared, PARTUNE_LEASE_SECONDS: '10', PARTUNE_STALL_SECONDS: '30', PARTUNE_MAX_SHARD_SECONDS: '120',
    // Every simulated worker connects from loopback: one network prefix.
    PARTUNE_SOCKETS_PER_PREFIX: '100000', PARTUNE_MAX_SOCKETS: '100000', PARTUNE_MAX_SOCKET_OPERATIONS: '100000', PARTUNE_MAX_SUBSCRIPTIONS: '100000' };
  let postgres: PostgresCluster | undefined;
  let storage: StorageProcess | undefined;
  let env: NodeJS.ProcessEnv = base;
  if (STATE === 'postgres') {
    if (BLOBS === 'local' && REPLICAS !== 1) throw new Error('--blobs local is one server\'s own store: --replicas 1');
    postgres = await startPostgres({ durable: true });
    storage = BLOBS === 'server' ? await startStorage(shared.PARTUNE_SECRET) : undefined;
    env = { ...base, PARTUNE_STATE: await postgres.database(), ...(storage ? { PARTUNE_BLOB_URL: storage.url } : {}) };
  }
  const servers: ServerProcess[] = [];
  for (let i = 0; i < REPLICAS; i++) servers.push(await startServer(env));
  const [first] = servers;
  const uploadId = await uploadBytes(first, 'micro.safetensors', readFileSync(micro));
  await ok(first.url, first.admin, 'mutation($i: RegisterModelInput!) { registerModel(input: $i) { id } }', { i: { name: 'micro', uploadId } });
  await ok(first.url, first.admin, 'mutation($i: ImportDatasetInput!) { importDataset(input: $i) { id } }', { i: { name: 'digits', format: 'MNIST_PACKAGE', testLimit: 100 } });
  const shards = shardsPerRound(workers);
  const { startRun } = await ok(first.url, first.admin, 'mutation($i: StartRunInput!) { startRun(input: $i) { id } }', {
    i: { model: 'micro', dataset: 'digits', strategy: 'attn-only', hyperParameters: { epochs: 50, batchSize: 8, stepsPerRound: shards, shardsPerRound: shards, testLimit: 100, seed: 0 } },
  });
  await waitFor('the run to start', async () => (await ok(first.url, first.admin, 'query($id: ID!) { run(id: $id) { status } }', { id: startRun.id })).run.status === 'RUNNING', 120_000);
  return {
    servers, runId: startRun.id, postgres, stateEnv: { state: env.PARTUNE_STATE, dataDir: first.dataDir },
    async stopServers() {
      await Promise.all(servers.map((s) => s.stop()));
    },
    async stopServices() {
      await storage?.stop();
      postgres?.stop();
    },
  };
}

/** Checks every round the run finished against what the workers were told: one accepted result per index, each acknowledged one used. */
async function audit(p: Platform, record: FleetRecord): Promise<{ roundsChecked: number; lost: number; doubleApplied: number }> {
  const state = await openState(p.stateEnv);
  try {
    const run = (await state.runs.get(p.runId))!;
    const shards = await state.shards.ofRun(p.runId);
    const accepted = new Map<string, number>();
    for (const s of shards) if (s.round < run.round) accepted.set(`${s.round}/${s.index}`, (accepted.get(`${s.round}/${s.index}`) ?? 0) + (s.verdict === 'ACCEPTED' ? 1 : 0));
    const byId = new Map(shards.map((s) => [s.id, s]));
    const ackedTwice = record.acked.length - new Set(record.acked.map((a) => a.shard)).size;
    // In a finished round an acknowledged result is the one applied or one that checked it (SPOT_CHECK).
    const ackedNotApplied = record.acked.filter((a) => {
      const s = byId.get(a.shard);
      return a.round < run.round && !(s?.status === 'DONE' && s.workerId === a.worker && (s.verdict === 'ACCEPTED' || s.verdict === 'AGREED'));
    }).length;
    return {
      roundsChecked: run.round,
      lost: [...accepted.values()].filter((n) => n === 0).length + ackedNotApplied,
      doubleApplied: [...accepted.values()].filter((n) => n > 1).length + ackedTwice,
    };
  } finally {
    await state.close();
  }
}

async function measure(workers: number): Promise<Record<string, unknown>> {
  const p = await platform(workers);
  const epoch = performance.now();
  const record: FleetRecord = { claimMs: [], emptyClaimMs: [], completeMs: [], acked: [], errors: [] };
  const config = parseVitConfig(preset('vit_micro_patch4_28', { numClasses: 10 }));
  const shapes = tunedShapes(config, inspect({ kind: 'preset', name: 'attn-only' }, config).tuned);
  const states = new Map<string, Promise<TrainingState>>();
  /** When each round's event first arrived (every replica's subscription delivers it), by the round it closed. */
  const roundClosed = new Map<number, number>();
  const roundOpened = new Map<number, number>();
  const sockets = p.servers.map((s) => {
    const ws = createClient({ url: s.url.replace('http', 'ws'), webSocketImpl: WebSocket, connectionParams: { authorization: `Bearer ${s.admin}` } });
    ws.subscribe({ query: 'subscription($id: ID) { runEvents(runId: $id) { kind round } }', variables: { id: p.runId } }, {
      next: (m) => {
        const e = m.data!.runEvents as { kind: string; round: number };
        if (e.kind !== 'ROUND' && e.kind !== 'EVALUATION') return;
        const at = performance.now() - epoch;
        if (!roundClosed.has(e.round - 1)) roundClosed.set(e.round - 1, at);
        if (!roundOpened.has(e.round)) roundOpened.set(e.round, at);
      },
      error: () => undefined, complete: () => undefined,
    });
    return ws;
  });
  let joined = 0;
  const live = new Set<SimWorker>();
  const addWorker = (): void => {
    const n = joined++;
    const server = p.servers[n % p.servers.length];
    const w = new SimWorker({
      server: server.url, token: server.worker, name: `sim-${n}`, transport: n % 2 ? 'ws' : 'http', shapes, computeMs: COMPUTE_MS, waitSeconds: WAIT_SECONDS, roundOpened, record, epoch, states,
    });
    live.add(w);
    void w.run().catch((e: Error) => record.errors.push(`worker ${n}: ${e.message}`)).finally(() => live.delete(w));
  };
  // The fleet arrives over 10 s, as volunteers do, not in one burst.
  for (let i = 0; i < workers; i++) {
    addWorker();
    if (i % 50 === 49) await new Promise((r) => setTimeout(r, (10_000 * 50) / workers));
  }
  const churn = setInterval(() => {
    const leaving = [...live].sort(() => Math.random() - 0.5).slice(0, Math.round((workers * CHURN * CHURN_TICK_MS) / 60_000));
    for (const w of leaving) { w.leave(); live.delete(w); addWorker(); }
  }, CHURN_TICK_MS);
  await new Promise((r) => setTimeout(r, WARMUP_MS));
  const servers = p.servers.map((s) => new ProcessMeter(() => [s.proc.pid!]));
  const postgres = p.postgres && new ProcessMeter(() => withChildren(p.postgres!.postmaster()));
  const simulator = new ProcessMeter(() => [process.pid]);
  for (const m of [...servers, postgres, simulator]) m?.start();
  for (const a of [record.claimMs, record.emptyClaimMs, record.completeMs, record.acked, record.errors]) a.length = 0;
  const windowStart = performance.now() - epoch;
  await new Promise((r) => setTimeout(r, MINUTES * 60_000));
  const seconds = (performance.now() - epoch - windowStart) / 1000;
  const serverUse = servers.map((m) => m.stop());
  const postgresUse = postgres?.stop();
  const simulatorUse = simulator.stop();
  clearInterval(churn);
  for (const w of live) w.leave();
  await Promise.all(sockets.map((s) => s.dispose()));
  const windowRounds = [...roundClosed].filter(([, at]) => at >= windowStart);
  const claims = record.acked.length;
  // The coordinator's time per round: from the request that completed its last shard to its round event.
  const completeSent = new Map<number, number>();
  for (const a of record.acked) completeSent.set(a.round, Math.max(completeSent.get(a.round) ?? 0, a.sent));
  const overhead = windowRounds.filter(([r]) => completeSent.has(r)).map(([r, at]) => at - completeSent.get(r)!);
  await new Promise((r) => setTimeout(r, 500));
  await p.stopServers();
  const checked = await audit(p, record);
  await p.stopServices();
  return {
    workers, replicas: REPLICAS, state: STATE, blobs: STATE === 'sqlite' ? 'local' : BLOBS, verification: 'SPOT_CHECK', churnPerMinute: CHURN, computeMs: COMPUTE_MS, shardsPerRound: shardsPerRound(workers), seconds: round(seconds),
    claimWaitSeconds: WAIT_SECONDS, joinedTotal: joined, claimsPerSecond: round((claims + record.emptyClaimMs.length) / seconds), shardsPerSecond: round(claims / seconds),
    claimMs: summary(record.claimMs), emptyClaimMs: summary(record.emptyClaimMs), completeMs: summary(record.completeMs),
    roundsPerMinute: round(windowRounds.length / (seconds / 60), 2), roundOverheadMs: summary(overhead),
    shards: { acked: record.acked.length, ...checked },
    servers: serverUse, postgres: postgresUse, simulator: simulatorUse,
    errors: { count: record.errors.length, first: [...new Set(record.errors)].slice(0, 5) },
  };
}

async function main(): Promise<void> {
  const sizes = arg('workers', '1000').split(',').map(Number);
  const results: Record<string, unknown>[] = [];
  for (const n of sizes) {
    process.stderr.write(`fleet: ${n} workers, ${REPLICAS} replica(s) on ${STATE}, ${MINUTES} min...\n`);
    const r = await measure(n);
    process.stderr.write(`${JSON.stringify(r)}\n`);
    results.push(r);
  }
  const dir = join(__dirname, '..', '..', 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `fleet-${new Date().toISOString().slice(0, 10)}.json`);
  const earlier = existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as { runs: Record<string, unknown>[] }).runs : [];
  const key = (r: Record<string, unknown>): string => `${r.state}/${r.blobs}/${r.replicas}/${r.workers}`;
  const runs = [...earlier.filter((e) => !results.some((r) => key(r) === key(e))), ...results];
  writeFileSync(file, `${JSON.stringify({ date: new Date().toISOString(), machine: `${cpus().length} cores, ${cpus()[0].model}`, runs }, null, 2)}\n`);
  process.stderr.write(`wrote ${file}\n`);
  process.exit(0);
}

main().catch((e: Error) => {
  process.stderr.write(`${e.stack ?? e.message}\n`);
  process.exit(1);
});
