// The state store: one repository per aggregate, typed records in and out, every conditional
// transition one operation (atomic in the implementation: a transaction or a guarded UPDATE).
// Services never see SQL: the SQLite store (sqlite/) serves one process, the PostgreSQL store
// (postgres/) any number of server replicas, which divide the runs through its coordination.
import type { Normalization } from '../../engine';
import type {
  AngleProfileRecord, BackendChoice, BlobRef, DatasetRecord, DeltaRecord, FailureBudget, MetricPoint, ModelRecord, NewShard, Page, Plan, RollbackRecord, RunKind,
  RunRecord, RunStatus, ShardRecord, SoupReport, StoredStrategy, UploadRecord, WorkerRecord,
} from './records';

export interface StateStore {
  readonly models: ModelRepository;
  readonly datasets: DatasetRepository;
  readonly uploads: UploadRepository;
  readonly runs: RunRepository;
  readonly shards: ShardRepository;
  readonly workers: WorkerRepository;
  readonly results: ResultRepository;
  readonly coordination: Coordination;
  /** Counts a client's admissions per minute, across every replica of the store. */
  readonly admissions: AdmissionCounter;
  /** Whether an error the store threw is passing (a lost connection, a busy database): the same operation may simply be tried again. */
  transient(e: unknown): boolean;
  close(): Promise<void>;
}

/**
 * How the servers sharing the store divide the work: each run is driven by one of them at a time
 * (the one holding its lock: a lease that a server which dies, or freezes, gives up), events
 * reach the subscribers of every server, and judgements that must not overlap take turns. For
 * SQLite the one process is all of them.
 */
export interface Coordination {
  /** Starts listening to the other servers; `lost` when this one stops driving runs it drove. */
  start(on: CoordinationHandlers): Promise<void>;
  /** Takes the run's lock unless another server holds it; true while this server drives the run. */
  drive(runId: string): Promise<boolean>;
  /** Whether this server drives the run (without asking the database). */
  drives(runId: string): boolean;
  /** Runs this server drives. */
  driven(): string[];
  /** Gives up driving a run (it ended). */
  letGo(runId: string): Promise<void>;
  /** Delivers a message to every server's `message` handler, this one's included, in the order sent. */
  broadcast(message: string): Promise<void>;
  /** Asks the server driving the run to move it on (its `nudge` handler). */
  nudge(runId: string): Promise<void>;
  /** Runs `work` while no other call with the same key runs, on this server or another. */
  exclusive<T>(key: string, work: () => Promise<T>): Promise<T>;
}

export interface CoordinationHandlers {
  message(message: string): void;
  nudge(runId: string): void;
  /** This server stopped driving some or all of its runs (its connection ended, or a lock lapsed); it reconnects by itself. */
  lost(why: string): void;
  /** The connection is back after a loss; the runs are taken up again by the next adoption. */
  back?(): void;
  /** This server took a run over from another whose lock lapsed or whose connection ended. */
  tookOver?(runId: string, why: string): void;
}

/**
 * A driver's write refused because this server's lock on the run lapsed or another server took
 * the run over: the write changed nothing, and this server must stop driving the run.
 */
export class LostRunLock extends Error {}

export interface AdmissionCounter {
  /** Counts one more admission of `key` this minute; false once it has had `perMinute`. */
  take(key: string, perMinute: number, now: Date): Promise<boolean>;
}

/** Things with unique names (models, datasets). */
export interface NamedRepository<T> {
  /** False when the name is taken. */
  insert(record: T): Promise<boolean>;
  byIdOrName(idOrName: string): Promise<T | undefined>;
  /** Newest first, optionally those whose name contains `search`. */
  list(search: string | undefined, first: number, offset: number): Promise<Page<T>>;
}

export type ModelRepository = NamedRepository<ModelRecord>;
export type DatasetRepository = NamedRepository<DatasetRecord>;

