// Runs: list, start, cancel, follow; their deltas and merging.
import { Arg, Authorized, Ctx, FieldResolver, ID, Int, Mutation, Query, Resolver, Root, Subscription } from 'type-graphql';
import * as T from '../../schema/types';
import { CreateSoupInput, RunFilter, StartRunInput } from '../../schema/inputs';
import { RUN_EVENTS } from '../events';
import type { RunEventPayload } from '../events';
import type { Context } from './context';
import { pageArgs } from './catalog.resolver';
import { toDataset, toDelta, toModel, toRun, toShard } from './mappers';

@Resolver(() => T.Run)
export class RunResolver {
  @Query(() => T.RunPage)
  runs(@Ctx() { services }: Context, @Arg('filter', () => RunFilter, { nullable: true }) filter?: RunFilter,
    @Arg('first', () => Int, { defaultValue: 20 }) first = 20, @Arg('offset', () => Int, { defaultValue: 0 }) offset = 0): T.RunPage {
    pageArgs(first, offset);
    const f = {
      status: filter?.status, kind: filter?.kind, modelId: filter?.model ? services.catalog.model(filter.model).id : undefined,
      datasetId: filter?.dataset ? services.catalog.dataset(filter.dataset).id : undefined,
    };
    const p = services.runs.list(f, first, offset);
    return Object.assign(new T.RunPage(), { ...p, items: p.items.map((r) => toRun(r, services.runs.progress(r))) });
  }

  @Query(() => T.Run)
  run(@Ctx() { services }: Context, @Arg('id', () => ID) id: string): T.Run {
    const r = services.runs.get(id);
    return toRun(r, services.runs.progress(r));
  }

  @FieldResolver(() => T.Model)
  model(@Ctx() { services }: Context, @Root() run: T.Run): T.Model {
    return toModel(services.catalog.model(run.modelId));
  }

  @FieldResolver(() => T.Dataset)
  dataset(@Ctx() { services }: Context, @Root() run: T.Run): T.Dataset {
    return toDataset(services.catalog.dataset(run.datasetId));
  }

  @FieldResolver(() => T.Delta, { nullable: true })
  delta(@Ctx() { services }: Context, @Root() run: T.Run): T.Delta | undefined {
    const d = services.runs.delta(run.id);
    return d && toDelta(d);
  }

  @FieldResolver(() => [T.Shard], { description: 'All shards, or one round\'s' })
  shards(@Ctx() { services }: Context, @Root() run: T.Run, @Arg('round', () => Int, { nullable: true }) round?: number): T.Shard[] {
    return services.shards.shardsOf(run.id, round ?? undefined).map(toShard);
  }

  @Authorized()
  @Mutation(() => T.Run)
  startRun(@Ctx() { services }: Context, @Arg('input') input: StartRunInput): T.Run {
    const r = services.runs.start({ model: input.model, dataset: input.dataset, strategy: input.strategy, hyper: { ...(input.hyperParameters ?? {}) } });
    return toRun(r, services.runs.progress(r));
  }

  @Authorized()
  @Mutation(() => T.Run, { description: 'A soup of finished runs\' deltas (uniform, or greedy on a held-out half of the test split): a run of kind SOUP with a delta' })
  createSoup(@Ctx() { services }: Context, @Arg('input') input: CreateSoupInput): T.Run {
    const r = services.runs.createSoup({ runs: input.runs, method: input.method, heldOut: input.heldOut ?? undefined, name: input.name ?? undefined });
    return toRun(r, services.runs.progress(r));
  }

  @Authorized()
  @Mutation(() => T.Run)
  cancelRun(@Ctx() { services }: Context, @Arg('id', () => ID) id: string): T.Run {
    const r = services.runs.cancel(id);
    return toRun(r, services.runs.progress(r));
  }

  @Subscription(() => T.RunEvent, {
    topics: RUN_EVENTS,
    filter: ({ payload, args }: { payload: RunEventPayload; args: { runId?: string } }) => !args.runId || payload.runId === args.runId,
    description: 'Progress, rounds, evaluations and warnings of one run (or all)',
  })
  runEvents(@Root() payload: RunEventPayload, @Arg('runId', () => ID, { nullable: true }) _runId?: string): T.RunEvent {
    return Object.assign(new T.RunEvent(), payload);
  }
}

@Resolver(() => T.Delta)
export class DeltaResolver {
  @Query(() => T.Delta, { description: 'By delta id or run id' })
  delta(@Ctx() { services }: Context, @Arg('id', () => ID) id: string): T.Delta {
    return toDelta(services.runs.deltaById(id));
  }

  @FieldResolver(() => String, { description: 'A short-lived presigned GET URL of the safetensors file' })
  async downloadUrl(@Ctx() { services }: Context, @Root() delta: T.Delta): Promise<string> {
    return services.platform.store.presignGet(delta.key, services.platform.config.urlSeconds);
  }

  @FieldResolver(() => T.Run)
  run(@Ctx() { services }: Context, @Root() delta: T.Delta): T.Run {
    const r = services.runs.get(delta.runId);
    return toRun(r, services.runs.progress(r));
  }

  @FieldResolver(() => T.Model, { nullable: true, description: 'The full checkpoint made by mergeDelta, if any' })
  mergedModel(@Ctx() { services }: Context, @Root() delta: T.Delta): T.Model | undefined {
    return delta.mergedModelId ? toModel(services.catalog.model(delta.mergedModelId)) : undefined;
  }

  @Authorized()
  @Mutation(() => T.Model, { description: 'Base + delta as a full checkpoint, registered as a new model' })
  async mergeDelta(@Ctx() { services }: Context, @Arg('id', () => ID) id: string, @Arg('name') name: string): Promise<T.Model> {
    return toModel(await services.runs.merge(id, name));
  }
}
