// The main thread's handle on a compute thread: typed calls that resolve with its answers. A
// thread that dies fails the jobs it held with a clear error and is replaced, so later calls work.
// Two lanes, each a thread: `runs` (checkpoints, first states, evaluations, deltas, angles, soups:
// seconds each, on the wasm backend) and `shards` (an update's checks, a round's aggregation:
// milliseconds each, many a round), so a long evaluation never holds a worker's completion up.
import { Worker } from 'node:worker_threads';
import { join } from 'node:path';
import type { BlobStoreSpec } from '../blob-store-spec';
import type { Jobs } from './jobs';
import type { ShardJobs } from './shard-jobs';

export interface Lanes {
  readonly runs: Jobs;
  readonly shards: ShardJobs;
}
export type Lane = keyof Lanes;

type Op<J> = { [K in keyof J]: J[K] extends (a: never, ...rest: never[]) => Promise<unknown> ? K : never }[keyof J];
type Args<J, K extends keyof J> = J[K] extends (a: infer A, ...rest: never[]) => unknown ? A : never;
type Result<J, K extends keyof J> = J[K] extends (...a: never[]) => Promise<infer R> ? R : never;

/**
 * A failed job, by whose fault: `input`, the job's input (a corrupt checkpoint); `internal`, the
 * server's; `shutdown`, none (the server stopped; the work is done again at the next start);
 * `transient`, none (the blob store was unreachable or its disk full: the job may be tried again).
 */
export type Fault = 'input' | 'internal' | 'shutdown' | 'transient';

export class ComputeError extends Error {
  constructor(message: string, readonly fault: Fault) {
    super(message);
  }

  /** The storage failure passes: the scheduler's transient check sees it as the store's own error. */
  get passing(): boolean {
    return this.fault === 'transient';
  }
}

interface Pending { resolve: (v: unknown) => void; reject: (e: Error) => void; progress?: (m: string) => void }
type Answer =
  | { id: number; progress: string }
  | { id: number; ok: true; result: unknown }
  | { id: number; ok: false; error: string; fault: 'input' | 'internal' | 'transient' };

export class Compute<L extends Lane = 'runs'> {
  private worker!: Worker;
  private next = 0;
  private pending = new Map<number, Pending>();
  private closing = false;
  /** Threads started so far (1 + restarts). */
  starts = 0;

  constructor(private readonly lane: L, private readonly blobs: BlobStoreSpec, private readonly log: (line: string) => void = () => undefined) {
    this.start();
  }

  /** Jobs sent to the running thread and not answered yet. */
  get jobsInFlight(): number {
    return this.pending.size;
  }

  /** The running thread (a health check may watch it; a test may kill it). */
  get thread(): Worker {
    return this.worker;
  }

  private start(): void {
    const worker = new Worker(join(__dirname, 'thread.js'), { workerData: { lane: this.lane, blobs: this.blobs } });
    this.worker = worker;
    this.starts++;
    const held = new Map<number, Pending>();
    this.pending = held;
    worker.on('message', (m: Answer) => {
      const p = held.get(m.id);
      if ('progress' in m) return p?.progress?.(m.progress);
      held.delete(m.id);
      if (m.ok) p?.resolve(m.result);
      else p?.reject(new ComputeError(m.error, m.fault));
    });
    worker.on('error', (e) => this.log(`compute thread (${this.lane}) error: ${e.stack ?? e.message}`));
    worker.on('exit', (code) => {
      const lost = [...held.values()];
      held.clear();
      if (this.closing) {
        for (const p of lost) p.reject(new ComputeError('the server stopped during this job', 'shutdown'));
        return;
      }
      for (const p of lost) p.reject(new ComputeError(`the compute thread stopped (exit code ${code}) during this job`, 'internal'));
      this.log(`compute thread (${this.lane}) exited (code ${code}) with ${lost.length} job(s); starting a new one`);
      this.start();
    });
  }

  call<K extends Op<Lanes[L]>>(op: K, args: Args<Lanes[L], K>, progress?: (m: string) => void): Promise<Result<Lanes[L], K>> {
    if (this.closing) return Promise.reject(new ComputeError('the server is shutting down', 'shutdown'));
    const id = this.next++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, progress });
      this.worker.postMessage({ id, op, args });
    });
  }

  async close(): Promise<void> {
    this.closing = true;
    await this.worker.terminate();
  }
}
