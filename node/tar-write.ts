// A directory's regular files as a .tar (ustar; a pax header carries a path over 100 bytes),
// written file by file: what `dataset import --format folder` uploads for a local folder.
import { closeSync, openSync, writeSync } from 'node:fs';
import { listDirectory } from './archive';

function header(name: string, size: number, type: '0' | 'x'): Uint8Array {
  const h = new Uint8Array(512);
  const put = (s: string, at: number, len: number): void => void h.set(new TextEncoder().encode(s).subarray(0, len), at);
  put(name, 0, 100);
  put('0000644\0', 100, 8);
  put('0000000\0', 108, 8);
  put('0000000\0', 116, 8);
  put(`${size.toString(8).padStart(11, '0')}\0`, 124, 12);
  put('00000000000\0', 136, 12);
  put(type, 156, 1);
  put('ustar\u000000', 257, 8);
  h.fill(0x20, 148, 156);
  const sum = h.reduce((a, b) => a + b, 0);
  put(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8);
  return h;
}

const padding = (n: number): Uint8Array => new Uint8Array((512 - (n % 512)) % 512);

/** Writes `dir` as the tar `out`; returns the number of files. */
export async function writeTar(dir: string, out: string): Promise<number> {
  const entries = await listDirectory(dir);
  const fd = openSync(out, 'w');
  try {
    for (const e of entries) {
      const name = Buffer.from(e.path);
      if (name.length > 100) {
        const record = `path=${e.path}\n`;
        let len = Buffer.byteLength(record) + 3;
        while (String(len).length + 1 + Buffer.byteLength(record) !== len) len = String(len).length + 1 + Buffer.byteLength(record);
        const pax = Buffer.from(`${len} ${record}`);
        writeSync(fd, header('PaxHeader', pax.length, 'x'));
        writeSync(fd, pax);
        writeSync(fd, padding(pax.length));
      }
      const bytes = await e.read();
      writeSync(fd, header(name.length > 100 ? e.path.slice(-99) : e.path, bytes.length, '0'));
      writeSync(fd, bytes);
      writeSync(fd, padding(bytes.length));
    }
    writeSync(fd, new Uint8Array(1024));
  } finally {
    closeSync(fd);
  }
  return entries.length;
}
