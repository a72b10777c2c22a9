// The tensors a run's shards are judged by: the tuned shapes its updates must have, its round's
// starting state, and parsed results, each read once and kept while they are in use.
import { TrainingState, inspect, parseState, tunedShapes } from '../../engine';
import { modelConfig } from '../catalog/models';
import type { Platform } from '../platform';
import { BlobRef, RunRecord, need } from '../state/records';

export class RunTensors {
  private readonly cache = new Map<string, Promise<TrainingState>>();
  private readonly shapesOf = new Map<string, Map<string, readonly number[]>>();

  constructor(private readonly p: Platform) {}

  /** Name -> shape of every tensor the run tunes (fixed for its life: kept for the last few runs). */
  async shapes(run: RunRecord): Promise<Map<string, readonly number[]>> {
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

  /** The current round's starting state. */
  async roundStart(run: RunRecord): Promise<TrainingState> {
    return this.read(need(run.state, 'state', run), await this.shapes(run));
  }

  /** A stored state or update, parsed once while it is among the last few read. */
  read(ref: BlobRef, shapes: ReadonlyMap<string, readonly number[]>): Promise<TrainingState> {
    let state = this.cache.get(ref.sha256);
    if (!state) {
      state = this.p.blobs.get(ref.key, ref.sha256).then((b) => parseState(b, shapes, ref.key));
      state.catch(() => this.cache.delete(ref.sha256));
      this.cache.set(ref.sha256, state);
      while (this.cache.size > 6) this.cache.delete(this.cache.keys().next().value!);
    }
    return state;
  }
}
