// Data directories from before the local store kept their blobs in the embedded S3 server's
// layout (`s3/<bucket>/<key>._S3rver_object`). At start they are moved into the local store once,
// each with its SHA-256 computed, so an upgraded server finds every model, dataset and delta.
import { existsSync, readFileSync, readdirSync, renameSync, statSync } from 'node:fs';
import { join, relative, sep } from 'node:path';
import { LocalBlobStore } from './local';
import { isSafeKey } from './signed-url';

const SUFFIX = '._S3rver_object';

/** Moves every object under `bucketDir` into `store`; returns how many. The directory is renamed aside after. */
export async function adoptS3rverObjects(bucketDir: string, store: LocalBlobStore): Promise<number> {
  if (!existsSync(bucketDir)) return 0;
  let moved = 0;
  const walk = async (dir: string): Promise<void> => {
    for (const entry of readdirSync(dir)) {
      const path = join(dir, entry);
      if (statSync(path).isDirectory()) await walk(path);
      else if (entry.endsWith(SUFFIX)) {
        const key = relative(bucketDir, path).slice(0, -SUFFIX.length).split(sep).join('/');
        if (!isSafeKey(key) || (await store.stat(key))) continue;
        await store.put(key, new Uint8Array(readFileSync(path)));
        moved++;
      }
    }
  };
  await walk(bucketDir);
  renameSync(bucketDir, `${bucketDir}.adopted`);
  return moved;
}
