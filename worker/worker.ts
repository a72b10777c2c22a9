// A Partune worker: registers, claims shards, trains them with the engine, uploads the update by
// presigned URL and completes. Platform-neutral (fetch, crypto.subtle): the Node CLI and the
// browser page both run it, each after choosing its TensorFlow.js backend. It speaks the shard
// protocol of protocol/ with the typed documents generated from the schema.
import {
  Checkpoint, Dataset, Strategy, VitConfig, concatDatasets, inspect, loadCheckpoint, parseState, parseVitConfig, runShard, selectData, serializeState, tunedShapes, unpackDataset,
} from '../engine';
import { BackendChoiceInput, ClaimShard, CompleteShard, FailShard, Heartbeat, RegisterWorker, RenewCredential } from '../protocol/operations';
import { Assignment, Download, decodeShardJob } from '../protocol/shard-job';
import { GraphQLClient, GraphQLRequestError, GraphQLTransport, sleep } from './client';
import { BlobCache, fetchVerified, upload } from './downloads';

export interface WorkerOptions {
  readonly server: string;
  /** The worker or volunteer token that registers it (asked for only when it registers). */
  readonly token: string | (() => Promise<string>);
  readonly name: string;
  readonly kind: 'node' | 'browser';
  readonly backend: string;
  /** Declared with every claim: results of one class must be bit-identical (engine/kernel-class.ts). */
  readonly kernelClass: string;
  readonly log?: (line: string) => void;
  /** Progress within the current shard, for a UI. */
  readonly onProgress?: (p: { runId: string; shard: string; step: number; steps: number; loss: number; imagesPerSecond: number }) => void;
  readonly signal?: AbortSignal;
  readonly pollMs?: number;
  /** Stop after this many shards (0: never). */
  readonly maxShards?: number;
  /** Take only shards whose model and data fit in this many bytes (a browser tab's budget). */
  readonly memoryBudget?: number;
  /**
   * Called with each shard's model after it trained: may switch the backend for the next shard of
   * that model (a tab measures each on the model); returns the kernel class the next claim
   * declares. The class is declared with the claim, so a shard trains on the backend it was
   * claimed with. Default: `kernelClass` throughout.
   */
  readonly prepare?: (model: { config: VitConfig; strategy: Strategy; batchSize: number }) => Promise<{ kernelClass: string }>;
  /** How the backend was chosen, sent with every claim (shown in the worker's row of the API). */
  readonly backendChoice?: () => BackendChoiceInput | null;
  /** Opens a connection that presents `token`; default: GraphQL over HTTP to `server`. */
  readonly connect?: (token: string) => Closable;
  /** A credential kept from an earlier session (a tab's, across reloads): this worker again while the server takes it, else a new one. */
  readonly credential?: string;
  /** Each credential this worker gets (registered or renewed), for keeping. */
  readonly onCredential?: (credential: string) => void;
  /** Waiting for a shard, or training one (with what it trains, in words a volunteer can read). */
  readonly onActivity?: (a: { readonly training: false } | { readonly training: true; readonly shard: ShardInWords }) => void;
}

/** A shard as a volunteer's page describes it. */
export interface ShardInWords {
  readonly runId: string;
  readonly round: number;
  readonly index: number;
  readonly strategy: string;
  readonly model: string;
  readonly downloadedBytes: number;
}

type Closable = GraphQLTransport & { dispose?(): Promise<void> };

class LeaseLost extends Error {}

/** How long a claim waits on the server for work before it answers null. */
const CLAIM_WAIT_SECONDS = 20;

export class PartuneWorker {
  /** Speaks as this worker once registered: its credential is the bearer token. */
  private client!: Closable;
  private readonly checkpoints = new BlobCache<Checkpoint>(2);
  private readonly datasets = new BlobCache<Dataset>(4);
  private readonly log: (line: string) => void;
  id = '';
  /** When the credential is past half its life (ms since the epoch). */
  private renewAt = Infinity;
  /** When the current credential expires (ms since the epoch; NaN: it does not say). */
  private expiresAt = NaN;
  shardsDone = 0;
  samples = 0;
  /** What the next claim declares. */
  private kernelClass: string;

