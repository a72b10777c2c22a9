// The tensors a run tunes, name -> shape: what its states and updates must hold. Fixed for the
// run's life, so computed once and kept for the last few runs; the tensors themselves are parsed
// on the shards' compute thread (compute/shard-jobs.ts).
import { inspect, tunedShapes } from '../../engine';
import { modelConfig } from '../catalog/models';
import type { Platform } from '../platform';
import type { RunRecord } from '../state/records';

export class RunShapes {
  private readonly shapesOf = new Map<string, Map<string, readonly number[]>>();

  constructor(private readonly p: Platform) {}

  async of(run: RunRecord): Promise<Map<string, readonly number[]>> {
    const known = this.shapesOf.get(run.id);
    if (known) return known;
    const model = await this.p.state.models.byIdOrName(run.modelId);
    if (!model) throw new Error(`run ${run.id}: its model is no longer registered`);
    const config = modelConfig(model, run.numClasses);
    const shapes = tunedShapes(config, inspect(run.strategy, config).tuned);
    this.shapesOf.set(run.id, shapes);
    while (this.shapesOf.size > 16) this.shapesOf.delete(this.shapesOf.keys().next().value!);
    return shapes;
  }
}
