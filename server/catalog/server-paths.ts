// Server-side paths in registerModel and importDataset: only under the configured import roots
// (PARTUNE_IMPORT_ROOTS; none by default: uploads only), symbolic links resolved first, and only
// regular files (a FIFO or a device would block or never end). A path outside the roots gets the
// same answer whether or not it exists.
import { readFileSync, readdirSync, realpathSync, statSync } from 'node:fs';
import { join, relative, isAbsolute } from 'node:path';
import { badInput, forbidden } from '../errors';
import type { ServerConfig } from '../config';

function inside(config: ServerConfig, path: string): string {
  if (!config.importRoots.length) throw forbidden('this server reads no server-side paths (PARTUNE_IMPORT_ROOTS is not set): upload the files instead');
  const outside = forbidden(`path ${path} is not under this server's import roots (PARTUNE_IMPORT_ROOTS)`);
  if (!isAbsolute(path)) throw badInput(`path ${path} must be absolute`);
  let real: string;
  try {
    real = realpathSync(path);
  } catch {
    throw config.importRoots.some((root) => isUnder(root, path)) ? badInput(`path ${path} does not exist on the server`) : outside;
  }
  if (!config.importRoots.some((root) => isUnder(root, real))) throw outside;
  return real;
}

const isUnder = (root: string, path: string): boolean => {
  const r = relative(root, path);
  return r === '' || (!r.startsWith('..') && !isAbsolute(r));
};

/** A regular file's bytes. */
export function readServerFile(config: ServerConfig, path: string): Uint8Array {
  const real = inside(config, path);
  if (!statSync(real).isFile()) throw badInput(`path ${path} is not a regular file`);
  return new Uint8Array(readFileSync(real));
}

/**
 * A directory (or a file) whose every entry is, links resolved, a regular file or directory under
 * the roots: what a dataset reader may open.
 */
export function serverDataPath(config: ServerConfig, path: string): string {
  const real = inside(config, path);
  const st = statSync(real);
  if (st.isFile()) return real;
  if (!st.isDirectory()) throw badInput(`path ${path} is neither a regular file nor a directory`);
  for (const entry of readdirSync(real)) {
    const target = inside(config, join(real, entry));
    const e = statSync(target);
    if (!e.isFile() && !e.isDirectory()) throw badInput(`path ${path} holds ${entry}, which is not a regular file`);
  }
  return real;
}