export interface UploadRepository {
  insert(upload: UploadRecord): Promise<void>;
  get(id: string): Promise<UploadRecord | undefined>;
  remove(id: string): Promise<void>;
  /** Marks it used if it was not: true for the one caller that got it (an upload is used once). */
  take(id: string, at: Date): Promise<boolean>;
  /** How many uploads an owner has not used yet, and their declared bytes. */
  pending(owner: string): Promise<{ count: number; bytes: number }>;
  /** Unused uploads created before `unusedBefore`, and used ones used before `usedBefore`: what may go. */
  stale(unusedBefore: Date, usedBefore: Date): Promise<UploadRecord[]>;
}

export interface RunFilter {
  /** Only public runs. */
  readonly publicOnly?: boolean;
  readonly status?: RunStatus;
  /** Only running runs that wait (true) or move (false). */
  readonly waiting?: boolean;
  readonly kind?: RunKind;
  readonly modelId?: string;
  readonly datasetId?: string;
}

/** What a run records when its first round is configured. */
export interface RunStart {
  readonly plan: Plan;
  readonly state: BlobRef;
  readonly normalization: Normalization;
}

/** A round's outcome: the next state, the step reached, its metric point; `finishing` after the last. */
export interface RoundOutcome {
  readonly state: BlobRef;
  readonly step: number;
  readonly metric: MetricPoint;
  readonly finishing: boolean;
}

/** What a run records when it succeeds, with its delta and, for a probe, its profile and strategy. */
export interface RunSuccess {
  readonly accuracy: number;
  readonly loss: number | null;
  readonly tunedParams: number;
  readonly report?: SoupReport;
  readonly delta: DeltaRecord;
  readonly profile?: { readonly record: AngleProfileRecord; readonly strategy: StoredStrategy };
}

export interface RunRepository {
  insert(run: RunRecord): Promise<void>;
  get(id: string): Promise<RunRecord | undefined>;
  /** Newest first. */
  list(filter: RunFilter, first: number, offset: number): Promise<Page<RunRecord>>;
  /** Ids of runs that are PREPARING, RUNNING or FINALIZING. */
  unfinished(): Promise<string[]>;
  /** PREPARING -> RUNNING at round 0 with its shards; false when the run is no longer PREPARING (cancelled). */
  start(id: string, start: RunStart, shards: readonly NewShard[]): Promise<boolean>;
  /** PREPARING -> FINALIZING for kinds without rounds; false when no longer PREPARING. */
  skipRounds(id: string): Promise<boolean>;
  /** RUNNING at `round` -> the next round (its shards created) or FINALIZING; false when the run moved on or stopped. */
  completeRound(id: string, round: number, outcome: RoundOutcome, nextShards: readonly NewShard[]): Promise<boolean>;
  /** FINALIZING -> SUCCEEDED with everything it records; false when no longer FINALIZING (cancelled). */
  succeed(id: string, success: RunSuccess): Promise<boolean>;
  /** An active run -> CANCELLED or FAILED, its pending and leased shards cancelled; false when it had already ended. */
  stop(id: string, status: 'CANCELLED' | 'FAILED', error?: string): Promise<boolean>;
  setPublic(id: string, value: boolean): Promise<void>;
  /** Records why a running run cannot move on (null: it moves); false when unchanged or no longer running. */
  setWaiting(id: string, waiting: string | null): Promise<boolean>;
  /**
   * A RUNNING or FINALIZING run at or past `to.round` -> RUNNING at `to.round` from that round's state:
   * later rounds' open replicas cancelled and their results voided, their metric points and states
   * dropped, the rollback recorded; false when the run is elsewhere.
   */
  rollback(id: string, to: { readonly round: number; readonly step: number; readonly state: BlobRef }, record: RollbackRecord): Promise<boolean>;
}

/** How a shard went back to the queue (or not). */
export type Release = 'requeued' | 'exhausted' | 'lost';

/** A checked result, as a replica records it. */
export interface ShardResult {
  readonly update: BlobRef;
  /** Over its tensors, moments, step and reported loss: replicas that computed the same thing have the same digest. */
  readonly digest: string;
  readonly kernelClass: string;
  readonly loss: number;
  readonly imagesPerSecond: number;
  readonly samples: number;
  readonly downloadedBytes: number | null;
}

