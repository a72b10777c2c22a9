// SOUP's stages: no rounds; the finish averages the ingredients' deltas (uniform, or greedy on a
// held-out half of the test split) on the compute thread and scores the soup.
import { BlobRef, NewShard, RunRecord, ShardRecord, StoredBlob, blobsOf, need } from '../state/records';
import type { Platform } from '../platform';
import type { Finished, RunStages } from './stages';
import { RunEvents } from './events';

export class SoupStages implements RunStages {
  constructor(private readonly p: Platform, private readonly events: RunEvents) {}

  async configure(): Promise<null> {
    return null;
  }

  shards(run: RunRecord): Promise<NewShard[]> {
    throw new Error(`soup ${run.id} has no rounds to plan`);
  }

  aggregate(run: RunRecord, _shards: readonly ShardRecord[]): Promise<StoredBlob> {
    throw new Error(`soup ${run.id} has no rounds to aggregate`);
  }

  evaluate(run: RunRecord, _state: BlobRef): Promise<{ accuracy: number; loss: number }> {
    throw new Error(`soup ${run.id} has no rounds to evaluate`);
  }

  async finish(run: RunRecord): Promise<Finished> {
    if (run.spec.kind !== 'SOUP') throw new Error(`run ${run.id} is not a soup`);
    const { soup } = run.spec;
    const model = await this.p.state.models.byIdOrName(run.modelId);
    const dataset = await this.p.state.datasets.byIdOrName(run.datasetId);
    if (!model || !dataset) throw new Error(`soup ${run.id}: its ${model ? 'dataset' : 'model'} is no longer registered`);
    const ingredients: { label: string; delta: BlobRef }[] = [];
    for (const id of soup.runs) {
      const d = await this.p.state.results.deltaOfRun(id);
      if (!d) throw new Error(`ingredient run ${id} has no delta`);
      ingredients.push({ label: id, delta: { key: d.blob.key, sha256: d.blob.sha256 } });
    }
    const r = await this.p.compute.call('soup', {
      model: model.blob, ingredients, test: blobsOf(dataset, 'test'), normalization: need(run.normalization, 'normalization', run),
      method: soup.method, heldOut: soup.heldOut,
    }, (message) => void this.events.emit(run.id, 'ROUND', { message }));
    this.p.log(`soup ${run.id}: ${soup.method}, held-out ${(100 * r.heldOut).toFixed(2)}%, test ${(100 * r.test).toFixed(2)}%`);
    return {
      delta: { bytes: r.delta, tensors: r.tensors, tunedParams: r.tunedParams }, accuracy: r.test, loss: null,
      report: { method: soup.method, heldOutImages: r.heldOutImages, testImages: r.testImages, heldOut: r.heldOut, test: r.test, ingredients: r.ingredients, steps: r.steps },
      message: `${soup.method} soup: held-out ${(100 * r.heldOut).toFixed(2)}%, test ${(100 * r.test).toFixed(2)}%`,
    };
  }
}
