// Uploads that stream from disk with a progress bar: a photo folder (packed as a .tar in a temporary
// file first) or an archive, piped to the presigned URL with its exact length.
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { createReadStream, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { CreateUpload } from '../protocol/operations';
import { GraphQLClient } from '../worker/client';
import { writeTar } from '../node/tar-write';
import { ProgressBar } from './progress';

async function putFile(url: string, path: string, bar: ProgressBar): Promise<void> {
  const size = statSync(path).size;
  const target = new URL(url);
  await new Promise<void>((resolve, reject) => {
    const headers = { 'content-length': String(size) };
    const req = (target.protocol === 'https:' ? httpsRequest : httpRequest)(target, { method: 'PUT', headers }, (res) => {
      res.resume();
      const failed = new Error(`upload of ${basename(path)} failed: HTTP ${res.statusCode}`);
      res.on('end', () => (res.statusCode && res.statusCode < 300 ? resolve() : reject(failed)));
    });
    req.on('error', reject);
    let sent = 0;
    const file = createReadStream(path);
    file.on('data', (chunk) => {
      sent += chunk.length;
      bar.update(sent, { MiB: (sent / 2 ** 20).toFixed(1) }, size);
    });
    file.on('error', reject);
    file.pipe(req);
  });
}

/** --path of `dataset import --format folder`: a directory (sent as a .tar) or a .zip/.tar, streamed. Returns the upload's id. */
export async function uploadPhotos(c: GraphQLClient, path: string, quiet: boolean): Promise<string> {
  const isDir = statSync(path).isDirectory();
  if (!isDir && !/\.(zip|tar)$/i.test(path)) throw new Error(`--path ${path}: give a folder of class folders, a .zip or a .tar`);
  const tmp = isDir ? mkdtempSync(join(tmpdir(), 'partune-upload-')) : undefined;
  try {
    let file = path;
    if (tmp) {
      file = join(tmp, `${basename(path.replace(/\/+$/, '')) || 'photos'}.tar`);
      const files = await writeTar(path, file);
      if (!quiet) process.stderr.write(`packed ${files} files of ${path} as ${basename(file)} (${(statSync(file).size / 2 ** 20).toFixed(1)} MiB)\n`);
    }
    const { createUpload } = await c.request(CreateUpload, { filename: basename(file), bytes: statSync(file).size });
    const bar = new ProgressBar('upload', statSync(file).size, quiet);
    await putFile(createUpload.url, file, bar);
    bar.done();
    return createUpload.id;
  } finally {
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  }
}
