// Photos in: the layouts (class folders, train/val, .zip, .tar, manifests, WebDataset), the odd
// images (grey, RGBA, CMYK, 16-bit, EXIF-rotated, palette), bad files named or skipped, and the
// compressed packs that carry them to workers.
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { zipSync } from 'fflate';
import sharp from 'sharp';
import { Dataset, packDataset, unpackDataset } from '../engine';
import { decodeImage, decodeOriginal, loadImageFolder, planImages } from '../node/image-folder';
import { writeTar } from '../node/tar-write';
import { listDirectory } from '../node/archive';

jest.setTimeout(60_000);

const tmp = mkdtempSync(join(tmpdir(), 'partune-images-'));
const OPTS = { storageSize: 16, interpolation: 'bicubic' as const, channels: 3 as const };

/** A w x h RGB image of one colour with a seeded texture, so that resizes have something to do. */
function pixels(w: number, h: number, rgb: [number, number, number], seed: number): Buffer {
  const b = Buffer.alloc(w * h * 3);
  for (let i = 0; i < w * h; i++) for (let c = 0; c < 3; c++) b[i * 3 + c] = Math.max(0, Math.min(255, rgb[c] + (((i * 7 + seed * 13 + c * 5) % 17) - 8)));
  return b;
}

async function write(path: string, w: number, h: number, rgb: [number, number, number], seed: number, format: 'png' | 'jpeg' = 'png'): Promise<void> {
  mkdirSync(dirname(path), { recursive: true });
  const img = sharp(pixels(w, h, rgb, seed), { raw: { width: w, height: h, channels: 3 } });
  await (format === 'png' ? img.png() : img.jpeg({ quality: 90 })).toFile(path);
}

const COLOURS: Record<string, [number, number, number]> = { cat: [200, 40, 40], dog: [40, 200, 40], owl: [40, 40, 200] };

/** root/CLASS/i.png, 5 a class, with a train/ and val/ level when asked. */
async function folder(root: string, splits: boolean): Promise<void> {
  for (const [name, rgb] of Object.entries(COLOURS)) {
    for (let i = 0; i < 5; i++) {
      const split = splits ? (i < 4 ? 'train/' : 'val/') : '';
      await write(join(root, `${split}${name}/${i}.${i % 2 ? 'jpg' : 'png'}`), 24 + i, 20, rgb, i, i % 2 ? 'jpeg' : 'png');
    }
  }
}

const same = (a: Dataset, b: Dataset): void => {
  expect([a.count, a.height, a.width, a.channels, a.classes]).toEqual([b.count, b.height, b.width, b.channels, b.classes]);
  expect(Buffer.from(a.images).equals(Buffer.from(b.images))).toBe(true);
  expect([...a.labels]).toEqual([...b.labels]);
};

