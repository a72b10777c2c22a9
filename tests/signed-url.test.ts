// Signed blob URLs: a URL grants exactly one method on one key until its expiry (and, for a PUT,
// at most its size); any change to it, or another secret, fails the signature.
import { isSafeKey, signUrl, verifyRequest } from '../storage/signed-url';

const SECRET = 'a-secret';
const now = 1_800_000_000;
const grant = { method: 'PUT' as const, key: 'runs/r1/uploads/s-attempt-1.safetensors', expires: now + 60, maxBytes: 1000 };
const parts = (url: string): { key: string; query: URLSearchParams } => {
  const u = new URL(url);
  return { key: u.pathname.replace(/^\/blobs\//, ''), query: u.searchParams };
};

it('a signed URL verifies for its method, key and expiry, with its size', () => {
  const { key, query } = parts(signUrl('http://h/blobs', SECRET, grant));
  expect(verifyRequest(SECRET, 'PUT', key, query, now)).toEqual({ ok: true, grant });
  const get = parts(signUrl('http://h/blobs', SECRET, { method: 'GET', key: grant.key, expires: now + 60 }));
  expect(verifyRequest(SECRET, 'HEAD', get.key, get.query, now).ok).toBe(true);
});

it('refuses every alteration, another secret, expiry and unsigned requests', () => {
  const { key, query } = parts(signUrl('http://h/blobs', SECRET, grant));
  const reason = (method: string, k: string, q: URLSearchParams, secret = SECRET, at = now): string => {
    const v = verifyRequest(secret, method, k, q, at);
    return v.ok ? 'ok' : v.reason;
  };
  const altered = (name: string, value: string): URLSearchParams => new URLSearchParams({ ...Object.fromEntries(query), [name]: value });
  expect(reason('GET', key, query)).toMatch(/signature does not match/);
  expect(reason('DELETE', key, query)).toMatch(/signature does not match/);
  expect(reason('POST', key, query)).toMatch(/never granted/);
  expect(reason('PUT', key, altered('replace', '1'))).toMatch(/signature does not match/); // a write-once grant cannot be made to replace
  expect(reason('PUT', 'runs/r1/uploads/other.safetensors', query)).toMatch(/signature does not match/);
  expect(reason('PUT', key, altered('max', '1000000'))).toMatch(/signature does not match/);
  expect(reason('PUT', key, altered('expires', String(now + 3600)))).toMatch(/signature does not match/);
  expect(reason('PUT', key, query, 'another-secret')).toMatch(/signature does not match/);
  expect(reason('PUT', key, query, SECRET, now + 61)).toBe('URL expired');
  expect(reason('PUT', key, new URLSearchParams())).toMatch(/unsigned/);
});

it('keys are safe path segments only', () => {
  for (const bad of ['', '../x', 'a/../b', 'a//b', '/abs', 'a/./b', 'a\u0000b', 'a%2e%2e', 'x'.repeat(600)]) expect({ bad, safe: isSafeKey(bad) }).toEqual({ bad, safe: false });
  for (const good of ['deltas/r.safetensors', 'uploads/3f0c-11', 'updates/ab12.safetensors']) expect(isSafeKey(good)).toBe(true);
});
