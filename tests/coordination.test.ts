// How server replicas share the work: each run driven by one replica at a time, messages reaching
// every replica in order, turns that never overlap across replicas, one volunteer limit for all;
// and the client address the limits count, read through a trusted proxy only.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { clientAddress } from '../server/client-address';
import { formatError } from '../server/errors';
import { isTransient } from '../storage';
import { openPostgresState } from '../server/state/postgres';
import { HOLDER_LOCKS } from '../server/state/postgres/run-locks';
import { openSqliteState } from '../server/state/sqlite';
import { CoordinationHandlers, LostRunLock, StateStore } from '../server/state/store';
import { postgresForThisFile, sqlOn } from './support/postgres';
import { describeUnless } from './support/skip';

const postgres = postgresForThisFile();

interface Heard { messages: string[]; nudges: string[]; lost: string[] }

async function started(state: StateStore): Promise<Heard> {
  const heard: Heard = { messages: [], nudges: [], lost: [] };
  const on: CoordinationHandlers = { message: (m) => heard.messages.push(m), nudge: (r) => heard.nudges.push(r), lost: (w) => heard.lost.push(w) };
  await state.coordination.start(on);
  return heard;
}

const until = async (what: string, probe: () => boolean, ms = 5000): Promise<void> => {
  for (const end = Date.now() + ms; !probe(); await new Promise((r) => setTimeout(r, 10))) if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
};

/** Runs two 100 ms works per key through `a` and `b` at once; returns the most that overlapped. */
async function overlap(a: StateStore, b: StateStore, key: string): Promise<number> {
  let inside = 0;
  let most = 0;
  const work = async (): Promise<void> => {
    most = Math.max(most, ++inside);
    await new Promise((r) => setTimeout(r, 100));
    inside--;
  };
  await Promise.all([a.coordination.exclusive(key, work), b.coordination.exclusive(key, work), a.coordination.exclusive(key, work)]);
  return most;
}

describe('one process on SQLite', () => {
  it('drives every run, hears its own messages, takes turns per key, counts admissions per minute', async () => {
    const state = openSqliteState(mkdtempSync(join(tmpdir(), 'partune-coord-')));
    const heard = await started(state);
    expect(await state.coordination.drive('r1')).toBe(true);
    expect(state.coordination.driven()).toEqual(['r1']);
    await state.coordination.letGo('r1');
    expect(state.coordination.drives('r1')).toBe(false);
    await state.coordination.broadcast('one');
    await state.coordination.broadcast('two');
    expect(heard.messages).toEqual(['one', 'two']);
    expect(await overlap(state, state, 'k')).toBe(1);
    const now = new Date('2026-01-01T00:00:10Z');
    expect(await Promise.all([1, 2, 3, 4].map(() => state.admissions.take('10.0.0.1', 3, now)))).toEqual([true, true, true, false]);
    expect(await state.admissions.take('10.0.0.2', 3, now)).toBe(true);
    expect(await state.admissions.take('10.0.0.1', 3, new Date(now.getTime() + 60_000))).toBe(true);
    await state.close();
  });
});

