// Rows <-> records, the same row shape in every store (JSON and ISO times as text, epoch
// milliseconds as integers, flags as 0/1). Every row is decoded here, once, JSON columns included: a
// row that does not decode is an error naming its table, id and column, never an empty default.
import { z } from 'zod';
import { parseStrategy, parseVitConfig } from '../../engine';
import { decode, normalizationSchema, parsedBy } from '../../protocol/decode';
import { RunOptions, parseRunOptions } from '../../protocol/run-options';
import { VERDICTS } from './records';
import type { RunFilter } from './store';
import type {
  AngleProfileRecord, ClassRecord, DatasetRecord, DeltaRecord, MetricPoint, ModelRecord, Plan, RollbackRecord, RunRecord, RunSpec, ShardRecord, StoredStrategy,
  UploadRecord, Verdict, WorkerRecord,
} from './records';

export const nowIso = (): string => new Date().toISOString();

/**
 * A run filter as a WHERE clause (empty when it filters nothing) and its values, in both stores'
 * SQL; `param(i)` writes the i-th placeholder, counting from 1.
 */
export function runFilterSql(filter: RunFilter, param: (i: number) => string): { where: string; args: string[] } {
  const conditions: string[] = [];
  const args: string[] = [];
  const columns = [['status', filter.status], ['kind', filter.kind], ['model_id', filter.modelId], ['dataset_id', filter.datasetId]] as const;
  for (const [column, value] of columns) if (value !== undefined) (args.push(value), conditions.push(`${column} = ${param(args.length)}`));
  if (filter.publicOnly) conditions.push('public = 1');
  if (filter.waiting !== undefined) conditions.push(filter.waiting ? 'waiting IS NOT NULL' : 'waiting IS NULL');
  return { where: conditions.length ? `WHERE ${conditions.join(' AND ')}` : '', args };
}

/** records.ts's isRegistered as SQL (both stores) over a workers row `w`. */
export const REGISTERED_WORKER = '(w.trusted = 1 AND w.demoted = 0 AND w.quarantined_at IS NULL)';

/** A JSON text column holding what `schema` accepts. */
const json = <T>(schema: z.ZodType<T, unknown>) =>
  z.string().transform((text, ctx): unknown => {
    try {
      return JSON.parse(text);
    } catch {
      ctx.addIssue({ code: 'custom', message: 'is not JSON' });
      return z.NEVER;
    }
  }).pipe(schema);

/**
 * A table whose columns are its record's fields in snake case, objects as JSON and times as ISO
 * text: decoded and encoded field by field.
 */
function flatTable<T>(table: string, schema: z.ZodType<T, unknown>): { decode: (row: unknown) => T; encode: (record: T) => Record<string, unknown> } {
  const camel = (k: string): string => k.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());
  const snake = (k: string): string => k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
  const column = (v: unknown): unknown =>
    v instanceof Date ? v.toISOString() : typeof v === 'boolean' ? Number(v) : v !== null && typeof v === 'object' ? JSON.stringify(v) : v;
  return {
    decode: (row) => decode(schema, Object.fromEntries(Object.entries(row as object).map(([k, v]) => [camel(k), v])), `${table} row ${(row as { id?: string }).id}`),
    encode: (record) => Object.fromEntries(Object.entries(record as object).map(([k, v]) => [snake(k), column(v)])),
  };
}

const int = z.number().int();
const count = int.min(0);
const date = z.string().transform((s, ctx) => {
  const d = new Date(s);
  if (Number.isNaN(d.getTime())) ctx.addIssue({ code: 'custom', message: `'${s}' is not a time` });
  return d;
});
const millis = int.transform((ms) => new Date(ms));
/** Booleans: 0 or 1. */
const flag = z.union([z.literal(0), z.literal(1)]).transform((b) => b === 1);
const strategy = parsedBy(parseStrategy);
/**
 * A list that grows with a run (its rounds, its metric points), checked by a plain loop: rows are
 * read on every request, and zod's per-element checks would cost a run of 1,000 rounds milliseconds.
 */
const listOf = <T>(ok: (v: Record<string, unknown> & unknown[]) => boolean, what: string) =>
  z.custom<T[]>((v) => Array.isArray(v) && v.every((e) => typeof e === 'object' && e !== null && ok(e)), { message: `must be a list of ${what}` });
