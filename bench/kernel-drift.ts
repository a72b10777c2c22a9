// How far honest updates of one shard drift apart across kernel classes, and how far the trust
// bench's lies are from the honest update: what CROSS_CLASS_TOLERANCE is calibrated on. Each class
// trains the same shard windows in its own process (wasm with XNNPACK, twice: one class must be
// bit-identical to itself; wasm with the native BLAS on one and on two threads); the parent
// compares every pair with the verifier's own distance. Writes bench/results/kernel-drift-<date>.json.
// Run: npm run bench:drift
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CROSS_CLASS_TOLERANCE, TrainingState, inspect, parseState, parseTrainOptions, presetStrategy, runShard, serializeState, tunedShapes, updateDistance,
} from '../engine';
import { BackendChoice, selectBackend } from '../node/backend';
import { LIES, lie } from './fleet-worker';
import { HYPER, microMnist } from './poisoned-rounds';

const WINDOWS = [4, 16, 64];
const STRATEGIES = ['attn-only', 'full'] as const;

/** Trains every (strategy, window) from step 0 on this process's backend; writes the updates. */
async function emit(choice: string, out: string): Promise<void> {
  const [backend, blas] = choice.split('+');
  const info = await selectBackend(backend as BackendChoice, { blas: blas?.startsWith('blas') ? 'auto' : 'off', threads: blas === 'blas2' ? 2 : 1 });
  const s = await microMnist();
  const options = parseTrainOptions({ epochs: 8, batchSize: HYPER.batchSize, lr: HYPER.lr, seed: HYPER.seed });
  const written: Record<string, string> = { kernelClass: info.kernelClass };
  for (const name of STRATEGIES) {
    const strategy = presetStrategy(name);
    const tuned = inspect(strategy, s.base.config).tuned;
    const zeros = new Map(tuned.map((n) => [n, { shape: s.base.weights.get(n)!.shape, data: new Float32Array(s.base.weights.get(n)!.data.length) }]));
    const start: TrainingState = { label: { run: 'r', round: 0 }, params: new Map(tuned.map((n) => [n, s.base.weights.get(n)!])), optimizer: { step: 0, expAvg: zeros, expAvgSq: zeros } };
    for (const steps of WINDOWS) {
      const gen = runShard({ base: s.base, numClasses: 10, strategy, train: s.train, normalization: s.normalization, options, window: { from: 0, to: steps }, start, label: { run: 'r', round: 0 } });
      let next = await gen.next();
      while (!next.done) next = await gen.next();
      const file = join(out, `${choice}-${name}-${steps}.safetensors`);
      writeFileSync(file, serializeState(next.value));
      written[`${name}-${steps}`] = file;
    }
  }
  writeFileSync(join(out, `${choice}.json`), JSON.stringify(written));
}

async function main(): Promise<void> {
  if (process.argv[2] === '--emit') return emit(process.argv[3], process.argv[4]);
  const out = mkdtempSync(join(tmpdir(), 'partune-drift-'));
  const choices = ['wasm', 'wasm+again', 'wasm+blas', 'wasm+blas2'];
  for (const c of choices) {
    process.stderr.write(`[drift] training on ${c}\n`);
    execFileSync(process.execPath, [__filename, '--emit', c, out], { stdio: ['ignore', 'inherit', 'inherit'] });
  }
  const classes = Object.fromEntries(choices.map((c) => [c, JSON.parse(readFileSync(join(out, `${c}.json`), 'utf8')) as Record<string, string>]));
  await selectBackend('wasm', { blas: 'off', threads: 1 });
  const s = await microMnist();
  const pairs: Record<string, unknown>[] = [];
  const lies: Record<string, unknown>[] = [];
  for (const name of STRATEGIES) {
    const strategy = presetStrategy(name);
    const tuned = inspect(strategy, s.base.config).tuned;
    const shapes = tunedShapes(s.base.config, tuned);
    const zeros = new Map(tuned.map((n) => [n, { shape: s.base.weights.get(n)!.shape, data: new Float32Array(s.base.weights.get(n)!.data.length) }]));
    const start: TrainingState = { label: { run: 'r', round: 0 }, params: new Map(tuned.map((n) => [n, s.base.weights.get(n)!])), optimizer: { step: 0, expAvg: zeros, expAvgSq: zeros } };
    for (const steps of WINDOWS) {
      const states = Object.fromEntries(choices.map((c) => [c, parseState(readFileSync(classes[c][`${name}-${steps}`]), shapes)]));
      for (let i = 0; i < choices.length; i++) {
        for (let j = i + 1; j < choices.length; j++) {
          const d = updateDistance(start, states[choices[i]], states[choices[j]]);
          pairs.push({ strategy: name, steps, a: classes[choices[i]].kernelClass, b: classes[choices[j]].kernelClass, relative: d.relative, tensor: d.tensor });
        }
      }
      // The lies against the honest update they replace (replay: the previous window's update).
      const honest = states.wasm;
      const flat = (t: TrainingState) => new Map([...t.params].map(([k, v]) => [`param/${k}`, v]));
      for (const mode of LIES) {
        const previous = steps === WINDOWS[0] ? undefined : flat(parseState(readFileSync(classes.wasm[`${name}-${WINDOWS[WINDOWS.indexOf(steps) - 1]}`]), shapes));
        const forged = lie(mode, flat(honest), flat(start), previous, 1);
        const params = new Map([...forged].map(([k, v]) => [k.slice('param/'.length), { shape: [...v.shape], data: v.data }]));
        lies.push({ strategy: name, steps, lie: mode, relative: updateDistance(start, honest, { ...honest, params }).relative });
      }
    }
  }
  const crossClass = pairs.filter((p) => p.a !== p.b && !(p.strategy === 'full' && p.steps === 64)).map((p) => p.relative as number);
  const result = {
    date: new Date().toISOString(), model: 'vit_micro_patch4_28 (random init), MNIST, batch 32, AdamW from step 0', tolerance: CROSS_CLASS_TOLERANCE,
    sameClassIdentical: pairs.filter((p) => p.a === p.b).every((p) => p.relative === 0),
    worstCrossClass: Math.max(...crossClass), fullFineTuning64Steps: Math.max(...pairs.filter((p) => p.strategy === 'full' && p.steps === 64).map((p) => p.relative as number)), smallestLie: Math.min(...lies.map((l) => l.relative as number)), pairs, lies,
  };
  mkdirSync(join(__dirname, '..', '..', 'bench', 'results'), { recursive: true });
  const file = join(__dirname, '..', '..', 'bench', 'results', `kernel-drift-${result.date.slice(0, 10)}.json`);
  writeFileSync(file, JSON.stringify(result, null, 2));
  process.stderr.write(`[drift] same class identical: ${result.sameClassIdentical}; worst cross-class ${result.worstCrossClass.toExponential(2)} (full, 64 steps: ${result.fullFineTuning64Steps.toFixed(2)}); smallest lie ${result.smallestLie.toFixed(2)}; tolerance ${CROSS_CLASS_TOLERANCE}\n[drift] wrote ${file}\n`);
}

main().catch((e: Error) => {
  process.stderr.write(`${e.stack ?? e.message}\n`);
  process.exit(1);
});
