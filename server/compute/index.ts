// The main thread's handle on the compute thread: typed calls that resolve with its answers.
import { Worker } from 'node:worker_threads';
import { join } from 'node:path';
import { S3Config } from '../../storage';
import type { Jobs } from './jobs';

type Args<K extends keyof Jobs> = Jobs[K] extends (a: infer A, ...rest: never[]) => unknown ? A : never;
type Result<K extends keyof Jobs> = Jobs[K] extends (...a: never[]) => Promise<infer R> ? R : never;

export class Compute {
  private readonly worker: Worker;
  private next = 0;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; progress?: (m: string) => void }>();

  constructor(s3: S3Config) {
    this.worker = new Worker(join(__dirname, 'thread.js'), { workerData: { s3 } });
    this.worker.on('message', (m: { id: number; ok: boolean; result?: unknown; error?: string; progress?: string }) => {
      const p = this.pending.get(m.id);
      if (m.progress !== undefined) return p?.progress?.(m.progress);
      this.pending.delete(m.id);
      if (m.ok) p?.resolve(m.result);
      else p?.reject(new Error(m.error));
    });
    this.worker.on('error', (e) => this.failAll(e));
    this.worker.on('exit', (code) => this.failAll(new Error(`compute thread exited (${code})`)));
  }

  private failAll(e: Error): void {
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
  }

  call<K extends 'importModel' | 'prepare' | 'evaluate' | 'finalize' | 'merge' | 'angles' | 'soup'>(op: K, args: Args<K>, progress?: (m: string) => void): Promise<Result<K>> {
    const id = this.next++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, progress });
      this.worker.postMessage({ id, op, args });
    });
  }

  close(): Promise<number> {
    return this.worker.terminate();
  }
}
