// Faults that pass: the blob store killed mid-round and started again, its disk full during an
// upload. Real processes (`partune storage serve`, `partune serve`, a worker); each run finishes with
// the delta an uninterrupted single process makes, bit for bit, and the server never exits.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RUN_QUERY, StorageProcess, gql, ok, startStorage, waitFor } from '../node/local-platform';
import { HonestRun, startHonestRun } from './support/honest-run';

jest.setTimeout(600_000);

const SECRET = 'faults-test-secret';
// Leases long enough that a worker retrying its transfers through an outage is not taken for stalled.
const PATIENT = { PARTUNE_SECRET: SECRET, PARTUNE_LEASE_SECONDS: '8', PARTUNE_STALL_SECONDS: '30' };

async function stepOf(h: HonestRun): Promise<number> {
  return (await ok(h.server.url, h.server.admin, RUN_QUERY, { id: h.runId })).run.step;
}

describe('the blob store goes away mid-round', () => {
  let storage: StorageProcess;
  let h: HonestRun;
  afterAll(async () => {
    await h?.close();
    await storage?.stop();
  });

  it('killed for 4 s and started again: the run pauses and resumes, its delta bit-identical, the server never exits', async () => {
    storage = await startStorage(SECRET);
    h = await startHonestRun({ ...PATIENT, PARTUNE_BLOB_URL: storage.url });
    await waitFor('the run to make progress', async () => (await stepOf(h)) >= 2, 120_000, 100);
    await storage.stop('SIGKILL');
    const downAt = Date.now();
    const waiting: string[] = [];
    while (Date.now() - downAt < 4000) {
      const r = await gql(h.server.url, h.server.admin, RUN_QUERY, { id: h.runId });
      const why = (r.data as { run?: { waiting?: string } } | undefined)?.run?.waiting;
      if (why) waiting.push(why);
      await new Promise((res) => setTimeout(res, 200));
    }
    await storage.start();
    const r = await h.finish();
    expect([r.status, r.identical]).toEqual(['SUCCEEDED', true]);
    expect(h.server.proc.exitCode).toBeNull();
    expect(h.server.log.filter((l) => /internal error/.test(l))).toEqual([]);
    const met = [...h.server.log, ...h.worker.log].filter((l) => /unreachable|unavailable|retrying|fetch failed|ECONNREFUSED/i.test(l));
    process.stdout.write(
      `blob store down 4 s: run ${r.status}, identical ${r.identical}; said while down: ${[...new Set(waiting)].join(' | ') || '(nothing)'}; ` +
        `${met.length} log lines of the outage, e.g. ${met.slice(0, 3).join(' / ')}\n`,
    );
    expect(met.length).toBeGreaterThan(0); // the outage was met, not slept through
  });
});

describe('the blob store runs out of disk during an upload', () => {
  const mount = mkdtempSync(join(tmpdir(), 'partune-small-disk-'));
  let mounted = false;
  let storage: StorageProcess;
  let h: HonestRun;
  beforeAll(() => {
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=48m', 'tmpfs', mount], { stdio: 'pipe' });
      mounted = true;
    } catch (e) {
      process.stdout.write(`SKIPPED the disk-full test: a small filesystem cannot be mounted here (${(e as Error).message.split('\n')[0]})\n`);
    }
  });
  afterAll(async () => {
    await h?.close();
    await storage?.stop();
    if (mounted) execFileSync('umount', [mount]);
    rmSync(mount, { recursive: true, force: true });
  });

  it('ENOSPC on the store for 5 s: uploads answer 507 and are retried, nothing crashes, the delta is bit-identical', async () => {
    if (!mounted) return;
    storage = await startStorage(SECRET, join(mount, 'store'));
    h = await startHonestRun({ ...PATIENT, PARTUNE_BLOB_URL: storage.url });
    await waitFor('the run to make progress', async () => (await stepOf(h)) >= 2, 120_000, 100);
    // Fill what is left of the filesystem, hold it full for 5 s, then free it.
    const filler = join(mount, 'filler');
    mkdirSync(filler);
    for (let i = 0; ; i++) {
      try {
        writeFileSync(join(filler, String(i)), Buffer.alloc(2 ** 20));
      } catch {
        break;
      }
    }
    for (let i = 0; ; i++) {
      try {
        writeFileSync(join(filler, `small-${i}`), Buffer.alloc(4096));
      } catch {
        break;
      }
    }
    await new Promise((res) => setTimeout(res, 5000));
    rmSync(filler, { recursive: true, force: true });
    const r = await h.finish();
    expect([r.status, r.identical]).toEqual(['SUCCEEDED', true]);
    expect([h.server.proc.exitCode, storage.log.some((l) => /Error|ENOSPC.*unhandled/.test(l) && /uncaught|unhandled/i.test(l))]).toEqual([null, false]);
    const met = [...h.server.log, ...h.worker.log].filter((l) => /507|ENOSPC|full/i.test(l));
    process.stdout.write(`disk full 5 s: run ${r.status}, identical ${r.identical}; ${met.length} log lines of it, e.g. ${met.slice(0, 3).join(' / ')}\n`);
    expect(met.length).toBeGreaterThan(0);
  });
});
