// Interop with real timm 1.0.29 and Pillow (tests/reference/timm_ref.py): Pillow's resampling and
// timm's eval transform reproduced on the same photos; timm's position-embedding resampling; a
// timm ViT-S/16 state dict fine-tuned by Partune at 224 and at --image-size 384, its merged
// checkpoint loaded back by timm.create_model with the same logits.
import * as tf from '@tensorflow/tfjs';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { Image8, evalTransform, inputTransform, loadCheckpoint, model, parseDelta, preset, resamplePosEmbed, resize } from '../engine';
import { cliJson } from '../node/local-platform';
import { decodeOriginal } from '../node/image-folder';
import { modelInput } from '../node/predict';
import { useBackend } from './helpers';
import { describeUnless } from './support/skip';
import { TimmReference, timmMissingSync, timmReference } from './reference/timm';

jest.setTimeout(900_000);

const dir = mkdtempSync(join(tmpdir(), 'partune-timm-interop-'));
let ref: TimmReference;

/** A photo-like w x h image: gradients, a few discs and seeded noise, so that every resampling tap matters. */
function photo(w: number, h: number, seed: number): Buffer {
  const b = Buffer.alloc(w * h * 3);
  let s = seed * 2654435761;
  const noise = (): number => ((s = (s * 1103515245 + 12345) >>> 0) >>> 24) - 128;
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) {
      const disc = (x - w * 0.3) ** 2 + (y - h * 0.6) ** 2 < (w * 0.18) ** 2 ? 90 : 0;
      const v = [(x * 255) / w + disc, (y * 255) / h, ((x + y) * 128) / (w + h) + seed * 40];
      for (let c = 0; c < 3; c++) b[(y * w + x) * 3 + c] = Math.max(0, Math.min(255, Math.round(v[c] + noise() * 0.25)));
    }
  return b;
}

const raw = (px: Buffer, w: number, h: number): sharp.Sharp => sharp(px, { raw: { width: w, height: h, channels: 3 } });
const f32 = (path: string): Float32Array => new Float32Array(new Uint8Array(readFileSync(path)).buffer);
const maxAbs = (a: ArrayLike<number>, b: ArrayLike<number>): number => Array.from(a).reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);
const relative = (ours: number[][], theirs: number[][]): number => maxAbs(ours.flat(), theirs.flat()) / Math.max(...theirs.flat().map(Math.abs));

