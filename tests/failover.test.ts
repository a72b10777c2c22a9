// Server replicas sharing one PostgreSQL database and one blob store (`partune storage serve`),
// each with a data directory of its own: each run is driven by one of them, workers and
// subscribers may use either. When the driving replica is killed, frozen past its lock's lease,
// or PostgreSQL itself restarts, the run is taken over (or taken up again) and completes bit for
// bit as one process makes it, every shard accepted once, and no replica exits.
import { Client, createClient } from 'graphql-ws';
import WebSocket from 'ws';
import { ServerProcess, StorageProcess, WorkerProcess, gql, startServer, startStorage, startWorker, waitFor, ok, RUN_QUERY } from '../node/local-platform';
import { HonestRun, startHonestRun } from './support/honest-run';
import { postgresForThisFile } from './support/postgres';
import { describeUnless } from './support/skip';

jest.setTimeout(300_000);
const postgres = postgresForThisFile();

type Event = { runId: string; kind: string; status: string };
type Shard = { round: number; index: number; status: string; verdict: string | null; workerId: string };

function subscribe(server: ServerProcess, events: Event[]): Client {
  const ws = createClient({ url: server.url.replace('http', 'ws'), webSocketImpl: WebSocket, connectionParams: { authorization: `Bearer ${server.admin}` }, retryAttempts: 0 });
  ws.subscribe({ query: 'subscription { runEvents { runId kind status } }' }, {
    next: (m) => void events.push(m.data!.runEvents as Event), error: () => undefined, complete: () => undefined,
  });
  return ws;
}

const alive = (s: ServerProcess): boolean => s.proc.exitCode === null && s.proc.signalCode === null;

