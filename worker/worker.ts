// A Partune worker: registers, claims shards, trains them with the engine, uploads the update by
// presigned URL and completes. Platform-neutral (fetch, crypto.subtle): the Node CLI and the
// browser page both run it, each after choosing its TensorFlow.js backend.
import {
  Checkpoint, Dataset, Normalization, Strategy, TrainOptions, concatDatasets, limit, loadCheckpoint, parseState, parseVitConfig,
  runShard, serializeState, tunedShapes, inspect, unpackDataset,
} from '../engine';
import { GraphQLClient, GraphQLRequestError, GraphQLTransport, sleep } from './client';
import { BlobCache, Download, fetchVerified, upload } from './downloads';

export interface WorkerOptions {
  readonly server: string;
  readonly token: string;
  readonly name: string;
  readonly kind: 'node' | 'browser';
  readonly backend: string;
  readonly log?: (line: string) => void;
  /** Progress within the current shard, for a UI. */
  readonly onProgress?: (p: { runId: string; shard: string; step: number; steps: number; loss: number; imagesPerSecond: number }) => void;
  readonly signal?: AbortSignal;
  readonly pollMs?: number;
  /** Stop after this many shards (0: never). */
  readonly maxShards?: number;
  /** Take only shards whose model and data fit in this many bytes (a browser tab's budget). */
  readonly memoryBudget?: number;
  /** The connection to use; default: GraphQL over HTTP to `server`. */
  readonly transport?: GraphQLTransport;
}

interface Job {
  runId: string; round: number; shardId: string; attempt: number; strategy: Strategy; numClasses: number; normalization: Normalization;
  options: Partial<TrainOptions>; trainLimit?: number; window: { from: number; to: number }; heartbeatSeconds: number;
}

interface Assignment {
  shard: { id: string; round: number; index: number };
  job: Job;
  model: Download;
  train: Download[];
  state: Download;
  uploadUrl: string;
}

const REGISTER = `mutation($name: String!, $kind: String!, $backend: String!) { registerWorker(name: $name, kind: $kind, backend: $backend) { id } }`;
const CLAIM = `mutation($w: ID!, $m: Float) { claimShard(workerId: $w, memoryBudget: $m) { shard { id round index } job
  model { url sha256 bytes } train { url sha256 bytes } state { url sha256 bytes } uploadUrl } }`;
const HEARTBEAT = `mutation($w: ID!, $s: ID!, $a: Int!, $n: Int!, $l: Float) { heartbeat(workerId: $w, shardId: $s, attempt: $a, stepsDone: $n, loss: $l) { cancelled reason } }`;
const COMPLETE = `mutation($w: ID!, $s: ID!, $a: Int!, $l: Float!, $ips: Float!) { completeShard(workerId: $w, shardId: $s, attempt: $a, loss: $l, imagesPerSecond: $ips) { id status } }`;
const FAIL = `mutation($w: ID!, $s: ID!, $a: Int!, $m: String!) { failShard(workerId: $w, shardId: $s, attempt: $a, message: $m) }`;

class LeaseLost extends Error {}

export class PartuneWorker {
  private readonly client: GraphQLTransport;
  private readonly checkpoints = new BlobCache<Checkpoint>(2);
  private readonly datasets = new BlobCache<Dataset>(2);
  private readonly log: (line: string) => void;
  id = '';
  shardsDone = 0;
  samples = 0;

  constructor(private readonly o: WorkerOptions) {
    this.log = o.log ?? (() => undefined);
    this.client = o.transport ?? new GraphQLClient(o.server, o.token, { log: this.log, signal: o.signal });
  }

  async run(): Promise<void> {
    this.id = (await this.client.request<{ registerWorker: { id: string } }>(REGISTER, { name: this.o.name, kind: this.o.kind, backend: this.o.backend })).registerWorker.id;
    this.log(`worker ${this.id} registered (${this.o.backend})`);
    let idle = 0;
    while (!this.o.signal?.aborted && !(this.o.maxShards && this.shardsDone >= this.o.maxShards)) {
      const { claimShard: a } = await this.client.request<{ claimShard: Assignment | null }>(CLAIM, { w: this.id, m: this.o.memoryBudget ?? null });
      if (!a) {
        await sleep(Math.min(this.o.pollMs ?? 1000, 250 * 2 ** Math.min(idle++, 3)), this.o.signal);
        continue;
      }
      idle = 0;
      await this.execute(a);
    }
  }

