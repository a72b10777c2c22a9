// The platform's state as typed records: what the repositories take and return, decoded and
// validated once when read. Blobs live in object storage; records only name them.
import type { LayerAngle, Normalization, Strategy, VitConfig } from '../../engine';
import type { RunOptions } from '../../protocol/run-options';
import { keys } from '../../storage/keys';

export interface BlobRef {
  readonly key: string;
  readonly sha256: string;
}

export interface StoredBlob extends BlobRef {
  readonly bytes: number;
}

export interface Page<T> {
  readonly items: T[];
  readonly total: number;
  readonly hasMore: boolean;
}

export const page = <T>(items: T[], total: number, offset: number): Page<T> => ({ items, total, hasMore: offset + items.length < total });

export interface ModelRecord {
  readonly id: string;
  readonly name: string;
  readonly config: VitConfig;
  readonly params: number;
  /** SHA-256 of the canonical weights: what deltas name as their base. */
  readonly weightsSha256: string;
  readonly blob: StoredBlob;
  readonly source: string;
  readonly createdAt: Date;
}

export interface DatasetShard extends StoredBlob {
  readonly split: 'train' | 'test';
  readonly count: number;
}

export interface DatasetRecord {
  readonly id: string;
  readonly name: string;
  readonly classes: number;
  readonly height: number;
  readonly width: number;
  readonly channels: number;
  readonly trainCount: number;
  readonly testCount: number;
  readonly shards: readonly DatasetShard[];
  /** Each class's name by label, when the source named them (photo folders, manifests). */
  readonly classNames: readonly string[] | null;
  readonly source: string;
  /** Its runs never admit volunteers. */
  readonly private: boolean;
  readonly createdAt: Date;
}

/** A dataset's shards of one split, as blobs to fetch. */
export const blobsOf = (d: DatasetRecord, split: 'train' | 'test'): BlobRef[] => d.shards.filter((s) => s.split === split).map(({ key, sha256 }) => ({ key, sha256 }));

export interface UploadRecord {
  readonly id: string;
  readonly key: string;
  readonly filename: string;
  readonly declaredBytes: number;
  /** 'admin', or `reader:<token id>`: only its owner (or the admin) may use it. */
  readonly owner: string;
  /** When it was taken: its bytes are kept until its URL has expired, then removed with it. */
  readonly usedAt: Date | null;
  readonly createdAt: Date;
}

export type RunKind = 'FINETUNE' | 'ANGLE_PROBE' | 'SOUP';
export type RunStatus = 'PREPARING' | 'RUNNING' | 'FINALIZING' | 'SUCCEEDED' | 'FAILED' | 'CANCELLED';

/** A run's schedule: rounds never cross an epoch end, so each epoch ends with an evaluation. */
export interface Plan {
  readonly trainImages: number;
  readonly stepsPerEpoch: number;
  readonly totalSteps: number;
  readonly shardsPerRound: number;
  /** [from, to) global steps of each round. */
  readonly rounds: readonly (readonly [number, number])[];
}

export interface MetricPoint {
  readonly step: number;
  readonly epoch: number;
  readonly round: number;
  readonly trainLoss?: number;
  readonly testAccuracy?: number;
  readonly testLoss?: number;
  readonly at: string;
}

export interface AngleSelectionSpec {
  readonly direction: 'largest' | 'smallest';
  readonly topK?: number;
  readonly budget?: number;
  readonly name?: string;
}

export interface SoupSpec {
  readonly method: 'uniform' | 'greedy';
  readonly runs: readonly string[];
  readonly heldOut?: number;
}

export interface SoupReport {
  readonly method: 'uniform' | 'greedy';
  readonly heldOutImages: number;
  readonly testImages: number;
  readonly heldOut: number;
  readonly test: number;
  readonly ingredients: readonly { readonly label: string; readonly heldOut: number; readonly test: number }[];
  readonly steps?: readonly { readonly label: string; readonly score: number; readonly kept: boolean }[];
}

