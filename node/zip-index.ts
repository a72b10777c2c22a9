// A .zip indexed by its central directory, each member inflated on demand and never past the size
// it declares: a member that would inflate further (a bomb lying in its headers) fails by name, and
// members whose data overlap (one deflate stream named many times) make the whole archive refused.
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { Inflate } from 'fflate';

export interface ZipMember {
  readonly name: string;
  readonly size: number;
  read(): Uint8Array;
}

const EOCD = 0x06054b50;
const ZIP64_LOCATOR = 0x07064b50;
const ZIP64_EOCD = 0x06064b50;
const CENTRAL = 0x02014b50;
const LOCAL = 0x04034b50;
const FULL32 = 0xffffffff;
/** Compressed bytes fed to the inflater at a time: deflate's ~1032:1 caps what one push may produce at ~16 MiB. */
const CHUNK = 16 * 1024;

interface Record64 {
  readonly name: string;
  readonly method: number;
  readonly encrypted: boolean;
  readonly compressed: number;
  readonly size: number;
  readonly offset: number;
}

function readAt(fd: number, at: number, n: number, file: string): Buffer {
  const b = Buffer.alloc(n);
  if (n > 0 && readSync(fd, b, 0, n, at) !== n) throw new Error(`${file}: truncated .zip`);
  return b;
}

/** The end-of-central-directory record (zip64 when its counts overflow): where the directory is, how many entries. */
function directory(fd: number, total: number, file: string): { offset: number; entries: number } {
  const tail = readAt(fd, Math.max(0, total - 65_557), Math.min(total, 65_557), file);
  let at = -1;
  for (let i = tail.length - 22; i >= 0; i--) {
    if (tail.readUInt32LE(i) === EOCD) {
      at = i;
      break;
    }
  }
  if (at < 0) throw new Error(`${file}: not a .zip (no end-of-central-directory record)`);
  const entries = tail.readUInt16LE(at + 10);
  const offset = tail.readUInt32LE(at + 16);
  if (entries !== 0xffff && offset !== FULL32) return { offset, entries };
  const locator = at - 20;
  if (locator < 0 || tail.readUInt32LE(locator) !== ZIP64_LOCATOR) throw new Error(`${file}: corrupt zip64 directory`);
  const eocd64 = readAt(fd, Number(tail.readBigUInt64LE(locator + 8)), 56, file);
  if (eocd64.readUInt32LE(0) !== ZIP64_EOCD) throw new Error(`${file}: corrupt zip64 directory`);
  return { entries: Number(eocd64.readBigUInt64LE(32)), offset: Number(eocd64.readBigUInt64LE(48)) };
}

function centralRecords(fd: number, total: number, file: string, maxEntries: number): Record64[] {
  const { offset, entries } = directory(fd, total, file);
  if (entries > maxEntries) throw new Error(`${file}: more than ${maxEntries.toLocaleString()} files`);
  const out: Record64[] = [];
  let at = offset;
  for (let i = 0; i < entries; i++) {
    const h = readAt(fd, at, 46, file);
    if (h.readUInt32LE(0) !== CENTRAL) throw new Error(`${file}: corrupt central directory (entry ${i})`);
    const [nameLength, extraLength, commentLength] = [h.readUInt16LE(28), h.readUInt16LE(30), h.readUInt16LE(32)];
    const rest = readAt(fd, at + 46, nameLength + extraLength, file);
    let size = h.readUInt32LE(24);
    let compressed = h.readUInt32LE(20);
    let local = h.readUInt32LE(42);
    // Zip64: the sizes and offset that overflowed 32 bits follow in the 0x0001 extra field, in this order.
    for (let e = nameLength; e + 4 <= rest.length; ) {
      const [id, length] = [rest.readUInt16LE(e), rest.readUInt16LE(e + 2)];
      if (id === 1) {
        let f = e + 4;
        const next = (): number => Number(rest.readBigUInt64LE((f += 8) - 8));
        if (size === FULL32) size = next();
        if (compressed === FULL32) compressed = next();
        if (local === FULL32) local = next();
      }
      e += 4 + length;
    }
    const name = new TextDecoder().decode(rest.subarray(0, nameLength));
    out.push({ name, method: h.readUInt16LE(10), encrypted: (h.readUInt16LE(8) & 1) === 1, compressed, size, offset: local });
    at += 46 + nameLength + extraLength + commentLength;
  }
  return out;
}

/** The members of a .zip; `maxTotal` bounds the declared sizes of all members together. */
export function indexZip(file: string, o: { maxEntries: number; maxTotal: number }): ZipMember[] {
  const fd = openSync(file, 'r');
  let records: Record64[];
  let total: number;
  try {
    total = fstatSync(fd).size;
    records = centralRecords(fd, total, file, o.maxEntries);
  } finally {
    closeSync(fd);
  }
  const declared = records.reduce((n, r) => n + r.size, 0);
  if (declared > o.maxTotal) throw new Error(`${file}: inflates to more than ${o.maxTotal} bytes`);
  // Each member's local header and data end before the next one starts: no stream is shared.
  const byOffset = [...records].sort((a, b) => a.offset - b.offset);
  const limitOf = new Map<Record64, number>();
  byOffset.forEach((r, i) => {
    const end = i + 1 < byOffset.length ? byOffset[i + 1].offset : total;
    if (r.offset + 30 + r.compressed > end) throw new Error(`${file}: members overlap (${r.name}): not a well-formed .zip`);
    limitOf.set(r, end);
  });
  return records.map((r) => ({ name: r.name, size: r.size, read: () => inflateMember(file, r, limitOf.get(r)!) }));
}

function inflateMember(file: string, r: Record64, end: number): Uint8Array {
  const what = `${file}: ${r.name}`;
  if (r.encrypted) throw new Error(`${what}: encrypted`);
  if (r.method !== 0 && r.method !== 8) throw new Error(`${what}: compression method ${r.method} (only stored and deflate are read)`);
  const fd = openSync(file, 'r');
  try {
    const local = readAt(fd, r.offset, 30, file);
    if (local.readUInt32LE(0) !== LOCAL) throw new Error(`${what}: corrupt local header`);
    const data = r.offset + 30 + local.readUInt16LE(26) + local.readUInt16LE(28);
    if (data + r.compressed > end) throw new Error(`${what}: its data runs into the next member`);
    if (r.method === 0) {
      if (r.compressed !== r.size) throw new Error(`${what}: stored with ${r.compressed} bytes, declared ${r.size}`);
      return new Uint8Array(readAt(fd, data, r.size, file));
    }
    const out = new Uint8Array(r.size);
    let produced = 0;
    let ended = false;
    const inflater = new Inflate((chunk, final) => {
      if (produced + chunk.length > r.size) throw new Error(`${what}: inflates past the ${r.size} bytes it declares`);
      out.set(chunk, produced);
      produced += chunk.length;
      ended ||= final;
    });
    for (let at = 0; at < r.compressed; at += CHUNK) {
      const n = Math.min(CHUNK, r.compressed - at);
      inflater.push(readAt(fd, data + at, n, file), at + n >= r.compressed);
    }
    if (!ended || produced !== r.size) throw new Error(`${what}: inflated to ${produced} bytes, declared ${r.size}`);
    return out;
  } finally {
    closeSync(fd);
  }
}
