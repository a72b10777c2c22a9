// Datasets as safetensors files of uint8 tensors: `images` [N, H, W, C] and `labels` [N], with
// the name, class count and flip invariance in the metadata. Readable by `safetensors.numpy`.
import { Dataset } from './dataset';

const KEY = 'partune.dataset';

export function packDataset(ds: Dataset): Uint8Array {
  const header = {
    __metadata__: { [KEY]: JSON.stringify({ name: ds.name, classes: ds.classes, flipInvariant: ds.flipInvariant }) },
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

export function unpackDataset(bytes: Uint8Array, source = 'dataset shard'): Dataset {
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
  const { name, classes, flipInvariant } = JSON.parse(meta) as { name: string; classes: number; flipInvariant: boolean };
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
  return { name, images: images.data, labels: labels.data, count, height, width, channels, classes, flipInvariant };
}