const isCount = (v: unknown): boolean => Number.isInteger(v) && (v as number) >= 0;
const isOptionalNumber = (v: unknown): boolean => v === undefined || typeof v === 'number';

const planSchema = z.object({
  trainImages: count, stepsPerEpoch: int.min(1), totalSteps: int.min(1), shardsPerRound: int.min(1),
  rounds: listOf<[number, number]>((r) => r.length === 2 && isCount(r[0]) && isCount(r[1]) && (r[0] as number) < (r[1] as number), '[from, to) step windows'),
});
const metricsSchema = listOf<MetricPoint>((m) => isCount(m.step) && typeof m.epoch === 'number' && isCount(m.round) && typeof m.at === 'string'
  && isOptionalNumber(m.trainLoss) && isOptionalNumber(m.testAccuracy) && isOptionalNumber(m.testLoss), 'metric points');
const selectionSchema = z.object({
  direction: z.enum(['largest', 'smallest']), topK: count.optional(), budget: count.optional(), name: z.string().optional(),
});
const soupSpecSchema = z.object({ method: z.enum(['uniform', 'greedy']), runs: z.array(z.string()).min(1), heldOut: int.min(1).optional() });
const scores = z.object({ label: z.string(), heldOut: z.number(), test: z.number() });
const soupReportSchema = z.object({
  method: z.enum(['uniform', 'greedy']), heldOutImages: count, testImages: count, heldOut: z.number(), test: z.number(), ingredients: z.array(scores),
  steps: z.array(z.object({ label: z.string(), score: z.number(), kept: z.boolean() })).optional(),
});

const runRow = z.object({
  id: z.string(), kind: z.enum(['FINETUNE', 'ANGLE_PROBE', 'SOUP']), model_id: z.string(), dataset_id: z.string(),
  strategy: json(strategy), strategy_name: z.string(), hyper: z.string(), spec: z.string().nullable(),
  report: z.string().nullable(), plan: z.string().nullable(),
  status: z.enum(['PREPARING', 'RUNNING', 'FINALIZING', 'SUCCEEDED', 'FAILED', 'CANCELLED']), round: count, step: count,
  state_key: z.string().nullable(), state_sha256: z.string().nullable(), normalization: json(normalizationSchema).nullable(),
  num_classes: int.min(1), tuned_params: count.nullable(), total_params: count.nullable(), memory_need: count,
  metrics: z.string(), accuracy: z.number().nullable(), loss: z.number().nullable(), delta_id: z.string().nullable(),
  error: z.string().nullable(), public: flag, created_at: date, updated_at: date, finished_at: date.nullable(),
  waiting: z.string().nullable(), round_states: z.string(), rollbacks: z.string(),
});

const rollbacksSchema = z.array(z.object({ at: z.string(), fromRound: count, toRound: count, reason: z.string() }));
const planColumn = z.object({ plan: json(planSchema) });
const metricsColumn = z.object({ metrics: json(metricsSchema) });
const plans = new Map<string, Plan>();
const metricLists = new Map<string, MetricPoint[]>();
const runOptions = new Map<string, RunOptions>();

function remember<T>(cache: Map<string, T>, text: string, value: T): T {
  if (cache.size >= 64) cache.delete(cache.keys().next().value!);
  cache.set(text, value);
  return value;
}

/**
 * A run's plan (a window per round) and metrics (a point per round) grow with its length, and
 * every request about the run reads them and its options: each distinct text is decoded once,
 * among the last few.
 */
function decodedOnce<T>(cache: Map<string, T>, column: z.ZodType<Record<string, T>, unknown>, name: string, text: string, what: string): T {
  return cache.get(text) ?? remember(cache, text, decode(column, { [name]: text }, what)[name]);
}

