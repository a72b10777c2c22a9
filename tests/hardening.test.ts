// The small rules that keep strangers' strings and stale secrets harmless, each against what it
// must refuse: signed tokens (expiry, rotation, revocation), log records, public texts, host names.
import { keyId, mintToken, verifyToken } from '../server/credentials';
import { recordLog } from '../server/app';
import 'reflect-metadata';
import { PUBLIC_REASON, RunResolver } from '../server/resolvers/run.resolver';
import type { Context } from '../server/resolvers/context';
import * as T from '../schema/types';
import { allowedHosts } from '../server/origins';
import { loadConfig } from '../server/config';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const ring = (secret: string, more: { previousSecrets?: string[]; revokedKeys?: string[] } = {}) => ({
  secret,
  previousSecrets: more.previousSecrets ?? [],
  revokedKeys: more.revokedKeys ?? [],
  credentialSeconds: 3600,
  readTokenSeconds: 86_400,
});

describe('signed tokens', () => {
  const now = Date.UTC(2026, 11, 7);

  it('carry their kind, id, key and expiry; a changed character, another key or a later time refuses them', () => {
    const k = ring('secret-a');
    const token = mintToken('worker', k, 'w-1', now);
    expect(token.split('.')[1]).toBe(keyId('secret-a'));
    expect(verifyToken(token, k, now)).toEqual({ kind: 'worker', id: 'w-1', expires: new Date(now + 3600 * 1000) });
    expect(verifyToken(token, k, now + 3600 * 1000)).toBeUndefined(); // expired
    expect(verifyToken(mintToken('reader', k, 'r', now), k, now + 3600 * 1000)).toMatchObject({ kind: 'reader' }); // readers live longer
    const flipped = token.slice(0, -1) + (token.endsWith('A') ? 'B' : 'A');
    expect(verifyToken(flipped, k, now)).toBeUndefined();
    const longer = token.replace(/\.([0-9a-z]+)\./, (_, exp: string) => `.${(parseInt(exp, 36) + 86_400).toString(36)}.`);
    expect(verifyToken(longer, k, now)).toBeUndefined(); // the expiry is signed
    expect(verifyToken(token.replace(/^wkc_/, 'vol_'), k, now)).toBeUndefined(); // so is the kind
    expect(verifyToken(token, ring('secret-b'), now)).toBeUndefined();
  });

  it('rotation: the old key verifies during the overlap, never once revoked, not even with its secret back in place', () => {
    const old = mintToken('volunteer', ring('secret-a'), 'v', now);
    expect(verifyToken(old, ring('secret-b', { previousSecrets: ['secret-a'] }), now)).toMatchObject({ kind: 'volunteer', id: 'v' });
    expect(verifyToken(old, ring('secret-b'), now)).toBeUndefined(); // the overlap ended
    expect(verifyToken(old, ring('secret-b', { previousSecrets: ['secret-a'], revokedKeys: [keyId('secret-a')] }), now)).toBeUndefined();
    const dir = mkdtempSync(join(tmpdir(), 'partune-keys-'));
    expect(() => loadConfig({ PARTUNE_DATA_DIR: dir, PARTUNE_SECRET: 'secret-a', PARTUNE_REVOKED_KEYS: keyId('secret-a') })).toThrow(
      /is in PARTUNE_REVOKED_KEYS/,
    );
  });
});

describe('strings from strangers', () => {
  it('a log record cannot be forged: continuation lines are indented, control characters escaped', () => {
    const lines: string[] = [];
    recordLog((l) => lines.push(l))('worker evil\nrun 1 failed: forged\r\u001b[2K\u2028done');
    expect(lines[0].split('\n')).toEqual(['worker evil', '  run 1 failed: forged\\u000d\\u001b[2K\\u2028done']);
    recordLog((l) => lines.push(l))('internal error ab: Error: x\n    at f (a.js:1)');
    expect(lines[1]).toBe('internal error ab: Error: x\n    at f (a.js:1)');
  });

  it("a public run's reasons are for readers: anyone else is told the run failed or waits, nothing a worker wrote", () => {
    const resolver = new RunResolver();
    const run = { error: 'shard 1.2 failed 5 times; last: NamedBox-7 at /tmp/data?sig=abc', waiting: 'round 0 shard 1 needs 5 results (worker 3dc2e6f4)' } as T.Run;
    const anonymous = { role: null } as Context;
    expect([resolver.error(anonymous, run), resolver.waiting(anonymous, run)]).toEqual([PUBLIC_REASON.error, PUBLIC_REASON.waiting]);
    expect(resolver.error({ role: 'VOLUNTEER' } as Context, run)).toBe(PUBLIC_REASON.error);
    expect([resolver.error({ role: 'READER' } as Context, run), resolver.waiting({ role: 'ADMIN' } as Context, run)]).toEqual([run.error, run.waiting]);
    expect(resolver.error(anonymous, { error: undefined } as T.Run)).toBeUndefined();
  });

  it('every control and format character a worker may send is escaped in a log record', () => {
    const lines: string[] = [];
    recordLog((l) => lines.push(l))('name \u0085x \u202eevil \ufeffbom \u200bzw');
    expect(lines[0]).toBe('name \\u0085x \\u202eevil \\ufeffbom \\u200bzw');
  });

  it('host names: IP literals, localhost, the public URL and the configured ones; nothing else', () => {
    const ok = allowedHosts({ host: '0.0.0.0', publicUrl: 'https://partune.example.org', allowedHosts: ['gpu-box.lan'] });
    for (const h of [
      '127.0.0.1:4000',
      '[::1]:4000',
      '10.0.0.5',
      'localhost:4000',
      'app.localhost',
      'partune.example.org',
      'PARTUNE.example.org:443',
      'gpu-box.lan:4000',
    ]) {
      expect([h, ok(h)]).toEqual([h, true]);
    }
    for (const h of ['evil.example', 'partune.example.org.evil.example', 'localhost.evil.example', '', 'a b', 'x@127.0.0.1', undefined])
      expect([h, ok(h)]).toEqual([h, false]);
  });

  it('configured names: a port is dropped, a wildcard and a public URL without a scheme are refused at start', () => {
    const dir = mkdtempSync(join(tmpdir(), 'partune-hosts-'));
    expect(loadConfig({ PARTUNE_DATA_DIR: dir, PARTUNE_ALLOWED_HOSTS: 'MyBox:4812, [::1]:4000' }).allowedHosts).toEqual(['mybox', '::1']);
    expect(() => loadConfig({ PARTUNE_DATA_DIR: dir, PARTUNE_ALLOWED_HOSTS: '*' })).toThrow(/not patterns/);
    expect(() => loadConfig({ PARTUNE_DATA_DIR: dir, PARTUNE_PUBLIC_URL: 'mybox:4812' })).toThrow(/must be an http\(s\) URL/);
  });
});
