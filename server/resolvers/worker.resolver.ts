// Workers and the shard protocol (worker and volunteer tokens).
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
  async workers(@Ctx() { services }: Context, @Arg('online', { defaultValue: false }) online: boolean,
    @Arg('first', () => Int, { defaultValue: 20 }) first = 20, @Arg('offset', () => Int, { defaultValue: 0 }) offset = 0): Promise<T.WorkerPage> {
    pageArgs(first, offset);
    const p = await services.workers.list(online, first, offset);
    return Object.assign(new T.WorkerPage(), { ...p, items: p.items.map((w) => toWorker(w, services.workers.isOnline(w))) });
  }

  @Authorized('WORKER', 'VOLUNTEER')
  @Mutation(() => T.Worker)
  async registerWorker(@Ctx() { services, role }: Context, @Arg('name') name: string, @Arg('kind') kind: string, @Arg('backend') backend: string): Promise<T.Worker> {
    if (role === 'VOLUNTEER' && kind !== 'browser') throw badInput("a volunteer token registers browser workers only (kind: 'browser')");
    return toWorker(await services.workers.register(name, kind, backend), true);
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
    const a = await services.leases.claim(workerId, memoryBudget ?? undefined);
    return a && Object.assign(new T.ShardAssignment(), { ...a.assignment, shard: toShard(a.shard), leaseUntil: a.leaseUntil });
  }

  @Authorized('WORKER', 'VOLUNTEER')
  @Mutation(() => T.Heartbeat, { description: 'Extends the lease; says whether to stop' })
  async heartbeat(@Ctx() { services }: Context, @Arg('workerId', () => ID) workerId: string, @Arg('shardId', () => ID) shardId: string,
    @Arg('attempt', () => Int) attempt: number, @Arg('stepsDone', () => Int) stepsDone: number,
    @Arg('loss', () => Float, { nullable: true }) loss?: number): Promise<T.Heartbeat> {
    return Object.assign(new T.Heartbeat(), await services.leases.heartbeat(workerId, shardId, attempt, stepsDone, loss ?? undefined));
  }

  @Authorized('WORKER', 'VOLUNTEER')
  @Mutation(() => T.Shard, { description: 'After the update is uploaded: validates and accepts it (idempotent)' })
  async completeShard(@Ctx() { services }: Context, @Arg('workerId', () => ID) workerId: string, @Arg('shardId', () => ID) shardId: string,
    @Arg('attempt', () => Int) attempt: number, @Arg('loss', () => Float) loss: number, @Arg('imagesPerSecond', () => Float) imagesPerSecond: number): Promise<T.Shard> {
    return toShard(await services.completion.complete(workerId, shardId, attempt, loss, imagesPerSecond));
  }

  @Authorized('WORKER', 'VOLUNTEER')
  @Mutation(() => Boolean, { description: 'Gives a shard back after an error; it is re-issued' })
  async failShard(@Ctx() { services }: Context, @Arg('workerId', () => ID) workerId: string, @Arg('shardId', () => ID) shardId: string,
    @Arg('attempt', () => Int) attempt: number, @Arg('message') message: string): Promise<boolean> {
    return services.leases.fail(workerId, shardId, attempt, message);
  }
}
