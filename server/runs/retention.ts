// What a run keeps once it ended: its delta (under deltas/), its records and metrics (in the state
// store), and its last state; every other round state, window pack and accepted update under
// `runs/<id>/` served only its rounds (resume, verification, rollback), which are over. Pruned when
// the run ends, and again by the sweep (at start and every few minutes) for what a crash or a write
// landing after the end left. PARTUNE_RETENTION=all keeps everything.
import { keys } from '../../storage';
import type { Platform } from '../platform';
import type { RunRecord } from '../state/records';

const ENDED = new Set(['SUCCEEDED', 'FAILED', 'CANCELLED']);

export interface Pruned {
  readonly objects: number;
  readonly bytes: number;
}

export class Retention {
  constructor(private readonly p: Platform) {}

  /** Deletes what the ended run no longer needs (nothing while it runs, or with PARTUNE_RETENTION=all). */
  async prune(run: RunRecord, known?: readonly string[]): Promise<Pruned> {
    if (this.p.config.retention === 'all' || !ENDED.has(run.status)) return { objects: 0, bytes: 0 };
    const keep = run.state?.key;
    let objects = 0;
    let bytes = 0;
    for (const key of known ?? (await this.p.blobs.list(keys.runFolder(run.id)))) {
      if (key === keep) continue;
      bytes += (await this.p.blobs.stat(key))?.bytes ?? 0;
      await this.p.blobs.remove(key);
      objects++;
    }
    return { objects, bytes };
  }

  /** After the run ended: pruned, and said; a failure is logged (the sweep tries again). */
  async ended(runId: string): Promise<void> {
    try {
      const run = await this.p.state.runs.get(runId);
      const pruned = run ? await this.prune(run) : { objects: 0, bytes: 0 };
      if (pruned.objects) this.p.log(`run ${runId} ended: ${describe(pruned)} its rounds needed deleted (its delta and last state kept)`);
    } catch (e) {
      this.p.log(`run ${runId}: what its rounds needed is not deleted yet (the sweep tries again): ${(e as Error).message}`);
    }
  }

  /** Every ended run's folder, pruned again. */
  async sweep(): Promise<Pruned> {
    if (this.p.config.retention === 'all') return { objects: 0, bytes: 0 };
    const byRun = new Map<string, string[]>();
    for (const key of await this.p.blobs.list('runs')) {
      const runId = key.split('/')[1];
      byRun.set(runId, [...(byRun.get(runId) ?? []), key]);
    }
    let objects = 0;
    let bytes = 0;
    for (const [runId, found] of byRun) {
      const run = await this.p.state.runs.get(runId);
      if (!run || found.length <= 1) continue;
      const pruned = await this.prune(run, found);
      objects += pruned.objects;
      bytes += pruned.bytes;
    }
    if (objects) this.p.log(`retention sweep: ${describe({ objects, bytes })} ended runs no longer needed deleted`);
    return { objects, bytes };
  }
}

const describe = (p: Pruned): string => `${p.objects} object(s) (${(p.bytes / 2 ** 20).toFixed(1)} MiB)`;
