// Records -> API objects.
import * as T from '../../schema/types';
import {
  AngleProfileRecord, DatasetRecord, DeltaRecord, ModelRecord, RunRecord, ShardRecord, SoupReport, StoredStrategy, WorkerRecord, statusOf, trustOf,
} from '../state/records';
import type { Progress } from '../runs/queries';

export const make = <C extends object>(cls: new () => C, fields: Partial<C>): C => Object.assign(new cls(), fields) as C;

export const toModel = (r: ModelRecord): T.Model => make(T.Model, {
  id: r.id, name: r.name, architecture: r.config, parameters: r.params, numClasses: r.config.numClasses, weightsSha256: r.weightsSha256,
  bytes: r.blob.bytes, source: r.source, createdAt: r.createdAt,
});

export const toDataset = (r: DatasetRecord): T.Dataset => make(T.Dataset, {
  id: r.id, name: r.name, classes: r.classes, height: r.height, width: r.width, channels: r.channels, trainImages: r.trainCount,
  testImages: r.testCount, source: r.source, private: r.private, createdAt: r.createdAt, classNames: r.classNames ? [...r.classNames] : null,
  shards: r.shards.map((s) => make(T.DatasetShardInfo, { split: s.split, sha256: s.sha256, images: s.count, bytes: s.bytes })),
});

const toSoup = (r: SoupReport): T.SoupReport => make(T.SoupReport, {
  method: r.method as T.SoupMethod, heldOutImages: r.heldOutImages, testImages: r.testImages, heldOut: r.heldOut, test: r.test,
  ingredients: r.ingredients.map((i) => make(T.SoupIngredientScore, { runId: i.label, heldOut: i.heldOut, test: i.test })),
  steps: r.steps?.map((st) => make(T.GreedyStep, { runId: st.label, score: st.score, kept: st.kept })),
});

export const toRun = (r: RunRecord, progress: Progress): T.Run => make(T.Run, {
  id: r.id, kind: r.spec.kind as T.RunKind, soup: r.spec.kind === 'SOUP' && r.spec.report ? toSoup(r.spec.report) : undefined,
  status: statusOf(r) as T.RunStatus, strategyName: r.strategyName, strategy: r.strategy, hyperParameters: r.spec.kind === 'SOUP' ? undefined : r.spec.options,
  plan: r.plan ?? undefined, tunedParameters: r.tunedParams ?? undefined, totalParameters: r.totalParams ?? undefined, round: r.round, ...progress,
  metrics: r.metrics.map((m) => make(T.MetricPoint, { ...m, at: new Date(m.at) })),
  accuracy: r.accuracy ?? undefined, loss: r.loss ?? undefined, error: r.error ?? undefined, public: r.public, waiting: r.waiting ?? undefined,
  admitVolunteers: r.spec.kind !== 'SOUP' && r.spec.options.admitVolunteers,
  rollbacks: r.rollbacks.map((b) => make(T.Rollback, { ...b, at: new Date(b.at) })),
  createdAt: r.createdAt, updatedAt: r.updatedAt, finishedAt: r.finishedAt ?? undefined, modelId: r.modelId, datasetId: r.datasetId,
});

export const toShard = (r: ShardRecord): T.Shard => make(T.Shard, {
  id: r.id, runId: r.runId, round: r.round, index: r.index, fromStep: r.fromStep, toStep: r.toStep, status: r.status as T.ShardStatus,
  workerId: r.workerId ?? undefined, attempt: r.attempts, stepsDone: r.stepsDone, loss: r.loss ?? undefined,
  imagesPerSecond: r.imagesPerSecond ?? undefined, rejections: [...r.rejections], leaseUntil: r.leaseUntil ?? undefined, replica: r.replica, need: r.need,
  verdict: (r.verdict ?? undefined) as T.ShardVerdict | undefined, kernelClass: (r.kernelClass ?? r.leaseClass) ?? undefined, downloadedBytes: r.downloadedBytes ?? undefined,
  needClass: r.needClass ?? undefined, registeredOnly: r.registeredOnly, votes: r.votes ?? undefined, required: r.required ?? undefined,
});

export const toWorker = (r: WorkerRecord, online: boolean): T.Worker => make(T.Worker, {
  id: r.id, name: r.name, kind: r.kind, backend: r.backend, online, lastSeen: r.lastSeen, shardsDone: r.shardsDone,
  samples: r.samples, imagesPerSecond: r.imagesPerSecond ?? undefined, currentShard: r.currentShard ?? undefined, trusted: r.trusted,
  strikes: r.strikes, quarantined: r.quarantinedAt !== null, trust: trustOf(r) as T.WorkerTrust, agreed: r.agreed, disagreed: r.disagreed, streak: r.streak,
  kernelClass: r.kernelClass ?? undefined, party: r.party, classes: r.classes.map((c) => make(T.WorkerClassRecord, c)),
  backendChoice: r.backendChoice ? make(T.BackendChoice, {
    ...r.backendChoice, model: r.backendChoice.model ?? undefined,
    timings: r.backendChoice.timings.map((t) => make(T.BackendTiming, { ...t, imagesPerSecond: t.imagesPerSecond ?? undefined, note: t.note ?? undefined })),
  }) : undefined,
});

export const toDelta = (r: DeltaRecord): T.Delta => make(T.Delta, {
  id: r.id, runId: r.runId, bytes: r.blob.bytes, tensors: r.tensors, tunedParameters: r.tunedParams, dtype: r.dtype, sha256: r.blob.sha256,
  createdAt: r.createdAt, key: r.blob.key, mergedModelId: r.mergedModelId,
});

export const toAngleProfile = (r: AngleProfileRecord, stored: StoredStrategy | undefined): T.AngleProfile => {
  const selected: { attnLayers?: readonly number[]; ffnLayers?: readonly number[] } = stored?.strategy.kind === 'custom' ? stored.strategy : {};
  const rank = (a: AngleProfileRecord['angles'][number]): number =>
    1 + r.angles.filter((b) => b.kind === a.kind && (b.degrees > a.degrees || (b.degrees === a.degrees && b.block < a.block))).length;
  return make(T.AngleProfile, {
    id: r.id, runId: r.runId, probe: r.probe, direction: r.direction as T.AngleDirection, topK: r.topK, strategyName: r.strategyName,
    tensorAngles: r.tensorAngles, createdAt: r.createdAt, modelId: r.modelId, datasetId: r.datasetId,
    layers: r.angles.map((a) => make(T.LayerAngle, {
      kind: a.kind, block: a.block, degrees: a.degrees, parameters: a.params, rank: rank(a),
      selected: ((a.kind === 'attn' ? selected.attnLayers : selected.ffnLayers) ?? []).includes(a.block),
    })),
  });
};
