// Replicas sharing one PostgreSQL database divide the runs by session advisory locks, one per run,
// held on a connection of each replica's own: a replica killed outright gives its runs up at once
// (one cut off by the network within the keepalive time below) and another takes them over. The
// same connection sends and LISTENs for the events and nudges every replica NOTIFYs (in the order
// sent), and holds the turns that keep two replicas from judging one shard at once.
import pg from 'pg';
import { DrivenRuns, KeyedTurns } from '../in-process';
import type { Coordination, CoordinationHandlers } from '../store';

/** Lock namespaces (the first key of the two-key advisory locks); distinct from the migration lock. */
const RUN_LOCKS = 7_420_116;
const TURN_LOCKS = 7_420_117;
const MESSAGES = 'partune_messages';
const NUDGES = 'partune_nudges';
/** NOTIFY's payload limit is 8000 bytes. */
const MAX_MESSAGE = 7900;
const TURN_POLL_MS = 20;

export class PgCoordination extends DrivenRuns implements Coordination {
  private readonly client: pg.Client;
  private readonly turns = new KeyedTurns();
  private closing = false;

  constructor(url: string) {
    super();
    this.client = new pg.Client({ connectionString: url, keepAlive: true, application_name: 'partune coordination' });
  }

  async start(on: CoordinationHandlers): Promise<void> {
    this.client.on('error', (e) => !this.closing && on.lost(e.message));
    this.client.on('end', () => !this.closing && on.lost('its connection to PostgreSQL ended'));
    this.client.on('notification', (n) => {
      if (n.channel === MESSAGES && n.payload) on.message(n.payload);
      else if (n.channel === NUDGES && n.payload) on.nudge(n.payload);
    });
    await this.client.connect();
    // PostgreSQL notices a vanished replica within ~11 s instead of the system's default two hours.
    await this.client.query('SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; SET tcp_keepalives_count = 3');
    // Its only writes are notifications, which nothing replays after a crash: no need to wait for the disk.
    await this.client.query('SET synchronous_commit = off');
    await this.client.query(`LISTEN ${MESSAGES}; LISTEN ${NUDGES}`);
  }

  /** One attempt per run at a time: the lock is re-entrant, so a second would need a second unlock. */
  drive(runId: string): Promise<boolean> {
    return this.turns.run(`run/${runId}`, async () => {
      if (this.runs.has(runId)) return true;
      if (!(await this.tryLock(RUN_LOCKS, runId))) return false;
      this.runs.add(runId);
      return true;
    });
  }

  async letGo(runId: string): Promise<void> {
    if (!this.runs.delete(runId)) return;
    await this.client.query('SELECT pg_advisory_unlock($1, hashtext($2))', [RUN_LOCKS, runId]);
  }

  async broadcast(message: string): Promise<void> {
    if (Buffer.byteLength(message) > MAX_MESSAGE) throw new Error(`a message of ${Buffer.byteLength(message)} bytes is over NOTIFY's limit`);
    await this.client.query('SELECT pg_notify($1, $2)', [MESSAGES, message]);
  }

  async nudge(runId: string): Promise<void> {
    await this.client.query('SELECT pg_notify($1, $2)', [NUDGES, runId]);
  }

  /** One turn per key in this process; across processes, the key's lock, polled so that waiting holds no connection. */
  exclusive<T>(key: string, work: () => Promise<T>): Promise<T> {
    return this.turns.run(key, async () => {
      while (!(await this.tryLock(TURN_LOCKS, key))) await new Promise((r) => setTimeout(r, TURN_POLL_MS));
      try {
        return await work();
      } finally {
        await this.client.query('SELECT pg_advisory_unlock($1, hashtext($2))', [TURN_LOCKS, key]).catch(() => undefined);
      }
    });
  }

  async close(): Promise<void> {
    this.closing = true;
    await this.client.end().catch(() => undefined);
  }

  private async tryLock(space: number, key: string): Promise<boolean> {
    const { rows } = await this.client.query<{ held: boolean }>('SELECT pg_try_advisory_lock($1, hashtext($2)) AS held', [space, key]);
    return rows[0].held;
  }
}
