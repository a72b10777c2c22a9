// A BlobStore served by another process (`partune storage serve`): every replica of the server
// reaches the same blobs over HTTP. Replicas share the store's secret, so they sign their own
// requests (GET, replacing PUT, DELETE) and the URLs they hand to workers, as the local store does.
import { BlobInfo, BlobStore, sha256, verify } from './blob-store';
import { isSafeKey, signUrl, UrlGrant } from './signed-url';
import { StoreUnavailable, retrying } from './transient';

export interface RemoteStoreOptions {
  /** Where the blob routes are, as the servers and Node workers reach them (…/blobs). */
  readonly baseUrl: string;
  /** The same, as browsers reach them, when it differs. */
  readonly publicBaseUrl?: string;
  readonly secret: string;
}

/** A signed request lives this long: enough for the largest object on a slow link. */
const OWN_REQUEST_SECONDS = 3600;
/** The longest one request may take, the largest object's transfer included. */
const REQUEST_TIMEOUT_MS = 10 * 60_000;

export class RemoteBlobStore implements BlobStore {
  readonly description: string;

  constructor(private readonly o: RemoteStoreOptions) {
    this.description = `blob server at ${o.baseUrl}`;
  }

  // Every request is idempotent (a PUT writes the same bytes again), so a passing failure is retried.
  async put(key: string, bytes: Uint8Array): Promise<BlobInfo & { sha256: string }> {
    const digest = sha256(bytes);
    return retrying(async () => {
      const init = { method: 'PUT', body: bytes as Uint8Array<ArrayBuffer>, headers: { 'content-type': 'application/octet-stream' } };
      const res = await this.checked('PUT', key, await this.request('PUT', key, init, { replace: true }));
      const stored = res.headers.get('x-sha256');
      if (stored !== digest) throw new Error(`blob server: PUT ${key} stored SHA-256 ${stored}, sent ${digest}`);
      return { key, bytes: bytes.byteLength, sha256: digest };
    });
  }

  async get(key: string, expected?: string): Promise<Uint8Array> {
    return retrying(async () => {
      const res = await this.request('GET', key, { method: 'GET' });
      if (res.status === 404) throw Object.assign(new Error(`object '${key}' does not exist`), { code: 'NoSuchKey' });
      const bytes = new Uint8Array(await (await this.checked('GET', key, res)).arrayBuffer());
      return verify(key, bytes, expected ?? (res.headers.get('x-sha256') || undefined));
    });
  }

  async stat(key: string): Promise<BlobInfo | null> {
    return retrying(async () => {
      const res = await this.request('GET', key, { method: 'HEAD' });
      if (res.status === 404) return null;
      await this.checked('HEAD', key, res);
      return { key, bytes: Number(res.headers.get('content-length')), sha256: res.headers.get('x-sha256') || undefined };
    });
  }

  async remove(key: string): Promise<void> {
    await retrying(async () => this.checked('DELETE', key, await this.request('DELETE', key, { method: 'DELETE' })));
  }

  async list(prefix: string): Promise<string[]> {
    return retrying(async () => (await (await this.checked('LIST', prefix, await this.request('LIST', prefix, { method: 'GET' }))).json()) as string[]);
  }

  /** The response if it is a success; a 5xx (the store failing, its disk full) passes, other answers do not. */
  private async checked(method: string, key: string, res: Response): Promise<Response> {
    if (res.ok) return res;
    const text = `blob server: ${method} ${key}: ${res.status} ${method === 'HEAD' ? '' : (await res.text()).trim().slice(0, 300)}`.trim();
    throw res.status >= 500 ? new StoreUnavailable(text) : new Error(text);
  }

  async presignGet(key: string, seconds: number, internal = false): Promise<string> {
    return this.sign(internal, { method: 'GET', key, expires: expiry(seconds) });
  }

  async presignPut(key: string, seconds: number, internal = false, maxBytes?: number): Promise<string> {
    return this.sign(internal, { method: 'PUT', key, expires: expiry(seconds), maxBytes });
  }

  private sign(internal: boolean, grant: UrlGrant): string {
    if (!isSafeKey(grant.key)) throw new Error(`malformed blob key '${grant.key}'`);
    return signUrl(internal ? this.o.baseUrl : (this.o.publicBaseUrl ?? this.o.baseUrl), this.o.secret, grant);
  }

  /** A store that accepts the connection but never answers is a passing failure too, after REQUEST_TIMEOUT_MS. */
  private request(method: UrlGrant['method'], key: string, init: RequestInit, extra: Partial<UrlGrant> = {}): Promise<Response> {
    const url = this.sign(true, { method, key, expires: expiry(OWN_REQUEST_SECONDS), ...extra });
    return fetch(url, { ...init, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
  }
}

const expiry = (seconds: number): number => Math.floor(Date.now() / 1000) + seconds;