  constructor(private readonly o: WorkerOptions) {
    this.log = o.log ?? (() => undefined);
    this.kernelClass = o.kernelClass;
  }

  private open(token: string): Closable {
    return this.o.connect ? this.o.connect(token) : new GraphQLClient(this.o.server, token, { log: this.log, signal: this.o.signal });
  }

  async run(): Promise<void> {
    this.use((await this.resumed()) ?? (await this.register()));
    // A stop answers a claim waiting on the server at once (over a socket, by closing it).
    this.o.signal?.addEventListener('abort', () => void this.client.dispose?.(), { once: true });
    try {
      await this.work();
    } finally {
      await this.client.dispose?.();
    }
  }

  private async register(): Promise<string> {
    const joining = this.open(typeof this.o.token === 'string' ? this.o.token : await this.o.token());
    const { registerWorker } = await joining.request(RegisterWorker, { name: this.o.name, kind: this.o.kind, backend: this.o.backend })
      .finally(() => joining.dispose?.());
    this.id = registerWorker.worker.id;
    this.log(`worker ${this.id} registered (${this.o.backend})`);
    return registerWorker.credential;
  }

  /** The kept credential, renewed (which checks it); undefined where there is none or the server no longer takes it. */
  private async resumed(): Promise<string | undefined> {
    const kept = this.o.credential;
    if (!kept || expiryOf(kept) < Date.now() + 60_000) return undefined;
    const probe = this.open(kept);
    try {
      const { renewCredential } = await probe.request(RenewCredential, {});
      this.id = idOf(renewCredential);
      this.log(`worker ${this.id} again (its credential was kept)`);
      return renewCredential;
    } catch (e) {
      // A quarantined worker stays itself: a new identity is not taken behind its visitor's back.
      if (this.o.signal?.aborted || (e instanceof GraphQLRequestError && e.code === 'FORBIDDEN')) throw e;
      this.log(`the kept credential was refused (${(e as Error).message}); registering anew`);
      return undefined;
    } finally {
      await probe.dispose?.();
    }
  }

  /** A claim's wait on the server: CLAIM_WAIT_SECONDS, or less where the credential ends sooner (it must outlive the lease's first heartbeat). */
  private claimWait(): number {
    const left = Number.isFinite(this.expiresAt) ? Math.floor((this.expiresAt - Date.now()) / 1000) - 5 : CLAIM_WAIT_SECONDS;
    return Math.max(0, Math.min(CLAIM_WAIT_SECONDS, left));
  }

  private use(credential: string): void {
    this.client = this.open(credential);
    this.renewAt = renewalTime(credential);
    this.expiresAt = expiryOf(credential);
    this.o.onCredential?.(credential);
  }

  /** Once half its life is gone (between shards, or on a heartbeat): a new credential, and a connection that carries it. */
  private renewIfDue(): Promise<void> {
    this.renewing ??= this.renew().finally(() => (this.renewing = undefined));
    return this.renewing;
  }

  private renewing: Promise<void> | undefined;

  private async renew(): Promise<void> {
    if (Date.now() < this.renewAt) return;
    const { renewCredential } = await this.client.request(RenewCredential, {});
    const old = this.client;
    this.use(renewCredential);
    // Requests already sent on the old connection (a completion) finish on it; it closes after.
    const later = setTimeout(() => void old.dispose?.(), 30_000) as { unref?: () => void };
    later.unref?.();
    this.log(`worker ${this.id}: credential renewed`);
  }

