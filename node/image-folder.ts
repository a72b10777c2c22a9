// Photos in the layouts people have, decoded once to a square storage size: a folder per class
// (torchvision's ImageFolder), split by train/ and val/ (or test/) folders or else by a seeded
// fraction per class; the same inside a .zip or .tar; a CSV or JSONL manifest (path, label, split);
// WebDataset tar shards (key.jpg + key.cls). Decoding is sharp's (libvips): EXIF orientation
// applied, CMYK, grey, palette, alpha and 16-bit images brought to 8-bit sRGB (alpha dropped, as
// Pillow's convert('RGB') does), then the shorter side resized to the storage size and centre-cropped.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, join, relative } from 'node:path';
import sharp from 'sharp';
import { Dataset, Image8, Interpolation, Split, permutation } from '../engine';
import { Entry, MAX_ENTRY_BYTES, listDirectory, listTar, listZip } from './archive';

export interface ImageImport {
  /** Images are stored at size x size. */
  readonly storageSize: number;
  readonly interpolation: Interpolation;
  readonly channels: 1 | 3;
  /** Skip (and count) files that do not decode, rather than fail. */
  readonly skipBad?: boolean;
  /** Without split folders or a split column: this share of each class is the test split. */
  readonly testFraction?: number;
  readonly seed?: number;
  readonly onProgress?: (done: number, total: number) => void;
}

export interface ImportReport {
  readonly layout: Layout['kind'];
  readonly decoded: number;
  readonly skipped: readonly { readonly path: string; readonly reason: string }[];
  /** Files left out by name: not an image extension, or outside any class folder. */
  readonly ignored: readonly string[];
}

interface Sample {
  readonly entry: Entry;
  readonly label: number;
  readonly split: 'train' | 'test';
}

export interface Layout {
  readonly kind: 'folders' | 'train-val-folders' | 'manifest' | 'webdataset';
  readonly classNames: readonly string[];
  readonly samples: readonly Sample[];
  readonly ignored: readonly string[];
}

const IMAGE_EXT = /\.(jpe?g|png|webp|tiff?|gif|avif)$/i;
const TEST_DIRS = ['val', 'valid', 'validation', 'test'];
/** Labels are stored as bytes. */
export const MAX_IMAGE_CLASSES = 256;
const MAX_PIXELS = 100_000_000;
/** libvips stops a resize pipeline that takes longer (its decoders are bounded by the checks in `decoder`). */
const DECODE_SECONDS = 20;
const MAX_BAD_LISTED = 100;

const hidden = (path: string): boolean => path.split('/').some((p) => p.startsWith('.') || p === '__MACOSX');

function checkClassName(name: string, where: string): string {
  // Format characters (zero-width, bidirectional overrides) make two names look alike or one look like another.
  if (name.length > 200 || /[\u0000-\u001f\u007f]|\p{Cf}/u.test(name))
    throw new Error(`${where}: class name ${JSON.stringify(name.slice(0, 60))} is too long or holds control or invisible format characters`);
  return name;
}

/** Lists the source at `path` and decides which file is which class and split. */
export async function planImages(path: string, o: Pick<ImageImport, 'testFraction' | 'seed'> = {}): Promise<Layout> {
  if (!existsSync(path)) throw new Error(`${path} does not exist`);
  if (/\.(csv|jsonl)$/i.test(path)) return manifestLayout(path, o);
  let entries: Entry[];
  if (statSync(path).isDirectory()) {
    entries = await listDirectory(path);
    const tars = entries.filter((e) => !e.path.includes('/') && e.path.endsWith('.tar'));
    if (tars.length && tars.length === entries.filter((e) => !hidden(e.path)).length)
      return webDatasetLayout(
        path,
        tars.map((t) => join(path, t.path)),
        o,
      );
  } else if (/\.zip$/i.test(path)) entries = listZip(path);
  else if (/\.tar$/i.test(path)) entries = listTar(path);
  else throw new Error(`${path}: give a directory, a .zip, a .tar, or a .csv/.jsonl manifest`);
  entries = entries.filter((e) => !hidden(e.path));
  if (entries.some((e) => e.path.endsWith('.cls'))) return webDatasetLayout(path, [path], o, entries);
  return folderLayout(path, stripCommonRoot(entries), o);
}

