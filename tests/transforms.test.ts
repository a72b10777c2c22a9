// timm's transforms on the host: rounding as Python rounds, the random-resized crop's bounds and
// seeding, the eval transform's sizes; micro-batches that sum to the whole batch's step; and the
// memory estimate that picks a micro-batch for a 2 GiB step.
import * as tf from '@tensorflow/tfjs';
import {
  Dataset,
  Image8,
  TrainableVit,
  activationBytesPerImage,
  centerCrop,
  defaultMicroBatch,
  evalTransform,
  initParams,
  inspect,
  makeBatch,
  preset,
  presetStrategy,
  randomResizedCropBox,
  resizeShorter,
  rng,
  roundHalfEven,
  stepMemoryBytes,
  toHost,
  train,
} from '../engine';
import { TOY, useBackend } from './helpers';

beforeAll(() => useBackend('wasm'));

const image = (w: number, h: number): Image8 => ({ data: Uint8Array.from({ length: w * h * 3 }, (_, i) => (i * 31) % 251), width: w, height: h, channels: 3 });

describe('transforms', () => {
  it("rounds halves to even, as Python's round() does", () => {
    expect([0.5, 1.5, 2.5, 12.5, -1.5, 3.49, 3.51].map(roundHalfEven)).toEqual([0, 2, 2, 12, -2, 3, 4]);
  });

  it("resizes the shorter side as torchvision's Resize(int) (longer side truncated) and crops the centre, padding a small image", () => {
    expect([resizeShorter(image(300, 260), 248, 'bicubic').width, resizeShorter(image(300, 260), 248, 'bicubic').height]).toEqual([286, 248]);
    const c = centerCrop(image(5, 4), 3);
    // (5 - 3) / 2 = 1 and (4 - 3) / 2 = 0.5, which rounds to 0.
    expect(c.data.subarray(0, 3)).toEqual(image(5, 4).data.subarray(3, 6));
    const padded = centerCrop(image(2, 2), 4);
    expect(padded.data.subarray(0, 12).every((v) => v === 0)).toBe(true);
    const e = evalTransform(image(400, 300), { size: 224, interpolation: 'bicubic', cropPct: 0.9 });
    expect([e.width, e.height]).toEqual([224, 224]);
    expect(evalTransform(image(28, 28), { size: 28, interpolation: 'bilinear', cropPct: 1 }).data).toEqual(image(28, 28).data);
  });

  it('draws random-resized crops inside the image, at 8-100% of its area and ratios 3/4-4/3, the same for the same seed', () => {
    const r = rng(7);
    for (let i = 0; i < 2000; i++) {
      const b = randomResizedCropBox(256, 256, r);
      expect(b.left >= 0 && b.top >= 0 && b.left + b.width <= 256 && b.top + b.height <= 256).toBe(true);
      const area = (b.width * b.height) / 256 ** 2;
      expect(area).toBeGreaterThan(0.07);
      expect(b.width / b.height).toBeGreaterThan(0.7);
      expect(b.width / b.height).toBeLessThan(1.4);
    }
    const [a, b] = [randomResizedCropBox(300, 200, rng(3)), randomResizedCropBox(300, 200, rng(3))];
    expect(a).toEqual(b);
    // No try fits a 1000 x 10 strip: the centre fallback at the widest ratio allowed.
    expect(randomResizedCropBox(1000, 10, () => 0.999)).toEqual({ top: 0, left: Math.floor((1000 - 13) / 2), width: 13, height: 10 });
  });

  it('makes the same augmented batch from the same seed, and another from another', () => {
    const px = 40 * 40 * 3;
    const ds: Dataset = {
      name: 'p',
      images: Uint8Array.from({ length: 4 * px }, (_, i) => (i * 7) % 256),
      labels: new Uint8Array(4),
      count: 4,
      height: 40,
      width: 40,
      channels: 3,
      classes: 1,
      flipInvariant: true,
    };
    const norm = { mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5] };
    const t = { size: 32, interpolation: 'bicubic' as const, cropPct: 0.9 };
    const aug = { resizedCrop: true, cropPadding: 0, flip: true };
    const [x, y, z] = [1, 1, 2].map((seed) => makeBatch(ds, [0, 1, 2, 3], norm, aug, rng(seed), t));
    expect(x.images.shape).toEqual([4, 32, 32, 3]);
    expect(Buffer.from(x.images.dataSync().buffer).equals(Buffer.from(y.images.dataSync().buffer))).toBe(true);
    expect(Buffer.from(x.images.dataSync().buffer).equals(Buffer.from(z.images.dataSync().buffer))).toBe(false);
    tf.dispose([x.images, x.labels, y.images, y.labels, z.images, z.labels]);
  });
});

describe('micro-batches', () => {
  const data = (): Dataset => {
    const px = 8 * 8 * 3;
    const images = Uint8Array.from({ length: 24 * px }, (_, i) => ((Math.floor(i / px) % 3) * 80 + ((i * 37) % 60)) % 256);
    return {
      name: 'toy',
      images,
      labels: Uint8Array.from({ length: 24 }, (_, i) => i % 3),
      count: 24,
      height: 8,
      width: 8,
      channels: 3,
      classes: 3,
      flipInvariant: true,
    };
  };
  const trained = async (microBatch?: number): Promise<Float32Array> => {
    const init = initParams(TOY, 5);
    const m = new TrainableVit(await toHost(init), TOY, presetStrategy('attn-only'));
    tf.dispose([...init.values()]);
    const run = train(
      m,
      { train: data(), normalization: { mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25] } },
      { epochs: 1, batchSize: 8, lr: 1e-2, seed: 1, clipGrad: 0, microBatch },
    );
    for await (const _ of run); // eslint-disable-line @typescript-eslint/no-unused-vars
    const w = (await m.weights()).get('blocks.0.attn.qkv.weight')!.data;
    m.dispose();
    return w;
  };

  it("split a step into pieces (3 + 3 + 2) whose weighted gradients sum to the whole batch's, the same every time", async () => {
    const whole = await trained();
    const pieces = await trained(3);
    const again = await trained(3);
    expect(Buffer.from(pieces.buffer).equals(Buffer.from(again.buffer))).toBe(true);
    const worst = whole.reduce((m, v, i) => Math.max(m, Math.abs(v - pieces[i])), 0);
    expect(worst).toBeGreaterThan(0); // float sums in another order
    expect(worst).toBeLessThan(1e-5);
    const leaks = tf.memory().numTensors;
    await trained(3);
    expect(tf.memory().numTensors).toBe(leaks);
  });

  it('default to what fits a 2 GiB step: ViT-S/16 at 224 attn-only trains batch 32 in micro-batches; a micro ViT takes the whole batch', () => {
    const s = preset('vit_small_patch16_224');
    const tuned = inspect(presetStrategy('attn-only'), s).tunedParams;
    const mb = defaultMicroBatch(s, tuned, 32);
    expect(mb).toBeGreaterThan(1);
    expect(mb).toBeLessThan(32);
    expect(stepMemoryBytes(s, tuned, mb)).toBeLessThanOrEqual(2 * 2 ** 30);
    expect(stepMemoryBytes(s, tuned, mb + 1)).toBeGreaterThan(2 * 2 ** 30);
    expect(activationBytesPerImage(preset('vit_base_patch16_224'))).toBeGreaterThan(activationBytesPerImage(s));
    const micro = preset('vit_micro_patch4_32');
    expect(defaultMicroBatch(micro, inspect(presetStrategy('attn-only'), micro).tunedParams, 32)).toBe(32);
  });
});
