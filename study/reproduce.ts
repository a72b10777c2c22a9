// npm run reproduce [-- --quick] [--only EXPERIMENT] [--jobs N] [--resume] [--report-only] [--out DIR]
//
// Runs the reproduction study: for each experiment, every strategy's learning-rate sweep at seed
// 0 (scored on held-out images), the chosen rate at the other seeds, the angle-guided strategies
// from the full fine-tuning's angles, and the soups of each seed's partial deltas; then writes
// the report (docs/RESULTS.md and its plots, or RESULTS.md in --out for --quick). Each run is
// its own process, N at a time (default: one per CPU; tfjs-wasm uses one core per process).
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { PRESET_NAMES, Strategy, presetStrategy, selectByAngle } from '../engine';
import { Experiment, missingInputs, plan } from './experiments';
import type { BaseRef, FinetuneResult, JobSpec } from './job';
import { chooseLr, pretrainFile, readResults, runId, runsDir, soupsDir, workDir } from './results';
import { writeReport } from './report';

const ROOT = join(__dirname, '..', '..');

interface Args {
  quick: boolean;
  only?: string;
  jobs: number;
  resume: boolean;
  /** Rebuild the report from the raw results already in --out; run nothing. */
  reportOnly: boolean;
  out: string;
}

function parseArgs(argv: string[]): Args {
  const args: Args = { quick: false, jobs: Math.max(1, cpus().length), resume: false, reportOnly: false, out: '' };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === '--quick') args.quick = true;
    else if (a === '--resume') args.resume = true;
    else if (a === '--report-only') args.reportOnly = true;
    else if (a === '--only') args.only = value();
    else if (a === '--out') args.out = value();
    else if (a === '--jobs') {
      args.jobs = Number(value());
      if (!Number.isInteger(args.jobs) || args.jobs < 1) throw new Error('--jobs must be a positive integer');
    } else throw new Error(`unknown option '${a}' (use --quick, --only ID, --jobs N, --resume, --report-only, --out DIR)`);
  }
  // `npm run reproduce --quick` (without `--`) reaches us as an npm config variable.
  if (process.env.npm_config_quick === 'true') args.quick = true;
  args.out ||= join(ROOT, 'study', args.quick ? 'results-quick' : 'results');
  return args;
}

/** Runs at most `size` jobs at once, in submission order; the first failure stops new starts. */
class Pool {
  private running = 0;
  private readonly queue: (() => void)[] = [];
  failed?: Error;
  done = 0;
  started = Date.now();

  constructor(private readonly size: number) {}

  async run<T>(job: () => Promise<T>): Promise<T> {
    if (this.running >= this.size) await new Promise<void>((resolve) => this.queue.push(resolve));
    if (this.failed) {
      this.queue.shift()?.();
      throw this.failed;
    }
    this.running++;
    try {
      return await job();
    } catch (e) {
      this.failed ??= e as Error;
      throw e;
    } finally {
      this.running--;
      this.done++;
      this.queue.shift()?.();
    }
  }
}

const elapsed = (since: number): string => {
  const s = Math.round((Date.now() - since) / 1000);
  return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
};

class ExperimentRunner {
  private readonly work: string;

  constructor(private readonly e: Experiment, private readonly args: Args, private readonly pool: Pool) {
    this.work = workDir(args.out, e.id);
    for (const d of [runsDir(args.out, e.id), soupsDir(args.out, e.id), join(this.work, 'specs'), join(this.work, 'logs'), join(this.work, 'deltas')]) mkdirSync(d, { recursive: true });
  }

  private log(line: string): void {
    process.stderr.write(`[${elapsed(this.pool.started)}] ${this.e.id}: ${line}\n`);
  }

  /** One job in a child process; skipped when its outputs exist (resume). */
  /** Outputs of this invocation's plan; anything else in runs/ and soups/ is stale. */
  private readonly planned = new Set<string>();

