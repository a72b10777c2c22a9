// A simulated worker for the fleet bench: the real shard protocol (register, claim, heartbeats,
// the round state by presigned URL, the update PUT to its slot, complete) over HTTP or over one
// graphql-ws socket as browser tabs speak it, with a synthetic compute time in place of training.
// Its update is one AdamW could reach from the round's state: the parameters unmoved and the
// moments decayed as zero gradients decay them; the server checks it like any other.
import WebSocket from 'ws';
import { ADAMW_DEFAULTS, HostWeights, TrainingState, parseState, serializeState, tunedShapes } from '../engine';
import { ClaimShard, CompleteShard, Heartbeat, RegisterWorker } from '../protocol/operations';
import { decodeShardJob, expectedUpdateLabel } from '../protocol/shard-job';
import { GraphQLClient, GraphQLTransport, sleep } from '../worker/client';
import { fetchVerified, upload } from '../worker/downloads';
import { WsGraphQLClient } from '../worker/ws-client';

/** What every simulated worker of one bench records, in ms since the bench's start where a time. */
export interface FleetRecord {
  /**
   * Claims answered with a shard: from when the worker asked, or when the shard's round opened if
   * later (a waiting claim's time without work is not latency). First issues of a round's shards
   * only: a re-issued shard opens when a lease lapses, which no worker sees.
   */
  readonly claimMs: number[];
  /** Claims answered null, and how long each took (a polling claim answers at once, a waiting one at the end of its wait). */
  readonly emptyClaimMs: number[];
  readonly completeMs: number[];
  /** Completions the server acknowledged: which shard, by whom, when. */
  readonly acked: { shard: string; round: number; index: number; worker: string; sent: number; at: number }[];
  readonly errors: string[];
}

export interface SimWorkerOptions {
  readonly server: string;
  readonly token: string;
  readonly name: string;
  readonly transport: 'http' | 'ws';
  readonly shapes: ReturnType<typeof tunedShapes>;
  readonly computeMs: number;
  /** Seconds a claim may wait on the server for work (0: poll, as clients without waiting claims do). */
  readonly waitSeconds: number;
  /** When each round's shards opened (its round event), in ms since the bench's start. */
  readonly roundOpened: ReadonlyMap<number, number>;
  readonly record: FleetRecord;
  readonly epoch: number;
  /** Round states by SHA-256, parsed once for the whole fleet (each worker still downloads its own). */
  readonly states: Map<string, Promise<TrainingState>>;
}

/** A real worker's idle backoff: 250 ms doubling to 1 s. */
const IDLE_MS = [250, 500, 1000];

export class SimWorker {
  private readonly controller = new AbortController();
  private client: (GraphQLTransport & { dispose?(): Promise<void> }) | undefined;
  id = '';

  constructor(private readonly o: SimWorkerOptions) {}

  /** Leaves without notice: whatever it holds is left to lapse. */
  leave(): void {
    this.controller.abort();
    void this.client?.dispose?.();
  }

  async run(): Promise<void> {
    const signal = this.controller.signal;
    const joining = new GraphQLClient(this.o.server, this.o.token, { signal });
    const { registerWorker } = await joining.request(RegisterWorker, { name: this.o.name, kind: 'node', backend: 'simulated' });
    this.id = registerWorker.worker.id;
    this.client = this.o.transport === 'ws'
      ? new WsGraphQLClient(this.o.server.replace(/^http/, 'ws'), registerWorker.credential, undefined, WebSocket)
      : new GraphQLClient(this.o.server, registerWorker.credential, { signal });
    for (let idle = 0; !signal.aborted;) {
      try {
        if (await this.shard()) idle = 0;
        else await sleep(IDLE_MS[Math.min(idle++, IDLE_MS.length - 1)], signal);
      } catch (e) {
        if (!signal.aborted) this.o.record.errors.push((e as Error).message);
        await sleep(1000, signal);
      }
    }
  }

  /** Claims and does one shard; false when there was none. */
  private async shard(): Promise<boolean> {
    const client = this.client!;
    const t0 = performance.now();
    const { claimShard: claimed } = await client.request(ClaimShard, { kernelClass: 'simulated', memoryBudget: null, wait: this.o.waitSeconds });
    const answered = performance.now();
    if (!claimed) {
      this.o.record.emptyClaimMs.push(answered - t0);
      return false;
    }
    if (claimed.shard.attempt === 1 && claimed.shard.replica === 0) {
      const opened = this.o.roundOpened.get(claimed.shard.round);
      if (opened !== undefined || claimed.shard.round === 0) this.o.record.claimMs.push(answered - Math.max(t0, (opened ?? 0) + this.o.epoch));
    }
    const job = decodeShardJob(claimed.job);
    const steps = job.window.to - job.window.from;
    const started = performance.now();
    const beat = setInterval(() => {
      const done = Math.min(steps, Math.floor((steps * (performance.now() - started)) / this.o.computeMs));
      void client.request(Heartbeat, { shardId: claimed.shard.id, attempt: job.attempt, stepsDone: done, loss: null }).catch(() => undefined);
    }, job.heartbeatSeconds * 1000);
    try {
      const bytes = await fetchVerified(claimed.state, 'the round state');
      let start = this.o.states.get(claimed.state.sha256);
      if (!start) this.o.states.set(claimed.state.sha256, (start = Promise.resolve(parseState(bytes, this.o.shapes, 'round state'))));
      const update = unmoved(await start, steps, expectedUpdateLabel(job));
      await sleep(this.o.computeMs, this.controller.signal);
      if (this.controller.signal.aborted) return true;
      await upload(claimed.uploadUrl, serializeState(update));
      const t1 = performance.now();
      await client.request(CompleteShard, { shardId: claimed.shard.id, attempt: job.attempt, loss: 1, imagesPerSecond: 100, kernelClass: 'simulated' });
      const now = performance.now();
      this.o.record.completeMs.push(now - t1);
      this.o.record.acked.push({ shard: claimed.shard.id, round: claimed.shard.round, index: claimed.shard.index, worker: this.id, sent: t1 - this.o.epoch, at: now - this.o.epoch });
      return true;
    } finally {
      clearInterval(beat);
    }
  }
}

/** `steps` AdamW steps of zero gradients without the parameter move: within any step's reach. */
function unmoved(start: TrainingState, steps: number, label: TrainingState['label']): TrainingState {
  const { beta1, beta2 } = ADAMW_DEFAULTS;
  const scaled = (w: HostWeights, by: number): HostWeights => new Map([...w].map(([k, t]) => [k, { ...t, data: t.data.map((x) => x * by) }]));
  return {
    label, params: start.params,
    optimizer: { step: start.optimizer.step + steps, expAvg: scaled(start.optimizer.expAvg, beta1 ** steps), expAvgSq: scaled(start.optimizer.expAvgSq, beta2 ** steps) },
  };
}
