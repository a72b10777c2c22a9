// Models, datasets, uploads and strategies.
import { Arg, Authorized, Ctx, FieldResolver, ID, Int, Mutation, Query, Resolver, Root } from 'type-graphql';
import { PRESET_NAMES, Strategy, inspect, presetStrategy } from '../../engine';
import * as T from '../../schema/types';
import { ImportDatasetInput, RegisterModelInput } from '../../schema/inputs';
import { modelConfig } from '../catalog/models';
import { badInput } from '../errors';
import { MAX_PAGE } from '../limits';
import type { ModelRecord } from '../state/records';
import { type Context, canRead, oncePerRequest, uploaderOf } from './context';
import { make, toDataset, toModel } from './mappers';

export function pageArgs(first: number, offset: number, search?: string | null): void {
  if (search && search.length > 200) throw badInput(`search may have at most 200 characters (this one has ${search.length})`);
  if (first < 1 || first > MAX_PAGE) throw badInput(`first must be between 1 and ${MAX_PAGE}`);
  if (offset < 0) throw badInput('offset must be >= 0');
}

@Resolver(() => T.Model)
export class ModelResolver {
  @Query(() => T.ModelPage)
  async models(@Ctx() { services }: Context, @Arg('search', { nullable: true }) search?: string,
    @Arg('first', () => Int, { defaultValue: 20 }) first = 20, @Arg('offset', () => Int, { defaultValue: 0 }) offset = 0): Promise<T.ModelPage> {
    pageArgs(first, offset, search);
    const p = await services.models.list(search, first, offset);
    return Object.assign(new T.ModelPage(), { ...p, items: p.items.map(toModel) });
  }

  @Query(() => T.Model, { description: 'By id or name' })
  async model(@Ctx() { services }: Context, @Arg('id') id: string): Promise<T.Model> {
    return toModel(await services.models.get(id));
  }

  @FieldResolver(() => [T.Strategy], { description: 'Every preset on this model, then the stored strategies made for it (angle probes), with tuned-parameter counts and predicted delta sizes' })
  async strategies(@Ctx() { services }: Context, @Root() model: T.Model, @Arg('numClasses', () => Int, { nullable: true }) numClasses?: number): Promise<T.Strategy[]> {
    const record = await services.models.get(model.id);
    const stored = (await services.strategies.storedFor(model.id)).map((s) => s.strategy);
    return [...PRESET_NAMES.map((name) => presetStrategy(name)), ...stored].map((s) => strategyOn(record, s, numClasses));
  }

  @Authorized('READER')
  @Query(() => [T.ImagePrediction], {
    description: 'The top classes of uploaded photos (at most 32, each used once) by a model, or by a delta (delta or run id) on its base; admins and readers',
  })
  async predict(
    @Ctx() ctx: Context,
    @Arg('uploads', () => [ID]) uploads: string[],
    @Arg('model', { nullable: true, description: 'By id or name' }) model?: string,
    @Arg('delta', () => ID, { nullable: true }) delta?: string,
    @Arg('top', () => Int, { defaultValue: 5 }) top = 5,
  ): Promise<T.ImagePrediction[]> {
    oncePerRequest(ctx, 'predict');
    const found = await ctx.services.predictions.predict({ model, delta, uploads, top, caller: uploaderOf(ctx) });
    return found.map((p) => make(T.ImagePrediction, { filename: p.filename, top: p.top.map((c) => make(T.ClassProbability, c)) }));
  }

  @Authorized('READER')
  @Mutation(() => T.Upload, { description: 'A presigned URL to PUT a file to (checkpoint, dataset file, photo to predict); size-limited; admins and readers' })
  async createUpload(@Ctx() ctx: Context, @Arg('filename') filename: string, @Arg('bytes', () => Int) bytes: number): Promise<T.Upload> {
    const u = await ctx.services.uploads.create(filename, bytes, uploaderOf(ctx));
    return Object.assign(new T.Upload(), { id: u.upload.id, url: u.url, maxBytes: u.upload.declaredBytes, expiresAt: u.expiresAt });
  }