export function decodeRun(row: unknown): RunRecord {
  const what = `runs row ${(row as { id?: string })?.id}`;
  const r = decode(runRow, row, what);
  const column = <T>(name: string, schema: z.ZodType<T, unknown>, text: string | null): T => decode(json(schema), text, `${what}: ${name}`);
  const options = (): RunOptions => runOptions.get(r.hyper) ?? remember(runOptions, r.hyper, decode(json(parsedBy((raw) => parseRunOptions(raw))), r.hyper, `${what}: hyper`));
  let spec: RunSpec;
  if (r.kind === 'FINETUNE') spec = { kind: 'FINETUNE', options: options() };
  else if (r.kind === 'ANGLE_PROBE') spec = { kind: 'ANGLE_PROBE', options: options(), selection: column('spec', selectionSchema, r.spec) };
  else {
    spec = { kind: 'SOUP', soup: column('spec', soupSpecSchema, r.spec), report: r.report === null ? undefined : column('report', soupReportSchema, r.report) };
  }
  return {
    id: r.id, spec, modelId: r.model_id, datasetId: r.dataset_id, strategy: r.strategy, strategyName: r.strategy_name, status: r.status,
    plan: r.plan === null ? null : decodedOnce(plans, planColumn, 'plan', r.plan, what), round: r.round, step: r.step, state: r.state_key && r.state_sha256 ? { key: r.state_key, sha256: r.state_sha256 } : null,
    normalization: r.normalization, numClasses: r.num_classes, tunedParams: r.tuned_params, totalParams: r.total_params, memoryNeed: r.memory_need,
    metrics: decodedOnce(metricLists, metricsColumn, 'metrics', r.metrics, what), accuracy: r.accuracy, loss: r.loss, deltaId: r.delta_id, error: r.error, public: r.public,
    waiting: r.waiting, roundStates: column('round_states', z.array(z.string()), r.round_states),
    rollbacks: column<RollbackRecord[]>('rollbacks', rollbacksSchema, r.rollbacks), createdAt: r.created_at, updatedAt: r.updated_at, finishedAt: r.finished_at,
  };
}

export function encodeRun(run: RunRecord): Record<string, unknown> {
  const { spec } = run;
  return {
    id: run.id, kind: spec.kind, model_id: run.modelId, dataset_id: run.datasetId, strategy: JSON.stringify(run.strategy), strategy_name: run.strategyName,
    hyper: JSON.stringify(spec.kind === 'SOUP' ? {} : spec.options), spec: JSON.stringify(spec.kind === 'FINETUNE' ? null : spec.kind === 'SOUP' ? spec.soup : spec.selection),
    report: spec.kind === 'SOUP' && spec.report ? JSON.stringify(spec.report) : null, plan: run.plan && JSON.stringify(run.plan), status: run.status,
    round: run.round, step: run.step, state_key: run.state?.key ?? null, state_sha256: run.state?.sha256 ?? null,
    normalization: run.normalization && JSON.stringify(run.normalization), num_classes: run.numClasses, tuned_params: run.tunedParams,
    total_params: run.totalParams, memory_need: run.memoryNeed, metrics: JSON.stringify(run.metrics), accuracy: run.accuracy, loss: run.loss,
    delta_id: run.deltaId, error: run.error, public: run.public ? 1 : 0, waiting: run.waiting, round_states: JSON.stringify(run.roundStates),
    rollbacks: JSON.stringify(run.rollbacks), created_at: run.createdAt.toISOString(), updated_at: run.updatedAt.toISOString(), finished_at: run.finishedAt?.toISOString() ?? null,
  };
}

const shardRow = z.object({
  id: z.string(), run_id: z.string(), round: count, idx: count, replica: count, need: int.min(1), verdict: z.enum(VERDICTS as [Verdict, ...Verdict[]]).nullable(),
  kernel_class: z.string().nullable(), lease_class: z.string().nullable(), need_class: z.string().nullable(), registered_only: flag,
  votes: count.nullable(), required: count.nullable(), digest: z.string().nullable(), from_step: count, to_step: count,
  status: z.enum(['PENDING', 'LEASED', 'DONE', 'CANCELLED']), worker_id: z.string().nullable(), lease_until: millis.nullable(), attempts: count,
  steps_done: count, result_key: z.string().nullable(), result_sha256: z.string().nullable(), loss: z.number().nullable(),
  images_per_second: z.number().nullable(), rejections: json(z.array(z.string())), failed_by: json(z.array(z.string())), trusted_failures: count,
  progress_at: millis.nullable(), deadline: millis.nullable(), created_at: date, completed_at: date.nullable(),
  leased_at: millis.nullable(), submitted_at: millis.nullable(), pending_since: millis.nullable(),
  pack_key: z.string().nullable(), pack_sha256: z.string().nullable(), pack_bytes: count.nullable(), downloaded_bytes: count.nullable(),
});

