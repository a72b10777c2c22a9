// What a shard downloads per step at 224: a window pack (engine/train/window.ts) of batch-32 steps
// over images stored at 256x256x3, compressed as the server stores it (packDataset(.., { compress:
// true }): PNG's Sub filter + deflate) against the raw pack. Inputs: CIFAR-10 upscaled 32 -> 256
// with the engine's bicubic resize, uniformly random pixels (the incompressible bound) and, when
// the scikit-image wheel is on this machine, its sample photos (centre square, resized to 256).
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { unzipSync } from 'fflate';
import sharp from 'sharp';
import { Dataset, packDataset, packWindow, parseTrainOptions, resizeRegion, unpackDataset } from '../engine';

const SIZE = 256;
const BATCH = 32;
const CIFAR = join(__dirname, '..', '..', '..', 'shared', 'data', 'cifar10', 'data_batch_1.bin');
const WHEELS = process.env.PARTUNE_WHEEL_DIR ?? '/opt/pypi/files';
const PHOTOS = ['astronaut.png', 'chelsea.png', 'coffee.png', 'rocket.jpg', 'motorcycle_left.png', 'retina.jpg', 'ihc.png', 'hubble_deep_field.jpg'];

export interface PackBytes {
  readonly input: string;
  readonly source: string;
  readonly steps: number;
  readonly rawBytesPerStep: number;
  readonly compressedBytesPerStep: number;
  readonly ratio: number;
  readonly bytesPerImage: number;
  readonly compressMsPerStep: number;
  readonly inflateMsPerStep: number;
}

const dataset = (name: string, images: Uint8Array, count: number): Dataset => ({
  name,
  images,
  labels: Uint8Array.from({ length: count }, (_, i) => i % 10),
  count,
  height: SIZE,
  width: SIZE,
  channels: 3,
  classes: 10,
  flipInvariant: true,
});

/** The first `count` CIFAR-10 training images (planar records -> HWC), bicubic to 256x256. */
function upscaledCifar(count: number): Dataset {
  const bytes = readFileSync(CIFAR);
  const out = new Uint8Array(count * SIZE * SIZE * 3);
  for (let n = 0; n < count; n++) {
    const rec = bytes.subarray(n * 3073 + 1, (n + 1) * 3073);
    const hwc = new Uint8Array(3072);
    for (let p = 0; p < 1024; p++) for (let c = 0; c < 3; c++) hwc[p * 3 + c] = rec[c * 1024 + p];
    const img = resizeRegion({ data: hwc, width: 32, height: 32, channels: 3 }, { left: 0, top: 0, width: 32, height: 32 }, SIZE, SIZE, 'bicubic');
    out.set(img.data, n * SIZE * SIZE * 3);
  }
  return dataset('cifar10 upscaled to 256', out, count);
}

function randomPixels(count: number): Dataset {
  const out = new Uint8Array(count * SIZE * SIZE * 3);
  let s = 1;
  for (let i = 0; i < out.length; i++) out[i] = (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) >>> 24;
  return dataset('uniform random pixels', out, count);
}

/** scikit-image's sample photos, read from its wheel (a zip): centre square, bicubic to 256, cycled to `count`. */
async function samplePhotos(count: number): Promise<{ ds: Dataset; source: string } | null> {
  const wheel = existsSync(WHEELS) ? readdirSync(WHEELS).find((f) => /^scikit_image-.*\.whl$/.test(f)) : undefined;
  if (!wheel) return null;
  const files = unzipSync(readFileSync(join(WHEELS, wheel)), { filter: (f) => PHOTOS.some((p) => f.name === `skimage/data/${p}`) });
  const photos: Uint8Array[] = [];
  for (const name of PHOTOS) {
    const file = files[`skimage/data/${name}`];
    if (!file) continue;
    const { data, info } = await sharp(file).removeAlpha().toColourspace('srgb').raw().toBuffer({ resolveWithObject: true });
    const side = Math.min(info.width, info.height);
    const region = { left: (info.width - side) >> 1, top: (info.height - side) >> 1, width: side, height: side };
    photos.push(resizeRegion({ data: new Uint8Array(data), width: info.width, height: info.height, channels: 3 }, region, SIZE, SIZE, 'bicubic').data);
  }
  if (!photos.length) return null;
  const out = new Uint8Array(count * SIZE * SIZE * 3);
  for (let n = 0; n < count; n++) out.set(photos[n % photos.length], n * SIZE * SIZE * 3);
  return {
    ds: dataset('scikit-image sample photos at 256', out, count),
    source: `${photos.length} photos from ${wheel}, each repeated ${Math.ceil(count / photos.length)}x`,
  };
}

function measure(input: string, source: string, train: Dataset, steps: number): PackBytes {
  const o = parseTrainOptions({ batchSize: BATCH, epochs: 1 });
  const window = packWindow(train, o, { from: 0, to: steps });
  const raw = packDataset(window);
  const t0 = performance.now();
  const packed = packDataset(window, { compress: true });
  const t1 = performance.now();
  const back = unpackDataset(packed);
  const t2 = performance.now();
  if (!back.images.every((v, i) => v === window.images[i])) throw new Error(`${input}: the compressed pack does not inflate to its images`);
  return {
    input,
    source,
    steps,
    rawBytesPerStep: raw.length / steps,
    compressedBytesPerStep: packed.length / steps,
    ratio: packed.length / raw.length,
    bytesPerImage: packed.length / (steps * BATCH),
    compressMsPerStep: (t1 - t0) / steps,
    inflateMsPerStep: (t2 - t1) / steps,
  };
}

export async function packBytes(steps: number): Promise<{ batch: number; imageShape: number[]; note: string; results: PackBytes[]; missing: string[] }> {
  const count = steps * BATCH;
  const results: PackBytes[] = [];
  const missing: string[] = [];
  if (existsSync(CIFAR))
    results.push(measure('cifar10-upscaled', `${count} CIFAR-10 training images, engine resize (bicubic) 32 -> 256`, upscaledCifar(count), steps));
  else missing.push(`cifar10-upscaled: ${CIFAR} is missing`);
  const photos = await samplePhotos(count);
  if (photos) results.push(measure('photos', photos.source, photos.ds, steps));
  else missing.push(`photos: no scikit-image wheel in ${WHEELS} (PARTUNE_WHEEL_DIR)`);
  results.push(measure('random', 'uniform random bytes: the incompressible bound', randomPixels(count), steps));
  return {
    batch: BATCH,
    imageShape: [SIZE, SIZE, 3],
    missing,
    results,
    note:
      'CIFAR-10 upscaled 8x is smooth, so it compresses far better than real photos stored at 256 would; the random input bounds the compressed size from above' +
      ' (deflate adds a little); the scikit-image photos, where present, are the closest to real data here (few, repeated, so the pack cannot profit from the repeats: deflate sees 32 KiB back).',
  };
}
