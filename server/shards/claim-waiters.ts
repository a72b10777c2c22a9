// Claims that wait for work: a worker with nothing to do asks once and is answered as soon as a
// shard becomes claimable (on any replica: the signal is broadcast), or when its wait ends,
// instead of asking every second. A signal for n shards wakes about n of the longest waiting, not
// all of them, so a new round of a thousand-worker fleet costs tens of claims, not a thousand.
/** The longest a claim waits for work before it answers null (within any proxy's read timeout). */
export const MAX_CLAIM_WAIT_SECONDS = 25;

export interface Ticket {
  /** Resolves when a signal picks this ticket or its time is up. */
  readonly woken: Promise<void>;
  cancel(): void;
}

/** Wake this many more than the shards signalled: some woken workers want a shard that does not fit them. */
const SLACK = 1.5;

export class ClaimWaiters {
  private readonly queue = new Set<() => void>();
  private closed = false;

  get stopped(): boolean {
    return this.closed;
  }

  /** Taken before looking for a shard, so that a signal while looking is not missed; `gone` ends it too. */
  ticket(ms: number, gone?: AbortSignal): Ticket {
    let wake!: () => void;
    const woken = new Promise<void>((resolve) => {
      const timer = setTimeout(() => wake(), ms);
      wake = () => {
        clearTimeout(timer);
        gone?.removeEventListener('abort', wake);
        this.queue.delete(wake);
        resolve();
      };
    });
    gone?.addEventListener('abort', wake, { once: true });
    if (this.closed) wake();
    else this.queue.add(wake);
    return { woken, cancel: wake };
  }

  /** `shards` became claimable: wakes the longest waiting claims, a few more than that. */
  wake(shards: number): void {
    let n = Math.ceil(shards * SLACK) + 1;
    for (const w of [...this.queue]) {
      if (n-- <= 0) break;
      w();
    }
  }

  /** The server stops: every waiting claim answers now, and none waits again. */
  close(): void {
    this.closed = true;
    for (const w of [...this.queue]) w();
  }
}
