// Fetches blobs by presigned URL, checks their SHA-256, and keeps parsed results by hash so a
// worker downloads a run's model and data once, not once per shard.
import type { Download } from '../protocol/shard-job';

export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest('SHA-256', bytes as Uint8Array<ArrayBuffer>);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
}

/** Tries a transfer again while the store fails (refused, reset, 5xx, its disk full): 8 tries over about a minute. */
async function patiently<T>(what: string, f: () => Promise<T>, log?: (line: string) => void): Promise<T> {
  let lastError: unknown;
  for (let attempt = 0; attempt < 8; attempt++) {
    try {
      return await f();
    } catch (e) {
      lastError = e;
      if ((e as { final?: boolean }).final) break;
      const ms = Math.min(16_000, 500 * 2 ** attempt);
      log?.(`${what}: ${(e as Error).message}; retrying in ${ms / 1000} s`);
      await new Promise((r) => setTimeout(r, ms));
    }
  }
  throw new Error(`${what} failed: ${(lastError as Error).message}`);
}

/** These answers will not change by asking again (a malformed, refused or expired URL, a body too large). */
const refused = (message: string, status: number): Error => Object.assign(new Error(message), { final: [400, 403, 404, 413].includes(status) });

export async function fetchVerified(d: Download, what: string, log?: (line: string) => void): Promise<Uint8Array> {
  return patiently(`download of ${what}`, async () => {
    const res = await fetch(d.url);
    if (!res.ok) throw refused(`HTTP ${res.status}`, res.status);
    const bytes = new Uint8Array(await res.arrayBuffer());
    const actual = await sha256Hex(bytes);
    if (actual !== d.sha256) throw new Error(`SHA-256 mismatch (got ${actual.slice(0, 12)}…, expected ${d.sha256.slice(0, 12)}…)`);
    return bytes;
  }, log);
}

export class BlobCache<T> {
  private readonly entries = new Map<string, Promise<T>>();
  constructor(private readonly capacity: number) {}

  get(key: string, make: () => Promise<T>): Promise<T> {
    let p = this.entries.get(key);
    if (p) {
      this.entries.delete(key);
      this.entries.set(key, p); // most recently used last
      return p;
    }
    p = make();
    this.entries.set(key, p);
    p.catch(() => this.entries.delete(key));
    while (this.entries.size > this.capacity) this.entries.delete(this.entries.keys().next().value!);
    return p;
  }
}

export async function upload(url: string, bytes: Uint8Array, log?: (line: string) => void): Promise<void> {
  await patiently('upload', async () => {
    const res = await fetch(url, { method: 'PUT', body: bytes as Uint8Array<ArrayBuffer>, headers: { 'content-type': 'application/octet-stream' } });
    if (!res.ok) throw refused(`HTTP ${res.status}: ${(await res.text()).slice(0, 200).trim()}`, res.status);
  }, log);
}
