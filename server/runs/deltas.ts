// Deltas of finished runs, and merging one into its base as a model of its own.
import { Models } from '../catalog/models';
import { notFound } from '../errors';
import type { Platform } from '../platform';
import { DeltaRecord, ModelRecord } from '../state/records';
import { RunQueries } from './queries';

export class Deltas {
  constructor(private readonly p: Platform, private readonly models: Models, private readonly runs: RunQueries) {}

  ofRun(runId: string): Promise<DeltaRecord | undefined> {
    return this.p.state.results.deltaOfRun(runId);
  }

  /** By delta id or run id. */
  async get(id: string): Promise<DeltaRecord> {
    const delta = await this.p.state.results.delta(id);
    if (!delta) throw notFound(`delta '${id}' not found (a run has one once it has SUCCEEDED)`);
    return delta;
  }

  /** Base + delta as a full checkpoint, registered as a model of its own. */
  async merge(deltaId: string, name: string): Promise<ModelRecord> {
    const delta = await this.get(deltaId);
    await this.models.checkNewName(name);
    const base = await this.models.get((await this.runs.get(delta.runId)).modelId);
    const merged = await this.p.compute.call('merge', { model: base.blob, delta: delta.blob });
    const model = await this.models.add(name, merged, `merge of delta ${delta.id} into ${base.name}`);
    await this.p.state.results.setMergedModel(delta.id, model.id);
    return model;
  }
}
