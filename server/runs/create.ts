// Starting runs of each kind: inputs checked at the door (a bad one is BAD_USER_INPUT before any
// record exists), the record inserted, the scheduler told.
import { randomUUID } from 'node:crypto';
import { OptionError, defaultMicroBatch, inspect, stepMemoryBytes, windowPackBytes } from '../../engine';
import { MAX_SHARDS_PER_ROUND, RunOptions, asksAutoShards, parseRunOptions } from '../../protocol/run-options';
import { Datasets } from '../catalog/datasets';
import { Models, modelConfig } from '../catalog/models';
import { badInput } from '../errors';
import type { Platform } from '../platform';
import { AngleSelectionSpec, DatasetRecord, ModelRecord, RunRecord, RunSpec, SoupSpec, TrainingSpec } from '../state/records';
import { RunEvents } from './events';
import { longestWindow, makePlan } from './plan';
import { RunQueries } from './queries';
import { Scheduler } from './scheduler';
import { Strategies } from './strategies';
import { Workers } from '../shards/workers';

/** Run options as a GraphQL user sees their names. */
function runOptions(raw: Record<string, unknown>, workersOnline: number | undefined): RunOptions {
  try {
    return parseRunOptions(raw, workersOnline);
  } catch (e) {
    if (e instanceof OptionError) throw badInput(`hyperParameters${e.option ? `.${e.option}` : ''}: ${e.message}`);
    throw e;
  }
}

export class RunCreation {
  constructor(
    private readonly p: Platform, private readonly models: Models, private readonly datasets: Datasets, private readonly strategies: Strategies,
    private readonly workers: Workers, private readonly scheduler: Scheduler, private readonly events: RunEvents, private readonly runs: RunQueries,
  ) {}

  async start(input: { model: string; dataset: string; strategy: string; hyper: Record<string, unknown> }): Promise<RunRecord> {
    return this.startTraining(input, { kind: 'FINETUNE', options: runOptions(input.hyper, await this.workersOnline(input.hyper)) }, input.hyper);
  }

  /** Full fine-tuning for a short budget, run by workers like any run; it ends with an angle profile and a stored strategy. */
  async startAngleProbe(input: { model: string; dataset: string; probeSteps?: number; probeEpochs?: number; hyper: Record<string, unknown>; selection: AngleSelectionSpec }): Promise<RunRecord> {
    const { selection } = input;
    if (selection.topK !== undefined && selection.budget !== undefined) throw badInput('give topK or budget, not both');
    if (selection.name !== undefined) await this.strategies.checkNewName(selection.name);
    const config = modelConfig(await this.models.get(input.model), (await this.datasets.get(input.dataset)).classes);
    if (selection.topK !== undefined && (!Number.isInteger(selection.topK) || selection.topK < 0 || selection.topK > config.depth)) throw badInput(`topK must be 0..${config.depth}`);
    const hyper = { ...input.hyper, epochs: input.probeEpochs ?? input.hyper.epochs ?? 1, maxSteps: input.probeSteps ?? input.hyper.maxSteps };
    return this.startTraining({ ...input, strategy: 'full' }, { kind: 'ANGLE_PROBE', options: runOptions(hyper, await this.workersOnline(hyper)), selection }, hyper);
  }

  /** For shardsPerRound AUTO only: the workers online that a plan can count on (registrations alone do not count). */
  private async workersOnline(hyper: Record<string, unknown>): Promise<number | undefined> {
    return asksAutoShards(hyper) ? this.workers.provenCount() : undefined;
  }

