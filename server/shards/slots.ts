// Shard upload slots: a worker PUTs its update to the slot its lease names, the server checks it
// and keeps a copy where no worker can write (keys.update). So a slot is garbage once checked, and
// garbage too once its lease ended: the check deletes it at once, and the sweep (every minute, and
// at start, for what a crash left) deletes every slot whose lease no longer holds, run ended or not.
import { SLOTS, slotOf } from '../../storage';
import type { Platform } from '../platform';

export class Slots {
  constructor(private readonly p: Platform) {}

  /** After its update was checked (accepted or not): the copy, if any, is elsewhere. */
  async checked(key: string): Promise<void> {
    await this.p.blobs.remove(key).catch((e: Error) => this.p.log(`upload slot ${key} not deleted (the sweep will): ${e.message}`));
  }

  /** Deletes the slots no lease holds; returns how many. */
  async sweep(): Promise<number> {
    let removed = 0;
    for (const key of await this.p.blobs.list(SLOTS)) {
      const slot = slotOf(key);
      const shard = slot && (await this.p.state.shards.get(slot.shardId));
      if (shard && shard.runId === slot.runId && shard.status === 'LEASED' && shard.attempts === slot.attempt) continue;
      await this.p.blobs.remove(key);
      removed++;
    }
    if (removed) this.p.log(`${removed} upload slot(s) no lease holds were deleted`);
    return removed;
  }
}
