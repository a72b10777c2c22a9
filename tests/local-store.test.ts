// The local blob store: objects round-trip with their digest, a corrupt one is refused on read,
// and a data directory from the embedded S3 days (written here by a real S3 protocol server) is
// adopted whole at start.
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IntegrityError, LocalBlobStore, S3BlobStore, adoptS3rverObjects, sha256 } from '../storage';
import { startEmbeddedS3 } from './support/s3-peer';

const store = (root: string): LocalBlobStore => new LocalBlobStore({ root, secret: 's', baseUrl: 'http://127.0.0.1:1/blobs' });

it('round-trips bytes with their SHA-256 and refuses them once altered on disk', async () => {
  const local = store(mkdtempSync(join(tmpdir(), 'partune-local-')));
  const bytes = new TextEncoder().encode('a delta, say');
  expect(await local.put('deltas/r1.safetensors', bytes)).toEqual({ key: 'deltas/r1.safetensors', bytes: bytes.length, sha256: sha256(bytes) });
  expect(await local.get('deltas/r1.safetensors')).toEqual(bytes);
  writeFileSync(local.objectPath('deltas/r1.safetensors'), 'tampered');
  await expect(local.get('deltas/r1.safetensors')).rejects.toThrow(IntegrityError);
  expect(await local.stat('deltas/none')).toBeNull();
  expect(() => local.objectPath('../tokens.json')).toThrow(/malformed blob key/);
});

it('adopts the objects of a former embedded S3 directory, digests computed, once', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'partune-legacy-s3-'));
  const s3 = await startEmbeddedS3(join(dir, 's3'), 'partune');
  const old = new S3BlobStore({ endpoint: s3.endpoint, accessKey: 'S3RVER', secretKey: 'S3RVER', bucket: 'partune', region: 'us-east-1' });
  await old.ensureBucket();
  const objects = new Map([['checkpoints/abc.safetensors', 'weights'], ['deltas/run-1.safetensors', 'a delta'], ['runs/r/state-0001.safetensors', 'state']]);
  for (const [key, text] of objects) await old.put(key, new TextEncoder().encode(text));
  await s3.close();

  const local = store(join(dir, 'blobs'));
  expect(await adoptS3rverObjects(join(dir, 's3', 'partune'), local)).toBe(3);
  for (const [key, text] of objects) {
    const bytes = new TextEncoder().encode(text);
    expect({ key, info: await local.stat(key), text: new TextDecoder().decode(await local.get(key)) }).toEqual({ key, info: { key, bytes: bytes.length, sha256: sha256(bytes) }, text });
  }
  expect(existsSync(join(dir, 's3', 'partune'))).toBe(false); // set aside: the next start adopts nothing
  expect(await adoptS3rverObjects(join(dir, 's3', 'partune'), local)).toBe(0);
});
