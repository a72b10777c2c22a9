// Server-side paths in registerModel and importDataset: only under the configured import roots
// (PARTUNE_IMPORT_ROOTS; none by default: uploads only). A path outside the roots gets the same
// answer whether or not it exists. Each file is opened once, without following a link and without
// blocking (a FIFO opens and is refused, never waited on), and the open descriptor is what is
// checked: a regular file, still under the roots, within the upload size limit. Its bytes are read
// through the descriptor off the event loop, so a swap after the check reads nothing else.
import { constants } from 'node:fs';
import { FileHandle, mkdir, open, readFile, readdir, readlink, realpath, writeFile } from 'node:fs/promises';
import { manifestPaths } from '../../node/image-folder';
import { dirname, extname, isAbsolute, join, relative } from 'node:path';
import { badInput, forbidden } from '../errors';
import type { ServerConfig } from '../config';

/** A dataset directory holds at most this many files, at most this deep. */
const MAX_FILES = 1000;
const MAX_DEPTH = 3;

const isUnder = (root: string, path: string): boolean => {
  const r = relative(root, path);
  return r === '' || (!r.startsWith('..') && !isAbsolute(r));
};

async function inside(config: ServerConfig, path: string): Promise<string> {
  if (!config.importRoots.length) throw forbidden('this server reads no server-side paths (PARTUNE_IMPORT_ROOTS is not set): upload the files instead');
  const outside = forbidden(`path ${path} is not under this server's import roots (PARTUNE_IMPORT_ROOTS)`);
  if (!isAbsolute(path)) throw badInput(`path ${path} must be absolute`);
  let real: string;
  try {
    real = await realpath(path);
  } catch {
    throw config.importRoots.some((root) => isUnder(root, path)) ? badInput(`path ${path} does not exist on the server`) : outside;
  }
  if (!config.importRoots.some((root) => isUnder(root, real))) throw outside;
  return real;
}

/** The regular file at `real`, opened and checked through its descriptor; the caller closes it. */
async function openChecked(config: ServerConfig, real: string, shown: string): Promise<{ file: FileHandle; bytes: number }> {
  let file: FileHandle;
  try {
    file = await open(real, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (e) {
    throw badInput(`path ${shown} cannot be opened (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  try {
    const st = await file.stat();
    if (!st.isFile()) throw badInput(`path ${shown} is not a regular file`);
    if (st.size > config.uploadMaxBytes)
      throw badInput(`path ${shown} has ${st.size} bytes, more than the ${config.uploadMaxBytes} an upload may (PARTUNE_UPLOAD_MAX_MB)`);
    // Where the descriptor really points (a directory above may have been swapped since the check).
    const opened = await readlink(`/proc/self/fd/${file.fd}`).catch(() => real);
    if (!config.importRoots.some((root) => isUnder(root, opened)))
      throw forbidden(`path ${shown} is not under this server's import roots (PARTUNE_IMPORT_ROOTS)`);
    return { file, bytes: st.size };
  } catch (e) {
    await file.close();
    throw e;
  }
}

async function readChecked(config: ServerConfig, real: string, shown: string): Promise<Uint8Array> {
  const { file, bytes } = await openChecked(config, real, shown);
  try {
    const out = new Uint8Array(bytes);
    for (let at = 0; at < bytes;) {
      const { bytesRead } = await file.read(out, at, Math.min(bytes - at, 8 * 2 ** 20), at);
      if (bytesRead === 0) throw badInput(`path ${shown} shrank while it was read`);
      at += bytesRead;
    }
    return out;
  } finally {
    await file.close();
  }
}

/** A regular file's bytes. */
export async function readServerFile(config: ServerConfig, path: string): Promise<Uint8Array> {
  return readChecked(config, await inside(config, path), path);
}

/**
 * A copy of a server path (a file, or a directory of regular files and directories under the roots)
 * in `into`, file by file as checked above: what a dataset reader then opens. Returns the copy's path.
 */
export async function copyServerData(config: ServerConfig, path: string, into: string): Promise<string> {
  const real = await inside(config, path);
  let files = 0;
  const copy = async (from: string, to: string, shown: string, depth: number): Promise<void> => {
    let entries: string[] | undefined;
    try {
      entries = await readdir(from);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOTDIR') throw badInput(`path ${shown} cannot be read (${(e as NodeJS.ErrnoException).code})`);
    }
    if (!entries) {
      if (++files > MAX_FILES) throw badInput(`path ${path} holds more than ${MAX_FILES} files`);
      const bytes = await readChecked(config, from, shown);
      await mkdir(dirname(to), { recursive: true });
      const out = await open(to, 'wx');
      try {
        await out.writeFile(bytes);
      } finally {
        await out.close();
      }
      return;
    }
    if (depth >= MAX_DEPTH) throw badInput(`path ${path} nests directories deeper than ${MAX_DEPTH}`);
    await mkdir(to, { recursive: true });
    for (const entry of entries) await copy(await inside(config, join(from, entry)), join(to, entry), join(shown, entry), depth + 1);
  };
  const target = join(into, `data${extname(real)}`);
  await copy(real, target, path, 0);
  if (/\.(csv|jsonl)$/i.test(real)) await copyManifestImages(config, path, real, target, into);
  return target;
}

/** A manifest's images, each checked as any server path, copied to the same place beside the manifest's copy. */
async function copyManifestImages(config: ServerConfig, path: string, real: string, copied: string, into: string): Promise<void> {
  let paths: string[];
  try {
    paths = manifestPaths(path, new TextDecoder().decode(await readFile(copied)));
  } catch (e) {
    throw badInput((e as Error).message);
  }
  if (paths.length > MAX_FILES) throw badInput(`manifest ${path} names more than ${MAX_FILES} images: give a .zip or .tar`);
  for (const rel of new Set(paths)) {
    const from = await inside(config, join(dirname(real), rel));
    const to = join(into, rel);
    if (relative(into, to).startsWith('..')) throw badInput(`manifest ${path}: path ${rel} is outside its folder`);
    await mkdir(dirname(to), { recursive: true });
    await writeFile(to, await readChecked(config, from, join(dirname(path), rel)), { flag: 'wx' }).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'EEXIST') throw e;
    });
  }
}
