// Replicas sharing one PostgreSQL database divide the runs by leased locks (run-locks.ts), taken
// and renewed on a connection of each replica's own. The same connection sends and LISTENs for
// the events and nudges every replica NOTIFYs (in the order sent), and holds the turns that keep
// two replicas from judging one shard at once. When it ends (PostgreSQL restarted, a network cut)
// the replica stops driving at once and reconnects with backoff; the runs are then taken up again
// by whichever replica adopts them first.
import pg from 'pg';
import { KeyedTurns } from '../in-process';
import type { Coordination, CoordinationHandlers } from '../store';
import { types } from './database';
import { HOLDER_LOCKS, RunLocks } from './run-locks';

/** Lock namespace (the first key of the two-key advisory locks) of the turns; distinct from the migration and holder locks. */
const TURN_LOCKS = 7_420_117;
const MESSAGES = 'partune_messages';
const NUDGES = 'partune_nudges';
/** NOTIFY's payload limit is 8000 bytes. */
const MAX_MESSAGE = 7900;
const TURN_POLL_MS = 20;
const RECONNECT_MS = [250, 500, 1000, 2000, 5000];
/** A query on this connection that takes longer has lost its server: it fails instead of holding the turns and renewals behind it. */
const QUERY_TIMEOUT_MS = 10_000;

/** What callers see while the connection is down: a connection failure (SQLSTATE class 08), which the store calls transient. */
class Disconnected extends Error {
  readonly code = '08006';
  constructor() {
    super('the coordination connection to PostgreSQL is down; reconnecting');
  }
}

export class PgCoordination implements Coordination {
  readonly locks: RunLocks;
  private client: pg.Client | undefined;
  private handlers: CoordinationHandlers | undefined;
  private readonly turns = new KeyedTurns();
  private renewal: NodeJS.Timeout | undefined;
  private reconnect: NodeJS.Timeout | undefined;
  private renewing = false;
  private failures = 0;
  private closing = false;

  constructor(private readonly url: string, leaseMs: number) {
    this.locks = new RunLocks(leaseMs);
  }

  async start(on: CoordinationHandlers): Promise<void> {
    this.handlers = on;
    this.client = await this.connect();
    this.renewal = setInterval(() => void this.renew(), this.locks.leaseMs / 5);
    this.renewal.unref();
  }

  drive(runId: string): Promise<boolean> {
    const client = this.client;
    if (!client) return Promise.resolve(false);
    // One attempt per run at a time, so that two callers see one take.
    return this.turns.run(`run/${runId}`, async () => {
      const taken = await this.locks.take(client, runId);
      if (taken === 'lapsed') this.handlers?.tookOver?.(runId, 'its lock lapsed (frozen or cut off)');
      if (taken === 'gone') this.handlers?.tookOver?.(runId, 'its connection ended');
      return taken !== false;
    });
  }

  drives(runId: string): boolean {
    return this.locks.holds(runId);
  }

  driven(): string[] {
    return this.locks.runs();
  }

  async letGo(runId: string): Promise<void> {
    // Without a connection there is nothing to release: every lock was given up when it ended.
    if (this.client) await this.locks.release(this.client, runId);
  }

  async broadcast(message: string): Promise<void> {
    if (Buffer.byteLength(message) > MAX_MESSAGE) throw new Error(`a message of ${Buffer.byteLength(message)} bytes is over NOTIFY's limit`);
    await this.connected().query('SELECT pg_notify($1, $2)', [MESSAGES, message]);
  }

  async nudge(runId: string): Promise<void> {
    await this.connected().query('SELECT pg_notify($1, $2)', [NUDGES, runId]);
  }

