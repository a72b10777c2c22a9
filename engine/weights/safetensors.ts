// safetensors (huggingface/safetensors): 8-byte little-endian header length, a JSON header
// {name: {dtype, shape, data_offsets}, __metadata__: {string: string}}, then the raw bytes.
// Reads F32, F16 and BF16 into float32; writes F32 or F16.
import { sizeOf } from '../vit/params';

export type WriteDtype = 'F32' | 'F16';

export interface RawTensor {
  readonly dtype: string;
  readonly shape: number[];
  readonly data: Float32Array;
}

export interface SafetensorsFile {
  readonly tensors: Map<string, RawTensor>;
  readonly metadata: Record<string, string>;
}

const BYTES: Record<string, number> = { F32: 4, F16: 2, BF16: 2 };
const MAX_HEADER = 100 * 1024 * 1024;

export function parseSafetensors(bytes: Uint8Array, source = 'safetensors file'): SafetensorsFile {
  if (bytes.byteLength < 8) throw new Error(`${source}: truncated (${bytes.byteLength} bytes, no header)`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLen = Number(view.getBigUint64(0, true));
  if (headerLen > MAX_HEADER || 8 + headerLen > bytes.byteLength) {
    throw new Error(`${source}: truncated or not safetensors (header claims ${headerLen} bytes, file has ${bytes.byteLength})`);
  }
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLen)));
  } catch (e) {
    throw new Error(`${source}: header is not valid JSON (${(e as Error).message})`);
  }
  const dataStart = 8 + headerLen;
  const dataLen = bytes.byteLength - dataStart;
  const tensors = new Map<string, RawTensor>();
  let metadata: Record<string, string> = {};
  for (const [name, info] of Object.entries(header)) {
    if (name === '__metadata__') {
      metadata = (info ?? {}) as Record<string, string>;
      continue;
    }
    const { dtype, shape, data_offsets: offsets } = info as { dtype: string; shape: number[]; data_offsets: [number, number] };
    const width = BYTES[dtype];
    if (!width) throw new Error(`${source}: tensor '${name}' has dtype ${dtype}; supported: F32, F16, BF16`);
    const [begin, end] = offsets;
    if (end > dataLen || begin > end) {
      throw new Error(`${source}: truncated: tensor '${name}' needs bytes ${begin}..${end}, only ${dataLen} present`);
    }
    if (end - begin !== sizeOf(shape) * width) {
      throw new Error(`${source}: tensor '${name}' has ${end - begin} bytes for shape [${shape}] of ${dtype}`);
    }
    tensors.set(name, { dtype, shape, data: decode(bytes, dataStart + begin, sizeOf(shape), dtype) });
  }
  return { tensors, metadata };
}

function decode(bytes: Uint8Array, offset: number, count: number, dtype: string): Float32Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset + offset, count * BYTES[dtype]);
  const out = new Float32Array(count);
  if (dtype === 'F32') {
    for (let i = 0; i < count; i++) out[i] = view.getFloat32(i * 4, true);
  } else if (dtype === 'F16') {
    for (let i = 0; i < count; i++) out[i] = f16ToF32(view.getUint16(i * 2, true));
  } else {
    const word = new Uint32Array(1);
    const asFloat = new Float32Array(word.buffer);
    for (let i = 0; i < count; i++) {
      word[0] = view.getUint16(i * 2, true) << 16; // bf16 is the top half of an f32
      out[i] = asFloat[0];
    }
  }
  return out;
}

export function f16ToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 0x1f) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

/** Round-to-nearest-even float32 -> float16 bits. */
export function f32ToF16(value: number): number {
  const f = new Float32Array([value]);
  const x = new Uint32Array(f.buffer)[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >> shift;
    const rest = mant & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (rest > halfway || (rest === halfway && half & 1)) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && half & 1)) half++;
  return sign | half; // a carry into the exponent is the correct rounding (up to Inf)
}

export interface SerializeOptions {
  readonly dtype?: WriteDtype;
  readonly metadata?: Record<string, string>;
}

/** Tensors sorted by name (like the Rust/Python writers), 8-byte aligned header. */
export function serializeSafetensors(tensors: ReadonlyMap<string, { shape: readonly number[]; data: Float32Array }>, opts: SerializeOptions = {}): Uint8Array {
  const dtype = opts.dtype ?? 'F32';
  const width = BYTES[dtype];
  const names = [...tensors.keys()].sort();
  const header: Record<string, unknown> = {};
  if (opts.metadata && Object.keys(opts.metadata).length) header.__metadata__ = opts.metadata;
  let offset = 0;
  for (const name of names) {
    const t = tensors.get(name)!;
    const bytes = t.data.length * width;
    header[name] = { dtype, shape: [...t.shape], data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(json.length / 8) * 8;
  const headerBytes = new Uint8Array(padded).fill(0x20);
  headerBytes.set(json);
  json = headerBytes;
  const out = new Uint8Array(8 + json.length + offset);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  let pos = 8 + json.length;
  for (const name of names) {
    const data = tensors.get(name)!.data;
    if (dtype === 'F32') {
      for (let i = 0; i < data.length; i++) view.setFloat32(pos + i * 4, data[i], true);
    } else {
      for (let i = 0; i < data.length; i++) view.setUint16(pos + i * 2, f32ToF16(data[i]), true);
    }
    pos += data.length * width;
  }
  return out;
}
