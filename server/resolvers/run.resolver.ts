// Runs: list, start, cancel, follow; their deltas and merging.
import { Arg, Authorized, Ctx, FieldResolver, ID, Int, Mutation, Query, Resolver, Root, Subscription } from 'type-graphql';
import * as T from '../../schema/types';
import { CreateSoupInput, HyperParametersInput, RunFilter, StartRunInput } from '../../schema/inputs';
import { RUN_EVENTS } from '../events';
import type { RunEventPayload } from '../events';
import type { RunRecord } from '../state/records';
import type { Services } from '../services';
import type { Context } from './context';
import { canRead, mintToken } from './context';
import { badInput, forbidden } from '../errors';
import { pageArgs } from './catalog.resolver';
import { make, toDataset, toDelta, toModel, toRun, toShard } from './mappers';

/** WAITING is a running run that waits; RUNNING one that moves. */
const statusFilter = (status: T.RunStatus | undefined): { status?: RunRecord['status']; waiting?: boolean } =>
  status === T.RunStatus.WAITING ? { status: 'RUNNING', waiting: true } : status === T.RunStatus.RUNNING ? { status: 'RUNNING', waiting: false } : { status };

export const runOf = async (services: Services, r: RunRecord): Promise<T.Run> => toRun(r, await services.runs.progress(r));

/** The input's options under the engine's names (evalLimit is testLimit's older name). */
export function hyperOf(input: HyperParametersInput | undefined | null): Record<string, unknown> {
  const { evalLimit, autoShards, ...given } = { ...(input ?? {}) };
  if (autoShards && given.shardsPerRound != null) throw badInput('hyperParameters: give shardsPerRound or autoShards, not both');
  return { ...given, testLimit: given.testLimit ?? evalLimit ?? undefined, ...(autoShards ? { shardsPerRound: 'AUTO' } : {}) };
}

const openCounts = new WeakMap<object, { readonly at: number; readonly count: Promise<number> }>();

@Resolver(() => T.Run)
export class RunResolver {
  @Query(() => T.RunPage, { description: 'Readers see every run; anyone else the public ones' })
  async runs(@Ctx() ctx: Context, @Arg('filter', () => RunFilter, { nullable: true }) filter?: RunFilter,
    @Arg('first', () => Int, { defaultValue: 20 }) first = 20, @Arg('offset', () => Int, { defaultValue: 0 }) offset = 0): Promise<T.RunPage> {
    pageArgs(first, offset);
    const { services } = ctx;
    const f = {
      publicOnly: !canRead(ctx), ...statusFilter(filter?.status ?? undefined), kind: filter?.kind ?? undefined, modelId: filter?.model ? (await services.models.get(filter.model)).id : undefined,
      datasetId: filter?.dataset ? (await services.datasets.get(filter.dataset)).id : undefined,
    };
    const p = await services.runs.list(f, first, offset);
    return Object.assign(new T.RunPage(), { ...p, items: await Promise.all(p.items.map((r) => runOf(services, r))) });
  }

  @Query(() => Int, { description: 'Running runs whose shards volunteers may lease (hyperParameters.admitVolunteers), of the 100 newest' })
  async runsOpenToVolunteers(@Ctx() { services }: Context): Promise<number> {
    // Anyone may ask, as often as aliases allow: one count a second per server answers them all.
    const known = openCounts.get(services);
    if (known && performance.now() - known.at < 1000) return known.count;
    const count = services.runs.list({ publicOnly: false, status: 'RUNNING' }, 100, 0)
      .then((running) => running.items.filter((r) => r.spec.kind !== 'SOUP' && r.spec.options.admitVolunteers).length);
    openCounts.set(services, { at: performance.now(), count });
    count.catch(() => openCounts.delete(services));
    return count;
  }

  @Query(() => T.Run, { description: 'Readers may read any run; anyone else a public one' })
  async run(@Ctx() ctx: Context, @Arg('id', () => ID) id: string): Promise<T.Run> {
    return runOf(ctx.services, await readableRun(ctx, id));
  }

  @FieldResolver(() => T.Model)
  async model(@Ctx() { services }: Context, @Root() run: T.Run): Promise<T.Model> {
    return toModel(await services.models.get(run.modelId));
  }

  @FieldResolver(() => T.Dataset)
  async dataset(@Ctx() { services }: Context, @Root() run: T.Run): Promise<T.Dataset> {
    return toDataset(await services.datasets.get(run.datasetId));
  }

  @FieldResolver(() => T.Delta, { nullable: true })
  async delta(@Ctx() { services }: Context, @Root() run: T.Run): Promise<T.Delta | undefined> {
    const d = await services.deltas.ofRun(run.id);
    return d && toDelta(d);
  }

  @Authorized('READER')
  @FieldResolver(() => T.ConfusionMatrix, { nullable: true, description: "The test split's confusion matrix, as its delta records it (up to 100 classes)" })
  async confusion(@Ctx() { services }: Context, @Root() run: T.Run): Promise<T.ConfusionMatrix | undefined> {
    const d = await services.deltas.ofRun(run.id);
    if (!d) return undefined;
    const { confusion, classNames } = await services.platform.compute.call('testConfusion', { delta: d.blob });
    if (!confusion) return undefined;
    return make(T.ConfusionMatrix, { counts: confusion, classNames: classNames ?? confusion.map((_, i) => String(i)) });
  }

  @FieldResolver(() => String, { nullable: true })
  error(@Ctx() ctx: Context, @Root() run: T.Run): string | undefined {
    return canRead(ctx) ? run.error : run.error && PUBLIC_REASON.error;
  }