/** What kind of run, with what only that kind has. */
export type RunSpec =
  | { readonly kind: 'FINETUNE'; readonly options: RunOptions }
  | { readonly kind: 'ANGLE_PROBE'; readonly options: RunOptions; readonly selection: AngleSelectionSpec }
  | { readonly kind: 'SOUP'; readonly soup: SoupSpec; readonly report?: SoupReport };

export type TrainingSpec = Extract<RunSpec, { options: RunOptions }>;

/** The training part of a run's spec; a soup has none. */
export function trainingSpec(run: RunRecord): TrainingSpec {
  if (run.spec.kind === 'SOUP') throw new Error(`run ${run.id} is a soup: it has no training`);
  return run.spec;
}

/** The stored starting state of one of the run's rounds (keys.runState names it; roundStates holds its digest). */
export function roundState(run: RunRecord, round: number): BlobRef {
  if (round === run.round && run.state) return run.state;
  const sha256 = run.roundStates[round];
  if (!sha256) throw new Error(`run ${run.id}: the state of round ${round} was not recorded (the run began before round states were kept)`);
  return { key: keys.runState(run.id, round), sha256 };
}

/** What the API shows: a running run that cannot move on is WAITING. */
export const statusOf = (run: RunRecord): RunStatus | 'WAITING' => (run.status === 'RUNNING' && run.waiting ? 'WAITING' : run.status);

/** A field its status guarantees (a RUNNING run's plan, say); missing, the record is inconsistent. */
export function need<T>(value: T | null, what: string, run: RunRecord): T {
  if (value === null) throw new Error(`run ${run.id} (${run.status}) has no ${what}`);
  return value;
}

export interface RunRecord {
  readonly id: string;
  readonly spec: RunSpec;
  readonly modelId: string;
  readonly datasetId: string;
  readonly strategy: Strategy;
  readonly strategyName: string;
  readonly status: RunStatus;
  readonly plan: Plan | null;
  readonly round: number;
  readonly step: number;
  /** The current round's starting state (tuned tensors + AdamW moments). */
  readonly state: BlobRef | null;
  readonly normalization: Normalization | null;
  readonly numClasses: number;
  readonly tunedParams: number | null;
  readonly totalParams: number | null;
  /** Bytes a worker holds for a shard: four copies of the model (weights, gradients, two moments) and the training split. */
  readonly memoryNeed: number;
  readonly metrics: readonly MetricPoint[];
  readonly accuracy: number | null;
  readonly loss: number | null;
  readonly deltaId: string | null;
  readonly error: string | null;
  /** Anyone may follow its progress (not its shards, workers or delta). */
  readonly public: boolean;
  /** Why it cannot move on now (a replica no eligible worker takes); null while it moves. */
  readonly waiting: string | null;
  /** SHA-256 of each round's starting state, from round 0: what a rollback returns to. */
  readonly roundStates: readonly string[];
  readonly rollbacks: readonly RollbackRecord[];
  readonly createdAt: Date;
  readonly updatedAt: Date;
  readonly finishedAt: Date | null;
}

/** A run sent back to an earlier round because an update it had used lost its support. */
export interface RollbackRecord {
  readonly at: string;
  readonly fromRound: number;
  readonly toRound: number;
  readonly reason: string;
}

export type ShardStatus = 'PENDING' | 'LEASED' | 'DONE' | 'CANCELLED';

/**
 * A replica's result as judged against its siblings': the one used, one bit-identical to it, one of
 * another kernel class within the tolerance (neither credited nor struck), one that lost, or one
 * whose vote was withdrawn (its worker was caught, or its round rolled back).
 */
export type Verdict = 'ACCEPTED' | 'AGREED' | 'CLOSE' | 'OUTVOTED' | 'VOIDED';
export const VERDICTS: readonly Verdict[] = ['ACCEPTED', 'AGREED', 'CLOSE', 'OUTVOTED', 'VOIDED'];

