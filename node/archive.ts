// The files of a directory, a .zip or a .tar as one list of entries read on demand. Tar members are
// indexed by their headers alone (ustar, GNU long names, pax paths), so a tar larger than memory is
// read one member at a time; a .zip by its central directory (node/zip-index.ts). Paths are POSIX and
// relative; anything that would climb out (`..`, absolute) or is not a regular file is left out, never followed.
import { closeSync, openSync, readSync, statSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { indexZip } from './zip-index';

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
        const size = statSync(full).size;
        out.push({ path, size, read: async () => (size > MAX_ENTRY_BYTES ? bounded(size, () => new Uint8Array()) : new Uint8Array(await readFile(full))) });
      }
    }
  };
  await walk('');
  return out;
}

export function listZip(file: string): Entry[] {
  let members;
  try {
    members = indexZip(file, { maxEntries: MAX_ENTRIES, maxTotal: MAX_ZIP_INFLATED });
  } catch (e) {
    throw new Error(`not a readable .zip: ${(e as Error).message}`);
  }
  const out: Entry[] = [];
  for (const m of members) {
    const path = m.name.endsWith('/') ? undefined : safePath(m.name);
    if (path !== undefined) out.push({ path, size: m.size, read: async () => bounded(m.size, () => m.read()) });
  }
  return out.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

/** A member over the size limit is still listed, so that it fails by name rather than vanishing. */
const bounded = (size: number, read: () => Uint8Array): Uint8Array => {
  if (size > MAX_ENTRY_BYTES) throw new Error(`${size} bytes, larger than the ${MAX_ENTRY_BYTES} a photo may be`);
  return read();
};

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

/** The header checksum: the bytes summed with the checksum field read as spaces. */
function checkHeader(h: Uint8Array, at: number, file: string): void {
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 0x20 : h[i];
  if (octal(h.subarray(148, 156), file) !== sum) throw new Error(`${file}: corrupt tar header at byte ${at} (checksum)`);
}

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
    let ended = false;
    while (at + 512 <= total) {
      const h = read(at, 512);
      if (h.every((x) => x === 0)) {
        ended = true;
        break;
      }
      checkHeader(h, at, file);
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
        if (path !== undefined) {
          if (out.length >= MAX_ENTRIES) throw tooMany(file);
          out.push({ path, size, read: async () => bounded(size, () => readSpan(file, data, size)) });
        }
      }
      at = data + Math.ceil(size / 512) * 512;
    }
    // A tar cut at a member's edge reads as a shorter, well-formed archive but for its missing end blocks.
    if (!ended) throw new Error(`${file}: truncated tar (no end-of-archive block after ${out.length} files: the file may be cut short)`);
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