describeUnless(timmMissingSync())('real timm and Pillow', () => {
  beforeAll(async () => {
    const r = await timmReference();
    if ('skip' in r) throw new Error(`the timm reference did not start: ${r.skip}`);
    ref = r;
  });

  it("Partune's resampling is Pillow's, bit for bit: bicubic and bilinear, shrinking and enlarging", async () => {
    const png = join(dir, 'resample.png');
    await raw(photo(257, 333, 1), 257, 333)
      .png()
      .toFile(png);
    const img: Image8 = { data: new Uint8Array(photo(257, 333, 1)), width: 257, height: 333, channels: 3 };
    for (const [w, h, filter] of [
      [248, 321, 'bicubic'],
      [100, 77, 'bilinear'],
      [640, 500, 'bicubic'],
      [31, 333, 'bicubic'],
    ] as const) {
      const out = join(dir, `r-${w}x${h}.u8`);
      await ref.run(['pil-resize', png, out, String(w), String(h), '--filter', filter]);
      expect(maxAbs(resize(img, w, h, filter).data, readFileSync(out))).toBe(0);
    }
  });

  it("the eval transform is timm's (resolve_data_config + create_transform) on the same PNG exactly, on a JPEG within the decoders' difference", async () => {
    const files = [join(dir, 'a.png'), join(dir, 'b.jpg'), join(dir, 'c.png')];
    await raw(photo(300, 260, 2), 300, 260)
      .png()
      .toFile(files[0]);
    await raw(photo(411, 290, 3), 411, 290)
      .jpeg({ quality: 90 })
      .toFile(files[1]);
    await raw(photo(224, 400, 4), 224, 400)
      .png()
      .toFile(files[2]);
    const out = join(dir, 'timm.u8');
    const info = JSON.parse(await ref.run(['transform', 'vit_small_patch16_224', '224', out, ...files]));
    expect(info.config).toMatchObject({ interpolation: 'bicubic', crop_pct: 0.9, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5] });
    const theirs = readFileSync(out);
    const t = inputTransform(preset('vit_small_patch16_224'));
    const diffs: number[] = [];
    for (const [i, f] of files.entries()) {
      const ours = evalTransform(await decodeOriginal(new Uint8Array(readFileSync(f)), 3), t).data;
      const slice = theirs.subarray(i * 224 * 224 * 3, (i + 1) * 224 * 224 * 3);
      diffs.push(maxAbs(ours, slice));
      if (f.endsWith('.jpg')) {
        const mean = ours.reduce((s, v, k) => s + Math.abs(v - slice[k]), 0) / ours.length;
        process.stderr.write(
          `[timm] JPEG eval transform: max ${diffs[i]}/255, mean ${mean.toFixed(3)}/255 per value (libvips' mozjpeg vs Pillow's libjpeg-turbo)\n`,
        );
      }
    }
    expect(diffs[0]).toBe(0);
    expect(diffs[2]).toBe(0);
    expect(diffs[1]).toBeLessThanOrEqual(2);
  });

  it("resamples the position embedding as timm's resample_abs_pos_embed (bicubic, antialias), class token kept", async () => {
    const D = 384;
    const pos = { shape: [1, 197, D], data: Float32Array.from({ length: 197 * D }, (_, i) => Math.sin(i * 0.37) * 0.05 + ((i * 13) % 7) * 0.001) };
    writeFileSync(join(dir, 'pos.f32'), new Uint8Array(pos.data.buffer));
    for (const grid of [24, 7]) {
      await ref.run([
        'resample',
        join(dir, 'pos.f32'),
        join(dir, `pos${grid}.f32`),
        '--shape',
        `1,197,${D}`,
        '--old-grid',
        '14,14',
        '--new-grid',
        `${grid},${grid}`,
        '--prefix-tokens',
        '1',
      ]);
      const ours = resamplePosEmbed(pos, [14, 14], [grid, grid], 1);
      expect(ours.shape).toEqual([1, 1 + grid * grid, D]);
      expect(maxAbs(ours.data, f32(join(dir, `pos${grid}.f32`)))).toBeLessThan(1e-6);
      expect(maxAbs(ours.data.subarray(0, D), pos.data.subarray(0, D))).toBe(0);
    }
  });

  describe('a timm vit_small_patch16_224 fine-tuned by Partune (attn-only), merged, loaded by timm', () => {
    const photos = join(dir, 'photos');
    const base = join(dir, 'timm-s16.safetensors');
    const tests = [join(photos, 'val', 'dog', '0.png'), join(photos, 'val', 'cat', '0.jpg')];

    beforeAll(async () => {
      await useBackend('wasm');
      for (const [c, name] of ['cat', 'dog', 'owl'].entries()) {
        for (let i = 0; i < 3; i++) {
          const split = i < 2 ? 'train' : 'val';
          mkdirSync(join(photos, split, name), { recursive: true });
          const [w, h] = [300 + 10 * i, 270 - 7 * c];
          const img = raw(photo(w, h, c * 3 + i), w, h);
          await (c === 0 ? img.jpeg({ quality: 90 }) : img.png()).toFile(join(photos, split, name, `${i % 2 ? i : 0}.${c === 0 ? 'jpg' : 'png'}`));
        }
      }
      await ref.run(['save', 'vit_small_patch16_224', base, '--num-classes', '1000', '--seed', '7']);
    });

    for (const size of [224, 384]) {
      it(`at ${size}: timm.create_model(num_classes=3${size === 384 ? ', img_size=384' : ''}) gives Partune's logits to 1e-4`, async () => {
        const delta = join(dir, `d${size}.safetensors`);
        const merged = join(dir, `m${size}.safetensors`);
        const run = await cliJson([
          'finetune',
          '--checkpoint',
          base,
          '--arch',
          'vit_small_patch16_224',
          '--data',
          `folder:${photos}`,
          '--strategy',
          'attn-only',
          '--max-steps',
          '2',
          '--batch-size',
          '2',
          '--lr',
          '0.01',
          '--backend',
          'wasm',
          '--out',
          delta,
          '--merged-out',
          merged,
          ...(size === 384 ? ['--image-size', '384'] : []),
        ]);
        // Per block qkv, proj and norm1; then the new 3-class head. The resampled pos_embed travels along untuned.
        expect(run.tunedParams).toBe(12 * (384 * 1152 + 1152 + 384 * 384 + 384 + 2 * 384) + 3 * 384 + 3);
        const m = await loadCheckpoint(new Uint8Array(readFileSync(merged)));
        expect(m.config.imageSize).toBe(size);
        expect(m.classNames).toEqual(['cat', 'dog', 'owl']);
        const inputs = await Promise.all(tests.map(async (f) => modelInput(await decodeOriginal(new Uint8Array(readFileSync(f)), 3), m.config)));
        const pixels = join(dir, `x${size}.f32`);
        const flat = new Float32Array(inputs.length * size * size * 3);
        inputs.forEach((x, i) => flat.set(x, i * x.length));
        writeFileSync(pixels, new Uint8Array(flat.buffer));
        const theirs = JSON.parse(
          await ref.run(['logits', merged, 'vit_small_patch16_224', '3', String(size), '--pixels', pixels, '--shape', `${tests.length},${size},${size},3`]),
        ).logits;
        const params = new Map([...m.weights].map(([k, t]) => [k, tf.tensor(t.data, t.shape)]));
        const ours = (await model.forward(params, tf.tensor4d(flat, [tests.length, size, size, 3]), m.config).array()) as number[][];
        tf.dispose([...params.values()]);
        const rel = relative(ours, theirs);
        process.stderr.write(`[timm] ViT-S/16 at ${size}: merged checkpoint's logits, Partune vs timm, max relative difference ${rel.toExponential(2)}\n`);
        expect(rel).toBeLessThan(1e-4);
        if (size === 384) {
          const d = parseDelta(new Uint8Array(readFileSync(delta)));
          expect(d.manifest.base.imageSize).toBe(224);
          expect(d.manifest.tensors.pos_embed).toBe('full');
          // attn-only does not tune pos_embed: the merged one is timm's resampling of the base's.
          const theirsPos = join(dir, 'base-pos384.f32');
          const basePos = (await loadCheckpoint(new Uint8Array(readFileSync(base)), { config: preset('vit_small_patch16_224') })).weights.get('pos_embed')!;
          writeFileSync(join(dir, 'base-pos.f32'), new Uint8Array(basePos.data.slice().buffer));
          await ref.run([
            'resample',
            join(dir, 'base-pos.f32'),
            theirsPos,
            '--shape',
            '1,197,384',
            '--old-grid',
            '14,14',
            '--new-grid',
            '24,24',
            '--prefix-tokens',
            '1',
          ]);
          expect(maxAbs(m.weights.get('pos_embed')!.data, f32(theirsPos))).toBeLessThan(1e-6);
          // delta apply onto timm's own file rebuilds the merged checkpoint exactly.
          const again = join(dir, 'again.safetensors');
          await cliJson(['delta', 'apply', '--checkpoint', base, '--delta', delta, '--out', again]);
          expect(Buffer.from(readFileSync(again)).equals(readFileSync(merged))).toBe(true);
        }
      });
    }
  });
});
