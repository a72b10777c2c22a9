// FINETUNE's stages: round 0 is the base's tuned tensors with zero moments; each round's shards
// read packs of their windows' training records (written once); each round combines
// its shards' updates by the run's aggregation (FedAvg over tensors and AdamW moments, weighted by
// samples, or a robust rule) on the shards' compute thread; the finish is the engine's, on the
// runs' compute thread: base + delta rounded, scored, written.
import { keys } from '../../storage';
import { trainOptionsOf } from '../../protocol/run-options';
import type { RunBasis } from '../compute/jobs';
import type { Platform } from '../platform';
import { BlobRef, DatasetRecord, NewShard, Plan, RunRecord, ShardRecord, StoredBlob, blobsOf, need, trainingSpec } from '../state/records';
import { RunShapes } from '../shards/run-shapes';
import { makePlan, replicasOf, shardWindows } from './plan';
import { Configured, Finished, LostUpdate, RunStages } from './stages';

export class TrainingStages implements RunStages {
  constructor(protected readonly p: Platform, private readonly shapes: RunShapes) {}

  protected async basis(run: RunRecord): Promise<{ basis: RunBasis; dataset: DatasetRecord }> {
    const model = await this.p.state.models.byIdOrName(run.modelId);
    const dataset = await this.p.state.datasets.byIdOrName(run.datasetId);
    if (!model || !dataset) throw new Error(`run ${run.id}: its ${model ? 'dataset' : 'model'} is no longer registered`);
    const options = trainOptionsOf(trainingSpec(run).options);
    return { basis: { runId: run.id, model: model.blob, numClasses: run.numClasses, strategy: run.strategy, options }, dataset };
  }

  async configure(run: RunRecord): Promise<Configured> {
    const { basis, dataset } = await this.basis(run);
    const plan = makePlan(trainingSpec(run).options, dataset.trainCount);
    const prepared = await this.p.compute.call('prepare', { ...basis, train: blobsOf(dataset, 'train') });
    const state = await this.p.blobs.put(keys.runState(run.id, 0), prepared.state);
    return { plan, state, normalization: prepared.normalization };
  }

  /** A round's windows, each replicated as the run's verification asks, with its records packed on the runs' compute thread. */
  async shards(run: RunRecord, plan: Plan, round: number): Promise<NewShard[]> {
    const { basis, dataset } = await this.basis(run);
    const windows = shardWindows(plan.rounds[round], plan.shardsPerRound, replicasOf(trainingSpec(run).options));
    const first = windows.filter((w) => w.replica === 0);
    const packs = await this.p.compute.call('packWindows', {
      runId: run.id, train: blobsOf(dataset, 'train'), options: basis.options, windows: first.map((w) => ({ from: w.fromStep, to: w.toStep })),
    });
    const registeredOnly = !trainingSpec(run).options.admitVolunteers;
    return windows.map((w) => ({ ...w, pack: packs[first.findIndex((f) => f.index === w.index)], registeredOnly }));
  }

  /** On the shards' compute thread; an update that cannot be read is a LostUpdate (its shard is re-issued). */
  async aggregate(run: RunRecord, shards: readonly ShardRecord[]): Promise<StoredBlob> {
    const rule = trainingSpec(run).options.aggregation;
    const r = await this.p.shardCompute.call('aggregate', {
      rule, start: need(run.state, 'state', run), updates: shards.map((s) => need(s.result, `result for shard ${s.round}.${s.index}`, run)),
      shapes: await this.shapes.of(run), label: { run: run.id, round: run.round + 1 }, out: keys.runState(run.id, run.round + 1),
    });
    if ('lost' in r) throw new LostUpdate(shards[r.lost], r.reason);
    if (r.screened.length) this.p.log(`run ${run.id} round ${run.round}: ${rule} set aside shard(s) ${r.screened.map((i) => `${shards[i].round}.${shards[i].index}`).join(', ')} (moved over 3x the median)`);
    return r.state;
  }

  async evaluate(run: RunRecord, state: BlobRef): Promise<{ accuracy: number; loss: number }> {
    const { basis, dataset } = await this.basis(run);
    return this.p.compute.call('evaluate', { ...basis, state, test: blobsOf(dataset, 'test'), normalization: need(run.normalization, 'normalization', run) });
  }

  async finish(run: RunRecord): Promise<Finished> {
    const { basis, dataset } = await this.basis(run);
    const plan = need(run.plan, 'plan', run);
    const r = await this.p.compute.call('finalize', {
      ...basis, state: need(run.state, 'state', run), test: blobsOf(dataset, 'test'), normalization: need(run.normalization, 'normalization', run),
      training: { run: run.id, data: dataset.name, ...trainingSpec(run).options, trainImages: plan.trainImages, steps: plan.totalSteps, rounds: plan.rounds.length },
    });
    return {
      delta: { bytes: r.delta, tensors: r.tensors, tunedParams: r.tunedParams }, accuracy: r.accuracy, loss: r.loss,
      message: `delta ${(r.delta.length / 1024).toFixed(1)} KiB, ${r.tensors} tensors`,
    };
  }
}
