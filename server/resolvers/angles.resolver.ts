// Angle probes (the fine-tuned angle metric) and the strategies derived from their profiles.
import { Arg, Authorized, Ctx, FieldResolver, ID, Int, Mutation, Query, Resolver, Root } from 'type-graphql';
import * as T from '../../schema/types';
import { AngleProbeInput } from '../../schema/inputs';
import type { AngleProfileRecord } from '../state/records';
import type { Services } from '../services';
import type { Context } from './context';
import { toAngleProfile, toDataset } from './mappers';
import { strategyOn } from './catalog.resolver';
import { hyperOf, readableRun, runOf } from './run.resolver';
import { canRead } from './context';

const profileOf = async (services: Services, r: AngleProfileRecord): Promise<T.AngleProfile> => toAngleProfile(r, await services.strategies.stored(r.strategyName));

@Resolver(() => T.AngleProfile)
export class AngleResolver {
  @Query(() => [T.AngleProfile], { description: 'Stored angle profiles, newest first: readers all, others those of public probes' })
  async angleProfiles(
    @Ctx() ctx: Context, @Arg('model', { nullable: true }) model?: string, @Arg('dataset', { nullable: true }) dataset?: string,
  ): Promise<T.AngleProfile[]> {
    const { services } = ctx;
    const rows = await services.strategies.profiles({
      modelId: model ? (await services.models.get(model)).id : undefined, datasetId: dataset ? (await services.datasets.get(dataset)).id : undefined,
    });
    const visible = canRead(ctx) ? rows : (await Promise.all(rows.map(async (r) => ((await services.runs.get(r.runId)).public ? r : undefined))))
      .filter((r): r is AngleProfileRecord => r !== undefined);
    return Promise.all(visible.map((r) => profileOf(services, r)));
  }

  @Query(() => T.AngleProfile, { description: 'By profile id or probe run id; a public probe\'s for anyone' })
  async angleProfile(@Ctx() ctx: Context, @Arg('id', () => ID) id: string): Promise<T.AngleProfile> {
    const profile = await ctx.services.strategies.profile(id);
    await readableRun(ctx, profile.runId);
    return profileOf(ctx.services, profile);
  }

  @FieldResolver(() => T.Strategy, { description: 'The derived strategy with its counts on the probed model' })
  async strategy(@Ctx() { services }: Context, @Root() p: T.AngleProfile): Promise<T.Strategy> {
    const run = await services.runs.get(p.runId);
    return strategyOn(await services.models.get(p.modelId), await services.strategies.resolve(p.strategyName), run.numClasses);
  }

  @FieldResolver(() => T.Run)
  async run(@Ctx() ctx: Context, @Root() p: T.AngleProfile): Promise<T.Run> {
    return runOf(ctx.services, await readableRun(ctx, p.runId));
  }

  @FieldResolver(() => T.Dataset)
  async dataset(@Ctx() { services }: Context, @Root() p: T.AngleProfile): Promise<T.Dataset> {
    return toDataset(await services.datasets.get(p.datasetId));
  }

  @Authorized()
  @Mutation(() => T.Run, { description: 'Full fine-tuning for a short, visible budget on the workers; when it ends, its angle profile and the derived strategy are stored' })
  async startAngleProbe(@Ctx() { services }: Context, @Arg('input') input: AngleProbeInput): Promise<T.Run> {
    const r = await services.creation.startAngleProbe({
      model: input.model, dataset: input.dataset, probeSteps: input.probeSteps ?? undefined, probeEpochs: input.probeEpochs ?? undefined,
      hyper: hyperOf(input.hyperParameters),
      selection: { direction: input.direction, topK: input.topK ?? undefined, budget: input.budget ?? undefined, name: input.name ?? undefined },
    });
    return runOf(services, r);
  }

  @Authorized()
  @Mutation(() => T.Strategy, { description: 'Another selection from a stored profile (no new probe), stored under a name' })
  async deriveAngleStrategy(@Ctx() { services }: Context, @Arg('profile', () => ID) profile: string, @Arg('name') name: string,
    @Arg('direction', () => T.AngleDirection) direction: T.AngleDirection, @Arg('topK', () => Int, { nullable: true }) topK?: number,
    @Arg('budget', () => Int, { nullable: true }) budget?: number): Promise<T.Strategy> {
    const stored = await services.strategies.derive(profile, direction, topK ?? undefined, budget ?? undefined, name);
    const p = await services.strategies.profile(profile);
    return strategyOn(await services.models.get(p.modelId), stored.strategy, (await services.runs.get(p.runId)).numClasses);
  }
}