/** The verdicts on an index's results, applied at once. */
export interface Settlement {
  readonly runId: string;
  readonly round: number;
  readonly index: number;
  /** The result the round uses, with the independent groups behind it and how many it needed; absent for late results. */
  readonly accept?: { readonly id: string; readonly votes: number; readonly required: number };
  /** Results bit-identical to the accepted one. */
  readonly agreed: readonly string[];
  /** Results of another kernel class within the tolerance. */
  readonly close: readonly string[];
  /** Agreements that count toward their workers' trust on that kernel class. */
  readonly credit: readonly { readonly workerId: string; readonly kernelClass: string }[];
  /** Results that lost, with why: a disagreement and a strike against their workers. */
  readonly outvoted: readonly { readonly id: string; readonly reason: string }[];
}

/** Who asks for a lease, as the lease query needs it. */
export interface LeaseCandidate {
  readonly id: string;
  readonly registered: boolean;
  readonly party: string;
  readonly origin: string;
  /** The kernel class it declares its result will be computed on. */
  readonly kernelClass: string;
}

/** A replica to add to an index: what its result will need, and who may take it. */
export interface ReplicaSpec {
  readonly need: number;
  readonly needClass: string | null;
  readonly registeredOnly: boolean;
}

export interface IndexKey {
  readonly runId: string;
  readonly round: number;
  readonly index: number;
}

export interface ShardRepository {
  get(id: string): Promise<ShardRecord | undefined>;
  ofRun(runId: string, round?: number): Promise<ShardRecord[]>;
  /** The replicas of one index, in the order they were issued. */
  ofIndex(runId: string, round: number, index: number): Promise<ShardRecord[]>;
  /** Steps the round's shards have done (finished shards count whole; an index counts its furthest replica). */
  stepsDone(runId: string, round: number): Promise<number>;
  /**
   * Leases the oldest pending replica of a running run's current round whose run fits
   * `memoryBudget` (bytes; undefined: any) to the worker, as one more attempt. A registered worker
   * may take any replica but a second of an index it holds; an untrusted one only a replica open to
   * untrusted workers of its kernel class, never one it failed, and none of an index where a worker
   * of its group (prefix or token) has a result or a lease.
   */
  leaseOldest(worker: LeaseCandidate, memoryBudget: number | undefined, leaseUntil: Date, now: Date): Promise<ShardRecord | undefined>;
  /** Seconds per step (lease to completion) of the run's results not outvoted, latest first, at most 64; and of those the worker computed. */
  paces(runId: string, workerId: string): Promise<{ readonly run: number[]; readonly worker: number[] }>;
  /** Sets the time by which the lease ends whatever its heartbeats. */
  setDeadline(id: string, workerId: string, attempt: number, deadline: Date): Promise<void>;
  /**
   * Extends a lease still held by `workerId` at `attempt` (never past its deadline), noting progress
   * when `stepsDone` grew; false when it is not held.
   */
  renew(id: string, workerId: string, attempt: number, stepsDone: number, leaseUntil: Date, now: Date): Promise<boolean>;
  /** The worker completed its lease: the lease clock stops while the server checks the update; false when it is not held. */
  submit(id: string, workerId: string, attempt: number, now: Date): Promise<boolean>;
  /** LEASED by `workerId` at `attempt` -> DONE with its result, the worker credited; false when the lease is gone. */
  complete(id: string, workerId: string, attempt: number, result: ShardResult): Promise<boolean>;
  /** Another replica of `of`'s index; undefined when the index is settled or its round is not the run's current one. */
  addReplica(of: ShardRecord, spec: ReplicaSpec): Promise<ShardRecord | undefined>;
  /** Opens a pending replica reserved for one kernel class to every class (its wait begins again). */
  relax(id: string): Promise<boolean>;
  /** Sets how many agreeing results the held replica's result will need (decided at its lease). */
  setNeed(id: string, workerId: string, attempt: number, need: number): Promise<void>;
  /**
   * Applies verdicts; once the index has an accepted result its open replicas are cancelled.
   * False when the result to accept is no longer a candidate (judged already).
   */
  settle(settlement: Settlement, budget: FailureBudget): Promise<boolean>;
  /**
   * Withdraws an accepted index's support: `voided` results lose their vote, `candidates` go back
   * to waiting for a verdict (already credited); the index has no accepted result after. False when
   * its run is not RUNNING or FINALIZING.
   */
  unsettle(key: IndexKey, voided: readonly string[], candidates: readonly string[]): Promise<boolean>;
  /** The current round's indices, of the runs given, with a replica pending or leased since before `before`, or a result unjudged since then and no replica pending. */
  stalled(runIds: readonly string[], before: Date): Promise<IndexKey[]>;
  /** Results of these workers that were accepted or agreed with an accepted one, in any run. */
  supported(workerIds: readonly string[]): Promise<ShardRecord[]>;
  /**
   * A lease held by `workerId` at `attempt` ends without a result (rejected, given back): the
   * worker takes a strike (quarantined past the budget), the shard is pending again, or cancelled
   * once registered workers' failures exhaust the budget.
   */
  release(id: string, workerId: string, attempt: number, reason: string, budget: FailureBudget): Promise<Release>;
  /**
   * Leases past their time or deadline, or without progress since `stalledBefore`, end the same way;
   * a completed lease whose check began before `submittedBefore` too (the server died checking it).
   * Returns the shards released and how.
   */
  expire(now: Date, stalledBefore: Date, submittedBefore: Date, budget: FailureBudget): Promise<{ readonly shard: ShardRecord; readonly release: Exclude<Release, 'lost'> }[]>;
  /** A DONE shard of a running round whose stored result is unusable -> PENDING again (the replicas that agreed with it judged anew). */
  reopen(id: string, reason: string): Promise<boolean>;
}

