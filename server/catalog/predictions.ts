// `predict`: the top classes of uploaded photos by a model, or by a run's delta on its base, through
// the model's eval transform on the runs' compute thread. Bounded: a few images a request, each an
// upload within the size limit, decoded with a pixel limit; every upload is used once.
import { badInput } from '../errors';
import type { Platform } from '../platform';
import type { Models } from './models';
import type { Uploads } from './uploads';
import type { Deltas } from '../runs/deltas';
import type { RunQueries } from '../runs/queries';
import { ComputeError } from '../compute';

/** Images one request may ask about. */
export const MAX_PREDICT_IMAGES = 32;

export interface PredictInput {
  readonly model?: string | null;
  readonly delta?: string | null;
  readonly uploads: readonly string[];
  readonly top: number;
  /** Who asks: 'admin' or `reader:<token id>`; only its own uploads are used. */
  readonly caller: string;
}

export interface ImagePrediction {
  readonly filename: string;
  readonly top: readonly { readonly label: number; readonly name: string; readonly probability: number }[];
}

export class Predictions {
  constructor(
    private readonly p: Platform,
    private readonly uploads: Uploads,
    private readonly models: Models,
    private readonly deltas: Deltas,
    private readonly runs: RunQueries,
  ) {}

  async predict(input: PredictInput): Promise<ImagePrediction[]> {
    if (!input.uploads.length || input.uploads.length > MAX_PREDICT_IMAGES) throw badInput(`give 1 to ${MAX_PREDICT_IMAGES} uploads`);
    if (!Number.isInteger(input.top) || input.top < 1 || input.top > 100) throw badInput('top must be an integer from 1 to 100');
    if (!input.model && !input.delta) throw badInput('give a model, or a delta (by delta or run id) to apply to its base');
    const delta = input.delta ? await this.deltas.get(input.delta) : undefined;
    const base = delta ? await this.models.get((await this.runs.get(delta.runId)).modelId) : await this.models.get(input.model!);
    if (delta && input.model && input.model !== base.id && input.model !== base.name)
      throw badInput(`delta ${delta.id} was made on model ${base.name}, not ${input.model}`);
    const images = await this.uploads.take(input.uploads, input.caller);
    let result: ImagePrediction[];
    try {
      result = await this.p.compute.call('predict', { model: base.blob, delta: delta?.blob, images, top: input.top });
    } catch (e) {
      if (e instanceof ComputeError && e.fault === 'input') throw badInput(e.message);
      throw e;
    }
    return result;
  }
}
