// A run's events as subscribers see them: its current status and progress with what happened.
import { RUN_EVENTS, RunEventKind, pubSub } from '../events';
import type { StateStore } from '../state/store';
import { progressOf } from './queries';

export interface EventDetail {
  readonly trainLoss?: number;
  readonly testAccuracy?: number;
  readonly testLoss?: number;
  readonly message?: string;
}

export class RunEvents {
  constructor(private readonly state: StateStore, private readonly log: (line: string) => void) {}

  /** Publishes the run's state now; an event that cannot be built is logged, never thrown at the caller. */
  async emit(runId: string, kind: RunEventKind, detail: EventDetail = {}): Promise<void> {
    try {
      const run = await this.state.runs.get(runId);
      if (!run) return;
      const { step, totalSteps, progress } = await progressOf(this.state, run);
      pubSub.publish(RUN_EVENTS, { runId, kind, status: run.status, round: run.round, step, totalSteps, progress, ...detail, at: new Date() });
    } catch (e) {
      this.log(`run ${runId}: event ${kind} not published: ${(e as Error).message}`);
    }
  }
}