describeUnless(postgres.skip)('replicas on one PostgreSQL', () => {
  let a: StateStore;
  let b: StateStore;
  let url: string;
  beforeEach(async () => {
    url = await postgres.database();
    [a, b] = await Promise.all([openPostgresState(url), openPostgresState(url)]);
  });
  afterEach(async () => {
    await Promise.all([a.close(), b.close()]);
  });

  it('a run is driven by one replica until it lets go or its connection ends; then another takes it', async () => {
    await Promise.all([started(a), started(b)]);
    expect(await Promise.all([a.coordination.drive('r1'), a.coordination.drive('r1')])).toEqual([true, true]);
    expect(await b.coordination.drive('r1')).toBe(false);
    expect(await b.coordination.drive('r2')).toBe(true);
    await a.coordination.letGo('r1'); // once, though taken twice: no lock is left behind
    expect(await b.coordination.drive('r1')).toBe(true);
    expect(await a.coordination.drive('r3')).toBe(true);
    await a.close(); // a replica that stops or dies gives its runs up
    expect(await b.coordination.drive('r3')).toBe(true);
    a = await openPostgresState(url);
  });

  it('a message reaches every replica in the order sent; a nudge reaches the run\'s driver', async () => {
    const [heardA, heardB] = await Promise.all([started(a), started(b)]);
    const sent = Array.from({ length: 20 }, (_, i) => `m${i}`);
    for (const m of sent) await a.coordination.broadcast(m);
    await b.coordination.nudge('r1');
    await until('every message', () => heardA.messages.length === 20 && heardB.messages.length === 20 && heardA.nudges.length === 1);
    expect(heardA.messages).toEqual(sent);
    expect(heardB.messages).toEqual(sent);
    expect(heardA.nudges).toEqual(['r1']);
    await expect(a.coordination.broadcast('x'.repeat(8000))).rejects.toThrow(/over NOTIFY's limit/);
  });

  it('turns with one key never overlap across replicas; other keys do not wait', async () => {
    await Promise.all([started(a), started(b)]);
    const t = Date.now();
    const [[same, sameMs], other] = await Promise.all([overlap(a, b, 'judge/r/0/0').then((n) => [n, Date.now() - t]), (async () => {
      await b.coordination.exclusive('judge/r/0/1', async () => undefined);
      return Date.now() - t;
    })()]);
    expect(same).toBe(1);
    expect(other).toBeLessThan(sameMs); // three 100 ms turns in a row on one key; the other key's turn did not queue behind them
  });

  it('a database restarting or starting up is a passing fault: the API answers UNAVAILABLE, not INTERNAL_SERVER_ERROR', () => {
    const answer = (e: Error): unknown => formatError({ message: e.message }, e, () => undefined, (x) => isTransient(x) || a.transient(x)).extensions?.code;
    const pgError = (code: string, message: string): Error => Object.assign(new Error(message), { code });
    expect(answer(pgError('57P03', 'the database system is starting up'))).toBe('UNAVAILABLE');
    expect(answer(pgError('57P01', 'terminating connection due to administrator command'))).toBe('UNAVAILABLE');
    expect(answer(new Error('Client has encountered a connection error and is not queryable'))).toBe('UNAVAILABLE');
    expect(answer(pgError('42P01', 'relation "runs" does not exist'))).toBe('INTERNAL_SERVER_ERROR');
  });

  it('volunteer admissions are counted once across replicas', async () => {
    const now = new Date('2026-01-01T00:00:10Z');
    expect([await a.admissions.take('10.0.0.1', 3, now), await b.admissions.take('10.0.0.1', 3, now), await a.admissions.take('10.0.0.1', 3, now)]).toEqual([true, true, true]);
    expect(await b.admissions.take('10.0.0.1', 3, now)).toBe(false);
    expect(await b.admissions.take('10.0.0.1', 3, new Date(now.getTime() + 60_000))).toBe(true);
  });

  it('a replica whose coordination connection ends stops driving at once, another takes its runs, and it reconnects', async () => {
    const heard = await started(a);
    let back = 0;
    heard.lost.length = 0;
    (a.coordination as unknown as { handlers: CoordinationHandlers }).handlers.back = () => void back++;
    await started(b);
    expect(await a.coordination.drive('r1')).toBe(true);
    expect(await b.coordination.drive('r1')).toBe(false);
    const holder = (a.coordination as unknown as { locks: { holder: string } }).locks.holder;
    await sqlOn(url, `SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND classid = ${HOLDER_LOCKS}
      AND objid = (hashtext('${holder}')::bigint & 4294967295)::oid`);
    await until('the loss', () => heard.lost.length > 0);
    expect(heard.lost[0]).toMatch(/stopped driving 1 run\(s\), reconnecting/);
    expect(a.coordination.drives('r1')).toBe(false);
    // Its lease has not run out, but its holder's connection is gone: no waiting for the lease.
    expect(await b.coordination.drive('r1')).toBe(true);
    await until('the reconnection', () => back === 1);
    expect(await a.coordination.drive('r1')).toBe(false);
    expect(await a.coordination.drive('r2')).toBe(true);
    await a.coordination.broadcast('after');
    await until('a message after the reconnection', () => heard.messages.includes('after'));
  });

  it('a lock that lapsed is taken over: its former holder\'s late writes are refused and the turns it held are freed', async () => {
    const [heardA] = await Promise.all([started(a), started(b)]);
    expect(await a.coordination.drive('r1')).toBe(true);
    await sqlOn(url, `INSERT INTO runs (id, kind, model_id, dataset_id, strategy, strategy_name, hyper, status, created_at, updated_at)
      VALUES ('r1', 'FINETUNE', 'm', 'd', '{}', 'attn-only', '{}', 'RUNNING', '2026-01-01', '2026-01-01')`);
    expect(await a.runs.setWaiting('r1', 'its holder may write')).toBe(true);
    let release: (() => void) | undefined;
    const turn = a.coordination.exclusive('judge/r1/0/0', () => new Promise<void>((r) => (release = r)));
    await until('a to hold a turn', () => release !== undefined);
    // As PostgreSQL sees a replica that stopped renewing (frozen) while inside a turn: its lease ran out.
    await sqlOn(url, "UPDATE run_locks SET expires_at = 0 WHERE run_id = 'r1'");
    expect(await b.coordination.drive('r1')).toBe(true);
    await expect(a.runs.setWaiting('r1', 'a late write')).rejects.toThrow(LostRunLock);
    await expect(a.runs.skipRounds('r1')).rejects.toThrow(/lock on it lapsed or another replica took it over/);
    expect(a.coordination.drives('r1')).toBe(false);
    expect(await b.runs.setWaiting('r1', 'the new holder may write')).toBe(true);
    const t = Date.now();
    await b.coordination.exclusive('judge/r1/0/0', async () => undefined);
    expect(Date.now() - t).toBeLessThan(5000); // the lapsed holder's turns do not hold the new holder (they would: forever)
    await until('a told', () => heardA.lost.length > 0);
    release!();
    await turn;
  });

  it('a turn held by a replica that stopped saying it is alive (frozen) is broken after a lease; one held by a live replica is not', async () => {
    await Promise.all([a.close(), b.close()]);
    [a, b] = await Promise.all([openPostgresState(url, { runLockSeconds: 1 }), openPostgresState(url, { runLockSeconds: 1 })]);
    const [heardA] = await Promise.all([started(a), started(b)]);
    const holdTurn = (s: StateStore, key: string): { held: Promise<void>; release(): void; holding(): boolean } => {
      let release: (() => void) | undefined;
      const held = s.coordination.exclusive(key, () => new Promise<void>((r) => (release = r)));
      return { held, release: () => release!(), holding: () => release !== undefined };
    };
    const live = holdTurn(a, 'judge/r/0/1');
    await until('a to hold a turn', live.holding);
    const waited = Date.now();
    const blocked = b.coordination.exclusive('judge/r/0/1', async () => Date.now() - waited);
    await new Promise((r) => setTimeout(r, 2500));
    live.release(); // a live holder's turn lasts as long as its work
    expect(await blocked).toBeGreaterThan(2400);
    await live.held;

    const frozen = holdTurn(a, 'judge/r/0/2');
    await until('a to hold a turn', frozen.holding);
    clearInterval((a.coordination as unknown as { renewal: NodeJS.Timeout }).renewal); // as a frozen process: no more beats
    const t = Date.now();
    await b.coordination.exclusive('judge/r/0/2', async () => undefined);
    const brokenAfter = Date.now() - t;
    expect(brokenAfter).toBeGreaterThanOrEqual(1000); // unseen for a lease (1 s), then a lease of waiting: about 2 s quiet
    expect(brokenAfter).toBeLessThan(8000);
    await until('a told its connection ended', () => heardA.lost.length > 0);
    frozen.release();
    await frozen.held;
  });

  it('a lock renewed by its holder is not taken, however long and often another asks', async () => {
    await Promise.all([a.close(), b.close()]);
    [a, b] = await Promise.all([openPostgresState(url, { runLockSeconds: 1 }), openPostgresState(url, { runLockSeconds: 1 })]);
    await Promise.all([started(a), started(b)]);
    expect(await a.coordination.drive('r2')).toBe(true);
    for (let i = 0; i < 12; i++) {
      expect(await b.coordination.drive('r2')).toBe(false);
      await new Promise((r) => setTimeout(r, 250));
    }
    expect(a.coordination.drives('r2')).toBe(true); // 3 s: three leases of 1 s, renewed
  });
});

describe('the client address', () => {
  const proxies = ['10.0.0.2', '10.0.0.3'];
  it('is the peer unless the peer is a trusted proxy; then the nearest untrusted hop of X-Forwarded-For', () => {
    expect(clientAddress('::ffff:198.51.100.7', { 'x-forwarded-for': '1.2.3.4' }, proxies)).toBe('198.51.100.7'); // a client's own header is not believed
    expect(clientAddress('10.0.0.2', { 'x-forwarded-for': '1.2.3.4, 198.51.100.7' }, proxies)).toBe('198.51.100.7');
    expect(clientAddress('10.0.0.2', { 'x-forwarded-for': '198.51.100.7, 10.0.0.3' }, proxies)).toBe('198.51.100.7');
    expect(clientAddress('10.0.0.2', {}, proxies)).toBe('10.0.0.2');
  });
});