  private async startTraining(input: { model: string; dataset: string; strategy: string }, spec: TrainingSpec, hyper: Record<string, unknown>): Promise<RunRecord> {
    const model = await this.models.get(input.model);
    const dataset = await this.datasets.get(input.dataset);
    const strategy = await this.strategies.resolve(input.strategy);
    const config = modelConfig(model, dataset.classes);
    // Any image size fits (the model's transform resizes); channels must match.
    if (dataset.channels !== config.channels) {
      throw badInput(`dataset '${dataset.name}' has ${dataset.channels}-channel images; model '${model.name}' takes ${config.channels} channels`);
    }
    if (dataset.private && spec.options.admitVolunteers) {
      throw badInput(`hyperParameters.admitVolunteers: dataset '${dataset.name}' is private; only registered workers may train on it`);
    }
    if (spec.options.normalize === 'model' && !config.preprocessing) throw badInput(`hyperParameters.normalize: model '${model.name}' declares no normalisation of its own; use DATASET or AUTO`);
    let tuned;
    try {
      tuned = inspect(strategy, config);
    } catch (e) {
      throw badInput(`strategy: ${(e as Error).message}`);
    }
    // A split smaller than one batch, or a plan too large to keep, is refused now, not later.
    let plan;
    try {
      plan = makePlan(spec.options, dataset.trainCount, this.p.config.maxRunSteps);
    } catch (e) {
      if (e instanceof OptionError) throw badInput(`hyperParameters.${e.option}: ${e.message}`);
      throw e;
    }
    // Unclipped gradients leave the moments without an upper bound, so a poisoned v could pass.
    if (spec.options.verification !== 'NONE' && !(spec.options.clipGrad > 0)) {
      throw badInput(`hyperParameters.clipGrad: runs that admit volunteers (verification ${spec.options.verification}) clip gradients, so the moments they carry can be bounded; give clipGrad > 0 or verification NONE`);
    }
    if (spec.options.shardsPerRound > MAX_SHARDS_PER_ROUND) {
      throw badInput(`hyperParameters.shardsPerRound: at most ${MAX_SHARDS_PER_ROUND} shards per round (got ${spec.options.shardsPerRound})`);
    }
    // Unset, the micro-batch is what fits a 2 GiB step, and is recorded: every worker then sums the same pieces.
    const microBatch = spec.options.microBatch ?? defaultMicroBatch(config, tuned.tunedParams, spec.options.batchSize);
    const recorded: TrainingSpec = { ...spec, options: Object.freeze({ ...spec.options, microBatch }) };
    // A worker holds the model, what one micro-batch's step makes of it, and one shard's window of records.
    const records = windowPackBytes(longestWindow(plan), spec.options.batchSize, dataset.height * dataset.width * dataset.channels);
    const need = Math.max(4 * model.blob.bytes, stepMemoryBytes(config, tuned.tunedParams, microBatch)) + records;
    const counts = { strategy, strategyName: tuned.strategy, tunedParams: tuned.tunedParams, totalParams: tuned.totalParams };
    const run = this.record(model, dataset, recorded, counts, need);
    this.p.log(`run ${run.id} (${spec.kind.toLowerCase()}): ${tuned.strategy} on ${model.name} -> ${dataset.name}, ${tuned.tunedParams.toLocaleString('en-US')} tuned parameters`);
    const shards = asksAutoShards(hyper) ? `; shardsPerRound AUTO: ${spec.options.shardsPerRound} (workers online)` : '';
    return this.insert(run, `run created${shards}`);
  }

  /** A soup of finished runs' deltas (one model, one dataset): uniform, or greedy on a held-out half. */
  async createSoup(input: { soup: SoupSpec; name?: string }): Promise<RunRecord> {
    const { soup } = input;
    if (soup.runs.length === 0) throw badInput('a soup needs at least one ingredient run');
    if (new Set(soup.runs).size !== soup.runs.length) throw badInput('an ingredient run is listed twice');
    const ingredients: RunRecord[] = [];
    for (const id of soup.runs) ingredients.push(await this.runs.get(id));
    for (const r of ingredients) {
      if (r.status !== 'SUCCEEDED' || !r.deltaId) throw badInput(`run ${r.id} is ${r.status}: only finished runs with a delta can be ingredients`);
    }
    const [first] = ingredients;
    for (const r of ingredients) {
      if (r.modelId !== first.modelId) throw badInput(`run ${r.id} fine-tuned another model than run ${first.id}: soups mix deltas of one base`);
      if (r.datasetId !== first.datasetId) throw badInput(`run ${r.id} trained on another dataset than run ${first.id}: its head has other classes`);
      if (JSON.stringify(r.normalization) !== JSON.stringify(first.normalization)) throw badInput(`run ${r.id} normalised its inputs differently from run ${first.id}`);
    }
    const model = await this.models.get(first.modelId);
    const dataset = await this.datasets.get(first.datasetId);
    const run: RunRecord = {
      ...this.record(model, dataset, { kind: 'SOUP', soup }, {
        strategy: { kind: 'custom', name: 'soup' }, strategyName: input.name ?? `${soup.method}-soup`, tunedParams: null, totalParams: first.totalParams,
      }),
      normalization: first.normalization,
    };
    this.p.log(`run ${run.id} (soup): ${soup.method} of ${ingredients.length} deltas`);
    return this.insert(run, `${soup.method} soup of ${ingredients.length} ingredients`);
  }

  private record(
    model: ModelRecord,
    dataset: DatasetRecord,
    spec: RunSpec,
    s: Pick<RunRecord, 'strategy' | 'strategyName' | 'tunedParams' | 'totalParams'>,
    memoryNeed?: number,
  ): RunRecord {
    const at = new Date();
    return {
      id: randomUUID(), spec, modelId: model.id, datasetId: dataset.id, ...s, status: 'PREPARING', plan: null, round: 0, step: 0, state: null,
      normalization: null, numClasses: dataset.classes, memoryNeed: memoryNeed ?? 4 * model.blob.bytes, metrics: [], accuracy: null, loss: null,
      deltaId: null, error: null, public: false, waiting: null, roundStates: [], rollbacks: [], createdAt: at, updatedAt: at, finishedAt: null,
    };
  }

  private async insert(run: RunRecord, message: string): Promise<RunRecord> {
    await this.p.state.runs.insert(run);
    await this.events.emit(run.id, 'STATUS', { message });
    void this.scheduler.advance(run.id);
    return run;
  }
}
