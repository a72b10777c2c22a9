// The blob store in a process of its own (`partune storage serve`): local files behind signed URLs
// on one port, shared by every server replica that knows its secret (RemoteBlobStore).
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { blobHandler } from './blob-http';
import { LocalBlobStore } from './local';

export interface BlobServerOptions {
  readonly root: string;
  readonly secret: string;
  /** Former secrets whose URLs still verify (a rotation's overlap). */
  readonly previousSecrets?: readonly string[];
  readonly host: string;
  readonly port: number;
  /** Origins of the pages (the servers' own) whose browser workers may use the store. */
  readonly allowedOrigins: readonly string[];
}

export interface RunningBlobServer {
  /** Where replicas point PARTUNE_BLOB_URL. */
  readonly url: string;
  close(): Promise<void>;
}

export async function startBlobServer(o: BlobServerOptions): Promise<RunningBlobServer> {
  let url = '';
  // The store's signed URLs are built by the replicas; its own base only matters for its description.
  const store = new LocalBlobStore({ root: o.root, secret: o.secret, baseUrl: '' });
  const blobs = blobHandler({ store, secret: [o.secret, ...(o.previousSecrets ?? [])], allowOrigin: (origin) => o.allowedOrigins.includes(origin) });
  const http = createServer((req, res) => {
    if (req.url === '/healthz') return void res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
    if (!req.url?.startsWith('/blobs/')) return void res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
    req.url = req.url.slice('/blobs'.length);
    blobs(req, res);
  });
  await new Promise<void>((resolve, reject) => http.listen(o.port, o.host, resolve).once('error', reject));
  const { port } = http.address() as AddressInfo;
  url = `http://${o.host === '0.0.0.0' ? '127.0.0.1' : o.host}:${port}`;
  return { url, close: () => new Promise((resolve) => http.close(() => resolve())) };
}