  private async execute(a: Assignment): Promise<void> {
    const { job } = a;
    const label = `shard ${a.shard.round}.${a.shard.index} of run ${job.runId.slice(0, 8)} (steps ${job.window.from}-${job.window.to})`;
    this.log(`${label}: claimed`);
    // Heartbeats on a timer, so downloads count as alive too; training yields between steps.
    const progress = { done: 0, loss: NaN, lost: undefined as string | undefined };
    const beat = setInterval(() => {
      this.client.request<{ heartbeat: { cancelled: boolean; reason?: string } }>(HEARTBEAT, {
        w: this.id, s: a.shard.id, a: job.attempt, n: progress.done, l: Number.isFinite(progress.loss) ? progress.loss : null,
      }).then(({ heartbeat }) => {
        if (heartbeat.cancelled) progress.lost = heartbeat.reason ?? 'cancelled';
      }, (e: Error) => this.log(`heartbeat failed: ${e.message}`));
    }, job.heartbeatSeconds * 1000);
    try {
      const base = await this.checkpoints.get(a.model.sha256, async () => loadCheckpoint(await fetchVerified(a.model, 'the model'), { source: 'model' }));
      const trainKey = a.train.map((d) => d.sha256).join('+');
      const full = await this.datasets.get(trainKey, async () => {
        const parts = await Promise.all(a.train.map(async (d, i) => unpackDataset(await fetchVerified(d, `training shard ${i}`), `training shard ${i}`)));
        return parts.reduce(concatDatasets);
      });
      const train = limit(full, job.trainLimit, job.options.seed ?? 0);
      const config = parseVitConfig({ ...base.config, numClasses: job.numClasses });
      const shapes = tunedShapes(config, inspect(job.strategy, config).tuned);
      const start = parseState(await fetchVerified(a.state, 'the round state'), shapes, 'round state');
      const steps = job.window.to - job.window.from;
      const gen = runShard({
        base, numClasses: job.numClasses, strategy: job.strategy, train, normalization: job.normalization, options: job.options,
        window: job.window, start, label: { run: job.runId, round: job.round, shard: job.shardId },
      });
      let lossSum = 0;
      let ipsSum = 0;
      let result;
      for (;;) {
        const stop = this.o.signal?.aborted ? 'worker stopped' : progress.lost;
        if (stop) {
          await gen.return(undefined as never);
          throw new LeaseLost(stop);
        }
        const next = await gen.next();
        if (next.done) {
          result = next.value;
          break;
        }
        const e = next.value;
        if (e.kind !== 'step') continue;
        progress.done++;
        progress.loss = e.loss;
        lossSum += e.loss;
        if (progress.done > 1) ipsSum += e.imagesPerSecond;
        this.o.onProgress?.({ runId: job.runId, shard: a.shard.id, step: progress.done, steps, loss: e.loss, imagesPerSecond: e.imagesPerSecond });
        await new Promise((r) => setTimeout(r, 0)); // let heartbeats and aborts in between steps
      }
      const done = progress.done;
      await upload(a.uploadUrl, serializeState(result));
      const ips = done > 1 ? ipsSum / (done - 1) : 0;
      await this.client.request(COMPLETE, { w: this.id, s: a.shard.id, a: job.attempt, l: lossSum / done, ips });
      this.shardsDone++;
      this.samples += result.label.samples ?? 0;
      this.log(`${label}: done, loss ${(lossSum / done).toFixed(4)}, ${ips.toFixed(1)} img/s`);
    } catch (e) {
      if (e instanceof LeaseLost) {
        this.log(`${label}: dropped (${e.message})`);
        return;
      }
      const message = (e as Error).message;
      this.log(`${label}: failed: ${message}`);
      if (e instanceof GraphQLRequestError) return; // the server refused the result; it has re-issued the shard
      await this.client.request(FAIL, { w: this.id, s: a.shard.id, a: job.attempt, m: message }).catch(() => undefined);
    } finally {
      clearInterval(beat);
    }
  }
}
