// The driver lock: one server at a time drives the runs of a PostgreSQL database. It is a session
// advisory lock held on a connection of its own, so it ends with that connection: a server killed
// outright releases it at once, one cut off by the network within the keepalive time below.
import pg from 'pg';
import type { DriverEvents } from '../store';

/** Any constant, distinct from the migration lock. */
const DRIVER_LOCK = 7_420_116;
const POLL_MS = 500;

/** Holds the lock until `release()`; resolves once held. */
export async function holdDriverLock(url: string, events: DriverEvents): Promise<{ release(): Promise<void> }> {
  const client = new pg.Client({ connectionString: url, keepAlive: true });
  let releasing = false;
  client.on('error', (e) => !releasing && events.lost(e.message));
  client.on('end', () => !releasing && events.lost('its connection to PostgreSQL ended'));
  await client.connect();
  // PostgreSQL notices a vanished server within ~11 s instead of the system's default two hours.
  await client.query('SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; SET tcp_keepalives_count = 3');
  for (let waited = false; ; waited = true) {
    const { rows } = await client.query<{ held: boolean }>('SELECT pg_try_advisory_lock($1) AS held', [DRIVER_LOCK]);
    if (rows[0].held) break;
    if (!waited) events.waiting();
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
  return {
    async release() {
      releasing = true;
      await client.end();
    },
  };
}