  /** One job in a child process; skipped when its outputs exist and came from the same spec (resume). */
  private async job<T>(id: string, spec: JobSpec, outputs: string[], describe: (r: T) => string): Promise<T> {
    for (const o of outputs) this.planned.add(o);
    if (outputs.every((o) => existsSync(o))) {
      const previous = JSON.parse(readFileSync(spec.result, 'utf8')) as T & { spec: JobSpec };
      if (JSON.stringify(previous.spec) === JSON.stringify(spec)) return previous;
    }
    return this.pool.run(async () => {
      const specFile = join(this.work, 'specs', `${id}.json`);
      const logFile = join(this.work, 'logs', `${id}.log`);
      writeFileSync(specFile, JSON.stringify(spec, null, 1));
      const started = Date.now();
      const fd = openSync(logFile, 'w');
      const child = spawn(process.execPath, [join(__dirname, 'job.js'), specFile], { stdio: ['ignore', 'pipe', fd] });
      let buffered = '';
      child.stdout!.on('data', (chunk: Buffer) => {
        buffered += chunk.toString();
        const lines = buffered.split('\n');
        buffered = lines.pop()!;
        for (const l of lines) if (l.trim()) this.log(l);
      });
      const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
      closeSync(fd);
      if (code !== 0) {
        const tail = readFileSync(logFile, 'utf8').trim().split('\n').slice(-8).join('\n');
        throw new Error(`${this.e.id} ${id} failed (exit ${code}); log ${logFile}:\n${tail}`);
      }
      const result = JSON.parse(readFileSync(spec.result, 'utf8')) as T;
      this.log(`${id}: ${describe(result)} (${((Date.now() - started) / 1000).toFixed(0)} s; ${this.pool.done + 1} jobs done)`);
      return result;
    });
  }

  private finetune(base: BaseRef, label: string, strategy: Strategy, lr: number, seed: number): Promise<FinetuneResult> {
    const id = runId(label, lr, seed);
    const result = join(runsDir(this.args.out, this.e.id), `${id}.json`);
    const deltaOut = join(this.work, 'deltas', `${id}.safetensors`);
    const spec: JobSpec = { kind: 'finetune', experiment: this.e.id, quick: this.args.quick, result, base, label, strategy, lr, seed, deltaOut };
    return this.job<FinetuneResult>(id, spec, [result, deltaOut], (r) => `held-out ${pct(r.heldOut)} test ${pct(r.test)}, ${r.imagesPerSecond.toFixed(0)} img/s`);
  }

  /** Sweep at seed 0, then the chosen rate at the other seeds; resolves to the chosen runs. */
  private async strategy(base: BaseRef, label: string, strategy: Strategy): Promise<FinetuneResult[]> {
    const r = this.e.recipe;
    const grid = label === 'linear-probe' ? r.linearProbeLrGrid : r.lrGrid;
    const sweep = await Promise.all(grid.map((lr) => this.finetune(base, label, strategy, lr, r.seeds[0])));
    const lr = chooseLr(sweep);
    const rest = await Promise.all(r.seeds.slice(1).map((seed) => this.finetune(base, label, strategy, lr, seed)));
    return [sweep.find((s) => s.lr === lr)!, ...rest];
  }

  private async base(): Promise<BaseRef> {
    if (!('pretrain' in this.e.base)) return { checkpoint: this.e.base.checkpoint, config: this.e.base.config };
    const checkpointOut = join(this.work, 'base.safetensors');
    const result = pretrainFile(this.args.out, this.e.id);
    await this.job('pretrain', { kind: 'pretrain', experiment: this.e.id, quick: this.args.quick, result, checkpointOut }, [result, checkpointOut],
      (r: { sourceTest: number; trainSeconds: number }) => `source top-1 ${pct(r.sourceTest)} after ${r.trainSeconds.toFixed(0)} s of training`);
    return { checkpoint: checkpointOut };
  }

