// A dataset's import on the runs' compute thread: its files parsed (IDX, CIFAR-10, the mnist
// package), the seeded subsets taken, and each split stored as packed shards small enough to
// fetch and verify one at a time. Off the event loop: a large file costs the thread, not the API.
import { Dataset, limit, packDataset } from '../../engine';
import { loadData } from '../../node/data';
import { BlobStore, keys, sha256 } from '../../storage';
import type { DatasetRecord, DatasetShard } from '../state/records';
import { InputError } from './input-error';

/** Shards of at most this many bytes. */
const SHARD_BYTES = 8 * 2 ** 20;

export interface DatasetImport {
  /** A data spec of node/data.ts (`idx:DIR`, `cifar10:DIR`, `mnist`). */
  readonly spec: string;
  readonly trainLimit?: number;
  readonly testLimit?: number;
}

/** The record's fields the files decide. */
export type ImportedDataset = Pick<DatasetRecord, 'classes' | 'height' | 'width' | 'channels' | 'trainCount' | 'testCount' | 'shards'>;

export async function importDataset(store: BlobStore, d: DatasetImport): Promise<ImportedDataset> {
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
  return { classes: train.classes, height: train.height, width: train.width, channels: train.channels, trainCount: train.count, testCount: test.count, shards };
}

async function storeSplit(store: BlobStore, split: 'train' | 'test', ds: Dataset): Promise<DatasetShard[]> {
  const imageBytes = ds.height * ds.width * ds.channels;
  const per = Math.max(1, Math.floor(SHARD_BYTES / imageBytes));
  const out: DatasetShard[] = [];
  for (let start = 0; start < ds.count; start += per) {
    const count = Math.min(per, ds.count - start);
    const bytes = packDataset({
      ...ds,
      count,
      images: ds.images.subarray(start * imageBytes, (start + count) * imageBytes),
      labels: ds.labels.subarray(start, start + count),
    });
    const blob = await store.put(keys.datasetShard(sha256(bytes)), bytes);
    out.push({ split, ...blob, count });
  }
  return out;
}
