// Per-request context: who is calling (from the bearer token) and the services.
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { AuthChecker } from 'type-graphql';
import { Platform } from '../platform';
import { Services } from '../services';
import { forbidden, unauthenticated } from '../errors';

/** VOLUNTEER: a browser tab's token, minted by `volunteerToken`; it may run the shard protocol only. */
export type Role = 'ADMIN' | 'WORKER' | 'VOLUNTEER';

export interface Context {
  readonly role: Role | null;
  readonly services: Services;
}

const sign = (id: string, p: Platform): string => createHmac('sha256', p.config.workerToken).update(`volunteer:${id}`).digest('base64url');

/** A fresh volunteer token, verifiable without storing it: `vol_<id>.<HMAC of id under the worker token>`. */
export function mintVolunteerToken(p: Platform): string {
  const id = randomBytes(9).toString('base64url');
  return `vol_${id}.${sign(id, p)}`;
}

export function roleOf(authorization: string | undefined, p: Platform): Role | null {
  const token = authorization?.replace(/^Bearer\s+/i, '').trim();
  if (!token) return null;
  if (token === p.config.adminToken) return 'ADMIN';
  if (token === p.config.workerToken) return 'WORKER';
  const m = /^vol_([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)$/.exec(token);
  if (m) {
    const [expected, given] = [Buffer.from(sign(m[1], p)), Buffer.from(m[2])];
    if (expected.length === given.length && timingSafeEqual(expected, given)) return 'VOLUNTEER';
  }
  return null;
}

/** Admin may do everything; a worker token only the shard protocol. */
export const authChecker: AuthChecker<Context, Role> = ({ context }, roles) => {
  if (!context.role) throw unauthenticated('this operation needs a token: send "Authorization: Bearer <token>" (the server prints its admin and worker tokens at start)');
  if (context.role === 'ADMIN' || roles.includes(context.role)) return true;
  throw forbidden(`a ${context.role.toLowerCase()} token may not do this; use the admin token`);
};
