// A BlobStore served by another process (`partune storage serve`): every replica of the server
// reaches the same blobs over HTTP. Replicas share the store's secret, so they sign their own
// requests (GET, replacing PUT, DELETE) and the URLs they hand to workers, as the local store does.
import { BlobInfo, BlobStore, sha256, verify } from './blob-store';
import { isSafeKey, signUrl, UrlGrant } from './signed-url';

export interface RemoteStoreOptions {
  /** Where the blob routes are, as the servers and Node workers reach them (…/blobs). */
  readonly baseUrl: string;
  /** The same, as browsers reach them, when it differs. */
  readonly publicBaseUrl?: string;
  readonly secret: string;
}

/** A signed request lives this long: enough for the largest object on a slow link. */
const OWN_REQUEST_SECONDS = 3600;

export class RemoteBlobStore implements BlobStore {
  readonly description: string;

  constructor(private readonly o: RemoteStoreOptions) {
    this.description = `blob server at ${o.baseUrl}`;
  }

  async put(key: string, bytes: Uint8Array): Promise<BlobInfo & { sha256: string }> {
    const digest = sha256(bytes);
    const res = await this.request('PUT', key, { method: 'PUT', body: bytes as Uint8Array<ArrayBuffer>, headers: { 'content-type': 'application/octet-stream' } }, { replace: true });
    if (!res.ok) throw new Error(`blob server: PUT ${key}: ${res.status} ${(await res.text()).trim()}`);
    const stored = res.headers.get('x-sha256');
    if (stored !== digest) throw new Error(`blob server: PUT ${key} stored SHA-256 ${stored}, sent ${digest}`);
    return { key, bytes: bytes.byteLength, sha256: digest };
  }

  async get(key: string, expected?: string): Promise<Uint8Array> {
    const res = await this.request('GET', key, { method: 'GET' });
    if (res.status === 404) throw Object.assign(new Error(`object '${key}' does not exist`), { code: 'NoSuchKey' });
    if (!res.ok) throw new Error(`blob server: GET ${key}: ${res.status} ${(await res.text()).trim()}`);
    const bytes = new Uint8Array(await res.arrayBuffer());
    return verify(key, bytes, expected ?? (res.headers.get('x-sha256') || undefined));
  }

  async stat(key: string): Promise<BlobInfo | null> {
    const res = await this.request('GET', key, { method: 'HEAD' });
    if (res.status === 404) return null;
    if (!res.ok) throw new Error(`blob server: HEAD ${key}: ${res.status}`);
    return { key, bytes: Number(res.headers.get('content-length')), sha256: res.headers.get('x-sha256') || undefined };
  }

  async remove(key: string): Promise<void> {
    const res = await this.request('DELETE', key, { method: 'DELETE' });
    if (!res.ok) throw new Error(`blob server: DELETE ${key}: ${res.status} ${(await res.text()).trim()}`);
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

  private request(method: UrlGrant['method'], key: string, init: RequestInit, extra: Partial<UrlGrant> = {}): Promise<Response> {
    return fetch(this.sign(true, { method, key, expires: expiry(OWN_REQUEST_SECONDS), ...extra }), init);
  }
}

const expiry = (seconds: number): number => Math.floor(Date.now() / 1000) + seconds;
