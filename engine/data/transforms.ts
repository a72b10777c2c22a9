// timm's image transforms on uint8 pixels (timm/data/transforms_factory.py, transforms.py): the eval
// transform (shorter side to floor(size / crop_pct), centre crop) and the training random-resized
// crop (scale 0.08-1, log-uniform ratio 3/4-4/3, ten tries then a centre fallback), drawn from a
// seeded generator so that every worker cuts the same crops.
import { Image8, Interpolation, resize, resizeRegion } from './resample';

export interface InputTransform {
  /** The model's input size (square). */
  readonly size: number;
  readonly interpolation: Interpolation;
  /** Eval: the centre crop keeps this share of the resized shorter side (timm's crop_pct). */
  readonly cropPct: number;
}

/** Python's round(): halves go to the even neighbour (torchvision's CenterCrop rounds its offsets so). */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** torchvision's Resize(int): the shorter side to `short`, the longer scaled and truncated. */
export function resizeShorter(img: Image8, short: number, interpolation: Interpolation): Image8 {
  const { width: w, height: h } = img;
  if (Math.min(w, h) === short) return img;
  const [ow, oh] = w <= h ? [short, Math.trunc((short * h) / w)] : [Math.trunc((short * w) / h), short];
  return resize(img, ow, oh, interpolation);
}

/** torchvision's CenterCrop: offsets rounded half to even; an image smaller than the crop is zero-padded first. */
export function centerCrop(img: Image8, size: number): Image8 {
  const { width: w, height: h, channels: C } = img;
  if (w === size && h === size) return img;
  const top = roundHalfEven((h - size) / 2);
  const left = roundHalfEven((w - size) / 2);
  const out = new Uint8Array(size * size * C);
  for (let y = 0; y < size; y++) {
    const sy = y + top;
    if (sy < 0 || sy >= h) continue;
    for (let x = 0; x < size; x++) {
      const sx = x + left;
      if (sx >= 0 && sx < w) for (let c = 0; c < C; c++) out[(y * size + x) * C + c] = img.data[(sy * w + sx) * C + c];
    }
  }
  return { data: out, width: size, height: size, channels: C };
}

/** timm's eval transform up to (not including) ToTensor. */
export function evalTransform(img: Image8, t: InputTransform): Image8 {
  if (img.width === t.size && img.height === t.size && t.cropPct === 1) return img;
  return centerCrop(resizeShorter(img, Math.floor(t.size / t.cropPct), t.interpolation), t.size);
}

export const RRC_SCALE: readonly [number, number] = [0.08, 1];
export const RRC_RATIO: readonly [number, number] = [3 / 4, 4 / 3];

export interface CropBox {
  readonly left: number;
  readonly top: number;
  readonly width: number;
  readonly height: number;
}

/** RandomResizedCropAndInterpolation.get_params with `random` for Python's random module. */
export function randomResizedCropBox(width: number, height: number, random: () => number): CropBox {
  const area = width * height;
  const uniform = (a: number, b: number): number => a + (b - a) * random();
  const randint = (lo: number, hi: number): number => lo + Math.floor(random() * (hi - lo + 1));
  const [logLo, logHi] = [Math.log(RRC_RATIO[0]), Math.log(RRC_RATIO[1])];
  for (let attempt = 0; attempt < 10; attempt++) {
    const targetArea = uniform(RRC_SCALE[0], RRC_SCALE[1]) * area;
    const aspect = Math.exp(uniform(logLo, logHi));
    const w = roundHalfEven(Math.sqrt(targetArea * aspect));
    const h = roundHalfEven(Math.sqrt(targetArea / aspect));
    if (w > 0 && h > 0 && w <= width && h <= height) return { top: randint(0, height - h), left: randint(0, width - w), width: w, height: h };
  }
  const inRatio = width / height;
  let [w, h] = [width, height];
  if (inRatio < RRC_RATIO[0]) h = roundHalfEven(w / RRC_RATIO[0]);
  else if (inRatio > RRC_RATIO[1]) w = roundHalfEven(h * RRC_RATIO[1]);
  return { top: Math.floor((height - h) / 2), left: Math.floor((width - w) / 2), width: w, height: h };
}

export function randomResizedCrop(img: Image8, t: InputTransform, random: () => number): Image8 {
  return resizeRegion(img, randomResizedCropBox(img.width, img.height, random), t.size, t.size, t.interpolation);
}
