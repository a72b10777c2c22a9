// Angle probes (the fine-tuned angle metric) and the strategies derived from their profiles.
import { Arg, Authorized, Ctx, FieldResolver, ID, Int, Mutation, Query, Resolver, Root } from 'type-graphql';
import * as T from '../../schema/types';
import { AngleProbeInput } from '../../schema/inputs';
import type { Context } from './context';
import { toAngleProfile, toDataset, toModel, toRun } from './mappers';
import { strategyOn } from './catalog.resolver';

@Resolver(() => T.AngleProfile)
export class AngleResolver {
  @Query(() => [T.AngleProfile], { description: 'Stored angle profiles, newest first' })
  angleProfiles(@Ctx() { services }: Context, @Arg('model', { nullable: true }) model?: string, @Arg('dataset', { nullable: true }) dataset?: string): T.AngleProfile[] {
    const rows = services.runs.angleProfiles({
      modelId: model ? services.catalog.model(model).id : undefined, datasetId: dataset ? services.catalog.dataset(dataset).id : undefined,
    });
    return rows.map((r) => toAngleProfile(r, JSON.parse(services.runs.storedStrategy(r.strategy_name)?.spec ?? '{}')));
  }

  @Query(() => T.AngleProfile, { description: 'By profile id or probe run id' })
  angleProfile(@Ctx() { services }: Context, @Arg('id', () => ID) id: string): T.AngleProfile {
    const r = services.runs.angleProfileById(id);
    return toAngleProfile(r, JSON.parse(services.runs.storedStrategy(r.strategy_name)?.spec ?? '{}'));
  }

  @FieldResolver(() => T.Strategy, { description: 'The derived strategy with its counts on the probed model' })
  strategy(@Ctx() { services }: Context, @Root() p: T.AngleProfile): T.Strategy {
    const run = services.runs.get(p.runId);
    return strategyOn(toModel(services.catalog.model(p.modelId)), services.runs.resolveStrategy(p.strategyName), run.num_classes ?? undefined);
  }

  @FieldResolver(() => T.Run)
  run(@Ctx() { services }: Context, @Root() p: T.AngleProfile): T.Run {
    const r = services.runs.get(p.runId);
    return toRun(r, services.runs.progress(r));
  }

  @FieldResolver(() => T.Dataset)
  dataset(@Ctx() { services }: Context, @Root() p: T.AngleProfile): T.Dataset {
    return toDataset(services.catalog.dataset(p.datasetId));
  }

  @Authorized()
  @Mutation(() => T.Run, { description: 'Full fine-tuning for a short, visible budget on the workers; when it ends, its angle profile and the derived strategy are stored' })
  startAngleProbe(@Ctx() { services }: Context, @Arg('input') input: AngleProbeInput): T.Run {
    const r = services.runs.startAngleProbe({
      model: input.model, dataset: input.dataset, probeSteps: input.probeSteps ?? undefined, probeEpochs: input.probeEpochs ?? undefined,
      hyper: { ...(input.hyperParameters ?? {}) }, direction: input.direction, topK: input.topK ?? undefined, budget: input.budget ?? undefined,
      name: input.name ?? undefined,
    });
    return toRun(r, services.runs.progress(r));
  }

  @Authorized()
  @Mutation(() => T.Strategy, { description: 'Another selection from a stored profile (no new probe), stored under a name' })
  deriveAngleStrategy(@Ctx() { services }: Context, @Arg('profile', () => ID) profile: string, @Arg('name') name: string,
    @Arg('direction', () => T.AngleDirection) direction: T.AngleDirection, @Arg('topK', () => Int, { nullable: true }) topK?: number,
    @Arg('budget', () => Int, { nullable: true }) budget?: number): T.Strategy {
    const row = services.runs.deriveStrategy(profile, direction, topK ?? undefined, budget ?? undefined, name);
    const p = services.runs.angleProfileById(profile);
    return strategyOn(toModel(services.catalog.model(p.model_id)), JSON.parse(row.spec), services.runs.get(p.run_id).num_classes ?? undefined);
  }
}
