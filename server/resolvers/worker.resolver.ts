// Workers and the shard protocol. Registering takes the shared worker token (a trusted Node worker)
// or a volunteer token (a browser tab) and returns the worker's credential; every protocol call
// is made with that credential and acts as exactly that worker.
import { Arg, Authorized, Ctx, Float, ID, Int, Mutation, Query, Resolver } from 'type-graphql';
import * as T from '../../schema/types';
import { BackendChoiceInput } from '../../schema/inputs';
import { BackendChoice } from '../state/records';
import type { Context } from './context';
import { actingWorker, mintToken, sameSecret } from './context';
import { badInput, forbidden } from '../errors';
import { pageArgs } from './catalog.resolver';
import { toShard, toWorker } from './mappers';
import { MAX_CLAIM_WAIT_SECONDS } from '../shards/claim-waiters';

/** The input as stored: absent optional fields are null, in a fixed key order (compared as JSON). */
const backendChoice = (b: BackendChoiceInput): BackendChoice => ({
  chosen: b.chosen, detail: b.detail, how: b.how, model: b.model ?? null,
  timings: b.timings.map((t) => ({ backend: t.backend, detail: t.detail, imagesPerSecond: t.imagesPerSecond ?? null, note: t.note ?? null })),
});

@Resolver(() => T.Worker)
export class WorkerResolver {
  @Authorized('READER')
  @Query(() => T.WorkerPage, { description: 'Readers only' })
  async workers(@Ctx() { services }: Context, @Arg('online', { defaultValue: false }) online: boolean,
    @Arg('first', () => Int, { defaultValue: 20 }) first = 20, @Arg('offset', () => Int, { defaultValue: 0 }) offset = 0): Promise<T.WorkerPage> {
    pageArgs(first, offset);
    const p = await services.workers.list(online, first, offset);
    return Object.assign(new T.WorkerPage(), { ...p, items: p.items.map((w) => toWorker(w, services.workers.isOnline(w))) });
  }

  @Authorized('WORKER', 'VOLUNTEER')
  @Mutation(() => T.WorkerRegistration, { description: 'A worker joins; keep the credential: the shard protocol takes it as the bearer token' })
  async registerWorker(@Ctx() { services, role, client, tokenId }: Context, @Arg('name') name: string, @Arg('kind') kind: string,
    @Arg('backend') backend: string): Promise<T.WorkerRegistration> {
    const trusted = role !== 'VOLUNTEER';
    if (!trusted) {
      if (kind !== 'browser') throw badInput("a volunteer token registers browser workers only (kind: 'browser')");
      await services.workers.admitVolunteer(client);
    }
    const worker = await services.workers.register(name, kind, backend, trusted, client, tokenId ? `token:${tokenId}` : '');
    return Object.assign(new T.WorkerRegistration(), { worker: toWorker(worker, true), credential: mintToken('worker', services.platform.config, worker.id) });
  }

  @Authorized('REGISTERED_WORKER')
  @Mutation(() => String, { description: "A fresh credential for the calling worker (the same worker, a new expiry): renew before the old one expires" })
  async renewCredential(@Ctx() ctx: Context): Promise<string> {
    const worker = await ctx.services.workers.active(actingWorker(ctx));
    return mintToken('worker', ctx.services.platform.config, worker.id);
  }

  @Mutation(() => String, { description: 'A token for a browser tab to volunteer as a worker (rate-limited per address); PARTUNE_INVITATION, when set, must be given' })
  async volunteerToken(@Ctx() { services, client }: Context, @Arg('invitation', () => String, { nullable: true }) invitation?: string): Promise<string> {
    const required = services.platform.config.invitation;
    if (required && !sameSecret(invitation ?? '', required)) {
      throw forbidden('this server takes volunteers by invitation: open the worker page with ?invitation=CODE');
    }
    await services.workers.admitVolunteer(client);
    return mintToken('volunteer', services.platform.config);
  }

