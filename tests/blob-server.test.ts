// `partune storage serve` as a process of its own, reached the way server replicas reach it
// (RemoteBlobStore, signing with the shared secret) and the way workers do (the URLs it signs).
import { readdirSync, writeFileSync } from 'node:fs';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IntegrityError, RemoteBlobStore, sha256 } from '../storage';
import { StorageProcess, startStorage } from '../node/local-platform';

jest.setTimeout(60_000);

describe('the standalone blob store', () => {
  const secret = 'test-secret-shared-by-replicas';
  const dir = mkdtempSync(join(tmpdir(), 'partune-blob-server-'));
  let storage: StorageProcess;
  let replica: RemoteBlobStore;
  beforeAll(async () => {
    storage = await startStorage(secret, dir, { PARTUNE_ALLOWED_ORIGINS: 'http://replica.example:4000' });
    replica = new RemoteBlobStore({ baseUrl: `${storage.url}/blobs`, secret });
  });
  afterAll(() => storage.stop());

  it('round-trips blobs for a replica: put, stat, get, replace, remove', async () => {
    const bytes = new Uint8Array(300_000).map((_, i) => (i * 7) % 251);
    const put = await replica.put('runs/r1/state-0.safetensors', bytes);
    expect(put).toEqual({ key: 'runs/r1/state-0.safetensors', bytes: bytes.length, sha256: sha256(bytes) });
    expect(await replica.stat('runs/r1/state-0.safetensors')).toEqual({ key: 'runs/r1/state-0.safetensors', bytes: bytes.length, sha256: sha256(bytes) });
    expect(Buffer.from(await replica.get('runs/r1/state-0.safetensors', put.sha256)).equals(Buffer.from(bytes))).toBe(true);
    const other = new Uint8Array([1, 2, 3]);
    await replica.put('runs/r1/state-0.safetensors', other); // the owner may replace
    expect(Array.from(await replica.get('runs/r1/state-0.safetensors'))).toEqual([1, 2, 3]);
    await expect(replica.get('runs/r1/state-0.safetensors', put.sha256)).rejects.toThrow(IntegrityError);
    await replica.remove('runs/r1/state-0.safetensors');
    expect(await replica.stat('runs/r1/state-0.safetensors')).toBeNull();
    await expect(replica.get('runs/r1/state-0.safetensors')).rejects.toMatchObject({ code: 'NoSuchKey' });
  });

  it('a corrupted file on its disk is caught on read', async () => {
    await replica.put('deltas/d.safetensors', new Uint8Array([9, 9, 9, 9]));
    writeFileSync(join(dir, 'blobs', 'objects', 'deltas', 'd.safetensors'), Buffer.from([9, 9, 9, 8]));
    await expect(replica.get('deltas/d.safetensors')).rejects.toThrow(IntegrityError);
  });

  it('workers use only what was signed for them: write-once PUT within its size, GET; no DELETE, no other key, no other secret', async () => {
    const put = await replica.presignPut('uploads/u1', 60, true, 10);
    expect((await fetch(put, { method: 'PUT', body: new Uint8Array(11) })).status).toBe(413);
    expect((await fetch(put, { method: 'PUT', body: new Uint8Array([1, 2]) })).status).toBe(200);
    expect((await fetch(put, { method: 'PUT', body: new Uint8Array([1, 3]) })).status).toBe(409); // immutable for a worker
    const get = await replica.presignGet('uploads/u1', 60);
    expect(Array.from(new Uint8Array(await (await fetch(get)).arrayBuffer()))).toEqual([1, 2]);
    expect((await fetch(get, { method: 'DELETE' })).status).toBe(403);
    expect((await fetch(get.replace('uploads/u1', 'uploads/u2'))).status).toBe(403);
    expect((await fetch(`${storage.url}/blobs/uploads/u1`)).status).toBe(403);
    const stranger = new RemoteBlobStore({ baseUrl: `${storage.url}/blobs`, secret: 'not-the-secret' });
    await expect(stranger.remove('uploads/u1')).rejects.toThrow(/403/);
    expect(await replica.stat('uploads/u1')).toMatchObject({ bytes: 2 });
    expect((await fetch(get, { headers: { origin: 'http://elsewhere.example' } })).status).toBe(403);
    expect((await fetch(get, { headers: { origin: 'http://replica.example:4000' } })).status).toBe(200);
    expect(readdirSync(join(dir, 'blobs', 'tmp'))).toEqual([]);
  });
});
