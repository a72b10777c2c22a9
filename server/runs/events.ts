// A run's events as subscribers see them: its current status and progress with what happened;
// and the signal that shards became claimable, for the claims waiting for work. Both go out
// through the store's coordination, so every server replica hears each one, whichever replica it
// happened on.
import { RUN_EVENTS, RunEventKind, RunEventPayload, pubSub } from '../events';
import { RunRecord, statusOf } from '../state/records';
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
/** A run's heartbeat progress goes out at most this often: a fleet's heartbeats would otherwise each cost an event. */
const PROGRESS_EVERY_MS = 1000;

export class RunEvents {
  private readonly lastProgress = new Map<string, number>();

  constructor(private readonly state: StateStore, private readonly log: (line: string) => void) {}

  /** A heartbeat's progress (its loss), sent unless the run's last one went out under PROGRESS_EVERY_MS ago. */
  async progress(runId: string, trainLoss: number | undefined): Promise<void> {
    const now = Date.now();
    if (now - (this.lastProgress.get(runId) ?? 0) < PROGRESS_EVERY_MS) return;
    this.lastProgress.set(runId, now);
    if (this.lastProgress.size > 1000) this.lastProgress.clear();
    await this.emit(runId, 'SHARD', { trainLoss });
  }

  /**
   * Publishes the run's state now (`current`: its record, when the caller has just read it); an
   * event that cannot be built or sent is logged, never thrown at the caller.
   */
  async emit(runId: string, kind: RunEventKind, detail: EventDetail = {}, current?: RunRecord): Promise<void> {
    try {
      const run = current ?? (await this.state.runs.get(runId));
      if (!run) return;
      const { step, totalSteps, progress } = await progressOf(this.state, run);
      const message = detail.message && detail.message.length > MAX_MESSAGE ? `${detail.message.slice(0, MAX_MESSAGE)}...` : detail.message;
      const event: RunEventPayload = {
        runId, kind, status: statusOf(run), round: run.round, step, totalSteps, progress, ...detail, message, public: run.public, at: new Date(),
      };
      await this.state.coordination.broadcast(JSON.stringify({ event } satisfies Broadcast));
    } catch (e) {
      this.log(`run ${runId}: event ${kind} not published: ${(e as Error).message}`);
    }
  }

  /** `shards` shards became claimable; a lost signal only makes the waiting claims answer at the end of their wait. */
  async shardsAvailable(shards: number): Promise<void> {
    if (shards <= 0) return;
    await this.state.coordination.broadcast(JSON.stringify({ shardsAvailable: shards } satisfies Broadcast)).catch((e: Error) => {
      this.log(`the signal for ${shards} claimable shard(s) was not sent: ${e.message}`);
    });
  }
}

type Broadcast = { readonly event: RunEventPayload } | { readonly shardsAvailable: number };

/** A broadcast from any replica: an event to this server's subscribers, or claimable shards to its waiting claims. */
export function deliver(message: string, shardsAvailable: (shards: number) => void): void {
  const m = JSON.parse(message) as Broadcast;
  if ('shardsAvailable' in m) return shardsAvailable(m.shardsAvailable);
  pubSub.publish(RUN_EVENTS, { ...m.event, at: new Date(m.event.at) });
}
