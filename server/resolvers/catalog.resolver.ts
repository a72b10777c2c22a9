// Models, datasets, uploads and strategies.
import { Arg, Authorized, Ctx, FieldResolver, ID, Int, Mutation, Query, Resolver, Root } from 'type-graphql';
import { PRESET_NAMES, Strategy, inspect, presetStrategy } from '../../engine';
import * as T from '../../schema/types';
import { ImportDatasetInput, RegisterModelInput } from '../../schema/inputs';
import { badInput } from '../errors';
import { modelConfig } from '../services/runs';
import type { Context } from './context';
import { toDataset, toModel } from './mappers';

export function pageArgs(first: number, offset: number): void {
  if (first < 1 || first > 100) throw badInput('first must be between 1 and 100');
  if (offset < 0) throw badInput('offset must be >= 0');
}

@Resolver(() => T.Model)
export class ModelResolver {
  @Query(() => T.ModelPage)
  models(@Ctx() { services }: Context, @Arg('search', { nullable: true }) search?: string,
    @Arg('first', () => Int, { defaultValue: 20 }) first = 20, @Arg('offset', () => Int, { defaultValue: 0 }) offset = 0): T.ModelPage {
    pageArgs(first, offset);
    const p = services.catalog.models(search, first, offset);
    return Object.assign(new T.ModelPage(), { ...p, items: p.items.map(toModel) });
  }

  @Query(() => T.Model, { description: 'By id or name' })
  model(@Ctx() { services }: Context, @Arg('id') id: string): T.Model {
    return toModel(services.catalog.model(id));
  }

  @FieldResolver(() => [T.Strategy], { description: 'Every preset on this model, then the stored strategies made for it (angle probes), with tuned-parameter counts and predicted delta sizes' })
  strategies(@Ctx() { services }: Context, @Root() model: T.Model, @Arg('numClasses', () => Int, { nullable: true }) numClasses?: number): T.Strategy[] {
    const stored = services.runs.storedStrategies(model.id).map((s) => JSON.parse(s.spec) as Strategy);
    return [...PRESET_NAMES.map((name) => presetStrategy(name)), ...stored].map((s) => strategyOn(model, s, numClasses));
  }

  @Authorized()
  @Mutation(() => T.Upload, { description: 'A presigned URL to PUT a file to (checkpoint, dataset file); size-limited' })
  async createUpload(@Ctx() { services }: Context, @Arg('filename') filename: string, @Arg('bytes', () => Int) bytes: number): Promise<T.Upload> {
    const u = await services.catalog.createUpload(filename, bytes);
    return Object.assign(new T.Upload(), { id: u.row.id, url: u.url, maxBytes: services.platform.config.uploadMaxBytes, expiresAt: u.expiresAt });
  }

  @Authorized()
  @Mutation(() => T.Model, { description: 'Validates a safetensors checkpoint (timm, vit-pytorch or HF names) and stores it canonically' })
  async registerModel(@Ctx() { services }: Context, @Arg('input') input: RegisterModelInput): Promise<T.Model> {
    return toModel(await services.catalog.registerModel(input));
  }
}

@Resolver(() => T.Dataset)
export class DatasetResolver {
  @Query(() => T.DatasetPage)
  datasets(@Ctx() { services }: Context, @Arg('search', { nullable: true }) search?: string,
    @Arg('first', () => Int, { defaultValue: 20 }) first = 20, @Arg('offset', () => Int, { defaultValue: 0 }) offset = 0): T.DatasetPage {
    pageArgs(first, offset);
    const p = services.catalog.datasets(search, first, offset);
    return Object.assign(new T.DatasetPage(), { ...p, items: p.items.map(toDataset) });
  }

  @Query(() => T.Dataset, { description: 'By id or name' })
  dataset(@Ctx() { services }: Context, @Arg('id') id: string): T.Dataset {
    return toDataset(services.catalog.dataset(id));
  }

  @Authorized()
  @Mutation(() => T.Dataset, { description: 'Reads IDX or CIFAR-10 files (a server path or uploads) and stores them as safetensors shards' })
  async importDataset(@Ctx() { services }: Context, @Arg('input') input: ImportDatasetInput): Promise<T.Dataset> {
    return toDataset(await services.catalog.importDataset(input));
  }
}

@Resolver(() => T.Strategy)
export class StrategyResolver {
  @Query(() => T.Strategy, { description: 'What a preset or custom strategy (JSON) tunes on a model' })
  strategy(@Ctx() { services }: Context, @Arg('model', () => ID) model: string, @Arg('spec') spec: string,
    @Arg('numClasses', () => Int, { nullable: true }) numClasses?: number): T.Strategy {
    return strategyOn(toModel(services.catalog.model(model)), services.runs.resolveStrategy(spec), numClasses);
  }
}

export function strategyOn(model: T.Model, strategy: Strategy, numClasses?: number): T.Strategy {
  const config = modelConfig({ config: JSON.stringify(model.architecture) } as never, numClasses ?? model.numClasses);
  let ins;
  try {
    ins = inspect(strategy, config);
  } catch (e) {
    throw badInput(`strategy: ${(e as Error).message}`);
  }
  return Object.assign(new T.Strategy(), {
    name: ins.strategy, spec: strategy, tunedParameters: ins.tunedParams, totalParameters: ins.totalParams,
    tunedPercent: (100 * ins.tunedParams) / ins.totalParams, deltaBytes: ins.deltaBytes.f32, deltaBytesF16: ins.deltaBytes.f16,
    attentionLayers: ins.attnLayers, ffnLayers: ins.ffnLayers, tunedTensors: ins.tuned,
  });
}