/** A zip of `photos/` holds `photos/cat/1.jpg`: a single top folder above the class (or split) folders is not a class. */
function stripCommonRoot(entries: Entry[]): Entry[] {
  const tops = new Set(entries.map((e) => e.path.split('/')[0]));
  const [top] = tops;
  if (tops.size !== 1 || entries.some((e) => !e.path.includes('/'))) return entries;
  // `train/` alone is stripped only when it holds class folders (train/cat/1.jpg); any other lone top is a wrapper.
  const splitName = top === 'train' || TEST_DIRS.includes(top);
  if (splitName && !entries.every((e) => e.path.split('/').length >= 3)) return entries;
  return stripCommonRoot(entries.map((e) => ({ ...e, path: e.path.slice(top.length + 1) })));
}

function folderLayout(source: string, entries: Entry[], o: Pick<ImageImport, 'testFraction' | 'seed'>): Layout {
  const tops = new Set(entries.filter((e) => e.path.includes('/')).map((e) => e.path.split('/')[0]));
  const testDir = TEST_DIRS.find((d) => tops.has(d));
  const splitDirs = tops.has('train') && testDir !== undefined;
  const ignored: string[] = [];
  const found: { entry: Entry; className: string; split?: 'train' | 'test' }[] = [];
  for (const entry of entries) {
    const parts = entry.path.split('/');
    const [splitPart, classPart] = splitDirs ? [parts[0], parts[1]] : [undefined, parts[0]];
    const depth = splitDirs ? 3 : 2;
    const inSplit = !splitDirs || splitPart === 'train' || splitPart === testDir;
    if (parts.length < depth || !inSplit || !IMAGE_EXT.test(entry.path)) {
      ignored.push(entry.path);
      continue;
    }
    found.push({ entry, className: checkClassName(classPart!, source), split: splitDirs ? (splitPart === 'train' ? 'train' : 'test') : undefined });
  }
  if (!found.length) throw new Error(`${source}: no images in class folders (expected CLASS/IMAGE.jpg, or train/CLASS/... and val/CLASS/...)`);
  return withLabels(splitDirs ? 'train-val-folders' : 'folders', found, ignored, o);
}

