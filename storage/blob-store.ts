// The one door to object storage: named blobs, each stored with its SHA-256, verified on read.
import { createHash } from 'node:crypto';

export interface BlobInfo {
  readonly key: string;
  readonly bytes: number;
  /** Recorded at put time; absent for objects that arrived by presigned upload. */
  readonly sha256?: string;
}

export interface BlobStore {
  /** Where it lives, for logs (e.g. "s3://partune at http://127.0.0.1:9000"). */
  readonly description: string;
  put(key: string, bytes: Uint8Array): Promise<BlobInfo & { sha256: string }>;
  /** The bytes; throws when they do not hash to `sha256` (when given) or to what put recorded. */
  get(key: string, sha256?: string): Promise<Uint8Array>;
  stat(key: string): Promise<BlobInfo | null>;
  remove(key: string): Promise<void>;
  /** The keys under `prefix/` (a key path of safe segments), for sweeping what nothing refers to. */
  list(prefix: string): Promise<string[]>;
  /**
   * A URL that allows a GET of this key for `seconds`. `internal`: for processes beside the
   * server (Node workers); otherwise for browsers and API clients (S3_PUBLIC_ENDPOINT).
   */
  presignGet(key: string, seconds: number, internal?: boolean): Promise<string>;
  /**
   * A URL that allows a PUT of this key for `seconds`, of at most `maxBytes` where the store can
   * bind it (the local store cuts a longer body off; S3 stores are checked after the upload).
   */
  presignPut(key: string, seconds: number, internal?: boolean, maxBytes?: number): Promise<string>;
}

export const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

export class IntegrityError extends Error {}

export function verify(key: string, bytes: Uint8Array, expected: string | undefined): Uint8Array {
  if (expected === undefined) return bytes;
  const actual = sha256(bytes);
  if (actual !== expected) throw new IntegrityError(`object '${key}' is corrupt: SHA-256 ${actual.slice(0, 12)}…, expected ${expected.slice(0, 12)}…`);
  return bytes;
}