/**
 * One replica of a shard: the unit of work at (round, index) leased to one worker at a time. A
 * shard under verification has several replicas; the round uses the ACCEPTED one of each index.
 */
export interface ShardRecord {
  readonly id: string;
  readonly runId: string;
  readonly round: number;
  readonly index: number;
  /** 0 for the first; replicas are numbered as they are issued. */
  readonly replica: number;
  /** Agreeing results the index needs before one is accepted (1: none beyond the bound checks). */
  readonly need: number;
  readonly verdict: Verdict | null;
  /** What computed the result (engine/kernel-class.ts): the class its worker declared with the claim. */
  readonly kernelClass: string | null;
  /** The kernel class the current lease was claimed with. */
  readonly leaseClass: string | null;
  /** Only an untrusted worker of this class may take it (a same-class replica); registered workers take any. */
  readonly needClass: string | null;
  /** Only a registered worker may take it (a check of a registered result, or a dispute). */
  readonly registeredOnly: boolean;
  /** Independent groups behind the accepted result, and how many it needed (set when accepted). */
  readonly votes: number | null;
  readonly required: number | null;
  /** SHA-256 over the result's tensors and step, not its label: equal for equal computations. */
  readonly digest: string | null;
  readonly fromStep: number;
  readonly toStep: number;
  readonly status: ShardStatus;
  readonly workerId: string | null;
  readonly leaseUntil: Date | null;
  /** Leases granted so far; the current lease is attempt `attempts`. */
  readonly attempts: number;
  readonly stepsDone: number;
  readonly result: BlobRef | null;
  readonly loss: number | null;
  readonly imagesPerSecond: number | null;
  /** The training records its window reads, packed (engine/train/window.ts); null for shards planned before packs. */
  readonly pack: StoredBlob | null;
  /** What its worker reported downloading for it. */
  readonly downloadedBytes: number | null;
  /** Why earlier attempts did not count. */
  readonly rejections: readonly string[];
  /** Distinct workers whose leases of it ended without a result. */
  readonly failedBy: readonly string[];
  /** Leases by registered workers that ended without a result. */
  readonly trustedFailures: number;
  /** When the current lease last advanced its steps. */
  readonly progressAt: Date | null;
  /** When the current lease began, and when its worker completed it (the lease clock stops then). */
  readonly leasedAt: Date | null;
  readonly submittedAt: Date | null;
  /** Since when it has waited for a worker (null while leased or done). */
  readonly pendingSince: Date | null;
  /** The current lease ends by then whatever its heartbeats. */
  readonly deadline: Date | null;
  readonly createdAt: Date;
  readonly completedAt: Date | null;
}

/** When a shard that keeps failing fails its run: registered workers' failures only (a volunteer's strike it alone). */
export interface FailureBudget {
  readonly registeredFailures: number;
  /** Strikes (failures, rejections, revoked leases, lies) after which an untrusted worker is quarantined. */
  readonly quarantineStrikes: number;
}

/** A shard replica to create: its place in the round, its step window, the agreement it needs. */
export interface NewShard {
  readonly index: number;
  readonly replica: number;
  readonly need: number;
  readonly fromStep: number;
  readonly toStep: number;
  /** The window's training records, packed; every replica of an index reads the same. */
  readonly pack: StoredBlob | null;
  /** Only registered workers may lease it (its run does not admit volunteers). */
  readonly registeredOnly: boolean;
}