  async run(): Promise<void> {
    await this.runPlan();
    // A resumed study whose plan changed (a new grid, other angles) leaves results of the old one.
    for (const dir of [runsDir(this.args.out, this.e.id), soupsDir(this.args.out, this.e.id), join(this.work, 'deltas')]) {
      for (const f of readdirSync(dir)) if (!this.planned.has(join(dir, f))) rmSync(join(dir, f));
    }
  }

  private async runPlan(): Promise<void> {
    const base = await this.base();
    const partial = new Map<string, Promise<FinetuneResult[]>>();
    const full = this.strategy(base, 'full', presetStrategy('full'));
    const others = PRESET_NAMES.filter((n) => n !== 'full').map((name) => {
      const runs = this.strategy(base, name, presetStrategy(name));
      if (name !== 'linear-probe') partial.set(name, runs);
      return runs;
    });
    // The paper's angles: pre-trained vs fully fine-tuned weights (seed 0 at full's chosen rate).
    const { angles } = (await full)[0];
    if (!angles) throw new Error('the full fine-tuning result lacks its angles');
    for (const direction of ['smallest', 'largest'] as const) {
      for (const k of this.e.recipe.angleTopK) {
        const label = `angle-${direction}-k${k}`;
        partial.set(label, this.strategy(base, label, selectByAngle(angles, { direction, topK: { attn: k, ffn: k } }, label)));
      }
    }
    await Promise.all(others);
    const chosen = await Promise.all([...partial.values()]);
    await Promise.all(this.e.recipe.seeds.map((seed) => {
      const ingredients = chosen.map((runs) => runs.find((r) => r.seed === seed)!).map((r) => ({
        label: r.label, delta: join(this.work, 'deltas', `${runId(r.label, r.lr, r.seed)}.safetensors`),
      }));
      const result = join(soupsDir(this.args.out, this.e.id), `seed-${seed}.json`);
      return this.job(`soups_s${seed}`, { kind: 'soup', experiment: this.e.id, quick: this.args.quick, result, base, seed, ingredients }, [result],
        (r: { uniform: { test: number }; greedy: { test: number; kept: string[] } }) => `uniform soup test ${pct(r.uniform.test)}, greedy ${pct(r.greedy.test)} (${r.greedy.kept.length} kept)`);
    }));
  }
}

const pct = (x: number): string => `${(100 * x).toFixed(2)}%`;

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const experiments = plan(args.quick, args.only);
  const pool = new Pool(args.jobs);
  const skipped: Record<string, string[]> = {};
  const runnable = experiments.filter((e) => {
    const missing = missingInputs(e);
    if (missing.length) {
      skipped[e.id] = missing;
      process.stderr.write(`${e.id}: SKIPPED, missing ${missing.join(', ')}\n`);
    }
    return !missing.length;
  });
  if (!args.reportOnly) {
    if (!args.resume) for (const e of runnable) rmSync(join(args.out, e.id), { recursive: true, force: true });
    process.stderr.write(`study: ${runnable.map((e) => e.id).join(', ') || 'nothing to run'}; ${args.jobs} jobs at a time; results in ${args.out}${args.quick ? ' (quick mode: smoke test, not results)' : ''}\n`);
    const outcomes = await Promise.allSettled(runnable.map((e) => new ExperimentRunner(e, args, pool).run()));
    const failures = outcomes.filter((o): o is PromiseRejectedResult => o.status === 'rejected');
    if (failures.length) throw failures[0].reason;
  }
  const report = args.quick ? join(args.out, 'RESULTS.md') : join(ROOT, 'docs', 'RESULTS.md');
  const results = Object.fromEntries(runnable.map((e) => [e.id, readResults(args.out, e.id)]));
  writeReport({ experiments: runnable, results, skipped, report, quick: args.quick, discussion: args.quick ? undefined : join(ROOT, 'study', 'discussion.md') });
  process.stderr.write(`study done in ${elapsed(pool.started)}: ${report}\n`);
}

if (require.main === module) {
  main().catch((err: Error) => {
    process.stderr.write(`reproduce: ${err.message}\n`);
    process.exit(1);
  });
}
