// Per-request context: who is calling (from the bearer token) and the services. Tokens other than
// the admin's and the shared worker token are signed, not stored, and expire (../credentials.ts).
import { createHash, timingSafeEqual } from 'node:crypto';
import { AuthChecker } from 'type-graphql';
import type { ServerConfig } from '../config';
import { Signed, mintToken, verifyToken } from '../credentials';
import { Services } from '../services';
import { badInput, forbidden, unauthenticated } from '../errors';

/**
 * ADMIN: everything. READER: reads runs, shards, workers, deltas and server paths (a token the admin
 * issues). WORKER (the shared token of admin-run Node workers) and VOLUNTEER (a browser tab's) may
 * only register a worker; the credential that returns is REGISTERED_WORKER: that worker's shard protocol.
 */
export type Role = 'ADMIN' | 'READER' | 'WORKER' | 'VOLUNTEER' | 'REGISTERED_WORKER';

export interface Context {
  readonly role: Role | null;
  /** The worker a REGISTERED_WORKER credential names. */
  readonly workerId: string | null;
  /** The id inside a VOLUNTEER token (workers registered with one token count as one group) or a READER token. */
  readonly tokenId: string | null;
  /** A token was sent and refused (expired, revoked, or not signed here): the caller is anonymous. */
  readonly refused: boolean;
  /** The client's address, for rate limits. */
  readonly client: string;
  /** Aborted when the client goes away (its request closed, its socket or operation ended): a waiting claim then takes nothing. */
  readonly gone: AbortSignal;
  readonly services: Services;
  /** Costly fields this request has resolved: each may be asked for once an operation (not once per alias). */
  readonly costly: Set<string>;
}

const ROLE: Record<Signed, Role> = { volunteer: 'VOLUNTEER', reader: 'READER', worker: 'REGISTERED_WORKER' };

export { mintToken };

/** Compares digests of equal length, so that the time taken says nothing of how much of a secret matched. */
export const sameSecret = (given: string, secret: string): boolean =>
  timingSafeEqual(createHash('sha256').update(given).digest(), createHash('sha256').update(secret).digest());

type Caller = Pick<Context, 'role' | 'workerId' | 'tokenId' | 'refused'>;

export function callerOf(authorization: string | undefined, config: ServerConfig): Caller {
  const token = authorization?.replace(/^Bearer\s+/i, '').trim();
  const none = { role: null, workerId: null, tokenId: null, refused: false };
  if (!token) return none;
  if (sameSecret(token, config.adminToken)) return { ...none, role: 'ADMIN' };
  if (sameSecret(token, config.workerToken)) return { ...none, role: 'WORKER' };
  const v = verifyToken(token, config);
  if (!v) return { ...none, refused: true };
  const tokenId = v.kind === 'volunteer' || v.kind === 'reader' ? v.id : null;
  return { role: ROLE[v.kind], workerId: v.kind === 'worker' ? v.id : null, tokenId, refused: false };
}

/** Admin may do everything; other roles what the operation lists. */
/** Said to a caller whose token does not verify, whatever it asks: it is not taken for anonymous. */
export const REFUSED_TOKEN = 'the token sent is not valid here: expired, revoked, altered or signed by another server '
  + '(a worker\'s credential: it registers again; the admin, worker or read token: check it; without a token, send no Authorization header)';

export const authChecker: AuthChecker<Context, Role> = ({ context }, roles) => {
  if (!context.role && context.refused) throw unauthenticated(REFUSED_TOKEN);
  if (!context.role) throw unauthenticated('this needs a token: send "Authorization: Bearer <token>" (the server prints its admin and worker tokens at start)');
  if (context.role === 'ADMIN' || roles.includes(context.role)) return true;
  throw forbidden(`a ${context.role.toLowerCase().replace('_', ' ')} token may not do this`);
};

/** Refuses a second alias of a costly field (samples, predict) in one operation. */
export function oncePerRequest(ctx: Context, field: string): void {
  if (ctx.costly.has(field)) throw badInput(`${field} may be asked for once an operation`);
  ctx.costly.add(field);
}

/** Who owns what a caller uploads: the admin, or one read token. */
export const uploaderOf = (ctx: Context): string => (ctx.role === 'ADMIN' ? 'admin' : `reader:${ctx.tokenId}`);

/** Whether the caller may read what only readers may (shards, workers, delta URLs, server paths). */
export const canRead = (ctx: Context): boolean => ctx.role === 'ADMIN' || ctx.role === 'READER';

/** The worker a shard-protocol call acts as: exactly the one its credential names. */
export function actingWorker(ctx: Context): string {
  if (ctx.role !== 'REGISTERED_WORKER' || !ctx.workerId) throw forbidden('the shard protocol takes a worker credential: call registerWorker and use the credential it returns');
  return ctx.workerId;
}
