// Signed tokens (volunteer tokens, read tokens, worker credentials): `<kind>_<id>.<kid>.<expiry>.<mac>`,
// the MAC an HMAC-SHA256 of all before it under the key `kid` names, so a server restart or another
// replica verifies them alike and nothing is stored. Keys rotate with an overlap: PARTUNE_SECRET
// signs, PARTUNE_PREVIOUS_SECRETS still verify until they are dropped; PARTUNE_REVOKED_KEYS lists key
// ids refused for good, so a secret rotated back does not revive what it signed. Every token
// expires; a worker renews its credential (renewCredential) before it does.
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { ServerConfig } from './config';

export type Signed = 'volunteer' | 'reader' | 'worker';
const PREFIX: Record<Signed, string> = { volunteer: 'vol', reader: 'rd', worker: 'wkc' };

/** A secret's public name: the first 8 characters of an HMAC under it. */
export const keyId = (secret: string): string => createHmac('sha256', secret).update('partune key id').digest('base64url').slice(0, 8);

const mac = (secret: string, body: string): string => createHmac('sha256', secret).update(body).digest('base64url');

export type Keyring = Pick<ServerConfig, 'secret' | 'previousSecrets' | 'revokedKeys' | 'credentialSeconds' | 'readTokenSeconds'>;

/** How long each kind lives. */
const lifetime = (kind: Signed, k: Keyring): number => (kind === 'reader' ? k.readTokenSeconds : k.credentialSeconds);

export function mintToken(kind: Signed, k: Keyring, id = randomBytes(9).toString('base64url'), now = Date.now()): string {
  const body = `${PREFIX[kind]}_${id}.${keyId(k.secret)}.${Math.floor(now / 1000 + lifetime(kind, k)).toString(36)}`;
  return `${body}.${mac(k.secret, body)}`;
}

/** The kind and id a valid, unexpired token under a current, unrevoked key carries; undefined for anything else. */
export function verifyToken(token: string, k: Keyring, now = Date.now()): { kind: Signed; id: string; expires: Date } | undefined {
  const m = /^(vol|rd|wkc)_([A-Za-z0-9_-]{1,64})\.([A-Za-z0-9_-]{8})\.([0-9a-z]{1,10})\.([A-Za-z0-9_-]{43})$/.exec(token);
  if (!m) return undefined;
  const [, prefix, id, kid, exp, given] = m;
  if (k.revokedKeys.includes(kid)) return undefined;
  const secret = [k.secret, ...k.previousSecrets].find((s) => keyId(s) === kid);
  if (!secret) return undefined;
  const body = token.slice(0, token.length - given.length - 1);
  if (!timingSafeEqual(Buffer.from(mac(secret, body)), Buffer.from(given))) return undefined;
  const expires = new Date(parseInt(exp, 36) * 1000);
  if (expires.getTime() <= now) return undefined;
  return { kind: (Object.keys(PREFIX) as Signed[]).find((s) => PREFIX[s] === prefix)!, id, expires };
}
