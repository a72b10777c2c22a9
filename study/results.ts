// Where the study keeps its raw results, and the one rule that reads them: a strategy's learning
// rate is the grid value with the best held-out top-1 at seed 0 (ties: the smaller rate).
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { FinetuneResult, PretrainResult, SoupResult } from './job';

export const runsDir = (out: string, experiment: string): string => join(out, experiment, 'runs');
export const soupsDir = (out: string, experiment: string): string => join(out, experiment, 'soups');
export const pretrainFile = (out: string, experiment: string): string => join(out, experiment, 'pretrain.json');
/** Deltas, checkpoints, specs and logs: large or transient, not committed. */
export const workDir = (out: string, experiment: string): string => join(out, experiment, 'work');

export const runId = (label: string, lr: number, seed: number): string => `${label}_lr${lr.toExponential(0)}_s${seed}`;

function readJsonDir<T>(dir: string): T[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir).filter((f) => f.endsWith('.json')).sort().map((f) => JSON.parse(readFileSync(join(dir, f), 'utf8')) as T);
}

export interface ExperimentResults {
  readonly runs: FinetuneResult[];
  readonly soups: SoupResult[];
  readonly pretrain?: PretrainResult;
}

export function readResults(out: string, experiment: string): ExperimentResults {
  const p = pretrainFile(out, experiment);
  return {
    runs: readJsonDir<FinetuneResult>(runsDir(out, experiment)),
    soups: readJsonDir<SoupResult>(soupsDir(out, experiment)),
    pretrain: existsSync(p) ? (JSON.parse(readFileSync(p, 'utf8')) as PretrainResult) : undefined,
  };
}

/** The chosen learning rate among a strategy's seed-0 sweep results. */
export function chooseLr(sweep: readonly Pick<FinetuneResult, 'lr' | 'heldOut'>[]): number {
  if (!sweep.length) throw new Error('no sweep results to choose a learning rate from');
  return [...sweep].sort((a, b) => b.heldOut - a.heldOut || a.lr - b.lr)[0].lr;
}

export function meanStd(xs: readonly number[]): { mean: number; std: number; n: number } {
  const n = xs.length;
  const mean = xs.reduce((a, b) => a + b, 0) / n;
  // Sample standard deviation (n - 1), 0 for a single value.
  const std = n > 1 ? Math.sqrt(xs.reduce((a, b) => a + (b - mean) ** 2, 0) / (n - 1)) : 0;
  return { mean, std, n };
}
