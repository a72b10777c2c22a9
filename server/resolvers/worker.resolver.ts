// Workers and the shard protocol (worker token).
import { Arg, Authorized, Ctx, Float, ID, Int, Mutation, Query, Resolver } from 'type-graphql';
import * as T from '../../schema/types';
import type { Context } from './context';
import { mintVolunteerToken } from './context';
import { badInput, forbidden } from '../errors';
import { pageArgs } from './catalog.resolver';
import { toShard, toWorker } from './mappers';

@Resolver(() => T.Worker)
export class WorkerResolver {
  @Query(() => T.WorkerPage)
  workers(@Ctx() { services }: Context, @Arg('online', { defaultValue: false }) online: boolean,
    @Arg('first', () => Int, { defaultValue: 20 }) first = 20, @Arg('offset', () => Int, { defaultValue: 0 }) offset = 0): T.WorkerPage {
    pageArgs(first, offset);
    const p = services.shards.workers(online, first, offset);
    return Object.assign(new T.WorkerPage(), { ...p, items: p.items.map((w) => toWorker(w, services.shards.isOnline(w))) });
  }

  @Authorized('WORKER', 'VOLUNTEER')
  @Mutation(() => T.Worker)
  registerWorker(@Ctx() { services, role }: Context, @Arg('name') name: string, @Arg('kind') kind: string, @Arg('backend') backend: string): T.Worker {
    if (role === 'VOLUNTEER' && kind !== 'browser') throw badInput("a volunteer token registers browser workers only (kind: 'browser')");
    return toWorker(services.shards.register(name, kind, backend), true);
  }

  @Mutation(() => String, { description: 'A token for a browser tab to volunteer as a worker; PARTUNE_INVITATION, when set, must be given' })
  volunteerToken(@Ctx() { services }: Context, @Arg('invitation', () => String, { nullable: true }) invitation?: string): string {
    const required = services.platform.config.invitation;
    if (required && invitation !== required) throw forbidden('this server takes volunteers by invitation: open the worker page with ?invitation=CODE');
    return mintVolunteerToken(services.platform);
  }

  @Authorized('WORKER', 'VOLUNTEER')
  @Mutation(() => T.ShardAssignment, { nullable: true, description: 'Leases the next pending shard that fits the memory budget (bytes); null when there is none' })
  async claimShard(@Ctx() { services }: Context, @Arg('workerId', () => ID) workerId: string,
    @Arg('memoryBudget', () => Float, { nullable: true }) memoryBudget?: number): Promise<T.ShardAssignment | null> {
    const a = await services.shards.claim(workerId, memoryBudget ?? undefined);
    return a && Object.assign(new T.ShardAssignment(), { ...a, shard: toShard(a.shard) });
  }

  @Authorized('WORKER', 'VOLUNTEER')
  @Mutation(() => T.Heartbeat, { description: 'Extends the lease; says whether to stop' })
  heartbeat(@Ctx() { services }: Context, @Arg('workerId', () => ID) workerId: string, @Arg('shardId', () => ID) shardId: string,
    @Arg('attempt', () => Int) attempt: number, @Arg('stepsDone', () => Int) stepsDone: number,
    @Arg('loss', () => Float, { nullable: true }) loss?: number): T.Heartbeat {
    return Object.assign(new T.Heartbeat(), services.shards.heartbeat(workerId, shardId, attempt, stepsDone, loss ?? undefined));
  }

  @Authorized('WORKER', 'VOLUNTEER')
  @Mutation(() => T.Shard, { description: 'After the update is uploaded: validates and accepts it (idempotent)' })
  async completeShard(@Ctx() { services }: Context, @Arg('workerId', () => ID) workerId: string, @Arg('shardId', () => ID) shardId: string,
    @Arg('attempt', () => Int) attempt: number, @Arg('loss', () => Float) loss: number, @Arg('imagesPerSecond', () => Float) imagesPerSecond: number): Promise<T.Shard> {
    return toShard(await services.shards.complete(workerId, shardId, attempt, loss, imagesPerSecond));
  }

  @Authorized('WORKER', 'VOLUNTEER')
  @Mutation(() => Boolean, { description: 'Gives a shard back after an error; it is re-issued' })
  failShard(@Ctx() { services }: Context, @Arg('workerId', () => ID) workerId: string, @Arg('shardId', () => ID) shardId: string,
    @Arg('attempt', () => Int) attempt: number, @Arg('message') message: string): boolean {
    return services.shards.fail(workerId, shardId, attempt, message);
  }
}
