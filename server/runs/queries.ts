// Reading runs: one by id, pages by filter, and how far each has come.
import { notFound } from '../errors';
import type { Platform } from '../platform';
import { Page, RunRecord } from '../state/records';
import type { RunFilter, StateStore } from '../state/store';

export interface Progress {
  readonly step: number;
  readonly totalSteps: number;
  readonly progress: number;
}

/** Steps done: finished rounds plus what the current round's shards have reported. */
export async function progressOf(state: StateStore, run: RunRecord): Promise<Progress> {
  const plan = run.plan;
  if (run.status === 'SUCCEEDED') return { step: plan?.totalSteps ?? 0, totalSteps: plan?.totalSteps ?? 0, progress: 1 };
  if (!plan) return { step: 0, totalSteps: 0, progress: 0 };
  const step = Math.min(plan.totalSteps, run.step + (await state.shards.stepsDone(run.id, run.round)));
  return { step, totalSteps: plan.totalSteps, progress: step / plan.totalSteps };
}

export class RunQueries {
  constructor(private readonly p: Platform) {}

  async get(id: string): Promise<RunRecord> {
    const run = await this.p.state.runs.get(id);
    if (!run) throw notFound(`run '${id}' not found`);
    return run;
  }

  list(filter: RunFilter, first: number, offset: number): Promise<Page<RunRecord>> {
    return this.p.state.runs.list(filter, first, offset);
  }

  progress(run: RunRecord): Promise<Progress> {
    return progressOf(this.p.state, run);
  }
}