export interface WorkerRecord {
  readonly id: string;
  readonly name: string;
  readonly kind: 'node' | 'browser';
  readonly backend: string;
  readonly lastSeen: Date;
  readonly shardsDone: number;
  readonly samples: number;
  readonly imagesPerSecond: number | null;
  readonly currentShard: string | null;
  /** Registered with the admin's or the shared worker token (not a volunteer). */
  readonly trusted: boolean;
  readonly strikes: number;
  /** Set once its strikes passed the budget: it may claim no more. */
  readonly quarantinedAt: Date | null;
  /** The address it registered from. */
  readonly address: string;
  /** Its network prefix and the volunteer token it registered with: workers sharing either count as one (shards/parties.ts). */
  readonly party: string;
  readonly origin: string;
  /** Results that matched, and that were outvoted by, other workers'. */
  readonly agreed: number;
  readonly disagreed: number;
  /** Agreements since its last disagreement, any class. */
  readonly streak: number;
  /** A registered worker outvoted by other registered workers: untrusted until an admin registers it again. */
  readonly demoted: boolean;
  /** The kernel class it declared with its latest claim. */
  readonly kernelClass: string | null;
  /** Its record per kernel class: trust is earned per (worker, class). */
  readonly classes: readonly ClassRecord[];
  /** How it chose its backend, as it last said with a claim (a tab's timings per backend). */
  readonly backendChoice: BackendChoice | null;
  readonly createdAt: Date;
}

export interface BackendTiming {
  readonly backend: string;
  readonly detail: string;
  /** Training img/s on the measured model; null where not timed (`note` says why). */
  readonly imagesPerSecond: number | null;
  readonly note: string | null;
}

export interface BackendChoice {
  readonly chosen: string;
  readonly detail: string;
  /** forced, measured, remembered or only one */
  readonly how: string;
  /** The model shape measured (engine/train/measure.ts modelShapeKey). */
  readonly model: string | null;
  readonly timings: readonly BackendTiming[];
}

export interface ClassRecord {
  readonly kernelClass: string;
  readonly agreed: number;
  readonly disagreed: number;
  readonly streak: number;
}

/** Bit-identical agreements in a row on one kernel class after which a volunteer has earned trust there (BOINC uses 10). */
export const EARNED_TRUST_STREAK = 10;

export type Trust = 'REGISTERED' | 'EARNED' | 'UNTRUSTED' | 'QUARANTINED';

/**
 * EARNED is a record, never a pass: an earned worker's results need what any untrusted result
 * needs, and it never stands in for a registered worker.
 */
export function trustOf(w: WorkerRecord): Trust {
  if (w.quarantinedAt) return 'QUARANTINED';
  if (w.trusted && !w.demoted) return 'REGISTERED';
  const current = w.classes.find((c) => c.kernelClass === w.kernelClass);
  return current && current.streak >= EARNED_TRUST_STREAK ? 'EARNED' : 'UNTRUSTED';
}

/** Registered with the admin's or the shared worker token, not demoted, not banned: its bytes are usable alone. */
export const isRegistered = (w: WorkerRecord): boolean => trustOf(w) === 'REGISTERED';

export interface DeltaRecord {
  readonly id: string;
  readonly runId: string;
  readonly blob: StoredBlob;
  readonly tensors: number;
  readonly tunedParams: number;
  readonly dtype: 'F32' | 'F16';
  readonly mergedModelId: string | null;
  readonly createdAt: Date;
}

/** A strategy stored under a name (an angle probe's, or derived from its profile). */
export interface StoredStrategy {
  readonly name: string;
  readonly strategy: Strategy;
  readonly modelId: string | null;
  readonly source: string;
  readonly createdAt: Date;
}

export interface AngleProfileRecord {
  readonly id: string;
  readonly runId: string;
  readonly modelId: string;
  readonly datasetId: string;
  /** The probe's budget: steps, epochs, batch size, lr, training images. */
  readonly probe: Readonly<Record<string, number | undefined>>;
  readonly angles: readonly LayerAngle[];
  /** Per-tensor angles in degrees; null where a zero tensor has no direction. */
  readonly tensorAngles: Readonly<Record<string, number | null>>;
  readonly direction: 'largest' | 'smallest';
  readonly topK: number;
  readonly strategyName: string;
  readonly createdAt: Date;
}