  @Authorized()
  @Mutation(() => T.Model, { description: 'Validates a safetensors checkpoint (timm, vit-pytorch or HF names) and stores it canonically' })
  async registerModel(@Ctx() { services }: Context, @Arg('input') input: RegisterModelInput): Promise<T.Model> {
    return toModel(await services.models.register(input));
  }
}

@Resolver(() => T.Dataset)
export class DatasetResolver {
  @Query(() => T.DatasetPage)
  async datasets(@Ctx() { services }: Context, @Arg('search', { nullable: true }) search?: string,
    @Arg('first', () => Int, { defaultValue: 20 }) first = 20, @Arg('offset', () => Int, { defaultValue: 0 }) offset = 0): Promise<T.DatasetPage> {
    pageArgs(first, offset, search);
    const p = await services.datasets.list(search, first, offset);
    return Object.assign(new T.DatasetPage(), { ...p, items: p.items.map(toDataset) });
  }

  @Query(() => T.Dataset, { description: 'By id or name' })
  async dataset(@Ctx() { services }: Context, @Arg('id') id: string): Promise<T.Dataset> {
    return toDataset(await services.datasets.get(id));
  }

  @FieldResolver(() => [String], { nullable: true })
  classNames(@Ctx() ctx: Context, @Root() dataset: T.Dataset): string[] | null {
    return dataset.private && !canRead(ctx) ? null : dataset.classNames ?? null;
  }

  @Authorized('READER')
  @FieldResolver(() => [T.DatasetSample], {
    description: 'The first training images of each class as thumbnails of at most 64 px (at most 8 a class, 100 classes, once an operation); readers only',
  })
  async samples(
    @Ctx() ctx: Context,
    @Root() dataset: T.Dataset,
    @Arg('perClass', () => Int, { defaultValue: 4 }) perClass = 4,
  ): Promise<T.DatasetSample[]> {
    if (perClass < 1 || perClass > 8) throw badInput('perClass must be from 1 to 8');
    oncePerRequest(ctx, 'samples');
    const { services } = ctx;
    const record = await services.datasets.get(dataset.id);
    const train = record.shards.filter((s) => s.split === 'train').map(({ key, sha256 }) => ({ key, sha256 }));
    const found = await services.platform.compute.call('datasetSamples', { train, perClass });
    return found
      .filter((f) => f.label < 100)
      .map((f) => make(T.DatasetSample, { ...f, name: record.classNames?.[f.label] ?? String(f.label) }));
  }

  @Authorized()
  @Mutation(() => T.Dataset, { description: 'Reads IDX or CIFAR-10 files or photos (a server path or uploads) and stores them as safetensors shards' })
  async importDataset(@Ctx() { services }: Context, @Arg('input') input: ImportDatasetInput): Promise<T.Dataset> {
    return toDataset(await services.datasets.import(input));
  }
}

@Resolver(() => T.Strategy)
export class StrategyResolver {
  @Query(() => T.Strategy, { description: 'What a preset or custom strategy (JSON) tunes on a model' })
  async strategy(@Ctx() { services }: Context, @Arg('model', () => ID) model: string, @Arg('spec') spec: string,
    @Arg('numClasses', () => Int, { nullable: true }) numClasses?: number): Promise<T.Strategy> {
    return strategyOn(await services.models.get(model), await services.strategies.resolve(spec), numClasses);
  }
}

/** What a strategy tunes on a model with `numClasses` classes (default: the model's own head). */
export function strategyOn(model: ModelRecord, strategy: Strategy, numClasses?: number): T.Strategy {
  let ins;
  try {
    ins = inspect(strategy, modelConfig(model, numClasses ?? model.config.numClasses));
  } catch (e) {
    throw badInput(`strategy: ${(e as Error).message}`);
  }
  return Object.assign(new T.Strategy(), {
    name: ins.strategy, spec: strategy, tunedParameters: ins.tunedParams, totalParameters: ins.totalParams,
    tunedPercent: (100 * ins.tunedParams) / ins.totalParams, deltaBytes: ins.deltaBytes.f32, deltaBytesF16: ins.deltaBytes.f16,
    attentionLayers: ins.attnLayers, ffnLayers: ins.ffnLayers, tunedTensors: ins.tuned,
  });
}