  private async work(): Promise<void> {
    let idle = 0;
    while (!this.o.signal?.aborted && !(this.o.maxShards && this.shardsDone >= this.o.maxShards)) {
      await this.renewIfDue();
      this.o.onActivity?.({ training: false }); // a claim waits on the server for work: idle until one comes
      let claimed;
      try {
        ({ claimShard: claimed } = await this.client.request(ClaimShard, {
          kernelClass: this.kernelClass, memoryBudget: this.o.memoryBudget ?? null, wait: this.claimWait(), backend: this.o.backendChoice?.() ?? null,
        }));
      } catch (e) {
        if (this.o.signal?.aborted) return; // stopped while the claim waited
        throw e;
      }
      if (!claimed) {
        await sleep(Math.min(this.o.pollMs ?? 1000, 250 * 2 ** Math.min(idle++, 3)), this.o.signal);
        continue;
      }
      idle = 0;
      let job;
      try {
        job = decodeShardJob(claimed.job);
      } catch (e) {
        this.log(`shard ${claimed.shard.round}.${claimed.shard.index}: ${(e as Error).message}; giving it back`);
        await this.client.request(FailShard, { shardId: claimed.shard.id, attempt: claimed.shard.attempt, message: (e as Error).message }).catch(() => undefined);
        continue;
      }
      await this.execute({ ...claimed, job }, this.kernelClass);
    }
  }

  /**
   * What the shard trains on: its window's pack when the server sent one (cached by hash: replicas
   * and re-issues of a window share it), else the run's selection of the whole training split.
   */
  private async trainingData(a: Assignment, fetch: (d: Download, what: string) => Promise<Uint8Array>): Promise<{ train: Dataset; packed?: { trainImages: number } }> {
    if (a.records) {
      const records = a.records;
      const train = await this.datasets.get(records.sha256, async () => unpackDataset(await fetch(records, "the window's records"), "the window's records"));
      return { train, packed: { trainImages: a.job.trainImages } };
    }
    const full = await this.datasets.get(a.train.map((d) => d.sha256).join('+'), async () => {
      const parts = await Promise.all(a.train.map(async (d, i) => unpackDataset(await fetch(d, `training shard ${i}`), `training shard ${i}`)));
      return parts.reduce(concatDatasets);
    });
    return { train: selectData({ train: full, test: full }, a.job.options).train };
  }

