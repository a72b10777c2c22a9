// Coordination for a store one process owns (SQLite): it drives every run, its messages go
// straight to its own handlers, its turns are promise chains and its counters live in memory.
// Its turns serve the PostgreSQL coordination too.
import type { AdmissionCounter, Coordination, CoordinationHandlers } from './store';

/** Calls with one key run one after another, in the order they came; others in parallel. */
export class KeyedTurns {
  private readonly chains = new Map<string, Promise<unknown>>();

  run<T>(key: string, work: () => Promise<T>): Promise<T> {
    const next = (this.chains.get(key) ?? Promise.resolve()).catch(() => undefined).then(work);
    this.chains.set(key, next);
    const forget = (): void => void (this.chains.get(key) === next && this.chains.delete(key));
    next.then(forget, forget);
    return next;
  }
}

export class InProcessCoordination implements Coordination {
  private readonly runs = new Set<string>();
  private handlers: CoordinationHandlers | undefined;
  private readonly turns = new KeyedTurns();

  drives(runId: string): boolean {
    return this.runs.has(runId);
  }

  driven(): string[] {
    return [...this.runs];
  }

  async start(on: CoordinationHandlers): Promise<void> {
    this.handlers = on;
  }

  async drive(runId: string): Promise<boolean> {
    this.runs.add(runId);
    return true;
  }

  async letGo(runId: string): Promise<void> {
    this.runs.delete(runId);
  }

  async broadcast(message: string): Promise<void> {
    this.handlers?.message(message);
  }

  async nudge(runId: string): Promise<void> {
    this.handlers?.nudge(runId);
  }

  exclusive<T>(key: string, work: () => Promise<T>): Promise<T> {
    return this.turns.run(key, work);
  }
}

/** A fixed-window counter per key, in memory. */
export class InProcessAdmissions implements AdmissionCounter {
  private window = 0;
  private readonly counts = new Map<string, number>();

  async take(key: string, perMinute: number, now: Date): Promise<boolean> {
    const window = Math.floor(now.getTime() / 60_000);
    if (window !== this.window) {
      this.window = window;
      this.counts.clear();
    }
    const n = (this.counts.get(key) ?? 0) + 1;
    this.counts.set(key, n);
    return n <= perMinute;
  }
}