export function decodeShard(row: unknown): ShardRecord {
  const r = decode(shardRow, row, `shards row ${(row as { id?: string })?.id}`);
  return {
    id: r.id, runId: r.run_id, round: r.round, index: r.idx, replica: r.replica, need: r.need, verdict: r.verdict, kernelClass: r.kernel_class,
    leaseClass: r.lease_class, needClass: r.need_class, registeredOnly: r.registered_only, votes: r.votes, required: r.required, digest: r.digest, fromStep: r.from_step, toStep: r.to_step, status: r.status, workerId: r.worker_id,
    leaseUntil: r.lease_until, attempts: r.attempts, stepsDone: r.steps_done,
    result: r.result_key && r.result_sha256 ? { key: r.result_key, sha256: r.result_sha256 } : null, loss: r.loss, imagesPerSecond: r.images_per_second,
    pack: r.pack_key && r.pack_sha256 && r.pack_bytes !== null ? { key: r.pack_key, sha256: r.pack_sha256, bytes: r.pack_bytes } : null,
    downloadedBytes: r.downloaded_bytes,
    rejections: r.rejections, failedBy: r.failed_by, trustedFailures: r.trusted_failures, progressAt: r.progress_at, deadline: r.deadline,
    leasedAt: r.leased_at, submittedAt: r.submitted_at, pendingSince: r.pending_since, createdAt: r.created_at, completedAt: r.completed_at,
  };
}

const modelRow = z.object({
  id: z.string(), name: z.string(), config: json(parsedBy(parseVitConfig)), params: count, weights_sha256: z.string(), blob_key: z.string(),
  blob_sha256: z.string(), bytes: count, source: z.string(), created_at: date,
});

export function decodeModel(row: unknown): ModelRecord {
  const r = decode(modelRow, row, `models row ${(row as { id?: string })?.id}`);
  return {
    id: r.id, name: r.name, config: r.config, params: r.params, weightsSha256: r.weights_sha256,
    blob: { key: r.blob_key, sha256: r.blob_sha256, bytes: r.bytes }, source: r.source, createdAt: r.created_at,
  };
}

export const encodeModel = (m: ModelRecord): Record<string, unknown> => ({
  id: m.id, name: m.name, config: JSON.stringify(m.config), params: m.params, weights_sha256: m.weightsSha256, blob_key: m.blob.key,
  blob_sha256: m.blob.sha256, bytes: m.blob.bytes, source: m.source, created_at: m.createdAt.toISOString(),
});

const datasetShard = z.object({ split: z.enum(['train', 'test']), key: z.string(), sha256: z.string(), count: count, bytes: count });

export const datasetRows = flatTable<DatasetRecord>('datasets', z.object({
  id: z.string(), name: z.string(), classes: int.min(1), height: int.min(1), width: int.min(1), channels: int.min(1), trainCount: count,
  testCount: count, shards: json(z.array(datasetShard)), classNames: json(z.array(z.string())).nullable(), source: z.string(), private: flag, createdAt: date,
}));

export const uploadRows = flatTable<UploadRecord>('uploads', z.object({
  id: z.string(), key: z.string(), filename: z.string(), declaredBytes: count, owner: z.string(), usedAt: date.nullable(), createdAt: date,
}));

const backendChoiceSchema = z.object({
  chosen: z.string(), detail: z.string(), how: z.string(), model: z.string().nullable(),
  timings: z.array(z.object({ backend: z.string(), detail: z.string(), imagesPerSecond: z.number().nullable(), note: z.string().nullable() })),
});

