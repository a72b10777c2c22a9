// ANGLE_PROBE's stages: a full fine-tuning run like any other, which finishes with its angle
// profile (Ye et al. 2023's fine-tuned angles) and the strategy of the top-K layers per group.
import { randomUUID } from 'node:crypto';
import { RunRecord, need, trainingSpec } from '../state/records';
import type { Finished } from './stages';
import { TrainingStages } from './training';

export const probeStrategyName = (run: { id: string }, direction: string, name?: string): string => name ?? `angle-${direction}-${run.id.slice(0, 8)}`;

export class AngleProbeStages extends TrainingStages {
  async finish(run: RunRecord): Promise<Finished> {
    const finished = await super.finish(run);
    const spec = trainingSpec(run);
    if (spec.kind !== 'ANGLE_PROBE') throw new Error(`run ${run.id} is not an angle probe`);
    const { basis } = await this.basis(run);
    const { direction, topK, budget } = spec.selection;
    const name = probeStrategyName(run, direction, spec.selection.name);
    const a = await this.p.compute.call('angles', { ...basis, state: need(run.state, 'state', run), direction, topK, budget, name });
    const plan = need(run.plan, 'plan', run);
    const at = new Date();
    const layers = a.strategy.kind === 'custom' ? `attention ${JSON.stringify(a.strategy.attnLayers)}, FFN ${JSON.stringify(a.strategy.ffnLayers)}` : a.strategy.name;
    this.p.log(`angle probe ${run.id}: ${name} tunes ${layers}`);
    return {
      ...finished,
      profile: {
        record: {
          id: randomUUID(), runId: run.id, modelId: run.modelId, datasetId: run.datasetId, angles: a.angles, tensorAngles: a.tensorAngles, direction,
          topK: a.topK, strategyName: name, createdAt: at,
          probe: { steps: plan.totalSteps, epochs: plan.totalSteps / plan.stepsPerEpoch, batchSize: spec.options.batchSize, lr: spec.options.lr, trainImages: plan.trainImages, budget },
        },
        strategy: { name, strategy: a.strategy, modelId: run.modelId, source: `angle probe ${run.id}`, createdAt: at },
      },
    };
  }
}