  private async execute(a: Assignment, kernelClass: string): Promise<void> {
    const { job } = a;
    const label = `shard ${a.shard.round}.${a.shard.index} of run ${job.runId.slice(0, 8)} (steps ${job.window.from}-${job.window.to})`;
    this.log(`${label}: claimed`);
    // Heartbeats on a timer, so downloads count as alive too; training yields between steps.
    const progress = { done: 0, loss: NaN, lost: undefined as string | undefined };
    let model: { config: VitConfig; strategy: Strategy; batchSize: number } | undefined;
    const beat = setInterval(() => {
      // A shard may outlast half its credential's life (a slow machine, a long shard): renewed here too.
      if (Date.now() >= this.renewAt) void this.renewIfDue().catch((e: Error) => this.log(`credential renewal failed: ${e.message}`));
      this.client.request(Heartbeat, {
        shardId: a.shard.id, attempt: job.attempt, stepsDone: progress.done, loss: Number.isFinite(progress.loss) ? progress.loss : null,
      }).then(({ heartbeat }) => {
        if (heartbeat.cancelled) progress.lost = heartbeat.reason ?? 'cancelled';
      }, (e: Error) => this.log(`heartbeat failed: ${e.message}`));
    }, job.heartbeatSeconds * 1000);
    try {
      let downloaded = 0;
      const fetchCounted = async (d: Download, what: string): Promise<Uint8Array> => {
        const bytes = await fetchVerified(d, what, this.log);
        downloaded += bytes.length;
        return bytes;
      };
      const base = await this.checkpoints.get(a.model.sha256, async () => loadCheckpoint(await fetchCounted(a.model, 'the model'), { source: 'model' }));
      const data = await this.trainingData(a, fetchCounted);
      const config = parseVitConfig({ ...base.config, numClasses: job.numClasses });
      const shapes = tunedShapes(config, inspect(job.strategy, config).tuned);
      model = { config, strategy: job.strategy, batchSize: job.options.batchSize };
      const words = { strategy: strategyInWords(job.strategy), model: modelInWords(config), downloadedBytes: downloaded };
      this.o.onActivity?.({ training: true, shard: { runId: job.runId, round: job.round, index: a.shard.index, ...words } });
      const start = parseState(await fetchCounted(a.state, 'the round state'), shapes, 'round state');
      const steps = job.window.to - job.window.from;
      const gen = runShard({
        base, numClasses: job.numClasses, strategy: job.strategy, ...data, normalization: job.normalization, options: job.options,
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
      await upload(a.uploadUrl, serializeState(result), this.log);
      const ips = done > 1 ? ipsSum / (done - 1) : 0;
      await this.client.request(CompleteShard, {
        shardId: a.shard.id, attempt: job.attempt, loss: lossSum / done, imagesPerSecond: ips, kernelClass, downloadedBytes: downloaded,
      });
      this.shardsDone++;
      this.samples += result.label.samples ?? 0;
      this.log(`${label}: done, loss ${(lossSum / done).toFixed(4)}, ${ips.toFixed(1)} img/s, downloaded ${(downloaded / 1024).toFixed(1)} KiB`);
    } catch (e) {
      if (e instanceof LeaseLost) {
        this.log(`${label}: dropped (${e.message})`);
        return;
      }
      const message = (e as Error).message;
      this.log(`${label}: failed: ${message}`);
      if (e instanceof GraphQLRequestError) return; // the server refused the result; it has re-issued the shard
      await this.client.request(FailShard, { shardId: a.shard.id, attempt: job.attempt, message }).catch(() => undefined);
    } finally {
      clearInterval(beat);
    }
    // The backend for the next shard of this model, chosen now that this one is in.
    if (model && this.o.prepare) {
      this.kernelClass = (await this.o.prepare(model).catch((e: Error) => {
        this.log(`backend choice failed: ${e.message}; keeping ${this.kernelClass}`);
        return { kernelClass: this.kernelClass };
      })).kernelClass;
    }
  }
}

/** When a credential (`wkc_<id>.<kid>.<expiry, base 36 seconds>.<mac>`) expires, in ms since the epoch; NaN if it says nothing. */
const expiryOf = (credential: string): number => parseInt(credential.split('.')[2] ?? '', 36) * 1000;
const idOf = (credential: string): string => credential.split('.')[0].replace(/^wkc_/, '');

/**
 * Halfway from now to the expiry a credential carries, and never later than a claim's wait (and a
 * margin) before it: a claim that waits on the server must not outlive the credential it carries.
 */
function renewalTime(credential: string): number {
  const expires = expiryOf(credential);
  return Number.isFinite(expires) ? Math.min((Date.now() + expires) / 2, expires - (CLAIM_WAIT_SECONDS + 10) * 1000) : Infinity;
}

const STRATEGY_WORDS: Record<string, string> = {
  full: 'every layer', 'linear-probe': 'the classifier head', 'attn-only': 'the attention layers', 'ffn-only': 'the feed-forward layers',
  'first-half': 'the first half of the blocks', 'last-half': 'the last half of the blocks',
};

/** What a shard tunes, as a volunteer reads it. */
function strategyInWords(s: Strategy): string {
  return STRATEGY_WORDS[s.name] ? `${STRATEGY_WORDS[s.name]} (${s.name})` : `the layers of strategy ${s.name}`;
}

/** A model as a volunteer reads it (not its shape key). */
function modelInWords(c: VitConfig): string {
  const colour = c.channels === 1 ? 'greyscale' : 'colour';
  return `a Vision Transformer of ${c.depth} blocks, ${c.dim} wide, on ${c.imageSize}x${c.imageSize} ${colour} images, ${c.numClasses} classes`;
}
