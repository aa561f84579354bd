/**
 * OpenAI CLIP's image preprocessing on the host, bit-compatible with
 * `Compose([Resize(n, BICUBIC), CenterCrop(n), convert("RGB"), ToTensor(), Normalize(mean, std)])`
 * applied to a PIL image.
 *
 * The resize reproduces Pillow's `Image.resize(size, Image.BICUBIC)` (libImaging/Resample.c):
 * separable convolution with the a = −0.5 cubic, support widened by the downscale factor
 * (antialiasing), weights normalised per output sample in float64 and then quantised to signed
 * fixed point with 22 fractional bits; each pass accumulates in integers from a ½ rounding
 * bias, keeps the integer part and saturates to 0..255. The horizontal pass runs first, on just
 * the input rows the vertical pass reads; a pass whose size and box do not change is skipped.
 * On the golden cases (227² → 224² and 227² → 32²) the result is identical to Pillow's.
 */
import type { RGBImage } from "./image.ts";

export const CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073] as const;
export const CLIP_STD = [0.26862954, 0.26130258, 0.27577711] as const;

const PRECISION_BITS = 32 - 8 - 2;

function bicubic(x: number): number {
  const a = -0.5;
  if (x < 0) x = -x;
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
  return 0;
}

interface Coeffs {
  ksize: number;
  /** Per output sample: first input index and number of taps. */
  bounds: Int32Array;
  /** Fixed-point weights, ksize per output sample. */
  k: Int32Array;
}

/** Pillow's precompute_coeffs + normalize_coeffs_8bpc for the box [in0, in1) of inSize. */
function precompute(inSize: number, in0: number, in1: number, outSize: number): Coeffs {
  const scale = (in1 - in0) / outSize;
  const filterscale = scale < 1 ? 1 : scale;
  const support = 2 * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const k = new Int32Array(outSize * ksize);
  const w = new Float64Array(ksize);
  const ss = 1 / filterscale;
  const one = 1 << PRECISION_BITS;
  for (let xx = 0; xx < outSize; xx++) {
    const center = in0 + (xx + 0.5) * scale;
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      const v = bicubic((x + xmin - center + 0.5) * ss);
      w[x] = v;
      ww += v;
    }
    for (let x = 0; x < xmax; x++) {
      const v = ww !== 0 ? w[x] / ww : w[x];
      k[xx * ksize + x] = v < 0 ? Math.trunc(-0.5 + v * one) : Math.trunc(0.5 + v * one);
    }
    bounds[2 * xx] = xmin;
    bounds[2 * xx + 1] = xmax;
  }
  return { ksize, bounds, k };
}

/** Integer part of a fixed-point sum, saturated to 0..255 (Pillow's clip8). */
const clip8 = (ss: number) => {
  const v = ss >> PRECISION_BITS;
  return v < 0 ? 0 : v > 255 ? 255 : v;
};

/**
 * Pillow's `img.resize((outW, outH), Image.BICUBIC)` on an RGB image, bit-exact (Pillow 12;
 * earlier versions differ only for images over 100 times taller than wide, see below). Always
 * resamples the whole image (box = (0, 0, width, height)).
 */
export function resizeBicubic(img: RGBImage, outW: number, outH: number): RGBImage {
  const { width: W, height: H, data } = img;
  if (!(Number.isInteger(outW) && Number.isInteger(outH) && outW > 0 && outH > 0)) {
    throw new Error(`resizeBicubic: bad output size ${outW}×${outH}`);
  }
  if (data.length !== W * H * 3) {
    throw new Error(`resizeBicubic: data has ${data.length} bytes, expected ${W}×${H}×3`);
  }
  // Pillow 12's Image.resize shrinks very tall images vertically first, in a separate call.
  if (H > W * 100 && outH < H) return resample(resample(img, W, outH), outW, outH);
  return resample(img, outW, outH);
}

