// Image resampling as Pillow does it (libImaging/Resample.c): separable convolution, horizontal pass
// first, filter support widened by the scale when shrinking (antialiased), coefficients in 22-bit
// fixed point and each pass rounded to 8 bits. timm's transforms run on Pillow images, so matching
// its arithmetic is what makes Partune's pixels timm's. Integer sums are exact in doubles, so the
// result is bit-identical in Node and every browser.

export type Interpolation = 'bilinear' | 'bicubic';

/** uint8 pixels, row-major HWC. */
export interface Image8 {
  readonly data: Uint8Array;
  readonly width: number;
  readonly height: number;
  readonly channels: number;
}

const PRECISION_BITS = 32 - 8 - 2;
const ONE = 2 ** PRECISION_BITS;
const HALF = 2 ** (PRECISION_BITS - 1);

const FILTERS: Readonly<Record<Interpolation, { readonly support: number; readonly at: (x: number) => number }>> = {
  bilinear: {
    support: 1,
    at: (x) => {
      const d = Math.abs(x);
      return d < 1 ? 1 - d : 0;
    },
  },
  // Keys' cubic with a = -0.5, Pillow's BICUBIC.
  bicubic: {
    support: 2,
    at: (x) => {
      const a = -0.5;
      const d = Math.abs(x);
      if (d < 1) return ((a + 2) * d - (a + 3)) * d * d + 1;
      if (d < 2) return (((d - 5) * d + 8) * d - 4) * a;
      return 0;
    },
  },
};

interface Coefficients {
  /** First input pixel of each output pixel's window, and the window's length. */
  readonly first: Int32Array;
  readonly count: Int32Array;
  /** ksize fixed-point weights per output pixel. */
  readonly weights: Int32Array;
  readonly ksize: number;
}

function coefficients(inSize: number, outSize: number, interpolation: Interpolation): Coefficients {
  const filter = FILTERS[interpolation];
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1);
  const support = filter.support * filterScale;
  const ksize = Math.ceil(support) * 2 + 1;
  const first = new Int32Array(outSize);
  const count = new Int32Array(outSize);
  const weights = new Int32Array(outSize * ksize);
  const k = new Float64Array(ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const xmin = Math.max(0, Math.trunc(center - support + 0.5));
    const n = Math.min(inSize, Math.trunc(center + support + 0.5)) - xmin;
    let sum = 0;
    for (let x = 0; x < n; x++) {
      k[x] = filter.at((x + xmin - center + 0.5) / filterScale);
      sum += k[x];
    }
    for (let x = 0; x < n; x++) {
      const w = sum !== 0 ? k[x] / sum : k[x];
      weights[xx * ksize + x] = w < 0 ? Math.trunc(-0.5 + w * ONE) : Math.trunc(0.5 + w * ONE);
    }
    first[xx] = xmin;
    count[xx] = n;
  }
  return { first, count, weights, ksize };
}

const clip8 = (sum: number): number => (sum >= ONE * 256 ? 255 : sum <= 0 ? 0 : Math.floor(sum / ONE));

/** The region [left, left + width) x [top, top + height) of `img` resized to outWidth x outHeight, as Pillow's crop + resize. */
export function resizeRegion(
  img: Image8,
  region: { readonly left: number; readonly top: number; readonly width: number; readonly height: number },
  outWidth: number,
  outHeight: number,
  interpolation: Interpolation,
): Image8 {
  const { left, top, width, height } = region;
  if (!(width > 0 && height > 0 && left >= 0 && top >= 0 && left + width <= img.width && top + height <= img.height)) {
    throw new Error(`crop ${width}x${height} at (${left}, ${top}) is outside a ${img.width}x${img.height} image`);
  }
  const C = img.channels;
  // Horizontal pass over the region's rows (skipped when the width stays).
  let rows: Uint8Array;
  if (width === outWidth) {
    rows = new Uint8Array(height * width * C);
    for (let y = 0; y < height; y++) rows.set(img.data.subarray(((top + y) * img.width + left) * C, ((top + y) * img.width + left + width) * C), y * width * C);
  } else {
    const h = coefficients(width, outWidth, interpolation);
    rows = new Uint8Array(height * outWidth * C);
    for (let y = 0; y < height; y++) {
      const rowStart = ((top + y) * img.width + left) * C;
      for (let xx = 0; xx < outWidth; xx++) {
        const xmin = h.first[xx];
        const n = h.count[xx];
        const kOff = xx * h.ksize;
        for (let c = 0; c < C; c++) {
          let sum = HALF;
          for (let x = 0; x < n; x++) sum += img.data[rowStart + (xmin + x) * C + c] * h.weights[kOff + x];
          rows[(y * outWidth + xx) * C + c] = clip8(sum);
        }
      }
    }
  }
  if (height === outHeight) return { data: rows, width: outWidth, height: outHeight, channels: C };
  const v = coefficients(height, outHeight, interpolation);
  const out = new Uint8Array(outHeight * outWidth * C);
  const stride = outWidth * C;
  for (let yy = 0; yy < outHeight; yy++) {
    const ymin = v.first[yy];
    const n = v.count[yy];
    const kOff = yy * v.ksize;
    for (let i = 0; i < stride; i++) {
      let sum = HALF;
      for (let y = 0; y < n; y++) sum += rows[(ymin + y) * stride + i] * v.weights[kOff + y];
      out[yy * stride + i] = clip8(sum);
    }
  }
  return { data: out, width: outWidth, height: outHeight, channels: C };
}

export const resize = (img: Image8, outWidth: number, outHeight: number, interpolation: Interpolation): Image8 =>
  resizeRegion(img, { left: 0, top: 0, width: img.width, height: img.height }, outWidth, outHeight, interpolation);
