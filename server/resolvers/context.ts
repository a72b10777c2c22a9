// Per-request context: who is calling (from the bearer token) and the services.
import { AuthChecker } from 'type-graphql';
import { Catalog } from '../services/catalog';
import { Runs } from '../services/runs';
import { Shards } from '../services/shards';
import { Platform } from '../platform';
import { forbidden, unauthenticated } from '../errors';

export type Role = 'ADMIN' | 'WORKER';

export interface Services {
  readonly platform: Platform;
  readonly catalog: Catalog;
  readonly runs: Runs;
  readonly shards: Shards;
}

export interface Context {
  readonly role: Role | null;
  readonly services: Services;
}

export function roleOf(authorization: string | undefined, p: Platform): Role | null {
  const token = authorization?.replace(/^Bearer\s+/i, '').trim();
  if (!token) return null;
  if (token === p.config.adminToken) return 'ADMIN';
  if (token === p.config.workerToken) return 'WORKER';
  return null;
}

/** Admin may do everything; a worker token only the shard protocol. */
export const authChecker: AuthChecker<Context, Role> = ({ context }, roles) => {
  if (!context.role) throw unauthenticated('this operation needs a token: send "Authorization: Bearer <token>" (the server prints its admin and worker tokens at start)');
  if (context.role === 'ADMIN' || roles.includes(context.role)) return true;
  throw forbidden(`a ${context.role.toLowerCase()} token may not do this; use the admin token`);
};
