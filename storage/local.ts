// The embedded default store: blobs as files under one directory, reached from outside only
// through signed URLs (signed-url.ts) that the server's own HTTP port serves (blob-http.ts). Each
// object has a metadata file with its SHA-256, written before the object appears.
import { Dirent, existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { dirname, join, relative, sep } from 'node:path';
import { BlobInfo, BlobStore, sha256, verify } from './blob-store';
import { isSafeKey, signUrl } from './signed-url';

export interface LocalStoreOptions {
  readonly root: string;
  readonly secret: string;
  /** Where the blob routes are, as every client reaches them. */
  readonly baseUrl: string;
}

export class LocalBlobStore implements BlobStore {
  readonly description: string;

  constructor(private readonly o: LocalStoreOptions) {
    this.description = `local blobs in ${o.root}`;
    mkdirSync(join(o.root, 'tmp'), { recursive: true });
  }

  objectPath(key: string): string {
    if (!isSafeKey(key)) throw new Error(`malformed blob key '${key}'`);
    return join(this.o.root, 'objects', key);
  }

  private metaPath(key: string): string {
    return join(this.o.root, 'meta', `${key}.json`);
  }

  /** A fresh file name beside the store, on the same file system (renames are atomic). */
  tempPath(): string {
    return join(this.o.root, 'tmp', randomBytes(12).toString('hex'));
  }

  /** Moves a fully written file into place as `key`, its digest recorded first. */
  commit(key: string, tempFile: string, digest: string, bytes: number): void {
    const object = this.objectPath(key);
    const meta = this.metaPath(key);
    mkdirSync(dirname(object), { recursive: true });
    mkdirSync(dirname(meta), { recursive: true });
    const metaTemp = this.tempPath();
    writeFileSync(metaTemp, JSON.stringify({ sha256: digest, bytes }));
    renameSync(metaTemp, meta);
    renameSync(tempFile, object);
  }

  async put(key: string, bytes: Uint8Array): Promise<BlobInfo & { sha256: string }> {
    const digest = sha256(bytes);
    const temp = this.tempPath();
    writeFileSync(temp, bytes);
    this.commit(key, temp, digest, bytes.byteLength);
    return { key, bytes: bytes.byteLength, sha256: digest };
  }

  async get(key: string, expected?: string): Promise<Uint8Array> {
    const missing = (): Error => Object.assign(new Error(`object '${key}' does not exist`), { code: 'NoSuchKey' });
    const info = await this.stat(key);
    if (!info) throw missing();
    let buf: Buffer;
    try {
      buf = readFileSync(this.objectPath(key));
    } catch (e) {
      throw (e as NodeJS.ErrnoException).code === 'ENOENT' ? missing() : e; // removed since the stat
    }
    return verify(key, new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength), expected ?? info.sha256);
  }

  async stat(key: string): Promise<BlobInfo | null> {
    const object = this.objectPath(key);
    try {
      const meta = JSON.parse(readFileSync(this.metaPath(key), 'utf8')) as { sha256: string };
      return { key, bytes: statSync(object).size, sha256: meta.sha256 };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null; // never written, or removed meanwhile
      throw e;
    }
  }

  async remove(key: string): Promise<void> {
    rmSync(this.objectPath(key), { force: true });
    rmSync(this.metaPath(key), { force: true });
  }

  async list(prefix: string): Promise<string[]> {
    const dir = this.objectPath(prefix);
    if (!existsSync(dir)) return [];
    return (readdirSync(dir, { recursive: true, withFileTypes: true }) as Dirent[])
      .filter((d) => d.isFile())
      .map((d) => relative(join(this.o.root, 'objects'), join(d.parentPath, d.name)).split(sep).join('/'));
  }

  private url(method: 'GET' | 'PUT', key: string, seconds: number, maxBytes?: number): string {
    if (!isSafeKey(key)) throw new Error(`malformed blob key '${key}'`);
    return signUrl(this.o.baseUrl, this.o.secret, { method, key, expires: Math.floor(Date.now() / 1000) + seconds, maxBytes });
  }

  async presignGet(key: string, seconds: number): Promise<string> {
    return this.url('GET', key, seconds);
  }

  async presignPut(key: string, seconds: number, _internal = false, maxBytes?: number): Promise<string> {
    return this.url('PUT', key, seconds, maxBytes);
  }
}