describeUnless(postgres.skip)('server replicas on PostgreSQL', () => {
  let honest: HonestRun | undefined;
  let replica: ServerProcess | undefined;
  let worker: WorkerProcess | undefined;
  let storage: StorageProcess | undefined;
  const sockets: Client[] = [];
  afterEach(async () => {
    await Promise.all(sockets.splice(0).map((s) => s.dispose()));
    for (const s of [honest?.server, replica]) if (s && alive(s)) process.kill(s.proc.pid!, 'SIGCONT'); // a frozen server must wake to stop
    await worker?.kill();
    await replica?.stop();
    await honest?.close();
    await storage?.stop();
    [honest, replica, worker, storage] = [undefined, undefined, undefined, undefined];
  });

  /** An honest run on one replica, a second replica with a worker of its own, both on one database and blob store. */
  async function replicas(): Promise<{ driver: ServerProcess; replica: ServerProcess; runId: string }> {
    const shared = { PARTUNE_SECRET: 'replicas-share-this-secret', PARTUNE_ADMIN_TOKEN: 'adm_replicas', PARTUNE_WORKER_TOKEN: 'wrk_replicas' };
    storage = await startStorage(shared.PARTUNE_SECRET);
    const env = { ...shared, PARTUNE_STATE: await postgres.database(), PARTUNE_BLOB_URL: storage.url };
    honest = await startHonestRun(env);
    replica = await startServer({ PARTUNE_LEASE_SECONDS: '15', PARTUNE_STALL_SECONDS: '30', ...env });
    worker = startWorker(replica, 'on-replica');
    return { driver: honest.server, replica, runId: honest.runId };
  }

  /** Every index of every round has exactly one accepted result. */
  async function acceptedOnce(server: ServerProcess, runId: string): Promise<void> {
    const { run } = await ok(server.url, server.admin, RUN_QUERY, { id: runId });
    const accepted = new Map<string, number>();
    for (const s of run.shards as Shard[]) {
      const key = `${s.round}.${s.index}`;
      accepted.set(key, (accepted.get(key) ?? 0) + (s.verdict === 'ACCEPTED' ? 1 : 0));
    }
    expect([...accepted.values()].every((n) => n === 1)).toBe(true);
    expect(accepted.size).toBe(run.round);
  }

  const roundOf = async (server: ServerProcess, runId: string): Promise<number> => (await ok(server.url, server.admin, RUN_QUERY, { id: runId })).run.round;

  it('a run driven by one replica, worked and watched through both, survives its driver being killed, bit-identical to one process', async () => {
    const { driver, runId } = await replicas();
    const onDriver: Event[] = [];
    const onReplica: Event[] = [];
    sockets.push(subscribe(driver, onDriver), subscribe(replica!, onReplica));

    // The replica's worker does shards of a run the other replica drives; the replica's subscribers see its rounds.
    const replicaWorker = await waitFor('the replica\'s worker to join', async () => {
      const { workers } = await ok(replica!.url, replica!.admin, '{ workers(first: 10) { items { id name } } }');
      return (workers.items as { id: string; name: string }[]).find((w) => w.name === 'on-replica')?.id;
    }, 30_000);
    await waitFor('a shard done through the replica, and round 3', async () => {
      const { run } = await ok(driver.url, driver.admin, RUN_QUERY, { id: runId });
      return run.round >= 3 && run.shards.some((s: Shard) => s.workerId === replicaWorker && s.status === 'DONE');
    }, 120_000);
    await waitFor('a round event on the replica', async () => onReplica.some((e) => e.runId === runId && e.kind === 'ROUND'), 10_000);
    expect(replica!.log.some((l) => /driving \d+ unfinished run/.test(l))).toBe(false);

    const killedAt = Date.now();
    await driver.stop('SIGKILL');
    const tookOver = (s: ServerProcess, why: string): boolean => s.log.some((l) => l.includes(`took run ${runId} over from another server: ${why}`));
    await waitFor('the replica to take the run over', async () => tookOver(replica!, 'its connection ended'), 30_000, 50);
    const takeoverMs = Date.now() - killedAt;
    process.stderr.write(`[failover] the replica drove the run ${takeoverMs} ms after its driver was killed\n`);
    expect(takeoverMs).toBeLessThan(8_000); // its connection ended: no waiting for the lock's 10 s lease (about 0.6 s quiet)

    await honest!.worker.kill(); // its server is gone
    const result = await honest!.finish(replica);
    expect(result).toMatchObject({ status: 'SUCCEEDED', identical: true });
    await waitFor('the final event on the replica', async () => onReplica.some((e) => e.runId === runId && e.status === 'SUCCEEDED'), 30_000);
    expect(result.accuracy).toBe(result.reference);
    await acceptedOnce(replica!, runId);
  });

  it('a driver frozen (SIGSTOP) past its lock\'s lease loses the run within it; woken, it drives nothing and writes nothing', async () => {
    const { driver, replica: other, runId } = await replicas();
    await waitFor('round 2', async () => (await roundOf(driver, runId)) >= 2, 120_000);
    process.kill(driver.proc.pid!, 'SIGSTOP');
    const stoppedAt = Date.now();
    const tookOver = (): boolean => other.log.some((l) => l.includes(`took run ${runId} over from another server: its lock lapsed`));
    await waitFor('the replica to take the run over', async () => tookOver(), 30_000, 50);
    const takeoverMs = Date.now() - stoppedAt;
    process.stderr.write(`[failover] the replica drove the run ${takeoverMs} ms after its driver was frozen (run lock 10 s)\n`);
    expect(takeoverMs).toBeGreaterThanOrEqual(8_000); // not before the 10 s lease (renewed every 2 s) ran out
    expect(takeoverMs).toBeLessThan(25_000); // and not long after: the adoption clock's second, a loaded machine's delay
    const round = await roundOf(other, runId);
    await waitFor('a round the replica drove', async () => (await roundOf(other, runId)) > round, 60_000);

    process.kill(driver.proc.pid!, 'SIGCONT');
    const knowsItLost = (): boolean => driver.log.some((l) => /coordination: .*(stopped driving|took over)/.test(l));
    await waitFor('the woken driver to know it lost the run', async () => knowsItLost(), 30_000);
    const result = await honest!.finish(other);
    expect(result).toMatchObject({ status: 'SUCCEEDED', identical: true });
    await acceptedOnce(other, runId);
    expect(driver.log.some((l) => l.includes(`run ${runId} succeeded`))).toBe(false);
    expect([alive(driver), alive(other)]).toEqual([true, true]);
  });

  it('PostgreSQL crashed and restarted mid-run, a replica frozen across it: both stay up, the API answers UNAVAILABLE, bit-identical', async () => {
    const { driver, replica: other, runId } = await replicas();
    await waitFor('round 2', async () => (await roundOf(driver, runId)) >= 2, 120_000);
    const round = await roundOf(driver, runId);
    const codes = new Map<string, number>();
    let probing = true;
    const probe = (async () => {
      while (probing) {
        const r = await gql(driver.url, driver.admin, RUN_QUERY, { id: runId }).catch(() => ({ errors: [{ extensions: { code: 'NO_ANSWER' } }] }));
        for (const e of r.errors ?? []) codes.set(String(e.extensions?.code), (codes.get(String(e.extensions?.code)) ?? 0) + 1);
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    process.kill(other.proc.pid!, 'SIGSTOP'); // frozen across the restart, it wakes to connections that ended under it
    const t = Date.now();
    await postgres.restart('immediate');
    process.stderr.write(`[failover] PostgreSQL crashed and restarted in ${Date.now() - t} ms\n`);
    const back = (s: ServerProcess): boolean => s.log.some((l) => l.includes('coordination: the connection to PostgreSQL is back'));
    await waitFor('the coordination connection back', async () => back(driver), 30_000);
    await new Promise((r) => setTimeout(r, 3000));
    process.kill(other.proc.pid!, 'SIGCONT');
    await waitFor('the next round', async () => (await roundOf(driver, runId).catch(() => round)) > round, 60_000);
    const answers = JSON.stringify(Object.fromEntries(codes));
    process.stderr.write(`[failover] round ${round + 1} aggregated ${Date.now() - t} ms after the crash; answers meanwhile ${answers}\n`);
    await waitFor('the woken replica back', async () => back(other), 30_000);
    probing = false;
    await probe;
    const result = await honest!.finish(driver);
    expect(result).toMatchObject({ status: 'SUCCEEDED', identical: true });
    await acceptedOnce(driver, runId);
    expect([alive(driver), alive(other)]).toEqual([true, true]);
    expect(codes.get('INTERNAL_SERVER_ERROR') ?? 0).toBe(0);
  });
});
