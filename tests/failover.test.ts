// Server replicas sharing one PostgreSQL database and one blob store (`partune storage serve`),
// each with a data directory of its own: each run is driven by one of them, workers and
// subscribers may use either, and when the driving replica is killed outright the other takes the
// run over and completes it bit for bit as one process makes it.
import { Client, createClient } from 'graphql-ws';
import WebSocket from 'ws';
import { ServerProcess, StorageProcess, WorkerProcess, startServer, startStorage, startWorker, waitFor, ok, RUN_QUERY } from '../node/local-platform';
import { HonestRun, startHonestRun } from './support/honest-run';
import { postgresForThisFile } from './support/postgres';
import { describeUnless } from './support/skip';

jest.setTimeout(300_000);
const postgres = postgresForThisFile();

type Event = { runId: string; kind: string; status: string };

function subscribe(server: ServerProcess, events: Event[]): Client {
  const ws = createClient({ url: server.url.replace('http', 'ws'), webSocketImpl: WebSocket, connectionParams: { authorization: `Bearer ${server.admin}` }, retryAttempts: 0 });
  ws.subscribe({ query: 'subscription { runEvents { runId kind status } }' }, {
    next: (m) => void events.push(m.data!.runEvents as Event), error: () => undefined, complete: () => undefined,
  });
  return ws;
}

describeUnless(postgres.skip)('server replicas on PostgreSQL', () => {
  let honest: HonestRun | undefined;
  let replica: ServerProcess | undefined;
  let worker: WorkerProcess | undefined;
  let storage: StorageProcess | undefined;
  const sockets: Client[] = [];
  afterAll(async () => {
    await Promise.all(sockets.map((s) => s.dispose()));
    await worker?.kill();
    await replica?.stop();
    await honest?.close();
    await storage?.stop();
  });

  it('a run driven by one replica, worked and watched through both, survives its driver being killed, bit-identical to one process', async () => {
    const shared = { PARTUNE_SECRET: 'replicas-share-this-secret', PARTUNE_ADMIN_TOKEN: 'adm_replicas', PARTUNE_WORKER_TOKEN: 'wrk_replicas' };
    storage = await startStorage(shared.PARTUNE_SECRET);
    const env = { ...shared, PARTUNE_STATE: await postgres.database(), PARTUNE_BLOB_URL: storage.url };
    honest = await startHonestRun(env);
    const { runId, server: driver } = honest;
    // The same database, blob store, secret and tokens: a second replica, serving at once.
    replica = await startServer({ PARTUNE_LEASE_SECONDS: '4', PARTUNE_STALL_SECONDS: '6', ...env });
    worker = startWorker(replica, 'on-replica');
    const onDriver: Event[] = [];
    const onReplica: Event[] = [];
    sockets.push(subscribe(driver, onDriver), subscribe(replica, onReplica));

    // The replica's worker does shards of a run the other replica drives; the replica's subscribers see its rounds.
    const replicaWorker = await waitFor('the replica\'s worker to join', async () => {
      const { workers } = await ok(replica!.url, replica!.admin, '{ workers(first: 10) { items { id name } } }');
      return (workers.items as { id: string; name: string }[]).find((w) => w.name === 'on-replica')?.id;
    }, 30_000);
    await waitFor('a shard done through the replica, and round 3', async () => {
      const { run } = await ok(driver.url, driver.admin, RUN_QUERY, { id: runId });
      return run.round >= 3 && run.shards.some((s: { workerId: string; status: string }) => s.workerId === replicaWorker && s.status === 'DONE');
    }, 120_000);
    await waitFor('a round event on the replica', async () => onReplica.some((e) => e.runId === runId && e.kind === 'ROUND'), 10_000);
    expect(replica.log.some((l) => /driving \d+ unfinished run/.test(l))).toBe(false);

    const killedAt = Date.now();
    await driver.stop('SIGKILL');
    await waitFor('the replica to take the run over', async () => replica!.log.some((l) => /driving 1 unfinished run/.test(l)), 30_000, 50);
    const takeoverMs = Date.now() - killedAt;
    process.stderr.write(`[failover] the replica drove the run ${takeoverMs} ms after its driver was killed\n`);
    expect(takeoverMs).toBeLessThan(4_000); // within a lease time

    await honest.worker.kill(); // its server is gone
    const result = await honest.finish(replica);
    await waitFor('the final event on the replica', async () => onReplica.some((e) => e.runId === runId && e.status === 'SUCCEEDED'), 10_000);
    expect(result).toMatchObject({ status: 'SUCCEEDED', identical: true });
    expect(result.accuracy).toBe(result.reference);
  });
});