function withLabels(
  kind: Layout['kind'],
  found: readonly { entry: Entry; className: string; split?: 'train' | 'test' }[],
  ignored: string[],
  o: Pick<ImageImport, 'testFraction' | 'seed'>,
  numeric = false,
): Layout {
  const names = [...new Set(found.map((f) => f.className))];
  names.sort(numeric ? (a, b) => Number(a) - Number(b) : (a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const normal = new Map<string, string>();
  for (const n of names) {
    const other = normal.get(n.normalize('NFC'));
    if (other !== undefined) throw new Error(`classes ${JSON.stringify(other)} and ${JSON.stringify(n)} are one name in two Unicode forms: rename one`);
    normal.set(n.normalize('NFC'), n);
  }
  const classNames = numeric ? Array.from({ length: Number(names[names.length - 1]) + 1 }, (_, i) => String(i)) : names;
  if (numeric && names.length !== classNames.length) {
    const missing = classNames.filter((n) => !normal.has(n));
    const some = `${missing.slice(0, 5).join(', ')}${missing.length > 5 ? ', …' : ''}`;
    throw new Error(`labels run to ${classNames.length - 1} but ${missing.length} have no image (${some}): labels must be 0..K-1`);
  }
  if (classNames.length > MAX_IMAGE_CLASSES)
    throw new Error(`${classNames.length} classes: at most ${MAX_IMAGE_CLASSES} are supported (labels are stored as bytes)`);
  const index = new Map(classNames.map((n, i) => [n, i]));
  const fraction = o.testFraction ?? 0.2;
  if (!(fraction >= 0 && fraction < 1)) throw new Error(`the test fraction must be from 0 to below 1 (got ${fraction})`);
  // A seeded fraction of each class (in path order) goes to the test split where no split is given.
  const unsplit = new Map<number, number[]>();
  found.forEach((f, i) => {
    if (f.split) return;
    const label = index.get(f.className)!;
    const members = unsplit.get(label);
    if (members) members.push(i);
    else unsplit.set(label, [i]);
  });
  const testSet = new Set<number>();
  for (const [label, members] of unsplit) {
    const order = permutation(members.length, (o.seed ?? 0) * 7919 + label);
    const n = Math.round(members.length * fraction);
    for (let k = 0; k < n; k++) testSet.add(members[order[k]]);
  }
  const samples = found.map((f, i) => ({ entry: f.entry, label: index.get(f.className)!, split: f.split ?? (testSet.has(i) ? 'test' : 'train') }) as Sample);
  // Classes interleaved (each class's first image, then each one's second, ...): any prefix, such as a stored shard, holds every class.
  const rank = new Map<Sample, number>();
  const seen = new Map<number, number>();
  for (const s of samples) {
    const r = seen.get(s.label) ?? 0;
    rank.set(s, r);
    seen.set(s.label, r + 1);
  }
  samples.sort((a, b) => rank.get(a)! - rank.get(b)! || a.label - b.label);
  return { kind, classNames, samples, ignored };
}

type ManifestRow = { path: string; label: string; split?: string; line: number };

/** The image paths a manifest names, relative to its folder (what a server copies beside it). */
export const manifestPaths = (file: string, text: string): string[] => manifestRows(file, text).map((r) => r.path);

function manifestRows(file: string, text: string): ManifestRow[] {
  const rows: ManifestRow[] = [];
  if (/\.jsonl$/i.test(file)) {
    text.split('\n').forEach((line, i) => {
      if (!line.trim()) return;
      let r: { path?: unknown; label?: unknown; split?: unknown };
      try {
        r = JSON.parse(line);
      } catch {
        throw new Error(`${file} line ${i + 1}: not JSON`);
      }
      if (typeof r.path !== 'string' || (typeof r.label !== 'string' && typeof r.label !== 'number'))
        throw new Error(`${file} line ${i + 1}: needs "path" and "label"`);
      rows.push({ path: r.path, label: String(r.label), split: typeof r.split === 'string' ? r.split : undefined, line: i + 1 });
    });
  } else {
    const lines = text.split(/\r?\n/).filter((l) => l.trim());
    const header = splitCsv(lines[0] ?? '').map((h) => h.trim().toLowerCase());
    const [p, l, s] = ['path', 'label', 'split'].map((k) => header.indexOf(k));
    if (p < 0 || l < 0) throw new Error(`${file}: the first line must name the columns path,label[,split]`);
    lines.slice(1).forEach((line, i) => {
      const cells = splitCsv(line);
      if (cells[p] === undefined || cells[l] === undefined) throw new Error(`${file} line ${i + 2}: fewer columns than the header`);
      rows.push({ path: cells[p], label: cells[l].trim(), split: s >= 0 ? cells[s]?.trim() : undefined, line: i + 2 });
    });
  }
  for (const r of rows) {
    if (r.path.startsWith('/') || r.path.split(/[\\/]/).includes('..')) {
      throw new Error(`${file} line ${r.line}: path ${r.path} is outside the manifest's folder`);
    }
  }
  return rows;
}

function manifestLayout(file: string, o: Pick<ImageImport, 'testFraction' | 'seed'>): Layout {
  const root = dirname(file);
  const rows = manifestRows(file, readFileSync(file, 'utf8'));
  const found = rows.map((r) => {
    const full = join(root, r.path);
    const rel = relative(root, full);
    if (rel.startsWith('..') || r.path.startsWith('/')) throw new Error(`${file} line ${r.line}: path ${r.path} is outside the manifest's folder`);
    const split: 'train' | 'test' | undefined = !r.split ? undefined : r.split === 'train' ? 'train' : TEST_DIRS.includes(r.split) ? 'test' : undefined;
    if (r.split && !split) throw new Error(`${file} line ${r.line}: split must be train, val or test (got ${r.split})`);
    const entry: Entry = { path: r.path, size: 0, read: async () => new Uint8Array(readFileSync(full)) };
    return { entry, className: checkClassName(r.label, file), split };
  });
  if (!found.length) throw new Error(`${file}: the manifest lists no images`);
  const numeric = found.every((f) => /^\d{1,3}$/.test(f.className));
  return withLabels('manifest', found, [], o, numeric);
}

/** One CSV line: commas, double-quoted cells with "" escapes. */
function splitCsv(line: string): string[] {
  const out: string[] = [];
  let cell = '';
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const ch = line[i];
    if (quoted) {
      if (ch === '"' && line[i + 1] === '"') ((cell += '"'), i++);
      else if (ch === '"') quoted = false;
      else cell += ch;
    } else if (ch === '"') quoted = true;
    else if (ch === ',') (out.push(cell), (cell = ''));
    else cell += ch;
  }
  out.push(cell);
  return out;
}

/** WebDataset: members grouped by key (the path up to the basename's first dot); `.cls` holds the label. */
async function webDatasetLayout(source: string, shards: string[], o: Pick<ImageImport, 'testFraction' | 'seed'>, listed?: Entry[]): Promise<Layout> {
  const found: { entry: Entry; className: string; split?: 'train' | 'test' }[] = [];
  const ignored: string[] = [];
  for (const shard of shards) {
    const name = basename(shard).toLowerCase();
    const split = /(^|[^a-z])(val|valid|validation|test)([^a-z]|$)/.test(name) ? 'test' : /(^|[^a-z])train([^a-z]|$)/.test(name) ? 'train' : undefined;
    const groups = new Map<string, { image?: Entry; cls?: Entry }>();
    for (const e of (listed ?? listTar(shard)).filter((x) => !hidden(x.path))) {
      const slash = e.path.lastIndexOf('/');
      const dot = e.path.indexOf('.', slash + 1);
      if (dot < 0) {
        ignored.push(e.path);
        continue;
      }
      const key = e.path.slice(0, dot);
      const g = groups.get(key) ?? {};
      if (e.path.endsWith('.cls') && g.cls) throw new Error(`${basename(shard)}: sample ${key} has two labels (${g.cls.path}, ${e.path})`);
      if (e.path.endsWith('.cls')) g.cls = e;
      else if (IMAGE_EXT.test(e.path) && !g.image) g.image = e;
      else ignored.push(e.path);
      groups.set(key, g);
    }
    for (const [key, g] of groups) {
      if (!g.image || !g.cls) {
        ignored.push(`${basename(shard)}:${key}`);
        continue;
      }
      const text = new TextDecoder().decode(await g.cls.read()).trim();
      if (!/^\d{1,3}$/.test(text)) throw new Error(`${basename(shard)}: ${g.cls.path} must hold a class index (got ${JSON.stringify(text.slice(0, 20))})`);
      found.push({ entry: { ...g.image, path: `${basename(shard)}:${g.image.path}` }, className: String(Number(text)), split });
    }
  }
  if (!found.length) throw new Error(`${source}: no WebDataset samples (key.jpg with key.cls)`);
  return withLabels('webdataset', found, ignored, o, true);
}

/** The formats decoded, by their first bytes: libvips reads more (SVG, PDF, HEIF...), some of them costly to render from a few bytes. */
export function imageFormat(bytes: Uint8Array): 'jpeg' | 'png' | 'webp' | undefined {
  const at = (i: number, ...b: number[]): boolean => b.every((v, k) => bytes[i + k] === v);
  if (at(0, 0xff, 0xd8, 0xff)) return 'jpeg';
  if (at(0, 0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a)) return 'png';
  if (at(0, 0x52, 0x49, 0x46, 0x46) && at(8, 0x57, 0x45, 0x42, 0x50)) return 'webp';
  return undefined;
}

/** A progressive JPEG of a camera has about ten scans; libjpeg decodes each over the whole image, and its time is not bounded. */
const MAX_JPEG_SCANS = 128;

/** The number of scans (SOS segments) of a JPEG, counted by its markers; refused past MAX_JPEG_SCANS. */
function checkJpegScans(b: Uint8Array): void {
  let scans = 0;
  for (let at = 2; at + 4 <= b.length; ) {
    if (b[at] !== 0xff) return; // not a marker where one should be: libjpeg reports it
    const marker = b[at + 1];
    if (marker === 0xff) {
      at++;
      continue;
    }
    if (marker === 0xd9) return;
    if (marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) {
      at += 2;
      continue;
    }
    at += 2 + ((b[at + 2] << 8) | b[at + 3]);
    if (marker !== 0xda) continue;
    if (++scans > MAX_JPEG_SCANS) throw new Error(`a JPEG of more than ${MAX_JPEG_SCANS} scans (not a photo's encoding)`);
    // The entropy-coded data runs to the next marker that is neither a stuffed 0xFF00 nor a restart.
    while (at + 1 < b.length && !(b[at] === 0xff && b[at + 1] !== 0 && (b[at + 1] < 0xd0 || b[at + 1] > 0xd7))) at++;
  }
}

/** A decoder of one listed format, within a pixel limit and a time limit. */
function decoder(bytes: Uint8Array, maxPixels: number): sharp.Sharp {
  const format = imageFormat(bytes);
  if (!format) throw new Error('not a JPEG, PNG or WebP image');
  if (format === 'jpeg') checkJpegScans(bytes);
  // VP8X's animation flag: libvips reads every frame of an animation to find its first.
  if (format === 'webp' && bytes[12] === 0x56 && bytes[13] === 0x50 && bytes[14] === 0x38 && bytes[15] === 0x58 && (bytes[20] & 0x02) !== 0) {
    throw new Error('an animated WebP (only still images are read)');
  }
  return sharp(bytes, { failOn: 'truncated', limitInputPixels: maxPixels }).timeout({ seconds: DECODE_SECONDS });
}

/** One image decoded to size x size x channels, or why it is not an image. */
export async function decodeImage(bytes: Uint8Array, o: Pick<ImageImport, 'storageSize' | 'interpolation' | 'channels'>): Promise<Uint8Array> {
  const S = o.storageSize;
  const { data, info } = await decoder(bytes, MAX_PIXELS)
    .rotate()
    .removeAlpha()
    .toColourspace(o.channels === 1 ? 'b-w' : 'srgb')
    .resize(S, S, { fit: 'cover', position: 'centre', kernel: o.interpolation === 'bicubic' ? 'cubic' : 'linear' })
    .raw({ depth: 'uchar' })
    .toBuffer({ resolveWithObject: true });
  if (info.width !== S || info.height !== S || info.channels !== o.channels) throw new Error(`decoded to ${info.width}x${info.height}x${info.channels}`);
  return new Uint8Array(data.buffer, data.byteOffset, data.length);
}

/** A photo at its own size, as Pillow's convert('RGB') (or 'L') would give it, for the model's eval transform. */
export async function decodeOriginal(bytes: Uint8Array, channels: 1 | 3, maxPixels = MAX_PIXELS): Promise<Image8> {
  const { data, info } = await decoder(bytes, maxPixels)
    .rotate()
    .removeAlpha()
    .toColourspace(channels === 1 ? 'b-w' : 'srgb')
    .raw({ depth: 'uchar' })
    .toBuffer({ resolveWithObject: true });
  return { data: new Uint8Array(data.buffer, data.byteOffset, data.length), width: info.width, height: info.height, channels: info.channels };
}

export interface DecodedImage {
  readonly label: number;
  readonly split: 'train' | 'test';
  readonly pixels: Uint8Array;
}

/** Decodes a layout's images in order, a few at a time; bad files are skipped when asked, else the error names them. */
export async function* decodeLayout(layout: Layout, o: ImageImport, skipped: { path: string; reason: string }[]): AsyncGenerator<DecodedImage> {
  const inFlight = 4;
  const decode = async (s: Sample): Promise<DecodedImage | { path: string; reason: string }> => {
    try {
      const bytes = await s.entry.read();
      if (bytes.length > MAX_ENTRY_BYTES) throw new Error(`larger than ${MAX_ENTRY_BYTES} bytes`);
      return { label: s.label, split: s.split, pixels: await decodeImage(bytes, o) };
    } catch (e) {
      return { path: s.entry.path, reason: (e as Error).message.split('\n')[0] };
    }
  };
  const queue: Promise<DecodedImage | { path: string; reason: string }>[] = [];
  let next = 0;
  for (let done = 0; done < layout.samples.length; done++) {
    while (queue.length < inFlight && next < layout.samples.length) queue.push(decode(layout.samples[next++]));
    const r = await queue.shift()!;
    o.onProgress?.(done + 1, layout.samples.length);
    if ('pixels' in r) {
      yield r;
      continue;
    }
    skipped.push(r);
    if (!o.skipBad && skipped.length >= MAX_BAD_LISTED) break;
  }
  skipped.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  if (!o.skipBad && skipped.length) {
    const shown = skipped
      .slice(0, 10)
      .map((s) => `${s.path} (${s.reason})`)
      .join('; ');
    throw new Error(
      `${skipped.length} file${skipped.length > 1 ? 's do' : ' does'} not decode as an image: ${shown}${skipped.length > 10 ? '; …' : ''} ` +
        '(pass --skip-bad to skip them)',
    );
  }
}

/** The whole source decoded into memory as a train/test split. */
export async function loadImageFolder(path: string, o: ImageImport): Promise<{ split: Split; report: ImportReport }> {
  const layout = await planImages(path, o);
  const px = o.storageSize * o.storageSize * o.channels;
  const parts = { train: [] as DecodedImage[], test: [] as DecodedImage[] };
  const skipped: { path: string; reason: string }[] = [];
  for await (const img of decodeLayout(layout, o, skipped)) parts[img.split].push(img);
  const name = basename(path).replace(/\.(zip|tar|csv|jsonl)$/i, '');
  const toDataset = (split: 'train' | 'test'): Dataset => {
    const list = parts[split];
    const images = new Uint8Array(list.length * px);
    list.forEach((img, i) => images.set(img.pixels, i * px));
    return {
      name: `${name}/${split}`,
      images,
      labels: Uint8Array.from(list, (img) => img.label),
      count: list.length,
      height: o.storageSize,
      width: o.storageSize,
      channels: o.channels,
      classes: layout.classNames.length,
      flipInvariant: true,
      classNames: layout.classNames,
    };
  };
  const report: ImportReport = { layout: layout.kind, decoded: parts.train.length + parts.test.length, skipped, ignored: layout.ignored };
  return { split: { train: toDataset('train'), test: toDataset('test') }, report };
}
