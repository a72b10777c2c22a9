// Servers sharing one PostgreSQL database: one drives the runs, a standby waits on the driver
// lock and takes over when the driver is killed outright, and the run completes bit for bit as
// one process makes it.
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';
import { ServerProcess, WorkerProcess, startServer, startWorker, waitFor, ok, RUN_QUERY } from '../node/local-platform';
import { HonestRun, startHonestRun } from './support/honest-run';
import { postgresForThisFile } from './support/postgres';

jest.setTimeout(300_000);
const postgres = postgresForThisFile();

(postgres.skip ? describe.skip : describe)('a standby server on PostgreSQL', () => {
  let honest: HonestRun | undefined;
  let standby: ServerProcess | undefined;
  let worker: WorkerProcess | undefined;
  afterAll(async () => {
    await worker?.kill();
    await standby?.stop();
    await honest?.close();
  });

  it('takes over when the driving server is killed mid-run; the run completes bit-identical to one process', async () => {
    const env = { PARTUNE_STATE: await postgres.database() };
    honest = await startHonestRun(env);
    // Same database, same data directory (the embedded blob store and the tokens): a second server waits.
    standby = await startServer({ PARTUNE_LEASE_SECONDS: '4', ...env }, honest.server.dataDir, { standby: true });
    const { runId, server: driver } = honest;
    await waitFor('the run to pass round 3', async () => (await ok(driver.url, driver.admin, RUN_QUERY, { id: runId })).run.round >= 3, 120_000);
    const killedAt = Date.now();
    await driver.stop('SIGKILL');
    await standby.serving(30_000);
    const takeoverMs = Date.now() - killedAt;
    process.stderr.write(`[failover] the standby served ${takeoverMs} ms after the driver was killed\n`);
    expect(takeoverMs).toBeLessThan(10_000);
    expect(standby.log.some((l) => /resuming 1 unfinished run/.test(l))).toBe(true);

    const events: Record<string, unknown>[] = [];
    const ws = createClient({ url: standby.url.replace('http', 'ws'), webSocketImpl: WebSocket, connectionParams: { authorization: `Bearer ${standby.admin}` } });
    ws.subscribe({ query: 'subscription { runEvents { runId kind status } }' }, {
      next: (m) => void events.push(m.data!.runEvents as Record<string, unknown>), error: () => undefined, complete: () => undefined,
    });
    await honest.worker.kill(); // its server is gone; a worker of the standby's finishes the run
    worker = startWorker(standby, 'after-failover');
    const result = await honest.finish(standby);
    await waitFor('the final event', async () => events.some((e) => e.runId === runId && e.status === 'SUCCEEDED'), 10_000);
    await ws.dispose();
    expect(result).toMatchObject({ status: 'SUCCEEDED', identical: true });
    expect(result.accuracy).toBe(result.reference);
  });
});
