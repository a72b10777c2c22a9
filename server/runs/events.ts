// A run's events as subscribers see them: its current status and progress with what happened.
// They go out through the store's coordination, so the subscribers of every server replica see
// each one, whichever replica it happened on.
import { RUN_EVENTS, RunEventKind, RunEventPayload, pubSub } from '../events';
import type { StateStore } from '../state/store';
import { progressOf } from './queries';

export interface EventDetail {
  readonly trainLoss?: number;
  readonly testAccuracy?: number;
  readonly testLoss?: number;
  readonly message?: string;
}

/** Longer messages are cut: an event must fit the replicas' message channel. */
const MAX_MESSAGE = 2000;

export class RunEvents {
  constructor(private readonly state: StateStore, private readonly log: (line: string) => void) {}

  /** Publishes the run's state now; an event that cannot be built or sent is logged, never thrown at the caller. */
  async emit(runId: string, kind: RunEventKind, detail: EventDetail = {}): Promise<void> {
    try {
      const run = await this.state.runs.get(runId);
      if (!run) return;
      const { step, totalSteps, progress } = await progressOf(this.state, run);
      const message = detail.message && detail.message.length > MAX_MESSAGE ? `${detail.message.slice(0, MAX_MESSAGE)}...` : detail.message;
      const event: RunEventPayload = { runId, kind, status: run.status, round: run.round, step, totalSteps, progress, ...detail, message, at: new Date() };
      await this.state.coordination.broadcast(JSON.stringify(event));
    } catch (e) {
      this.log(`run ${runId}: event ${kind} not published: ${(e as Error).message}`);
    }
  }
}

/** An event broadcast by any replica, to this server's subscribers. */
export function deliver(message: string): void {
  const event = JSON.parse(message) as RunEventPayload;
  pubSub.publish(RUN_EVENTS, { ...event, at: new Date(event.at) });
}