/** One call of Pillow's ImagingResample (8 bits per channel, full box). */
function resample(img: RGBImage, outW: number, outH: number): RGBImage {
  const { width: W, height: H, data: src } = img;
  const needH = outW !== W, needV = outH !== H;
  if (!needH && !needV) return { width: W, height: H, data: src.slice() };

  const vert = precompute(H, 0, H, outH);
  const half = 1 << (PRECISION_BITS - 1);
  // Rows of the input that the vertical pass reads.
  const y0 = vert.bounds[0];
  const y1 = vert.bounds[2 * outH - 2] + vert.bounds[2 * outH - 1];

  let cur = src, curW = W, rowOff = 0;
  if (needH) {
    const { ksize, bounds, k } = precompute(W, 0, W, outW);
    const rows = y1 - y0;
    const tmp = new Uint8Array(outW * rows * 3);
    for (let y = 0; y < rows; y++) {
      const ibase = (y + y0) * W * 3, obase = y * outW * 3;
      for (let xx = 0; xx < outW; xx++) {
        const xmin = bounds[2 * xx], n = bounds[2 * xx + 1], kb = xx * ksize;
        let s0 = half, s1 = half, s2 = half;
        for (let x = 0; x < n; x++) {
          const w = k[kb + x], p = ibase + (xmin + x) * 3;
          s0 = (s0 + Math.imul(src[p], w)) | 0; // int32 arithmetic, as in Pillow
          s1 = (s1 + Math.imul(src[p + 1], w)) | 0;
          s2 = (s2 + Math.imul(src[p + 2], w)) | 0;
        }
        const o = obase + xx * 3;
        tmp[o] = clip8(s0);
        tmp[o + 1] = clip8(s1);
        tmp[o + 2] = clip8(s2);
      }
    }
    cur = tmp;
    curW = outW;
    rowOff = y0;
  }
  if (!needV) return { width: curW, height: H, data: cur };

  const { ksize, bounds, k } = vert;
  const out = new Uint8Array(curW * outH * 3);
  const rowLen = curW * 3;
  const acc = new Int32Array(rowLen); // row by row for locality
  for (let yy = 0; yy < outH; yy++) {
    const ymin = bounds[2 * yy] - rowOff, n = bounds[2 * yy + 1], kb = yy * ksize;
    acc.fill(half);
    for (let y = 0; y < n; y++) {
      const w = k[kb + y], r = (ymin + y) * rowLen;
      for (let i = 0; i < rowLen; i++) acc[i] = (acc[i] + Math.imul(cur[r + i], w)) | 0;
    }
    const obase = yy * rowLen;
    for (let i = 0; i < rowLen; i++) out[obase + i] = clip8(acc[i]);
  }
  return { width: curW, height: outH, data: out };
}

/** torchvision's Resize(size) with an int: the short side becomes `size`, aspect kept. */
export function resizeShortSide(w: number, h: number, size: number): [number, number] {
  const short = Math.min(w, h), long = Math.max(w, h);
  const newLong = Math.trunc((size * long) / short); // Python's int(size * long / short)
  return w <= h ? [size, newLong] : [newLong, size];
}

/** Python's round() on x.0 / x.5 values: half to even. */
function roundHalfEven(x: number): number {
  const f = Math.floor(x), d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/**
 * torchvision's CenterCrop: zero padding (left/top get the smaller half) when the crop is
 * larger, then top = round((h − ch) / 2), left = round((w − cw) / 2), Python rounding.
 */
export function centerCrop(img: RGBImage, cw: number, ch: number): RGBImage {
  let { width: W, height: H, data } = img;
  if (cw > W || ch > H) {
    const pl = cw > W ? (cw - W) >> 1 : 0, pt = ch > H ? (ch - H) >> 1 : 0;
    const pr = cw > W ? (cw - W + 1) >> 1 : 0, pb = ch > H ? (ch - H + 1) >> 1 : 0;
    const nw = W + pl + pr, nh = H + pt + pb;
    const padded = new Uint8Array(nw * nh * 3);
    for (let y = 0; y < H; y++) {
      padded.set(data.subarray(y * W * 3, (y + 1) * W * 3), ((y + pt) * nw + pl) * 3);
    }
    W = nw, H = nh, data = padded;
    if (cw === W && ch === H) return { width: W, height: H, data };
  }
  const top = roundHalfEven((H - ch) / 2), left = roundHalfEven((W - cw) / 2);
  const out = new Uint8Array(cw * ch * 3);
  for (let y = 0; y < ch; y++) {
    const s = ((top + y) * W + left) * 3;
    out.set(data.subarray(s, s + cw * 3), y * cw * 3);
  }
  return { width: cw, height: ch, data: out };
}

/**
 * ToTensor + Normalize in float32 as torch does it: (f32(v / 255) − mean) / std, each step
 * rounded to float32; returns CHW. Writes into `out` at `offset` when given (for batches).
 */
export function toNormalizedCHW(
  img: RGBImage,
  out?: Float32Array,
  offset = 0,
  mean: readonly number[] = CLIP_MEAN,
  std: readonly number[] = CLIP_STD,
): Float32Array {
  const n = img.width * img.height;
  const dst = out ?? new Float32Array(3 * n);
  if (dst.length < offset + 3 * n) throw new Error("toNormalizedCHW: output too small");
  const f = Math.fround;
  for (let c = 0; c < 3; c++) {
    const m = f(mean[c]), s = f(std[c]);
    // The 256 possible values, computed once per channel.
    const lut = new Float32Array(256);
    for (let v = 0; v < 256; v++) lut[v] = f(f(f(v / 255) - m) / s);
    const base = offset + c * n;
    for (let i = 0; i < n; i++) dst[base + i] = lut[img.data[3 * i + c]];
  }
  return dst;
}

/**
 * OpenAI CLIP's preprocessing: bicubic resize of the short side to `size` (Pillow), centre crop
 * `size`×`size` (torchvision), /255, normalise with CLIP's mean/std; Float32Array [3, size, size].
 */
export function clipPreprocess(
  img: RGBImage,
  size = 224,
  out?: Float32Array,
  offset = 0,
): Float32Array {
  const [w, h] = resizeShortSide(img.width, img.height, size);
  const resized = w === img.width && h === img.height ? img : resizeBicubic(img, w, h);
  const cropped = centerCrop(resized, size, size);
  return toNormalizedCHW(cropped, out, offset);
}