  @Authorized()
  @Mutation(() => T.Worker, { description: 'Quarantines a worker now: it may claim no more, and the shard it holds is re-issued' })
  async banWorker(@Ctx() { services }: Context, @Arg('id', () => ID) id: string): Promise<T.Worker> {
    const worker = await services.workers.ban(id);
    if (worker.currentShard) await services.leases.drop(id, worker.currentShard, 'its worker was banned');
    return toWorker({ ...worker, currentShard: null }, services.workers.isOnline(worker));
  }

  @Authorized('REGISTERED_WORKER')
  @Mutation(() => T.ShardAssignment, {
    nullable: true,
    description: `Leases the next pending shard that fits the memory budget (bytes); when there is none, waits up to \`wait\` seconds (at most ${MAX_CLAIM_WAIT_SECONDS}) for one, then answers null`,
  })
  async claimShard(@Ctx() ctx: Context,
    @Arg('kernelClass', { description: 'What the result will be computed on (engine/kernel-class.ts): a result of another class is refused' }) kernelClass: string,
    @Arg('memoryBudget', () => Float, { nullable: true }) memoryBudget?: number,
    @Arg('wait', () => Int, { defaultValue: 0 }) wait?: number,
    @Arg('backend', () => BackendChoiceInput, { nullable: true, description: 'How the worker chose its backend (recorded on its row when it changed)' }) backend?: BackendChoiceInput,
  ): Promise<T.ShardAssignment | null> {
    if (backend) await ctx.services.workers.reportBackend(actingWorker(ctx), backendChoice(backend));
    const a = await ctx.services.leases.claim(actingWorker(ctx), kernelClass, memoryBudget ?? undefined, wait ?? 0, ctx.gone);
    return a && Object.assign(new T.ShardAssignment(), { ...a.assignment, shard: toShard(a.shard), leaseUntil: a.leaseUntil });
  }

  @Authorized('REGISTERED_WORKER')
  @Mutation(() => T.Heartbeat, { description: 'Reports the steps done and extends the lease (never past its deadline); says whether to stop' })
  async heartbeat(@Ctx() ctx: Context, @Arg('shardId', () => ID) shardId: string, @Arg('attempt', () => Int) attempt: number,
    @Arg('stepsDone', () => Int) stepsDone: number, @Arg('loss', () => Float, { nullable: true }) loss?: number): Promise<T.Heartbeat> {
    return Object.assign(new T.Heartbeat(), await ctx.services.leases.heartbeat(actingWorker(ctx), shardId, attempt, stepsDone, loss ?? undefined));
  }

  @Authorized('REGISTERED_WORKER')
  @Mutation(() => T.Shard, { description: 'After the update is uploaded: validates and accepts it (idempotent)' })
  async completeShard(@Ctx() ctx: Context, @Arg('shardId', () => ID) shardId: string, @Arg('attempt', () => Int) attempt: number,
    @Arg('loss', () => Float) loss: number, @Arg('imagesPerSecond', () => Float) imagesPerSecond: number,
    @Arg('kernelClass', { description: 'What computed it: the class the shard was claimed with (results of one class must be bit-identical)' }) kernelClass: string,
    @Arg('downloadedBytes', () => Float, { nullable: true, description: 'What the worker downloaded for this shard (reported, for the operator)' }) downloadedBytes?: number): Promise<T.Shard> {
    const report = { loss, imagesPerSecond, kernelClass, downloadedBytes: downloadedBytes ?? null };
    return toShard(await ctx.services.completion.complete(actingWorker(ctx), shardId, attempt, report));
  }

  @Authorized('REGISTERED_WORKER')
  @Mutation(() => Boolean, { description: 'Gives a shard back after an error; it is re-issued (a strike against this worker)' })
  async failShard(@Ctx() ctx: Context, @Arg('shardId', () => ID) shardId: string, @Arg('attempt', () => Int) attempt: number,
    @Arg('message') message: string): Promise<boolean> {
    return ctx.services.leases.fail(actingWorker(ctx), shardId, attempt, message);
  }
}
