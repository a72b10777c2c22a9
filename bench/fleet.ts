// Volunteer worker processes for the trust bench and the red-team test (bench/fleet-worker.ts),
// each from its own loopback address, honest or lying.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { ServerProcess, WorkerProcess, asWorkerProcess, spawnLogged } from '../node/local-platform';

// Built next to this file, or under dist/ when this file runs from source (the tests).
const SCRIPT = existsSync(join(__dirname, 'fleet-worker.js')) ? join(__dirname, 'fleet-worker.js') : join(__dirname, '..', 'dist', 'bench', 'fleet-worker.js');

/** How a volunteer behaves (bench/fleet-worker.ts says what each does). */
export interface Conduct {
  /** none, cycle (from the `offset`th mode), collude or one mode. */
  readonly lie?: string;
  readonly offset?: number;
  /** A kernel class to declare instead of its own. */
  readonly kernelClass?: string;
  readonly honestFirst?: number;
  readonly checkOnly?: boolean;
  readonly prefail?: number;
  readonly fakeProgress?: boolean;
}

/** A volunteer process at `address` (any of 127.0.0.0/8 on Linux), honest unless `conduct` says otherwise. */
export function startVolunteer(server: ServerProcess, address: string, name: string, conduct: Conduct = {}): WorkerProcess {
  const log: string[] = [];
  const args = [
    '--server',
    server.url,
    '--address',
    address,
    '--name',
    name,
    '--lie',
    conduct.lie ?? 'none',
    '--offset',
    String(conduct.offset ?? 0),
    '--honest-first',
    String(conduct.honestFirst ?? 0),
    '--prefail',
    String(conduct.prefail ?? 0),
    ...(conduct.kernelClass ? ['--class', conduct.kernelClass] : []),
    ...(conduct.checkOnly ? ['--check-only'] : []),
    ...(conduct.fakeProgress ? ['--fake-progress'] : []),
  ];
  return asWorkerProcess(spawnLogged(args, {}, log, SCRIPT), log);
}

/** The lies a volunteer told, from its log. */
export const liesOf = (w: WorkerProcess): { mode: string; shard: string; round: number; index: number }[] =>
  w.log.flatMap((l) => {
    const m = /^lie (\w+) shard (\S+) round (\d+) index (\d+)$/.exec(l);
    return m ? [{ mode: m[1], shard: m[2], round: Number(m[3]), index: Number(m[4]) }] : [];
  });

/** The leases a fake-progress volunteer held, from its log: seconds held and why they ended. */
export const heldOf = (w: WorkerProcess): { shard: string; seconds: number; why: string }[] =>
  w.log.flatMap((l) => {
    const m = /^held shard (\S+) for ([\d.]+) s: (.*)$/.exec(l);
    return m ? [{ shard: m[1], seconds: Number(m[2]), why: m[3] }] : [];
  });
