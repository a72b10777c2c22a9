// URLs that carry their own permission: one method on one key until a time, for at most so many
// bytes, signed with the server's secret (HMAC-SHA256). The blob server checks every request
// against its signature; nothing else opens a blob. Workers get GET and write-once PUT grants;
// only holders of the secret (the servers) sign DELETE, LIST and PUTs that replace an object.
import { createHmac, timingSafeEqual } from 'node:crypto';

export interface UrlGrant {
  /** LIST: the keys under `key/` (a GET with `list=1`). */
  readonly method: 'GET' | 'PUT' | 'DELETE' | 'LIST';
  readonly key: string;
  /** Unix time in seconds. */
  readonly expires: number;
  /** PUT only: the largest body accepted. */
  readonly maxBytes?: number;
  /** PUT only: the body may replace an object with other bytes (the store's owner writing). */
  readonly replace?: boolean;
}

const signature = (secret: string, g: UrlGrant): string =>
  createHmac('sha256', secret).update(`${g.method}\n${g.key}\n${g.expires}\n${g.maxBytes ?? ''}${g.replace ? '\nreplace' : ''}`).digest('base64url');

/** Keys are paths of safe segments: no empty, dot or dot-dot segment can reach outside the store. */
export function isSafeKey(key: string): boolean {
  return key.length <= 512 && key.split('/').every((s) => /^[A-Za-z0-9_-][A-Za-z0-9._-]*$/.test(s) && s !== '.' && s !== '..');
}

export function signUrl(base: string, secret: string, g: UrlGrant): string {
  const q = new URLSearchParams({
    expires: String(g.expires), ...(g.maxBytes === undefined ? {} : { max: String(g.maxBytes) }), ...(g.replace ? { replace: '1' } : {}),
    ...(g.method === 'LIST' ? { list: '1' } : {}), sig: signature(secret, g),
  });
  return `${base}/${g.key}?${q}`;
}

/** Why a request may not proceed (an HTTP status and a reason), or its grant. */
export type Verdict = { readonly ok: true; readonly grant: UrlGrant } | { readonly ok: false; readonly status: 400 | 403; readonly reason: string };

/** Checks a request (HEAD counts as GET) against the signature in its query under any of `secrets` (a rotation's overlap), at `now` (seconds). */
export function verifyRequest(secrets: string | readonly string[], method: string, key: string, query: URLSearchParams, now = Date.now() / 1000): Verdict {
  if (!isSafeKey(key)) return { ok: false, status: 400, reason: 'malformed key' };
  const sig = query.get('sig');
  const expires = Number(query.get('expires'));
  if (!sig || !Number.isInteger(expires)) return { ok: false, status: 403, reason: 'unsigned request: ask the server for a URL' };
  const granted = method === 'HEAD' ? 'GET' : method === 'GET' && query.get('list') === '1' ? 'LIST' : method;
  if (granted !== 'GET' && granted !== 'PUT' && granted !== 'DELETE' && granted !== 'LIST') {
    return { ok: false, status: 403, reason: `method ${method} is never granted` };
  }
  const max = query.get('max');
  const grant: UrlGrant = { method: granted, key, expires, ...(max === null ? {} : { maxBytes: Number(max) }), ...(query.get('replace') === '1' ? { replace: true } : {}) };
  const given = Buffer.from(sig);
  const matches = (secret: string): boolean => {
    const expected = Buffer.from(signature(secret, grant));
    return expected.length === given.length && timingSafeEqual(expected, given);
  };
  if (!(typeof secrets === 'string' ? [secrets] : secrets).some(matches)) {
    return { ok: false, status: 403, reason: 'signature does not match this method, key and expiry' };
  }
  if (expires < now) return { ok: false, status: 403, reason: 'URL expired' };
  return { ok: true, grant };
}