export interface WorkerRepository {
  insert(worker: WorkerRecord): Promise<void>;
  get(id: string): Promise<WorkerRecord | undefined>;
  /** Registered workers (not demoted, not quarantined) seen after `since`, other than `except`. */
  registeredSince(since: Date, except: readonly string[]): Promise<number>;
  /** Untrusted workers seen after `since`, not quarantined: the groups results are counted against. */
  untrustedSince(since: Date): Promise<{ readonly party: string; readonly origin: string }[]>;
  /** The worker, marked seen now. */
  touch(id: string, now: Date): Promise<WorkerRecord | undefined>;
  /** Newest first, seen after `since` (undefined: all). */
  list(since: Date | undefined, first: number, offset: number): Promise<Page<WorkerRecord>>;
  countSeenSince(since: Date): Promise<number>;
  /** Quarantines a worker now (an admin's ban), if it was not already; the worker, or undefined. */
  quarantine(id: string, at: Date): Promise<WorkerRecord | undefined>;
  /** Workers seen since `since` that have earned a place in a plan: registered ones, and untrusted ones with a shard done (by group). */
  provenSince(since: Date): Promise<{ readonly registered: number; readonly untrusted: { readonly party: string; readonly origin: string }[] }>;
  /** Records how the worker chose its backend (and that backend). */
  setBackendChoice(id: string, choice: BackendChoice): Promise<void>;
  /** Records the kernel class the worker declared with a claim. */
  setKernelClass(id: string, kernelClass: string): Promise<void>;
}

/** What finished runs leave: deltas, stored strategies, angle profiles. */
export interface ResultRepository {
  deltaOfRun(runId: string): Promise<DeltaRecord | undefined>;
  /** By delta id or run id. */
  delta(id: string): Promise<DeltaRecord | undefined>;
  setMergedModel(deltaId: string, modelId: string): Promise<void>;
  strategy(name: string): Promise<StoredStrategy | undefined>;
  /** Newest first; of one model when given. */
  strategies(modelId?: string): Promise<StoredStrategy[]>;
  /** False when the name is taken. */
  insertStrategy(strategy: StoredStrategy): Promise<boolean>;
  profiles(filter: { readonly modelId?: string; readonly datasetId?: string }): Promise<AngleProfileRecord[]>;
  /** By profile id or probe run id. */
  profile(id: string): Promise<AngleProfileRecord | undefined>;
}
