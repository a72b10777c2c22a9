// The local store's HTTP face, mounted on the server's port (or served alone by `partune storage
// serve`): GET/HEAD/PUT/DELETE of one key, each checked against its signed URL. A PUT streams to a
// temporary file, is cut off past its signed size, and is write-once unless its grant says
// replace: the same bytes again succeed (a retried upload), other bytes are refused.
import { createReadStream, createWriteStream, rmSync, statSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { finished } from 'node:stream/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { LocalBlobStore } from './local';
import { verifyRequest } from './signed-url';

export interface BlobHttpOptions {
  readonly store: LocalBlobStore;
  /** The signing secret, and former ones whose URLs still verify. */
  readonly secret: string | readonly string[];
  /** Whether a browser page at `origin` may use the store (the server's own pages, configured origins); `host` is the request's Host. */
  readonly allowOrigin: (origin: string, host: string | undefined) => boolean;
}

/** A handler for requests whose URL is `/<key>?<signature>` (the mount point stripped). */
export function blobHandler(o: BlobHttpOptions): (req: IncomingMessage, res: ServerResponse) => void {
  const writing = new Set<string>();
  const refuse = (res: ServerResponse, status: number, reason: string): void => {
    if (!res.headersSent) res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', connection: 'close' });
    res.end(`${reason}\n`);
  };
  return (req, res) => {
    const url = new URL(req.url ?? '/', 'http://blob');
    const key = url.pathname.replace(/^\/+/, '');
    const origin = req.headers.origin;
    if (origin) {
      if (!o.allowOrigin(origin, req.headers.host)) return refuse(res, 403, `origin ${origin} may not use this store`);
      res.setHeader('access-control-allow-origin', origin);
      res.setHeader('vary', 'origin');
      res.setHeader('access-control-expose-headers', 'etag, x-sha256');
    }
    if (req.method === 'OPTIONS') {
      if (!origin) return refuse(res, 403, 'preflight without an origin');
      res.writeHead(204, { 'access-control-allow-methods': 'GET, HEAD, PUT', 'access-control-allow-headers': 'content-type', 'access-control-max-age': '600' });
      return void res.end();
    }
    const verdict = verifyRequest(o.secret, req.method ?? '', key, url.searchParams);
    if (!verdict.ok) return refuse(res, verdict.status, verdict.reason);
    if (verdict.grant.method === 'GET') return void serve(o.store, key, req, res, refuse);
    if (verdict.grant.method === 'LIST') {
      return void o.store.list(key).then(
        (names) => (res.writeHead(200, { 'content-type': 'application/json' }), res.end(JSON.stringify(names))),
        (e: Error) => refuse(res, 500, `storage failure: ${e.message}`),
      );
    }
    if (verdict.grant.method === 'DELETE') {
      return void o.store.remove(key).then(() => (res.writeHead(204), res.end()), (e: Error) => refuse(res, 500, `storage failure: ${e.message}`));
    }
    const max = verdict.grant.maxBytes ?? Infinity;
    const declared = Number(req.headers['content-length']);
    if (Number.isFinite(declared) && declared > max) return refuse(res, 413, `body of ${declared} bytes exceeds the ${max} this URL allows`);
    if (writing.has(key)) return refuse(res, 409, 'another upload to this key is in progress');
    writing.add(key);
    void receive(o.store, key, max, verdict.grant.replace === true, req).then(
      (r) => (r.status === 200 ? (res.writeHead(200, { etag: `"${r.sha256}"`, 'x-sha256': r.sha256 }), res.end()) : refuse(res, r.status, r.reason)),
      // A full disk is 507, any other failure 500: both mean "try again", and nothing was kept.
      (e: NodeJS.ErrnoException) =>
        refuse(res, e.code === 'ENOSPC' || e.code === 'EDQUOT' ? 507 : 500, `storage failure: ${e.code ?? e.message}; nothing was kept`),
    ).finally(() => writing.delete(key));
  };
}

async function serve(store: LocalBlobStore, key: string, req: IncomingMessage, res: ServerResponse, refuse: (res: ServerResponse, s: number, r: string) => void): Promise<void> {
  const info = await store.stat(key).catch(() => null);
  if (!info) return refuse(res, 404, 'no such object');
  res.writeHead(200, {
    'content-type': 'application/octet-stream', 'content-length': String(info.bytes), etag: `"${info.sha256}"`, 'x-sha256': info.sha256 ?? '',
    'cross-origin-resource-policy': 'same-site',
  });
  if (req.method === 'HEAD') return void res.end();
  createReadStream(store.objectPath(key)).on('error', () => res.destroy()).pipe(res);
}

type Received = { status: 200; sha256: string } | { status: 409 | 413 | 400; reason: string };

async function receive(store: LocalBlobStore, key: string, max: number, replace: boolean, req: IncomingMessage): Promise<Received> {
  const temp = store.tempPath();
  const hash = createHash('sha256');
  let bytes = 0;
  const out = createWriteStream(temp);
  try {
    const complete = await new Promise<boolean>((resolve, reject) => {
      // A write that fails (ENOSPC, EIO) ends the upload; the body is left unread and the socket closed.
      out.once('error', (e) => {
        req.pause();
        reject(e);
      });
      req.on('data', (chunk: Buffer) => {
        bytes += chunk.length;
        if (bytes > max) {
          req.pause();
          return resolve(false);
        }
        hash.update(chunk);
        if (!out.write(chunk)) req.pause(), out.once('drain', () => req.resume());
      });
      req.on('end', () => resolve(true));
      req.on('error', reject);
    });
    out.end();
    await finished(out);
    if (!complete) return { status: 413, reason: `body exceeds the ${max} bytes this URL allows; nothing was kept` };
    const digest = hash.digest('hex');
    const existing = await store.stat(key);
    if (existing && !replace) {
      return existing.sha256 === digest ? { status: 200, sha256: digest } : { status: 409, reason: 'this key was already written with other bytes; it is immutable' };
    }
    store.commit(key, temp, digest, statSync(temp).size);
    return { status: 200, sha256: digest };
  } finally {
    out.destroy();
    rmSync(temp, { force: true });
  }
}