const workerRow = z.object({
  id: z.string(), name: z.string(), kind: z.enum(['node', 'browser']), backend: z.string(), last_seen: millis, shards_done: count, samples: count,
  images_per_second: z.number().nullable(), current_shard: z.string().nullable(), trusted: flag, strikes: count, quarantined_at: millis.nullable(),
  address: z.string(), party: z.string(), origin: z.string(), agreed: count, disagreed: count, streak: count, demoted: flag, kernel_class: z.string().nullable(),
  backend_choice: json(backendChoiceSchema).nullable(), created_at: date,
});

const classRow = z.object({ worker_id: z.string(), kernel_class: z.string(), agreed: count, disagreed: count, streak: count });

/** worker_classes rows, by worker. */
export function decodeClasses(rows: readonly unknown[]): Map<string, ClassRecord[]> {
  const out = new Map<string, ClassRecord[]>();
  for (const row of rows) {
    const r = decode(classRow, row, `worker_classes row ${(row as { worker_id?: string })?.worker_id}`);
    out.set(r.worker_id, [...(out.get(r.worker_id) ?? []), { kernelClass: r.kernel_class, agreed: r.agreed, disagreed: r.disagreed, streak: r.streak }]);
  }
  return out;
}

export function decodeWorker(row: unknown, classes: readonly ClassRecord[] = []): WorkerRecord {
  const r = decode(workerRow, row, `workers row ${(row as { id?: string })?.id}`);
  return {
    id: r.id, name: r.name, kind: r.kind, backend: r.backend, lastSeen: r.last_seen, shardsDone: r.shards_done, samples: r.samples,
    imagesPerSecond: r.images_per_second, currentShard: r.current_shard, trusted: r.trusted, strikes: r.strikes, quarantinedAt: r.quarantined_at,
    address: r.address, party: r.party, origin: r.origin, agreed: r.agreed, disagreed: r.disagreed, streak: r.streak, demoted: r.demoted, kernelClass: r.kernel_class,
    classes, backendChoice: r.backend_choice, createdAt: r.created_at,
  };
}

const deltaRow = z.object({
  id: z.string(), run_id: z.string(), key: z.string(), sha256: z.string(), bytes: count, tensors: count, tuned_params: count,
  dtype: z.enum(['F32', 'F16']), merged_model_id: z.string().nullable(), created_at: date,
});

export function decodeDelta(row: unknown): DeltaRecord {
  const r = decode(deltaRow, row, `deltas row ${(row as { id?: string })?.id}`);
  return {
    id: r.id, runId: r.run_id, blob: { key: r.key, sha256: r.sha256, bytes: r.bytes }, tensors: r.tensors, tunedParams: r.tuned_params,
    dtype: r.dtype, mergedModelId: r.merged_model_id, createdAt: r.created_at,
  };
}

export const encodeDelta = (d: DeltaRecord): Record<string, unknown> => ({
  id: d.id, run_id: d.runId, key: d.blob.key, sha256: d.blob.sha256, bytes: d.blob.bytes, tensors: d.tensors, tuned_params: d.tunedParams,
  dtype: d.dtype, merged_model_id: d.mergedModelId, created_at: d.createdAt.toISOString(),
});

const strategyRow = z.object({ name: z.string(), spec: json(strategy), model_id: z.string().nullable(), source: z.string(), created_at: date });

export function decodeStoredStrategy(row: unknown): StoredStrategy {
  const r = decode(strategyRow, row, `strategies row ${(row as { name?: string })?.name}`);
  return { name: r.name, strategy: r.spec, modelId: r.model_id, source: r.source, createdAt: r.created_at };
}

export const encodeStoredStrategy = (s: StoredStrategy): Record<string, unknown> => ({
  name: s.name, spec: JSON.stringify(s.strategy), model_id: s.modelId, source: s.source, created_at: s.createdAt.toISOString(),
});

const layerAngle = z.object({ kind: z.enum(['attn', 'ffn']), block: count, degrees: z.number(), params: count });

export const profileRows = flatTable<AngleProfileRecord>('angle_profiles', z.object({
  id: z.string(), runId: z.string(), modelId: z.string(), datasetId: z.string(), probe: json(z.record(z.string(), z.number().optional())),
  angles: json(z.array(layerAngle)), tensorAngles: json(z.record(z.string(), z.number().nullable())), direction: z.enum(['largest', 'smallest']),
  topK: count, strategyName: z.string(), createdAt: date,
}));
