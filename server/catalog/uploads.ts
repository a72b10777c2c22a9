// Uploads: the client PUTs bytes to a signed URL (at most the size it declared), then names the
// upload in a mutation. The bytes live under the upload's id; the file name is only a label
// (sanitised), used as the file's name when a dataset reader needs one. An upload is used once: its
// bytes are then kept until its URL has expired (a PUT after use rewrites the same object, never
// leaves another behind), and deleted with it; an unused one goes after PARTUNE_UPLOAD_TTL_SECONDS.
import { randomUUID } from 'node:crypto';
import { keys } from '../../storage';
import { badInput, notFound, rateLimited } from '../errors';
import type { Platform } from '../platform';
import { UploadRecord } from '../state/records';

export const mib = (b: number): string => (b < 2 ** 20 ? `${b} bytes` : `${(b / 2 ** 20).toFixed(1)} MiB`);

/** A file name as a label: one path segment of printable characters, not `.` or `..`, at most 128 bytes. */
export function checkFilename(filename: string): string {
  const name = filename.replace(/^.*[\\/]/, '');
  if (name === '' || name === '.' || name === '..' || /[\u0000-\u001f\u007f]/.test(name) || Buffer.byteLength(name) > 128) {
    throw badInput(`file name '${filename.replace(/[\u0000-\u001f\u007f]/g, '?').slice(0, 64)}' is not usable: one name of printable characters, not '.' or '..', at most 128 bytes`);
  }
  return name;
}

/** A reader's uploads are photos to predict: at most a predict call's worth pending, each this large at most. */
export const READER_UPLOADS = { count: 32, bytes: 32 * 2 ** 20 } as const;

export class Uploads {
  constructor(private readonly p: Platform) {}

  /** `owner`: 'admin', or `reader:<token id>`, whose pending uploads are bounded (a read token must not fill the disk). */
  async create(filename: string, bytes: number, owner: string): Promise<{ upload: UploadRecord; url: string; expiresAt: Date }> {
    const reader = owner !== 'admin';
    const max = reader ? Math.min(READER_UPLOADS.bytes, this.p.config.uploadMaxBytes) : this.p.config.uploadMaxBytes;
    const name = checkFilename(filename);
    if (!Number.isInteger(bytes) || bytes <= 0) throw badInput('bytes must be a positive integer');
    const limit = reader ? "a read token's photos" : 'PARTUNE_UPLOAD_MAX_MB';
    if (bytes > max) throw badInput(`an upload of ${mib(bytes)} exceeds the limit of ${mib(max)} (${limit})`);
    if (reader && (await this.p.state.uploads.pending(owner)).count >= READER_UPLOADS.count) {
      throw rateLimited(`a read token may hold ${READER_UPLOADS.count} unused uploads: use them (predict) or let them expire`);
    }
    const id = randomUUID();
    const upload: UploadRecord = { id, key: keys.upload(id), filename: name, declaredBytes: bytes, owner, usedAt: null, createdAt: new Date() };
    await this.p.state.uploads.insert(upload);
    const seconds = this.p.config.urlSeconds;
    return { upload, url: await this.p.blobs.presignPut(upload.key, seconds, false, bytes), expiresAt: new Date(Date.now() + seconds * 1000) };
  }

  /** An upload's bytes, refusing one that is missing, another's (unless the caller is the admin) or larger than it declared. */
  async bytes(id: string, caller = 'admin'): Promise<{ bytes: Uint8Array; filename: string }> {
    const upload = await this.p.state.uploads.get(id);
    if (!upload || upload.usedAt || (caller !== 'admin' && upload.owner !== caller)) {
      throw notFound(`upload ${id} not found (uploads are used once, by whoever created them, and expire)`);
    }
    const info = await this.p.blobs.stat(upload.key);
    if (!info) throw badInput(`upload ${id} (${upload.filename}) has no bytes yet: PUT the file to its URL first`);
    if (info.bytes > upload.declaredBytes || info.bytes > this.p.config.uploadMaxBytes) {
      await this.discard(upload);
      throw badInput(`upload ${id} is ${mib(info.bytes)}, more than the ${mib(upload.declaredBytes)} declared (limit ${mib(this.p.config.uploadMaxBytes)}); it was discarded`);
    }
    return { bytes: await this.p.blobs.get(upload.key), filename: upload.filename };
  }

  /** Takes uploads for a single use: each id once and the caller's own, checked before any is taken; of two calls racing for one, one gets it. */
  async take(ids: readonly string[], caller: string): Promise<{ bytes: Uint8Array; filename: string }[]> {
    if (new Set(ids).size !== ids.length) throw badInput('an upload may be named once');
    const files = [];
    for (const id of ids) files.push(await this.bytes(id, caller));
    const now = new Date();
    for (const id of ids) {
      if (!(await this.p.state.uploads.take(id, now))) throw notFound(`upload ${id} was used meanwhile (uploads are used once)`);
    }
    return files;
  }

  /** After its bytes were stored as what they became (a model, a dataset's shards). */
  async used(id: string): Promise<void> {
    await this.p.state.uploads.take(id, new Date());
  }

  private async discard(upload: UploadRecord): Promise<void> {
    await this.p.blobs.remove(upload.key);
    await this.p.state.uploads.remove(upload.id);
  }

  /** Deletes unused uploads older than the TTL, and used ones whose URL has expired (a minute's grace for clocks); returns how many. */
  async expire(now = Date.now()): Promise<number> {
    const unusedBefore = new Date(now - this.p.config.uploadTtlSeconds * 1000);
    const stale = await this.p.state.uploads.stale(unusedBefore, new Date(now - (this.p.config.urlSeconds + 60) * 1000));
    for (const u of stale) await this.discard(u);
    const unused = stale.filter((u) => !u.usedAt).length;
    if (unused) this.p.log(`${unused} unused upload(s) expired`);
    return stale.length;
  }
}

/** Names of models, datasets and strategies. */
export function checkName(name: string, what = 'name'): void {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(name)) throw badInput(`${what} '${name}' must be 1-64 letters, digits, '.', '_' or '-'`);
}
