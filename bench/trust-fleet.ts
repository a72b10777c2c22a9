// Verification on a live server, measured for `bench:trust`: a fleet of trusted Node workers and
// volunteer processes (bench/fleet-worker.ts), honest or with liars, runs the same fine-tuning
// under each verification mode; what each mode costs (extra shard-steps, wall time, the
// coordinator's CPU) and what it lets through (lies accepted, top-1, the delta against an honest
// run's).
import { readFileSync } from 'node:fs';
import { parseDelta } from '../engine';
import { ServerProcess, WorkerProcess, ok, waitForRun } from '../node/local-platform';
import { liesOf, startVolunteer } from './fleet';

export interface FleetRun {
  readonly verification: 'NONE' | 'SPOT_CHECK' | 'QUORUM';
  readonly liars: number;
  /** How the liars lie (bench/fleet-worker.ts); two liars with one deterministic mode collude. */
  readonly lie: string;
  readonly honestVolunteers: number;
  readonly hyper: Record<string, unknown>;
  /** How long to wait for the run to end. */
  readonly waitsMs?: number;
}

export interface FleetOutcome {
  readonly status: string;
  readonly top1: number;
  readonly seconds: number;
  readonly serverCpuSeconds: number;
  readonly shards: number;
  /** Shard-steps computed (every finished replica) over those the run needs, minus one. */
  readonly overhead: number;
  /** The same over the second half of the rounds (trust built). */
  readonly overheadSecondHalf: number;
  readonly liesTold: number;
  readonly liesAccepted: number;
  readonly outvoted: number;
  readonly rejectedByBounds: number;
  readonly delta: Map<string, Buffer>;
}

const cpuSeconds = (pid: number): number => {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime + stime, in clock ticks of 1/100 s
};

type Row = {
  round: number;
  index: number;
  fromStep: number;
  toStep: number;
  status: string;
  verdict: string | null;
  workerId: string | null;
  rejections: string[];
};

/** Starts the run's volunteers, runs it to the end, stops them. */
export async function fleetRun(server: ServerProcess, f: FleetRun, firstAddress: number): Promise<FleetOutcome> {
  const volunteers: WorkerProcess[] = [];
  for (let i = 0; i < f.honestVolunteers + f.liars; i++) {
    const liar = i >= f.honestVolunteers;
    // Each volunteer in a /24 of its own: one independent group each.
    volunteers.push(startVolunteer(server, `127.0.${firstAddress + i}.2`, `${liar ? 'liar' : 'honest'}-${firstAddress + i}`, { lie: liar ? f.lie : 'none' }));
  }
  const cpu0 = cpuSeconds(server.proc.pid!);
  const t0 = performance.now();
  const { startRun } = await ok(server.url, server.admin, 'mutation($i: StartRunInput!) { startRun(input: $i) { id } }', {
    i: { model: 'micro', dataset: 'digits', strategy: 'attn-only', hyperParameters: { ...f.hyper, verification: f.verification, admitVolunteers: true } },
  });
  const run = await waitForRun(server, startRun.id, f.waitsMs ?? 1_200_000).catch(async (e: Error) => {
    await Promise.all(volunteers.map((v) => v.kill()));
    throw e;
  });
  const seconds = (performance.now() - t0) / 1000;
  const serverCpuSeconds = cpuSeconds(server.proc.pid!) - cpu0;
  await Promise.all(volunteers.map((v) => v.kill()));
  if (run.status !== 'SUCCEEDED') throw new Error(`run ${startRun.id} ${run.status}: ${run.error}`);
  const { run: detail } = await ok(
    server.url,
    server.admin,
    'query($id: ID!) { run(id: $id) { shards { round index fromStep toStep status verdict workerId rejections } } }',
    { id: startRun.id },
  );
  const { workers } = await ok(server.url, server.admin, '{ workers(first: 100) { items { id name } } }');
  const liarIds = new Set(workers.items.filter((w: { name: string }) => w.name.startsWith('liar-')).map((w: { id: string }) => w.id));
  const rows: Row[] = detail.shards;
  const rounds = Math.max(...rows.map((r) => r.round)) + 1;
  const overhead = (inRounds: (round: number) => boolean): number => {
    const mine = rows.filter((r) => inRounds(r.round));
    const needed = new Map(mine.map((r) => [`${r.round}.${r.index}`, r.toStep - r.fromStep]));
    const computed = mine.filter((r) => r.status === 'DONE').reduce((n, r) => n + r.toStep - r.fromStep, 0);
    return computed / [...needed.values()].reduce((a, b) => a + b, 0) - 1;
  };
  const reasons = rows.flatMap((r) => r.rejections).filter((reason) => [...liarIds].some((id) => reason.includes(`worker ${id}`)));
  const delta = new Uint8Array(await (await fetch(run.delta.downloadUrl)).arrayBuffer());
  return {
    status: run.status,
    top1: run.accuracy,
    seconds,
    serverCpuSeconds,
    shards: new Set(rows.map((r) => `${r.round}.${r.index}`)).size,
    overhead: overhead(() => true),
    overheadSecondHalf: overhead((round) => round >= rounds / 2),
    liesTold: volunteers.flatMap(liesOf).length,
    liesAccepted: rows.filter((r) => (r.verdict === 'ACCEPTED' || r.verdict === 'AGREED') && liarIds.has(r.workerId)).length,
    outvoted: reasons.filter((r) => r.includes('outvoted')).length,
    rejectedByBounds: reasons.filter((r) => r.includes('update rejected')).length,
    delta: deltaTensors(delta),
  };
}

/** A delta's tensors as raw bytes, to compare bit for bit. */
export const deltaTensors = (bytes: Uint8Array): Map<string, Buffer> =>
  new Map([...parseDelta(bytes).tensors].map(([k, t]) => [k, Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength)]));

export const sameDelta = (a: Map<string, Buffer>, b: Map<string, Buffer>): boolean => a.size === b.size && [...a].every(([k, v]) => b.get(k)?.equals(v));
