// Datasets as safetensors files of uint8 tensors: `images` [N, H, W, C] and `labels` [N], with
// the name, class count and flip invariance in the metadata. Readable by `safetensors.numpy`.
// Compressed packs (photos, window packs) wrap that file: each pixel minus its left neighbour
// (PNG's Sub filter), deflated with fflate, lossless and the same bytes in every runtime.
import { deflateSync, inflateSync } from 'fflate';
import { Dataset } from './dataset';

const MAGIC = [0x50, 0x54, 0x5a, 0x31]; // "PTZ1"
/** The most a compressed pack may inflate to. */
const MAX_INFLATED = 2 ** 31 - 1;

const KEY = 'partune.dataset';

export function packDataset(ds: Dataset, opts: { compress?: boolean } = {}): Uint8Array {
  const plain = packPlain(ds);
  return opts.compress ? compress(plain, plain.length - ds.images.length - ds.labels.length, ds.images.length, ds.width * ds.channels, ds.channels) : plain;
}

function compress(plain: Uint8Array, imagesAt: number, imageBytes: number, rowBytes: number, channels: number): Uint8Array {
  const filtered = plain.slice();
  for (let row = imagesAt; row < imagesAt + imageBytes; row += rowBytes) {
    for (let i = row + rowBytes - 1; i >= row + channels; i--) filtered[i] = (plain[i] - plain[i - channels]) & 0xff;
  }
  const body = deflateSync(filtered, { level: 6 });
  const out = new Uint8Array(24 + body.length);
  const v = new DataView(out.buffer);
  out.set(MAGIC, 0);
  v.setUint32(4, plain.length, true);
  v.setUint32(8, imagesAt, true);
  v.setUint32(12, imageBytes, true);
  v.setUint32(16, rowBytes, true);
  v.setUint32(20, channels, true);
  out.set(body, 24);
  return out;
}

function decompress(bytes: Uint8Array, source: string): Uint8Array {
  if (bytes.length < 24) throw new Error(`${source}: truncated compressed pack`);
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const [length, imagesAt, imageBytes, rowBytes, channels] = [4, 8, 12, 16, 20].map((at) => v.getUint32(at, true));
  if (length > MAX_INFLATED || imagesAt + imageBytes > length || rowBytes < 1 || channels < 1 || imageBytes % rowBytes !== 0) {
    throw new Error(`${source}: corrupt compressed pack header`);
  }
  let out: Uint8Array;
  try {
    out = inflateSync(bytes.subarray(24), { out: new Uint8Array(length) });
  } catch (e) {
    throw new Error(`${source}: corrupt compressed pack (${(e as Error).message})`);
  }
  if (out.length !== length) throw new Error(`${source}: compressed pack inflates to ${out.length} bytes, its header says ${length}`);
  for (let row = imagesAt; row < imagesAt + imageBytes; row += rowBytes) {
    for (let i = row + channels; i < row + rowBytes; i++) out[i] = (out[i] + out[i - channels]) & 0xff;
  }
  return out;
}

const isCompressed = (b: Uint8Array): boolean => b.length >= 4 && MAGIC.every((m, i) => b[i] === m);

function packPlain(ds: Dataset): Uint8Array {
  const header = {
    __metadata__: {
      [KEY]: JSON.stringify({ name: ds.name, classes: ds.classes, flipInvariant: ds.flipInvariant, ...(ds.classNames && { classNames: ds.classNames }) }),
    },
    images: { dtype: 'U8', shape: [ds.count, ds.height, ds.width, ds.channels], data_offsets: [0, ds.images.length] },
    labels: { dtype: 'U8', shape: [ds.count], data_offsets: [ds.images.length, ds.images.length + ds.labels.length] },
  };
  const json = new TextEncoder().encode(JSON.stringify(header));
  const headerLen = Math.ceil(json.length / 8) * 8;
  const out = new Uint8Array(8 + headerLen + ds.images.length + ds.labels.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerLen), true);
  out.fill(0x20, 8, 8 + headerLen);
  out.set(json, 8);
  out.set(ds.images, 8 + headerLen);
  out.set(ds.labels, 8 + headerLen + ds.images.length);
  return out;
}

export function unpackDataset(packed: Uint8Array, source = 'dataset shard'): Dataset {
  const bytes = isCompressed(packed) ? decompress(packed, source) : packed;
  if (bytes.length < 8) throw new Error(`${source}: truncated (${bytes.length} bytes)`);
  const headerLen = Number(new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true));
  if (8 + headerLen > bytes.length) throw new Error(`${source}: truncated header`);
  let header: Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }> & { __metadata__?: Record<string, string> };
  try {
    header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLen)));
  } catch {
    throw new Error(`${source}: header is not JSON`);
  }
  const meta = header.__metadata__?.[KEY];
  if (!meta) throw new Error(`${source}: not a Partune dataset file (no ${KEY} metadata)`);
  const { name, classes, flipInvariant, classNames } = JSON.parse(meta) as { name: string; classes: number; flipInvariant: boolean; classNames?: unknown };
  if (classNames !== undefined && !(Array.isArray(classNames) && classNames.length === classes && classNames.every((n) => typeof n === 'string'))) {
    throw new Error(`${source}: classNames must be ${classes} strings`);
  }
  const body = bytes.subarray(8 + headerLen);
  const tensor = (key: 'images' | 'labels', rank: number): { shape: number[]; data: Uint8Array } => {
    const t = header[key];
    if (!t || t.dtype !== 'U8' || t.shape.length !== rank) throw new Error(`${source}: '${key}' must be a rank-${rank} U8 tensor`);
    const [begin, end] = t.data_offsets;
    const size = t.shape.reduce((a, b) => a * b, 1);
    if (end > body.length || end - begin !== size) throw new Error(`${source}: '${key}' is truncated (${body.length} data bytes)`);
    return { shape: t.shape, data: body.slice(begin, end) };
  };
  const images = tensor('images', 4);
  const labels = tensor('labels', 1);
  const [count, height, width, channels] = images.shape;
  if (labels.shape[0] !== count) throw new Error(`${source}: ${count} images but ${labels.shape[0]} labels`);
  for (let i = 0; i < count; i++) if (labels.data[i] >= classes) throw new Error(`${source}: label ${labels.data[i]} at ${i} is outside 0..${classes - 1}`);
  const names = classNames && { classNames: classNames as string[] };
  return { name, images: images.data, labels: labels.data, count, height, width, channels, classes, flipInvariant, ...names };
}
