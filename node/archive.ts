// The files of a directory, a .zip or a .tar as one list of entries read on demand. Tar members are
// indexed by their headers alone (ustar, GNU long names, pax paths), so a tar larger than memory is
// read one member at a time. Paths are POSIX and relative; anything that would climb out (`..`,
// absolute) or is not a regular file is left out, never followed.
import { closeSync, openSync, readSync, readFileSync, statSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { unzipSync } from 'fflate';

export interface Entry {
  /** Relative POSIX path inside the source. */
  readonly path: string;
  readonly size: number;
  read(): Promise<Uint8Array>;
}

/** No single file above this is read (a photo is far smaller; a bomb is not). */
export const MAX_ENTRY_BYTES = 256 * 2 ** 20;
/** A .zip is inflated in memory: at most this much in all. */
const MAX_ZIP_INFLATED = 4 * 2 ** 30;
const MAX_ENTRIES = 5_000_000;

const safePath = (p: string): string | undefined => {
  const parts = p
    .replace(/\\/g, '/')
    .split('/')
    .filter((s) => s !== '' && s !== '.');
  if (parts.length === 0 || parts.some((s) => s === '..') || p.startsWith('/')) return undefined;
  return parts.join('/');
};

const tooMany = (where: string): Error => new Error(`${where}: more than ${MAX_ENTRIES.toLocaleString()} files`);

export async function listDirectory(root: string): Promise<Entry[]> {
  const out: Entry[] = [];
  const walk = async (rel: string): Promise<void> => {
    const items = await readdir(join(root, rel), { withFileTypes: true });
    items.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const item of items) {
      const path = rel ? `${rel}/${item.name}` : item.name;
      if (item.isDirectory()) await walk(path);
      else if (item.isFile()) {
        if (out.length >= MAX_ENTRIES) throw tooMany(root);
        const full = join(root, path);
        out.push({ path, size: statSync(full).size, read: async () => new Uint8Array(await readFile(full)) });
      }
    }
  };
  await walk('');
  return out;
}

export function listZip(file: string): Entry[] {
  let declared = 0;
  let files: Record<string, Uint8Array>;
  try {
    files = unzipSync(readFileSync(file), {
      filter: (f) => {
        if (f.name.endsWith('/') || safePath(f.name) === undefined) return false;
        declared += f.originalSize;
        if (declared > MAX_ZIP_INFLATED) throw new Error(`inflates to more than ${MAX_ZIP_INFLATED} bytes`);
        return f.originalSize <= MAX_ENTRY_BYTES;
      },
    });
  } catch (e) {
    throw new Error(`${file}: not a readable .zip (${(e as Error).message})`);
  }
  const names = Object.keys(files).sort();
  if (names.length > MAX_ENTRIES) throw tooMany(file);
  return names.map((name) => {
    const bytes = files[name];
    return { path: safePath(name)!, size: bytes.length, read: async () => bytes };
  });
}

const cString = (b: Uint8Array): string => {
  const end = b.indexOf(0);
  return new TextDecoder().decode(end < 0 ? b : b.subarray(0, end));
};

const octal = (b: Uint8Array, what: string): number => {
  if (b[0] & 0x80) throw new Error(`${what}: base-256 sizes are not supported`);
  const s = cString(b).trim();
  const n = s === '' ? 0 : parseInt(s, 8);
  if (!Number.isFinite(n) || !/^[0-7]*$/.test(s)) throw new Error(`${what}: corrupt tar header`);
  return n;
};

/** The pax record `path=...` of an extended header, if any. */
const paxPath = (b: Uint8Array): string | undefined => {
  const text = new TextDecoder().decode(b);
  for (const line of text.split('\n')) {
    const m = /^\d+ path=(.*)$/.exec(line);
    if (m) return m[1];
  }
  return undefined;
};

export function listTar(file: string): Entry[] {
  const fd = openSync(file, 'r');
  const total = statSync(file).size;
  const out: Entry[] = [];
  const read = (at: number, n: number): Uint8Array => {
    const b = new Uint8Array(n);
    if (readSync(fd, b, 0, n, at) !== n) throw new Error(`${file}: truncated tar (a member runs past the end)`);
    return b;
  };
  try {
    let at = 0;
    let longName: string | undefined;
    while (at + 512 <= total) {
      const h = read(at, 512);
      if (h.every((x) => x === 0)) break;
      const size = octal(h.subarray(124, 136), file);
      const type = String.fromCharCode(h[156] || 0x30);
      const prefix = cString(h.subarray(345, 500));
      const name = longName ?? (prefix ? `${prefix}/${cString(h.subarray(0, 100))}` : cString(h.subarray(0, 100)));
      const data = at + 512;
      if (data + size > total) throw new Error(`${file}: truncated tar (member ${name} needs ${size} bytes)`);
      longName = undefined;
      if (type === 'L') longName = cString(read(data, Math.min(size, 65_536)));
      else if (type === 'x') longName = paxPath(read(data, Math.min(size, 65_536)));
      else if (type === '0' || type === '7') {
        const path = safePath(name);
        if (path !== undefined && size <= MAX_ENTRY_BYTES) {
          if (out.length >= MAX_ENTRIES) throw tooMany(file);
          out.push({ path, size, read: async () => readSpan(file, data, size) });
        }
      }
      at = data + Math.ceil(size / 512) * 512;
    }
  } finally {
    closeSync(fd);
  }
  return out;
}

function readSpan(file: string, at: number, n: number): Uint8Array {
  const fd = openSync(file, 'r');
  try {
    const b = new Uint8Array(n);
    if (readSync(fd, b, 0, n, at) !== n) throw new Error(`${file}: changed while being read`);
    return b;
  } finally {
    closeSync(fd);
  }
}
