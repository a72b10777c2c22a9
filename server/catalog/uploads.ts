// Uploads: the client PUTs bytes to a presigned URL, then names the upload in a mutation.
import { randomUUID } from 'node:crypto';
import { basename } from 'node:path';
import { keys } from '../../storage';
import { badInput, notFound } from '../errors';
import type { Platform } from '../platform';
import { UploadRecord } from '../state/records';

export const mib = (b: number): string => (b < 2 ** 20 ? `${b} bytes` : `${(b / 2 ** 20).toFixed(1)} MiB`);

export class Uploads {
  constructor(private readonly p: Platform) {}

  async create(filename: string, bytes: number): Promise<{ upload: UploadRecord; url: string; expiresAt: Date }> {
    const max = this.p.config.uploadMaxBytes;
    if (!Number.isInteger(bytes) || bytes <= 0) throw badInput('bytes must be a positive integer');
    if (bytes > max) throw badInput(`an upload of ${mib(bytes)} exceeds the limit of ${mib(max)} (PARTUNE_UPLOAD_MAX_MB)`);
    const id = randomUUID();
    const upload: UploadRecord = { id, key: keys.upload(id), filename: basename(filename), declaredBytes: bytes, createdAt: new Date() };
    await this.p.state.uploads.insert(upload);
    const seconds = this.p.config.urlSeconds;
    return { upload, url: await this.p.blobs.presignPut(upload.key, seconds), expiresAt: new Date(Date.now() + seconds * 1000) };
  }

  /** An upload's bytes, refusing one that is missing or larger than it declared. */
  async bytes(id: string): Promise<{ bytes: Uint8Array; filename: string }> {
    const upload = await this.p.state.uploads.get(id);
    if (!upload) throw notFound(`upload ${id} not found`);
    const info = await this.p.blobs.stat(upload.key);
    if (!info) throw badInput(`upload ${id} (${upload.filename}) has no bytes yet: PUT the file to its URL first`);
    if (info.bytes > upload.declaredBytes || info.bytes > this.p.config.uploadMaxBytes) {
      await this.p.blobs.remove(upload.key);
      throw badInput(`upload ${id} is ${mib(info.bytes)}, more than the ${mib(upload.declaredBytes)} declared (limit ${mib(this.p.config.uploadMaxBytes)}); it was discarded`);
    }
    return { bytes: await this.p.blobs.get(upload.key), filename: upload.filename };
  }
}

/** Names of models, datasets and strategies. */
export function checkName(name: string, what = 'name'): void {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(name)) throw badInput(`${what} '${name}' must be 1-64 letters, digits, '.', '_' or '-'`);
}