  @FieldResolver(() => String, { nullable: true, description: 'Why it cannot move on (its status is then WAITING): which replica waits for which workers' })
  waiting(@Ctx() ctx: Context, @Root() run: T.Run): string | undefined {
    return canRead(ctx) ? run.waiting : run.waiting && PUBLIC_REASON.waiting;
  }

  @Authorized('READER')
  @FieldResolver(() => [T.Shard], { description: 'All shards, or one round\'s (readers only: they name workers)' })
  async shards(@Ctx() { services }: Context, @Root() run: T.Run, @Arg('round', () => Int, { nullable: true }) round?: number): Promise<T.Shard[]> {
    return (await services.platform.state.shards.ofRun(run.id, round ?? undefined)).map(toShard);
  }

  @Authorized()
  @Mutation(() => T.Run)
  async startRun(@Ctx() { services }: Context, @Arg('input') input: StartRunInput): Promise<T.Run> {
    const run = await services.creation.start({ model: input.model, dataset: input.dataset, strategy: input.strategy, hyper: hyperOf(input.hyperParameters) });
    if (input.public) await services.platform.state.runs.setPublic(run.id, true);
    return runOf(services, await services.runs.get(run.id));
  }

  @Authorized()
  @Mutation(() => T.Run, { description: 'Lets anyone follow a run\'s progress (a volunteer page), or stops that' })
  async setRunPublic(@Ctx() { services }: Context, @Arg('id', () => ID) id: string, @Arg('public') value: boolean): Promise<T.Run> {
    await services.runs.get(id);
    await services.platform.state.runs.setPublic(id, value);
    return runOf(services, await services.runs.get(id));
  }

  @Authorized()
  @Mutation(() => String, { description: 'A token that reads runs, shards, workers, delta URLs and server paths, and changes nothing' })
  issueReadToken(@Ctx() { services }: Context): string {
    return mintToken('reader', services.platform.config);
  }

  @Authorized()
  @Mutation(() => T.Run, { description: 'A soup of finished runs\' deltas (uniform, or greedy on a held-out half of the test split): a run of kind SOUP with a delta' })
  async createSoup(@Ctx() { services }: Context, @Arg('input') input: CreateSoupInput): Promise<T.Run> {
    const soup = { method: input.method, runs: input.runs, heldOut: input.heldOut ?? undefined };
    return runOf(services, await services.creation.createSoup({ soup, name: input.name ?? undefined }));
  }

  @Authorized()
  @Mutation(() => T.Run)
  async cancelRun(@Ctx() { services }: Context, @Arg('id', () => ID) id: string): Promise<T.Run> {
    return runOf(services, await services.scheduler.cancel(id));
  }

  @Subscription(() => T.RunEvent, {
    topics: RUN_EVENTS,
    filter: ({ payload, args, context }: { payload: RunEventPayload; args: { runId?: string }; context: Context }) =>
      (!args.runId || payload.runId === args.runId) && (canRead(context) || payload.public),
    description: 'Progress, rounds, evaluations and warnings of one run (or all); others than readers get public runs\' progress without messages',
  })
  runEvents(@Ctx() ctx: Context, @Root() payload: RunEventPayload, @Arg('runId', () => ID, { nullable: true }) _runId?: string): T.RunEvent {
    return Object.assign(new T.RunEvent(), canRead(ctx) ? payload : { ...payload, message: undefined });
  }
}

/**
 * What anyone but a reader is told of why a public run failed or waits: reasons quote workers'
 * messages, names, ids and addresses, which no pattern can be trusted to strip, so none is shown.
 */
export const PUBLIC_REASON = {
  error: 'the run failed; readers see why (the admin token or issueReadToken)',
  waiting: 'waiting for workers to verify or compute a result; readers see which',
} as const;

/** The run, if the caller may read it: readers any, others a public one. */
export async function readableRun(ctx: Context, id: string): Promise<RunRecord> {
  const run = await ctx.services.runs.get(id);
  if (!run.public && !canRead(ctx)) throw forbidden(`run ${id} is not public: reading it takes the admin token or a read token (issueReadToken)`);
  return run;
}

@Resolver(() => T.Delta)
export class DeltaResolver {
  @Query(() => T.Delta, { description: 'By delta id or run id; a public run\'s for anyone' })
  async delta(@Ctx() ctx: Context, @Arg('id', () => ID) id: string): Promise<T.Delta> {
    const delta = await ctx.services.deltas.get(id);
    await readableRun(ctx, delta.runId);
    return toDelta(delta);
  }

  @Authorized('READER')
  @FieldResolver(() => String, { description: 'A short-lived signed GET URL of the safetensors file (readers only); check it against sha256' })
  async downloadUrl(@Ctx() { services }: Context, @Root() delta: T.Delta): Promise<string> {
    return services.platform.blobs.presignGet(delta.key, services.platform.config.urlSeconds);
  }

  @FieldResolver(() => T.Run)
  async run(@Ctx() { services }: Context, @Root() delta: T.Delta): Promise<T.Run> {
    return runOf(services, await services.runs.get(delta.runId));
  }

  @FieldResolver(() => T.Model, { nullable: true, description: 'The full checkpoint made by mergeDelta, if any' })
  async mergedModel(@Ctx() { services }: Context, @Root() delta: T.Delta): Promise<T.Model | undefined> {
    return delta.mergedModelId ? toModel(await services.models.get(delta.mergedModelId)) : undefined;
  }

  @Authorized()
  @Mutation(() => T.Model, { description: 'Base + delta as a full checkpoint, registered as a new model' })
  async mergeDelta(@Ctx() { services }: Context, @Arg('id', () => ID) id: string, @Arg('name') name: string): Promise<T.Model> {
    return toModel(await services.deltas.merge(id, name));
  }
}
