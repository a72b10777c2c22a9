// Workers: Node processes (admin-started, worker token) and browser tabs (volunteer tokens).
import { randomUUID } from 'node:crypto';
import { badInput, notFound } from '../errors';
import type { Platform } from '../platform';
import { Page, WorkerRecord } from '../state/records';

/** A worker seen within this long counts as online. */
export const ONLINE_MS = 30_000;

export class Workers {
  constructor(private readonly p: Platform) {}

  async register(name: string, kind: string, backend: string): Promise<WorkerRecord> {
    if (kind !== 'node' && kind !== 'browser') throw badInput("kind must be 'node' or 'browser'");
    const worker: WorkerRecord = {
      id: randomUUID(), name: name.slice(0, 80), kind, backend: backend.slice(0, 80), lastSeen: new Date(), shardsDone: 0, samples: 0,
      imagesPerSecond: null, currentShard: null, createdAt: new Date(),
    };
    await this.p.state.workers.insert(worker);
    this.p.log(`worker ${worker.name} (${kind}, ${worker.backend}) joined`);
    return worker;
  }

  /** The worker, marked seen now. */
  async seen(id: string): Promise<WorkerRecord> {
    const worker = await this.p.state.workers.touch(id, new Date());
    if (!worker) throw notFound(`worker ${id} is not registered (register again)`);
    return worker;
  }

  list(onlineOnly: boolean, first: number, offset: number): Promise<Page<WorkerRecord>> {
    return this.p.state.workers.list(onlineOnly ? new Date(Date.now() - ONLINE_MS) : undefined, first, offset);
  }

  onlineCount(): Promise<number> {
    return this.p.state.workers.countSeenSince(new Date(Date.now() - ONLINE_MS));
  }

  isOnline(w: WorkerRecord): boolean {
    return w.lastSeen.getTime() > Date.now() - ONLINE_MS;
  }
}
