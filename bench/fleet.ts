// Volunteer worker processes for the trust bench and the red-team test (bench/fleet-worker.ts),
// each from its own loopback address, honest or lying.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { ServerProcess, WorkerProcess, asWorkerProcess, spawnLogged } from '../node/local-platform';

// Built next to this file, or under dist/ when this file runs from source (the tests).
const SCRIPT = existsSync(join(__dirname, 'fleet-worker.js')) ? join(__dirname, 'fleet-worker.js') : join(__dirname, '..', 'dist', 'bench', 'fleet-worker.js');

/** A volunteer process at `address` (any of 127.0.0.0/8 on Linux); `lie`: none, cycle (from the `offset`th mode), collude or one mode. */
export function startVolunteer(server: ServerProcess, address: string, name: string, lie = 'none', offset = 0): WorkerProcess {
  const log: string[] = [];
  return asWorkerProcess(spawnLogged(['--server', server.url, '--address', address, '--name', name, '--lie', lie, '--offset', String(offset)], {}, log, SCRIPT), log);
}

/** The lies a volunteer told, from its log. */
export const liesOf = (w: WorkerProcess): { mode: string; shard: string; round: number; index: number }[] =>
  w.log.flatMap((l) => {
    const m = /^lie (\w+) shard (\S+) round (\d+) index (\d+)$/.exec(l);
    return m ? [{ mode: m[1], shard: m[2], round: Number(m[3]), index: Number(m[4]) }] : [];
  });