describe('photo datasets', () => {
  const split = join(tmp, 'split');
  const flat = join(tmp, 'flat');
  beforeAll(async () => {
    await folder(split, true);
    await folder(flat, false);
  });

  it('reads class folders split by train/ and val/, classes sorted by name as torchvision does', async () => {
    const { split: s, report } = await loadImageFolder(split, OPTS);
    expect(report.layout).toBe('train-val-folders');
    expect(s.train.classNames).toEqual(['cat', 'dog', 'owl']);
    expect([s.train.count, s.test.count]).toEqual([12, 3]);
    expect([s.train.height, s.train.width, s.train.channels]).toEqual([16, 16, 3]);
    // Each stored image is its class's colour: the labels follow the folders.
    for (let i = 0; i < s.train.count; i++) {
      const px = s.train.images.subarray(i * 768, (i + 1) * 768);
      const mean = [0, 1, 2].map((c) => px.filter((_, k) => k % 3 === c).reduce((a, b) => a + b, 0) / 256);
      expect(mean.indexOf(Math.max(...mean))).toBe(s.train.labels[i]);
    }
  });

  it('without split folders, holds out a seeded fifth of each class; the same seed, the same split', async () => {
    const a = await loadImageFolder(flat, OPTS);
    const b = await loadImageFolder(flat, OPTS);
    expect(a.report.layout).toBe('folders');
    expect([a.split.train.count, a.split.test.count]).toEqual([12, 3]);
    expect([...a.split.test.labels].sort()).toEqual([0, 1, 2]);
    same(a.split.test, b.split.test);
    const other = await loadImageFolder(flat, { ...OPTS, seed: 5 });
    expect(Buffer.from(other.split.test.images).equals(Buffer.from(a.split.test.images))).toBe(false);
  });

  it("a .zip (with its top folder) and a .tar of the folder give exactly the directory's images", async () => {
    const dir = await loadImageFolder(split, OPTS);
    const files: Record<string, Uint8Array> = {};
    for (const e of await listDirectory(split)) files[`photos/${e.path}`] = await e.read();
    const zip = join(tmp, 'photos.zip');
    writeFileSync(zip, zipSync(files));
    const tar = join(tmp, 'photos.tar');
    await writeTar(split, tar);
    for (const archive of [zip, tar]) {
      const got = await loadImageFolder(archive, OPTS);
      same(got.split.train, dir.split.train);
      same(got.split.test, dir.split.test);
      expect(got.split.train.classNames).toEqual(['cat', 'dog', 'owl']);
    }
  });

  it("reads CSV and JSONL manifests (path, label, split), and refuses a path outside the manifest's folder", async () => {
    const rows = [
      ['cat/0.png', 'cat', 'train'],
      ['dog/0.png', 'dog', 'train'],
      ['owl/0.png', 'owl', 'val'],
      ['cat/2.png', 'cat', 'test'],
    ];
    const csv = join(flat, 'labels.csv');
    writeFileSync(csv, `path,label,split\n${rows.map((r) => r.join(',')).join('\n')}\n`);
    const jsonl = join(flat, 'labels.jsonl');
    writeFileSync(jsonl, rows.map(([path, label, s]) => JSON.stringify({ path, label, split: s })).join('\n'));
    const a = await loadImageFolder(csv, OPTS);
    const b = await loadImageFolder(jsonl, OPTS);
    expect(a.report.layout).toBe('manifest');
    expect([a.split.train.count, a.split.test.count]).toEqual([2, 2]);
    same(a.split.train, b.split.train);
    expect(a.split.test.classNames).toEqual(['cat', 'dog', 'owl']);
    writeFileSync(csv, 'path,label\n../split/train/cat/0.png,cat\n');
    await expect(planImages(csv)).rejects.toThrow(/outside the manifest's folder/);
  });

  it('reads WebDataset shards (key.png + key.cls), split by the shard names', async () => {
    const wds = join(tmp, 'wds');
    for (const [shard, n] of [
      ['train-000000', 6],
      ['val-000000', 3],
    ] as const) {
      const dir = join(tmp, `wds-${shard}`);
      for (let i = 0; i < n; i++) {
        const label = i % 3;
        await write(join(dir, `s${i}.png`), 20, 20, Object.values(COLOURS)[label], i);
        writeFileSync(join(dir, `s${i}.cls`), `${label}\n`);
      }
      mkdirSync(wds, { recursive: true });
      await writeTar(dir, join(wds, `${shard}.tar`));
    }
    const { split: s, report } = await loadImageFolder(wds, OPTS);
    expect(report.layout).toBe('webdataset');
    expect([s.train.count, s.test.count]).toEqual([6, 3]);
    expect([...s.train.labels]).toEqual([0, 1, 2, 0, 1, 2]);
  });

  it('decodes grey, RGBA (alpha dropped), palette, 16-bit and CMYK images to 8-bit RGB', async () => {
    const rgb = pixels(8, 8, [120, 60, 30], 1);
    const ref = await decodeImage(
      await sharp(rgb, { raw: { width: 8, height: 8, channels: 3 } })
        .png()
        .toBuffer(),
      { ...OPTS, storageSize: 8 },
    );
    const rgba = Buffer.alloc(8 * 8 * 4);
    for (let i = 0; i < 64; i++) (rgb.copy(rgba, i * 4, i * 3, i * 3 + 3), (rgba[i * 4 + 3] = 50));
    expect(
      Buffer.from(
        await decodeImage(
          await sharp(rgba, { raw: { width: 8, height: 8, channels: 4 } })
            .png()
            .toBuffer(),
          { ...OPTS, storageSize: 8 },
        ),
      ),
    ).toEqual(Buffer.from(ref));
    const wide = await sharp(rgb, { raw: { width: 8, height: 8, channels: 3 } })
      .toColourspace('rgb16')
      .png()
      .toBuffer();
    expect((await sharp(wide).metadata()).depth).toBe('ushort');
    expect(Buffer.from(await decodeImage(wide, { ...OPTS, storageSize: 8 }))).toEqual(Buffer.from(ref));
    const palette = await sharp(rgb, { raw: { width: 8, height: 8, channels: 3 } })
      .png({ palette: true, colours: 256 })
      .toBuffer();
    expect((await decodeImage(palette, { ...OPTS, storageSize: 8 })).length).toBe(8 * 8 * 3);
    const grey = await decodeImage(
      await sharp(rgb, { raw: { width: 8, height: 8, channels: 3 } })
        .toColourspace('b-w')
        .png()
        .toBuffer(),
      { ...OPTS, storageSize: 8 },
    );
    for (let i = 0; i < 64; i++) expect(grey[i * 3]).toBe(grey[i * 3 + 1]);
    const cmyk = await sharp(rgb, { raw: { width: 8, height: 8, channels: 3 } })
      .toColourspace('cmyk')
      .jpeg({ quality: 95 })
      .toBuffer();
    expect((await sharp(cmyk).metadata()).space).toBe('cmyk');
    const back = await decodeImage(cmyk, { ...OPTS, storageSize: 8 });
    const err = back.reduce((m, v, i) => Math.max(m, Math.abs(v - ref[i])), 0);
    expect(err).toBeLessThan(40); // a colour-managed round trip through CMYK, not an identity
  });

  it('applies EXIF orientation: a landscape JPEG tagged "rotate 90" decodes as portrait', async () => {
    const jpg = await sharp(pixels(30, 10, [10, 200, 90], 2), { raw: { width: 30, height: 10, channels: 3 } })
      .jpeg()
      .withMetadata({ orientation: 6 })
      .toBuffer();
    expect((await sharp(jpg).metadata()).orientation).toBe(6);
    const img = await decodeOriginal(jpg, 3);
    expect([img.width, img.height]).toEqual([10, 30]);
  });

  it('names every file that does not decode; --skip-bad skips and counts them; other files are listed as ignored', async () => {
    const bad = join(tmp, 'bad');
    await folder(bad, false);
    writeFileSync(join(bad, 'cat', 'notes.jpg'), 'this is not an image');
    const good = readFileSync(join(bad, 'dog', '1.jpg'));
    writeFileSync(join(bad, 'dog', 'cut.jpg'), good.subarray(0, Math.floor(good.length / 2)));
    writeFileSync(join(bad, 'dog', 'README.txt'), 'about the dogs');
    writeFileSync(join(bad, 'loose.png'), readFileSync(join(bad, 'owl', '0.png')));
    await expect(loadImageFolder(bad, OPTS)).rejects.toThrow(
      /2 files do not decode as an image: cat\/notes\.jpg \(.+\); dog\/cut\.jpg \(.+\) \(pass --skip-bad/,
    );
    const { split: s, report } = await loadImageFolder(bad, { ...OPTS, skipBad: true });
    expect(report.skipped.map((x) => x.path)).toEqual(['cat/notes.jpg', 'dog/cut.jpg']);
    expect(report.ignored).toEqual(expect.arrayContaining(['dog/README.txt', 'loose.png']));
    expect(s.train.count + s.test.count).toBe(15);
  });

  it('refuses hostile layouts with a clear error', async () => {
    const many = join(tmp, 'many');
    const one = await sharp(pixels(4, 4, [1, 2, 3], 0), { raw: { width: 4, height: 4, channels: 3 } })
      .png()
      .toBuffer();
    for (let c = 0; c < 257; c++) {
      mkdirSync(join(many, `c${c}`), { recursive: true });
      writeFileSync(join(many, `c${c}`, 'a.png'), one);
    }
    await expect(planImages(many)).rejects.toThrow(/257 classes: at most 256/);
    const loose = join(tmp, 'loose');
    mkdirSync(loose, { recursive: true });
    writeFileSync(join(loose, 'a.png'), one);
    await expect(planImages(loose)).rejects.toThrow(/no images in class folders/);
    await expect(planImages(join(tmp, 'nothing-here'))).rejects.toThrow(/does not exist/);
    const text = join(tmp, 'x.rar');
    writeFileSync(text, 'x');
    await expect(planImages(text)).rejects.toThrow(/give a directory, a \.zip, a \.tar/);
    const fake = join(tmp, 'fake.zip');
    writeFileSync(fake, 'PK not really');
    await expect(planImages(fake)).rejects.toThrow(/not a readable \.zip/);
  });
});

describe('compressed packs', () => {
  it('round-trip exactly, are smaller for photos, and a corrupted one is refused', async () => {
    const { split } = await loadImageFolder(join(tmp, 'split'), { ...OPTS, storageSize: 64 });
    const plain = packDataset(split.train);
    const packed = packDataset(split.train, { compress: true });
    expect(packed.length).toBeLessThan(plain.length / 2);
    const back = unpackDataset(packed);
    same(back, split.train);
    expect(back.classNames).toEqual(['cat', 'dog', 'owl']);
    const broken = packed.slice();
    broken[40] ^= 0xff;
    expect(() => unpackDataset(broken, 'pack')).toThrow(/pack: corrupt compressed pack|pack: compressed pack inflates/);
  });
});
