// Models and datasets never change once registered (neither their rows nor their names), so every
// replica may keep the ones it has read: a claim looks both up, and a round opens tens of claims.
import type { NamedRepository } from './store';

const KEPT = 256;

export function keptOnceRead<T>(repo: NamedRepository<T>): NamedRepository<T> {
  const kept = new Map<string, T>();
  return {
    insert: (record) => repo.insert(record),
    list: (search, first, offset) => repo.list(search, first, offset),
    async byIdOrName(idOrName) {
      const known = kept.get(idOrName);
      if (known) return known;
      const record = await repo.byIdOrName(idOrName);
      if (record) {
        if (kept.size >= KEPT) kept.delete(kept.keys().next().value!);
        kept.set(idOrName, record);
      }
      return record;
    },
  };
}
