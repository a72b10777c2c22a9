// Archives and images built to hurt: a zip member that inflates past the size it declares, members
// sharing one deflate stream, tars cut at a member's edge or with a forged header, a few bytes of
// SVG named .png, oversized files, look-alike class names and label gaps. Each fails by name, fast.
import { mkdirSync, mkdtempSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { zipSync } from 'fflate';
import sharp from 'sharp';
import { decodeOriginal, loadImageFolder, planImages } from '../node/image-folder';
import { writeTar } from '../node/tar-write';

jest.setTimeout(60_000);

const tmp = mkdtempSync(join(tmpdir(), 'partune-hostile-'));
const OPTS = { storageSize: 16, interpolation: 'bicubic' as const, channels: 3 as const };
let png: Uint8Array;

beforeAll(async () => {
  png = new Uint8Array(await sharp({ create: { width: 20, height: 20, channels: 3, background: { r: 200, g: 30, b: 30 } } }).png().toBuffer());
});

/** Two classes of three photos each, plus `extra`. */
const photos = (extra: Record<string, Uint8Array> = {}): Record<string, Uint8Array> => ({
  ...Object.fromEntries(['cat', 'dog'].flatMap((c) => [0, 1, 2].map((i) => [`${c}/${i}.png`, png]))),
  ...extra,
});

/** A folder of these files, and (when `tar` is named) its .tar. */
async function written(entries: Record<string, string | Uint8Array>, tar?: string): Promise<string> {
  const dir = mkdtempSync(join(tmp, 'files-'));
  for (const [path, bytes] of Object.entries(entries)) {
    mkdirSync(join(dir, path, '..'), { recursive: true });
    writeFileSync(join(dir, path), bytes);
  }
  if (!tar) return dir;
  await writeTar(dir, join(tmp, tar));
  return join(tmp, tar);
}

interface Central {
  at: number;
  length: number;
  name: string;
}

/** The central directory's records of a zip, and where its end record is. */
function central(zip: Uint8Array): { records: Central[]; eocd: number } {
  const v = new DataView(zip.buffer, zip.byteOffset, zip.byteLength);
  let eocd = zip.length - 22;
  while (v.getUint32(eocd, true) !== 0x06054b50) eocd--;
  const records: Central[] = [];
  let at = v.getUint32(eocd + 16, true);
  for (let i = 0; i < v.getUint16(eocd + 10, true); i++) {
    const [n, e, c] = [v.getUint16(at + 28, true), v.getUint16(at + 30, true), v.getUint16(at + 32, true)];
    records.push({ at, length: 46 + n + e + c, name: new TextDecoder().decode(zip.subarray(at + 46, at + 46 + n)) });
    at += 46 + n + e + c;
  }
  return { records, eocd };
}

describe('hostile archives', () => {
  it('a zip member that inflates past the size it declares fails by name, without inflating it', async () => {
    const zip = zipSync(photos({ 'cat/huge.png': [new Uint8Array(32 * 2 ** 20), { level: 9 }] as unknown as Uint8Array }));
    const { records } = central(zip);
    const v = new DataView(zip.buffer);
    const huge = records.find((r) => r.name === 'cat/huge.png')!;
    v.setUint32(huge.at + 24, 100, true); // the central directory's uncompressed size: a lie
    v.setUint32(v.getUint32(huge.at + 42, true) + 22, 100, true); // and the local header's
    const file = join(tmp, 'liar.zip');
    writeFileSync(file, zip);
    await expect(loadImageFolder(file, OPTS)).rejects.toThrow(/cat\/huge\.png \(.*inflates past the 100 bytes it declares\)/);
    const { report } = await loadImageFolder(file, { ...OPTS, skipBad: true });
    expect(report.skipped.map((s) => s.path)).toEqual(['cat/huge.png']);
  });

  it('a zip whose members share one stream (a bomb named many times) is refused whole', async () => {
    const zip = zipSync(photos());
    const { records, eocd } = central(zip);
    const copy = zip.slice(records[0].at, records[0].at + records[0].length);
    copy[46 + 4] = 'x'.charCodeAt(0); // cat/0.png -> cat/x.png: the same local header and data, another name
    const start = records[0].at;
    const body = zip.subarray(0, eocd);
    const end = zip.slice(eocd, eocd + 22);
    const ev = new DataView(end.buffer);
    ev.setUint16(8, records.length + 1, true);
    ev.setUint16(10, records.length + 1, true);
    ev.setUint32(12, eocd - start + copy.length, true);
    const file = join(tmp, 'overlap.zip');
    writeFileSync(file, Buffer.concat([body, copy, end]));
    await expect(planImages(file)).rejects.toThrow(/not a readable \.zip: .*members overlap/);
  });

  it('a tar cut at a member edge, or with a forged header, is refused rather than read short', async () => {
    const good = await written(photos(), 'good.tar');
    expect((await planImages(good)).samples).toHaveLength(6);
    const whole = readFileSync(good);
    const cut = join(tmp, 'cut.tar');
    writeFileSync(cut, whole.subarray(0, 3 * 1024)); // three members of one header and one data block each, all whole
    await expect(planImages(cut)).rejects.toThrow(/truncated tar \(no end-of-archive block after 3 files/);
    const forged = Buffer.from(whole);
    forged[5] ^= 1; // a name changed without its checksum
    const file = join(tmp, 'forged.tar');
    writeFileSync(file, forged);
    await expect(planImages(file)).rejects.toThrow(/corrupt tar header at byte 0 \(checksum\)/);
  });

  it('decodes only JPEG, PNG and WebP: an SVG named .png is a bad file, not a render', async () => {
    const dir = await written(photos());
    const svg = '<svg xmlns="http://www.w3.org/2000/svg" width="2000" height="2000"><filter id="b"><feGaussianBlur stdDeviation="500"/></filter>'
      + '<rect width="2000" height="2000" filter="url(#b)"/></svg>';
    writeFileSync(join(dir, 'cat', 'blur.png'), svg);
    await expect(loadImageFolder(dir, OPTS)).rejects.toThrow(/cat\/blur\.png \(not a JPEG, PNG or WebP image\)/);
  });

  it('a progressive JPEG of thousands of scans and an animated WebP are refused before libvips spends minutes on them', async () => {
    const progressive = await sharp({ create: { width: 64, height: 64, channels: 3, background: { r: 9, g: 99, b: 199 } } })
      .jpeg({ progressive: true })
      .toBuffer();
    expect((await decodeOriginal(new Uint8Array(progressive), 3)).width).toBe(64);
    const firstScan = progressive.indexOf(Buffer.from([0xff, 0xda]));
    const end = progressive.lastIndexOf(Buffer.from([0xff, 0xd9]));
    const scans = progressive.subarray(firstScan, end); // every scan, with the tables between them
    const bomb = Buffer.concat([progressive.subarray(0, end), ...Array.from({ length: 40 }, () => scans), Buffer.from([0xff, 0xd9])]);
    await expect(decodeOriginal(new Uint8Array(bomb), 3)).rejects.toThrow(/a JPEG of more than 128 scans/);
    // RIFF....WEBP, then a VP8X header whose flags say "animation".
    const vp8x = Buffer.concat([Buffer.from('RIFF'), Buffer.alloc(4), Buffer.from('WEBPVP8X'), Buffer.from([10, 0, 0, 0, 0x02]), Buffer.alloc(9)]);
    await expect(decodeOriginal(new Uint8Array(vp8x), 3)).rejects.toThrow(/an animated WebP/);
  });

  it('a file over the size limit is named, never read', async () => {
    const dir = await written(photos());
    const big = join(dir, 'dog', 'big.png');
    writeFileSync(big, png);
    truncateSync(big, 300 * 2 ** 20); // sparse: nothing is written, and nothing need be read
    await expect(loadImageFolder(dir, OPTS)).rejects.toThrow(/dog\/big\.png \(314572800 bytes, larger than the 268435456 a photo may be\)/);
  });

  it('refuses look-alike class names, label gaps and a sample with two labels', async () => {
    const named = (names: string[]): string => {
      const file = join(tmp, `names-${names.length}-${Math.random().toString(36).slice(2)}.zip`);
      writeFileSync(file, zipSync(Object.fromEntries(names.flatMap((n) => [0, 1].map((i) => [`${n}/${i}.png`, png])))));
      return file;
    };
    await expect(planImages(named(['ab', 'a\u200bb']))).rejects.toThrow(/invisible format characters/);
    await expect(planImages(named(['cafe\u0301', 'caf\u00e9']))).rejects.toThrow(/one name in two Unicode forms/);
    let shards = 0;
    const shard = (entries: Record<string, string | Uint8Array>): Promise<string> => written(entries, `shard-${shards++}-train.tar`);
    await expect(planImages(await shard({ 'a.png': png, 'a.cls': '0', 'b.png': png, 'b.cls': '255' }))).rejects.toThrow(
      /labels run to 255 but 254 have no image \(1, 2, 3, 4, 5, …\)/,
    );
    await expect(planImages(await shard({ 'a.png': png, 'a.cls': '0', 'a.1.cls': '1' }))).rejects.toThrow(/sample a has two labels/);
  });
});
