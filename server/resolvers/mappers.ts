// Database rows -> API objects.
import { AngleProfileRow, DatasetRow, DatasetShard, DeltaRow, ModelRow, RunRow, ShardRow, WorkerRow, parseJson } from '../db';
import type { LayerAngle } from '../../engine';
import * as T from '../../schema/types';
import { MetricPoint } from '../services/runs';

const make = <C extends object>(cls: new () => C, fields: Partial<C>): C => Object.assign(new cls(), fields) as C;

export const toModel = (r: ModelRow): T.Model => {
  const architecture = JSON.parse(r.config) as { numClasses: number };
  return make(T.Model, {
    id: r.id, name: r.name, architecture, parameters: r.params, numClasses: architecture.numClasses, weightsSha256: r.weights_sha256,
    bytes: r.bytes, source: r.source, createdAt: new Date(r.created_at),
  });
};

export const toDataset = (r: DatasetRow): T.Dataset => make(T.Dataset, {
  id: r.id, name: r.name, classes: r.classes, height: r.height, width: r.width, channels: r.channels, trainImages: r.train_count,
  testImages: r.test_count, source: r.source, createdAt: new Date(r.created_at),
  shards: parseJson<DatasetShard[]>(r.shards, []).map((s) => make(T.DatasetShardInfo, { split: s.split, sha256: s.sha256, images: s.count, bytes: s.bytes })),
});

interface StoredSoupReport {
  method: T.SoupMethod; heldOutImages: number; testImages: number; heldOut: number; test: number;
  ingredients: { label: string; heldOut: number; test: number }[]; steps?: { label: string; score: number; kept: boolean }[];
}

const toSoup = (json: string | null): T.SoupReport | undefined => {
  const r = parseJson<StoredSoupReport | null>(json, null);
  return r ? make(T.SoupReport, {
    ...r,
    ingredients: r.ingredients.map((i) => make(T.SoupIngredientScore, { runId: i.label, heldOut: i.heldOut, test: i.test })),
    steps: r.steps?.map((st) => make(T.GreedyStep, { runId: st.label, score: st.score, kept: st.kept })),
  }) : undefined;
};

export const toRun = (r: RunRow, progress: { step: number; totalSteps: number; progress: number }): T.Run => make(T.Run, {
  id: r.id, kind: r.kind as T.RunKind, soup: toSoup(r.report), status: r.status as T.RunStatus, strategyName: r.strategy_name, strategy: JSON.parse(r.strategy), hyperParameters: JSON.parse(r.hyper),
  plan: parseJson(r.plan, undefined), tunedParameters: r.tuned_params ?? undefined, totalParameters: r.total_params ?? undefined,
  round: r.round, ...progress,
  metrics: parseJson<MetricPoint[]>(r.metrics, []).map((m) => make(T.MetricPoint, { ...m, at: new Date(m.at) })),
  accuracy: r.accuracy ?? undefined, loss: r.loss ?? undefined, error: r.error ?? undefined,
  createdAt: new Date(r.created_at), updatedAt: new Date(r.updated_at), finishedAt: r.finished_at ? new Date(r.finished_at) : undefined,
  modelId: r.model_id, datasetId: r.dataset_id,
});

export const toShard = (r: ShardRow): T.Shard => make(T.Shard, {
  id: r.id, runId: r.run_id, round: r.round, index: r.idx, fromStep: r.from_step, toStep: r.to_step, status: r.status as T.ShardStatus,
  workerId: r.worker_id ?? undefined, attempt: r.attempts, stepsDone: r.steps_done, loss: r.loss ?? undefined,
  imagesPerSecond: r.images_per_second ?? undefined, rejections: parseJson<string[]>(r.rejections, []),
  leaseUntil: r.lease_until ? new Date(r.lease_until) : undefined,
});

export const toWorker = (r: WorkerRow, online: boolean): T.Worker => make(T.Worker, {
  id: r.id, name: r.name, kind: r.kind, backend: r.backend, online, lastSeen: new Date(r.last_seen), shardsDone: r.shards_done,
  samples: r.samples, imagesPerSecond: r.images_per_second ?? undefined, currentShard: r.current_shard ?? undefined,
});

export const toDelta = (r: DeltaRow): T.Delta => make(T.Delta, {
  id: r.id, runId: r.run_id, bytes: r.bytes, tensors: r.tensors, tunedParameters: r.tuned_params, dtype: r.dtype, sha256: r.sha256,
  createdAt: new Date(r.created_at), key: r.key, mergedModelId: r.merged_model_id,
});

export const toAngleProfile = (r: AngleProfileRow, strategy: { attnLayers?: readonly number[]; ffnLayers?: readonly number[] }): T.AngleProfile => {
  const angles = JSON.parse(r.angles) as LayerAngle[];
  const rank = (a: LayerAngle): number => 1 + angles.filter((b) => b.kind === a.kind && (b.degrees > a.degrees || (b.degrees === a.degrees && b.block < a.block))).length;
  return make(T.AngleProfile, {
    id: r.id, runId: r.run_id, probe: JSON.parse(r.probe), direction: r.direction as T.AngleDirection, topK: r.top_k, strategyName: r.strategy_name,
    tensorAngles: JSON.parse(r.tensor_angles), createdAt: new Date(r.created_at), modelId: r.model_id, datasetId: r.dataset_id,
    layers: angles.map((a) => make(T.LayerAngle, {
      kind: a.kind, block: a.block, degrees: a.degrees, parameters: a.params, rank: rank(a),
      selected: (a.kind === 'attn' ? strategy.attnLayers : strategy.ffnLayers)?.includes(a.block) ?? false,
    })),
  });
};
