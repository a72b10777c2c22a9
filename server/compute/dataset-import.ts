// A dataset's import on the runs' compute thread: its files parsed (IDX, CIFAR-10, the mnist
// package, photos), the seeded subsets taken, and each split stored as packed shards small enough
// to fetch and verify one at a time. Photos stream: each is decoded once, at the storage size, and
// a shard is written whenever one fills, so memory holds a shard rather than the dataset. Off the
// event loop: a large file costs the thread, not the API.
import { Dataset, limit, packDataset } from '../../engine';
import { loadData } from '../../node/data';
import { DecodedImage, decodeLayout, planImages } from '../../node/image-folder';
import { BlobStore, keys, sha256 } from '../../storage';
import type { DatasetRecord, DatasetShard } from '../state/records';
import { InputError } from './input-error';

/** Shards of at most this many bytes. */
const SHARD_BYTES = 8 * 2 ** 20;

export interface DatasetImport {
  /** A data spec of node/data.ts (`idx:DIR`, `cifar10:DIR`, `mnist`, `folder:PATH`). */
  readonly spec: string;
  readonly trainLimit?: number;
  readonly testLimit?: number;
  /** Photos: stored at this square size, resized with this interpolation; undecodable files skipped when asked. */
  readonly images?: { readonly storageSize: number; readonly interpolation: 'bilinear' | 'bicubic'; readonly skipBad: boolean; readonly testFraction?: number };
}

/** The record's fields the files decide, and what was left out of a photo import. */
export type ImportedDataset = Pick<DatasetRecord, 'classes' | 'height' | 'width' | 'channels' | 'trainCount' | 'testCount' | 'shards' | 'classNames'> & {
  readonly skipped: readonly string[];
  readonly ignored: number;
};

export async function importDataset(store: BlobStore, d: DatasetImport): Promise<ImportedDataset> {
  if (d.spec.startsWith('folder:')) return importPhotos(store, d);
  let train: Dataset;
  let test: Dataset;
  try {
    const split = loadData(d.spec);
    train = limit(split.train, d.trainLimit, 0);
    test = limit(split.test, d.testLimit, 1);
  } catch (e) {
    throw new InputError((e as Error).message);
  }
  const shards = [...(await storeSplit(store, 'train', train)), ...(await storeSplit(store, 'test', test))];
  return {
    classes: train.classes,
    height: train.height,
    width: train.width,
    channels: train.channels,
    trainCount: train.count,
    testCount: test.count,
    shards,
    classNames: null,
    skipped: [],
    ignored: 0,
  };
}

async function storeSplit(store: BlobStore, split: 'train' | 'test', ds: Dataset): Promise<DatasetShard[]> {
  const imageBytes = ds.height * ds.width * ds.channels;
  const per = Math.max(1, Math.floor(SHARD_BYTES / imageBytes));
  const out: DatasetShard[] = [];
  for (let start = 0; start < ds.count; start += per) out.push(await storeShard(store, split, ds, start, Math.min(per, ds.count - start)));
  return out;
}

async function storeShard(
  store: BlobStore, split: 'train' | 'test', ds: Dataset, start: number, count: number, compress = false, created?: string[],
): Promise<DatasetShard> {
  const imageBytes = ds.height * ds.width * ds.channels;
  const bytes = packDataset(
    {
      ...ds,
      count,
      images: ds.images.subarray(start * imageBytes, (start + count) * imageBytes),
      labels: ds.labels.subarray(start, start + count),
    },
    { compress },
  );
  const key = keys.datasetShard(sha256(bytes));
  // Shards are named by content: one another dataset already holds is not this import's to remove.
  if (created && !(await store.stat(key))) created.push(key);
  const blob = await store.put(key, bytes);
  return { split, ...blob, count };
}

/**
 * Photos: trainLimit/testLimit keep the first N of each split in the source's order (the seeded
 * subsets are a run's to take). Shards fill in decode order, train and test apart.
 */
async function importPhotos(store: BlobStore, d: DatasetImport): Promise<ImportedDataset> {
  const o = {
    storageSize: d.images?.storageSize ?? 256,
    interpolation: d.images?.interpolation ?? 'bicubic',
    channels: 3 as const,
    skipBad: d.images?.skipBad ?? false,
  };
  const S = o.storageSize;
  const px = S * S * 3;
  const per = Math.max(1, Math.floor(SHARD_BYTES / px));
  const skipped: { path: string; reason: string }[] = [];
  let layout;
  try {
    layout = await planImages(d.spec.slice('folder:'.length), { testFraction: d.images?.testFraction });
  } catch (e) {
    throw new InputError((e as Error).message);
  }
  const classNames = layout.classNames;
  const pending = { train: [] as DecodedImage[], test: [] as DecodedImage[] };
  const counts = { train: 0, test: 0 };
  const limits = { train: d.trainLimit ?? Infinity, test: d.testLimit ?? Infinity };
  const shards: DatasetShard[] = [];
  const created: string[] = [];
  const flush = async (split: 'train' | 'test'): Promise<void> => {
    const list = pending[split];
    if (!list.length) return;
    const images = new Uint8Array(list.length * px);
    list.forEach((img, i) => images.set(img.pixels, i * px));
    const ds: Dataset = {
      name: split,
      images,
      labels: Uint8Array.from(list, (img) => img.label),
      count: list.length,
      height: S,
      width: S,
      channels: 3,
      classes: classNames.length,
      flipInvariant: true,
      classNames,
    };
    shards.push(await storeShard(store, split, ds, 0, list.length, true, created));
    pending[split] = [];
  };
  let storeFailure: unknown;
  try {
    for await (const img of decodeLayout(layout, o, skipped)) {
      if (counts[img.split] >= limits[img.split]) continue;
      counts[img.split]++;
      pending[img.split].push(img);
      if (pending[img.split].length === per) await flush(img.split).catch((e: unknown) => Promise.reject((storeFailure = e)));
    }
    await flush('train').catch((e: unknown) => Promise.reject((storeFailure = e)));
    await flush('test').catch((e: unknown) => Promise.reject((storeFailure = e)));
    if (!counts.train || !counts.test) throw new Error(`photos: ${counts.train} train and ${counts.test} test images decoded; both splits need some`);
  } catch (e) {
    // A failed import keeps none of its shards.
    await Promise.all(created.map((key) => store.remove(key).catch(() => undefined)));
    // The blob store failing is the server's fault; a file that does not decode is the user's.
    if (e === storeFailure) throw e;
    throw new InputError((e as Error).message);
  }
  // Train shards first, as the other formats store them.
  shards.sort((a, b) => (a.split === b.split ? 0 : a.split === 'train' ? -1 : 1));
  return {
    classes: classNames.length,
    height: S,
    width: S,
    channels: 3,
    trainCount: counts.train,
    testCount: counts.test,
    shards,
    classNames: [...classNames],
    skipped: skipped.map((s) => `${s.path} (${s.reason})`),
    ignored: layout.ignored.length,
  };
}