  /** One turn per key in this process; across processes, the key's lock, polled so that waiting holds no connection. */
  exclusive<T>(key: string, work: () => Promise<T>): Promise<T> {
    return this.turns.run(key, async () => {
      const client = this.connected();
      for (let since = performance.now(); ; ) {
        const { rows } = await client.query<{ held: boolean }>('SELECT pg_try_advisory_lock($1, hashtext($2)) AS held', [TURN_LOCKS, key]);
        if (rows[0].held) break;
        // A turn held longer than a lease by a replica that stopped saying it is alive (frozen) is broken.
        if (performance.now() - since > this.locks.leaseMs) {
          since = performance.now();
          await this.locks.breakStale(client, TURN_LOCKS, key);
        }
        await new Promise((r) => setTimeout(r, TURN_POLL_MS));
      }
      try {
        return await work();
      } finally {
        await client.query('SELECT pg_advisory_unlock($1, hashtext($2))', [TURN_LOCKS, key]).catch(() => undefined);
      }
    });
  }

  async close(): Promise<void> {
    this.closing = true;
    clearInterval(this.renewal);
    clearTimeout(this.reconnect);
    const client = this.client;
    this.client = undefined;
    if (!client) return;
    await this.locks.releaseAll(client).catch(() => undefined); // others take the runs over at once
    await this.locks.forgetDeparted(client).catch(() => undefined);
    await client.end().catch(() => undefined);
  }

  private connected(): pg.Client {
    if (!this.client) throw new Disconnected();
    return this.client;
  }

  private async connect(): Promise<pg.Client> {
    const client = new pg.Client({
      connectionString: this.url, keepAlive: true, application_name: 'partune coordination', query_timeout: QUERY_TIMEOUT_MS, types,
    });
    client.on('error', (e) => this.down(client, e.message));
    client.on('end', () => this.down(client, 'its connection to PostgreSQL ended'));
    client.on('notification', (n) => {
      if (n.channel === MESSAGES && n.payload) this.handlers?.message(n.payload);
      else if (n.channel === NUDGES && n.payload) this.handlers?.nudge(n.payload);
    });
    try {
      await client.connect();
      // PostgreSQL notices a vanished replica within ~11 s instead of the system's default two hours.
      await client.query('SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; SET tcp_keepalives_count = 3');
      // Its writes are notifications and lock leases, which a crash of PostgreSQL may lose: a lost lease reads as one that lapsed.
      await client.query('SET synchronous_commit = off');
      await client.query('SELECT pg_advisory_lock($1, hashtext($2))', [HOLDER_LOCKS, this.locks.holder]);
      await client.query(`LISTEN ${MESSAGES}; LISTEN ${NUDGES}`);
      await this.locks.beat(client);
      return client;
    } catch (e) {
      await client.end().catch(() => undefined);
      throw e;
    }
  }

  /** The connection ended: every run is given up at once (other replicas may take them now), and a new one is sought. */
  private down(client: pg.Client, why: string): void {
    if (this.closing || this.client !== client) return;
    this.client = undefined;
    const runs = this.locks.forgetAll();
    this.handlers?.lost(`${why}; ${runs.length ? `stopped driving ${runs.length} run(s), ` : ''}reconnecting`);
    client.end().catch(() => undefined);
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    const wait = RECONNECT_MS[Math.min(this.failures, RECONNECT_MS.length - 1)];
    this.reconnect = setTimeout(async () => {
      try {
        const client = await this.connect();
        if (this.closing) return void client.end().catch(() => undefined);
        this.client = client;
        this.failures = 0;
        this.handlers?.back?.();
      } catch {
        this.failures++;
        if (!this.closing) this.scheduleReconnect();
      }
    }, wait);
    this.reconnect.unref();
  }

  private async renew(): Promise<void> {
    const client = this.client;
    if (!client || this.renewing) return;
    this.renewing = true;
    try {
      await this.locks.beat(client);
      const lost = await this.locks.renew(client);
      if (lost.length) this.handlers?.lost(`another server took over run(s) ${lost.join(', ')} after this one's lock lapsed`);
    } catch {
      // The connection's trouble: its error ends it (down), or the leases lapse and drives() says so.
    } finally {
      this.renewing = false;
    }
  }
}
