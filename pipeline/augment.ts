/**
 * Seeded training augmentations on 8-bit RGB images, producing CLIP-normalised CHW pixels for the
 * views the methods use: CoOp's training view, GOPro's MoCo-v3 and AugMix views, Tip-Adapter's
 * cache view and CLIP's test transform.
 *
 * Every transform is a pure function of (image, rng): the same image and generator state give the
 * same bytes on any machine. The semantics are torchvision's on PIL images (what the reference
 * code ran), re-implemented after Pillow's C code:
 * - RandomResizedCrop: torchvision's get_params (10 attempts of area ~ U(scale), log-aspect ~
 *   U(log ratio), w/h rounded half to even, then the centre-crop fallback), then crop and Pillow's
 *   bicubic resize (model/preprocess.ts, bit-exact to Pillow). torchvision draws its uniforms in
 *   float32; here they are float64 (the generator differs from torch's anyway).
 * - ColorJitter: a random order of the four adjustments (drawn before the factors, as
 *   torchvision does); brightness/contrast/saturation are Pillow's ImageEnhance blends with
 *   black / the rounded mean of the L image / the L image (float32 `in1 + α (in2 − in1)`,
 *   truncated and saturated as ImagingBlend does); hue goes through Pillow's 8-bit HSV and adds
 *   `uint8(trunc(255 h))` to H modulo 256, as torchvision's F_pil.adjust_hue.
 * - Grayscale: Pillow's convert("L"), (19595 R + 38470 G + 7471 B + 2^15) >> 16, replicated.
 * - Gaussian blur: the MoCo v3 recipe applies `PIL.ImageFilter.GaussianBlur(radius=σ)`, σ ~
 *   U(0.1, 2), so there is no kernel size to choose: Pillow approximates the Gaussian by three
 *   passes of an "extended" box blur per axis whose fractional radius r matches the variance σ²
 *   (Gwosdek et al. 2011), i.e. an effective support of ±3(⌊r⌋ + 1) pixels (±6 for σ = 2). It is
 *   reproduced here in Pillow's 8.24 fixed point with edge replication. (SimCLR/BYOL instead use a
 *   true Gaussian with kernel 10% of the image; torchvision's GaussianBlur(23) follows BYOL.)
 * - AugMix: the reference `aug()` of the AugMix repository: Dirichlet chain weights and a Beta
 *   mixing weight first, then per chain a depth (1–3 when depth < 0) and ops drawn uniformly from
 *   the nine ops, severity → magnitude as `int/float_parameter(U(0.1, severity), max) =
 *   level · max / 10`; geometric ops are Pillow affine transforms with bilinear sampling and
 *   black fill, IMAGE_SIZE being the view size. Mixing happens on the normalised float32 tensors
 *   (`(1 − m) · pre(x) + m · Σ w_i pre(chain_i)`), as the reference does.
 *
 * Random resized crops always crop before resizing, so the per-image work of a view is the crop's
 * area for the resize plus O(R²) for everything after it (colour, blur, AugMix all run at the
 * output size R). Nothing here touches the GPU.
 *
 * Not verified bit-for-bit against Pillow (no Pillow on the build machine): the arithmetic follows
 * Pillow's C (float32 where it uses float), so differences, if any, are ±1 level.
 */
import type { RGBImage } from "../model/image.ts";
import { clipPreprocess, resizeBicubic, toNormalizedCHW } from "../model/preprocess.ts";
import { HostRng } from "../engine/ops/random.ts";
import { philox4x32, seedKey } from "../kernels/random.ts";

export type { RGBImage };
export type Rng = HostRng;

const f32 = Math.fround;

function fail(fn: string, msg: string): never {
  throw new Error(`augment.${fn}: ${msg}`);
}

function checkImage(fn: string, img: RGBImage) {
  const { width: w, height: h, data } = img;
  if (!(Number.isInteger(w) && Number.isInteger(h) && w > 0 && h > 0)) {
    fail(fn, `bad image size ${w}×${h}`);
  }
  if (data.length !== w * h * 3) {
    fail(fn, `image data has ${data.length} bytes, expected ${w}×${h}×3`);
  }
}

function checkSize(fn: string, size: number) {
  if (!(Number.isInteger(size) && size > 0)) {
    fail(fn, `output size must be a positive integer, got ${size}`);
  }
}

/** Python's round(): half to even. */
function roundHalfEven(x: number): number {
  const f = Math.floor(x), d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

const clip8 = (v: number) => (v <= 0 ? 0 : v >= 255 ? 255 : v);

// ================================================================================================
// Random variates
// ================================================================================================

/** Standard normal by Box–Muller over two fresh uniforms (not HostRng.normal: see sampleGamma). */
function boxMuller(rng: Rng): number {
  const u1 = 1 - rng.uniform(); // (0, 1]
  const u2 = rng.uniform();
  return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
}

/**
 * Gamma(α, 1) from the generator's uniforms: α = 1 is an exponential; α > 1 Marsaglia–Tsang
 * (2000); α < 1 boosts Gamma(α + 1) by U^(1/α). The normals are Box–Muller over their own two
 * uniforms: HostRng.normal() reads a stream element whose word pair is shared with the next
 * element, which would correlate it with the acceptance uniform drawn right after it.
 */
export function sampleGamma(rng: Rng, alpha: number): number {
  if (!(alpha > 0 && Number.isFinite(alpha))) fail("sampleGamma", `needs α > 0, got ${alpha}`);
  if (alpha === 1) return -Math.log(1 - rng.uniform());
  if (alpha < 1) {
    const g = sampleGamma(rng, alpha + 1);
    return g * Math.pow(1 - rng.uniform(), 1 / alpha);
  }
  const d = alpha - 1 / 3, c = 1 / Math.sqrt(9 * d);
  for (;;) {
    const x = boxMuller(rng);
    let v = 1 + c * x;
    if (v <= 0) continue;
    v = v * v * v;
    const u = 1 - rng.uniform();
    const x2 = x * x;
    if (u < 1 - 0.0331 * x2 * x2) return d * v;
    if (Math.log(u) < 0.5 * x2 + d * (1 - v + Math.log(v))) return d * v;
  }
}

/** Beta(a, b) as X / (X + Y) with X ~ Gamma(a), Y ~ Gamma(b). */
export function sampleBeta(rng: Rng, a: number, b: number): number {
  const x = sampleGamma(rng, a), y = sampleGamma(rng, b);
  const s = x + y;
  return s > 0 ? x / s : 0.5;
}

/** Dirichlet(α…) as normalised independent Gammas. */
export function sampleDirichlet(rng: Rng, alphas: readonly number[]): number[] {
  const g = alphas.map((a) => sampleGamma(rng, a));
  const s = g.reduce((p, q) => p + q, 0);
  return s > 0 ? g.map((x) => x / s) : alphas.map(() => 1 / alphas.length);
}

// ================================================================================================
// Geometry
// ================================================================================================

export interface CropBox {
  top: number;
  left: number;
  height: number;
  width: number;
}

/** A plain crop (the box must lie inside the image). */
export function crop(img: RGBImage, box: CropBox): RGBImage {
  checkImage("crop", img);
  const { top, left, height: h, width: w } = box;
  if (
    !(top >= 0 && left >= 0 && h > 0 && w > 0 && top + h <= img.height && left + w <= img.width)
  ) {
    fail("crop", `box ${w}×${h} at (${left}, ${top}) outside the ${img.width}×${img.height} image`);
  }
  if (top === 0 && left === 0 && h === img.height && w === img.width) return img;
  const out = new Uint8Array(w * h * 3), W = img.width;
  for (let y = 0; y < h; y++) {
    const s = ((top + y) * W + left) * 3;
    out.set(img.data.subarray(s, s + w * 3), y * w * 3);
  }
  return { width: w, height: h, data: out };
}

/** torchvision's RandomResizedCrop.get_params (draws: per attempt 2 uniforms, then 2 ints). */
export function randomResizedCropParams(
  width: number,
  height: number,
  rng: Rng,
  scale: readonly [number, number] = [0.08, 1],
  ratio: readonly [number, number] = [3 / 4, 4 / 3],
): CropBox {
  if (!(scale[0] <= scale[1] && scale[0] > 0)) fail("randomResizedCrop", `bad scale [${scale}]`);
  if (!(ratio[0] <= ratio[1] && ratio[0] > 0)) fail("randomResizedCrop", `bad ratio [${ratio}]`);
  const area = width * height;
  const lr0 = Math.log(ratio[0]), lr1 = Math.log(ratio[1]);
  for (let attempt = 0; attempt < 10; attempt++) {
    const target = area * rng.uniform(scale[0], scale[1]);
    const aspect = Math.exp(rng.uniform(lr0, lr1));
    const w = roundHalfEven(Math.sqrt(target * aspect));
    const h = roundHalfEven(Math.sqrt(target / aspect));
    if (w > 0 && w <= width && h > 0 && h <= height) {
      const top = rng.int(height - h + 1);
      const left = rng.int(width - w + 1);
      return { top, left, height: h, width: w };
    }
  }
  // centre crop at the nearest allowed aspect ratio
  const inRatio = width / height;
  let w = width, h = height;
  if (inRatio < ratio[0]) h = roundHalfEven(w / ratio[0]);
  else if (inRatio > ratio[1]) w = roundHalfEven(h * ratio[1]);
  return {
    top: Math.floor((height - h) / 2),
    left: Math.floor((width - w) / 2),
    height: h,
    width: w,
  };
}

/** RandomResizedCrop to size×size with Pillow's bicubic resampling of the cropped region. */
export function randomResizedCrop(
  img: RGBImage,
  rng: Rng,
  size: number,
  scale: readonly [number, number] = [0.08, 1],
  ratio: readonly [number, number] = [3 / 4, 4 / 3],
): RGBImage {
  checkImage("randomResizedCrop", img);
  checkSize("randomResizedCrop", size);
  const box = randomResizedCropParams(img.width, img.height, rng, scale, ratio);
  return resizeBicubic(crop(img, box), size, size);
}

/** Left–right mirror. */
export function hflip(img: RGBImage): RGBImage {
  const { width: W, height: H, data } = img;
  const out = new Uint8Array(data.length);
  for (let y = 0; y < H; y++) {
    const row = y * W * 3;
    for (let x = 0; x < W; x++) {
      const s = row + x * 3, d = row + (W - 1 - x) * 3;
      out[d] = data[s];
      out[d + 1] = data[s + 1];
      out[d + 2] = data[s + 2];
    }
  }
  return { width: W, height: H, data: out };
}

/** RandomHorizontalFlip: flips when a uniform is below p (one draw). */
export function randomHFlip(img: RGBImage, rng: Rng, p = 0.5): RGBImage {
  return rng.uniform() < p ? hflip(img) : img;
}

/** RandomApply: applies `fn` unless p < u (one draw, then fn's own draws). */
export function randomApply(
  img: RGBImage,
  rng: Rng,
  p: number,
  fn: (img: RGBImage, rng: Rng) => RGBImage,
): RGBImage {
  return p < rng.uniform() ? img : fn(img, rng);
}

/**
 * Pillow's AFFINE transform with BILINEAR resampling and black fill (Geometry.c
 * ImagingGenericTransform): output pixel (x, y) samples the input at
 * (a0 (x+½) + a1 (y+½) + a2, a3 (x+½) + a4 (y+½) + a5); points outside the image are black,
 * neighbours outside it are clamped; the result is truncated.
 */
export function affineBilinear(
  img: RGBImage,
  m: readonly [number, number, number, number, number, number],
): RGBImage {
  const { width: W, height: H, data: src } = img;
  const [a0, a1, a2, a3, a4, a5] = m;
  const out = new Uint8Array(W * H * 3);
  for (let y = 0; y < H; y++) {
    const yc = y + 0.5;
    for (let x = 0; x < W; x++) {
      const xc = x + 0.5;
      let xin = a0 * xc + a1 * yc + a2;
      let yin = a3 * xc + a4 * yc + a5;
      if (!(xin >= 0 && xin < W && yin >= 0 && yin < H)) continue;
      xin -= 0.5;
      yin -= 0.5;
      const xi = Math.floor(xin), yi = Math.floor(yin);
      const dx = xin - xi, dy = yin - yi;
      const x0 = (xi < 0 ? 0 : xi >= W ? W - 1 : xi) * 3;
      const x1 = (xi + 1 < 0 ? 0 : xi + 1 >= W ? W - 1 : xi + 1) * 3;
      const r0 = (yi < 0 ? 0 : yi >= H ? H - 1 : yi) * W * 3;
      const hasR1 = yi + 1 >= 0 && yi + 1 < H;
      const r1 = (yi + 1) * W * 3;
      const o = (y * W + x) * 3;
      for (let c = 0; c < 3; c++) {
        const p = src[r0 + x0 + c];
        const v1 = p + (src[r0 + x1 + c] - p) * dx;
        let v2 = v1;
        if (hasR1) {
          const q = src[r1 + x0 + c];
          v2 = q + (src[r1 + x1 + c] - q) * dx;
        }
        out[o + c] = v1 + (v2 - v1) * dy; // Uint8Array store truncates (values lie in 0..255)
      }
    }
  }
  return { width: W, height: H, data: out };
}

/** Pillow's Image.rotate(degrees, BILINEAR) about the centre, counter-clockwise, same size. */
export function rotate(img: RGBImage, degrees: number): RGBImage {
  const angle = ((degrees % 360) + 360) % 360;
  if (angle === 0) return { ...img, data: img.data.slice() };
  const t = -(angle * Math.PI) / 180;
  const c = Math.cos(t), s = Math.sin(t);
  const cx = img.width / 2, cy = img.height / 2;
  // matrix[2], matrix[5] = transform(-cx, -cy) + centre, as Image.rotate computes them
  return affineBilinear(img, [c, s, c * -cx + s * -cy + cx, -s, c, -s * -cx + c * -cy + cy]);
}

// ================================================================================================
// Colour
// ================================================================================================

/** Pillow's convert("L"): ITU-R 601-2 luma in 16-bit fixed point. */
export function luma(img: RGBImage): Uint8Array {
  const d = img.data, n = img.width * img.height;
  const out = new Uint8Array(n);
  for (let i = 0, p = 0; i < n; i++, p += 3) {
    out[i] = (d[p] * 19595 + d[p + 1] * 38470 + d[p + 2] * 7471 + 0x8000) >> 16;
  }
  return out;
}

/** convert("L") replicated to three equal channels (torchvision's Grayscale(3) on PIL). */
export function grayscale(img: RGBImage): RGBImage {
  const l = luma(img), out = new Uint8Array(l.length * 3);
  for (let i = 0; i < l.length; i++) out[3 * i] = out[3 * i + 1] = out[3 * i + 2] = l[i];
  return { width: img.width, height: img.height, data: out };
}

/** RandomGrayscale: converts when a uniform is below p (one draw). */
export function randomGrayscale(img: RGBImage, rng: Rng, p = 0.1): RGBImage {
  return rng.uniform() < p ? grayscale(img) : img;
}

/** ImagingBlend on 8-bit values: trunc(sat(f32(in1 + f32(α (in2 − in1))))), α a C float. */
const blend1 = (in1: number, in2: number, alpha: number) => {
  const v = f32(in1 + f32(alpha * (in2 - in1)));
  return v <= 0 ? 0 : v >= 255 ? 255 : Math.trunc(v);
};

/** Blend of every pixel with a constant degenerate value, through a 256-entry table. */
function blendConst(img: RGBImage, level: number, factor: number): RGBImage {
  const alpha = f32(factor), lut = new Uint8Array(256);
  for (let v = 0; v < 256; v++) lut[v] = blend1(level, v, alpha);
  const d = img.data, out = new Uint8Array(d.length);
  for (let i = 0; i < d.length; i++) out[i] = lut[d[i]];
  return { width: img.width, height: img.height, data: out };
}

/** ImageEnhance.Brightness: blend with black. */
export function adjustBrightness(img: RGBImage, factor: number): RGBImage {
  return blendConst(img, 0, factor);
}

/** ImageEnhance.Contrast: blend with the L image's mean, rounded (int(mean + 0.5)). */
export function adjustContrast(img: RGBImage, factor: number): RGBImage {
  const l = luma(img);
  let s = 0;
  for (let i = 0; i < l.length; i++) s += l[i];
  return blendConst(img, Math.trunc(s / l.length + 0.5), factor);
}

/** ImageEnhance.Color: blend with the L image. */
export function adjustSaturation(img: RGBImage, factor: number): RGBImage {
  const alpha = f32(factor), l = luma(img), d = img.data, out = new Uint8Array(d.length);
  for (let i = 0, p = 0; i < l.length; i++, p += 3) {
    const g = l[i];
    out[p] = blend1(g, d[p], alpha);
    out[p + 1] = blend1(g, d[p + 1], alpha);
    out[p + 2] = blend1(g, d[p + 2], alpha);
  }
  return { width: img.width, height: img.height, data: out };
}

/**
 * torchvision's F_pil.adjust_hue: Pillow RGB → HSV (8-bit channels, Convert.c rgb2hsv), H +=
 * uint8(trunc(255 · factor)) modulo 256, HSV → RGB (Convert.c hsv2rgb). Lossy even for factor 0
 * (H is quantised to 8 bits), as in Pillow.
 */
export function adjustHue(img: RGBImage, factor: number): RGBImage {
  if (!(factor >= -0.5 && factor <= 0.5)) {
    fail("adjustHue", `factor must be in [-0.5, 0.5], got ${factor}`);
  }
  const shift = Math.trunc(factor * 255) & 255;
  const d = img.data, out = new Uint8Array(d.length);
  for (let p = 0; p < d.length; p += 3) {
    const r = d[p], g = d[p + 1], b = d[p + 2];
    const maxc = r > g ? (r > b ? r : b) : g > b ? g : b;
    const minc = r < g ? (r < b ? r : b) : g < b ? g : b;
    if (maxc === minc) {
      // s = 0: grey stays grey whatever the hue
      out[p] = out[p + 1] = out[p + 2] = maxc;
      continue;
    }
    // rgb2hsv (float where Pillow uses float)
    const cr = maxc - minc;
    const s = f32(cr / maxc);
    const rc = f32((maxc - r) / cr), gc = f32((maxc - g) / cr), bc = f32((maxc - b) / cr);
    let h: number;
    if (r === maxc) h = f32(bc - gc);
    else if (g === maxc) h = f32(2.0 + rc - bc);
    else h = f32(4.0 + gc - rc);
    h = f32((h / 6.0 + 1.0) % 1.0);
    const uh = (clip8(Math.trunc(h * 255.0)) + shift) & 255;
    const us = clip8(Math.trunc(s * 255.0));
    const v = maxc;
    if (us === 0) {
      out[p] = out[p + 1] = out[p + 2] = v;
      continue;
    }
    // hsv2rgb
    const i = Math.floor((uh * 6.0) / 255.0);
    const f = f32((uh * 6.0) / 255.0 - i);
    const fs = f32(us / 255.0);
    const pp = clip8(Math.round(v * (1.0 - fs)));
    const qq = clip8(Math.round(v * (1.0 - f32(fs * f))));
    const tt = clip8(Math.round(v * (1.0 - fs * (1.0 - f))));
    let R: number, G: number, B: number;
    switch (i % 6) {
      case 0:
        R = v, G = tt, B = pp;
        break;
      case 1:
        R = qq, G = v, B = pp;
        break;
      case 2:
        R = pp, G = v, B = tt;
        break;
      case 3:
        R = pp, G = qq, B = v;
        break;
      case 4:
        R = tt, G = pp, B = v;
        break;
      default:
        R = v, G = pp, B = qq;
    }
    out[p] = R;
    out[p + 1] = G;
    out[p + 2] = B;
  }
  return { width: img.width, height: img.height, data: out };
}

export interface ColorJitterStrength {
  brightness?: number;
  contrast?: number;
  saturation?: number;
  hue?: number;
}

/**
 * torchvision's ColorJitter(b, c, s, h): factors ~ U(max(0, 1 − x), 1 + x) (hue ~ U(−h, h));
 * a zero strength disables that adjustment. Draws: the order (Fisher–Yates over 4, in place of
 * torch.randperm), then one uniform per enabled adjustment in the order b, c, s, h.
 */
export function colorJitter(img: RGBImage, rng: Rng, strength: ColorJitterStrength): RGBImage {
  const { brightness = 0, contrast = 0, saturation = 0, hue = 0 } = strength;
  for (const [k, v] of Object.entries({ brightness, contrast, saturation })) {
    if (!(v >= 0)) fail("colorJitter", `${k} must be ≥ 0, got ${v}`);
  }
  if (!(hue >= 0 && hue <= 0.5)) fail("colorJitter", `hue must be in [0, 0.5], got ${hue}`);
  const order = rng.shuffle([0, 1, 2, 3]);
  const range = (x: number) => x ? rng.uniform(Math.max(0, 1 - x), 1 + x) : null;
  const factors = [
    range(brightness),
    range(contrast),
    range(saturation),
    hue ? rng.uniform(-hue, hue) : null,
  ];
  const fns = [adjustBrightness, adjustContrast, adjustSaturation, adjustHue];
  for (const k of order) {
    const f = factors[k];
    if (f !== null) img = fns[k](img, f);
  }
  return img;
}

// ================================================================================================
// Gaussian blur (Pillow's BoxBlur.c)
// ================================================================================================

/** Pillow's _gaussian_blur_radius: the box radius whose `passes` boxes have variance σ². */
export function pilBoxRadius(sigma: number, passes = 3): number {
  const r = f32(sigma);
  const sigma2 = f32(f32(r * r) / passes);
  const L = f32(Math.sqrt(12.0 * sigma2 + 1.0));
  const l = f32(Math.floor((L - 1.0) / 2.0));
  let a = f32(f32(2 * l + 1) * f32(f32(l * f32(l + 1)) - f32(3 * sigma2)));
  a = f32(a / f32(6 * f32(sigma2 - f32(f32(l + 1) * f32(l + 1)))));
  return f32(l + a);
}

/**
 * One extended box pass along x: per output sample, 2⌊r⌋ + 1 full-weight samples plus the next
 * one on each side at the fractional weight, edges replicated, 8.24 fixed point rounded (Pillow's
 * ImagingLineBoxBlur32, written with clamped indices: the same sums).
 */
function boxPassX(
  src: Uint8Array,
  dst: Uint8Array,
  W: number,
  H: number,
  r: number,
  ww: number,
  fw: number,
) {
  const last = W - 1;
  for (let y = 0; y < H; y++) {
    const row = y * W * 3;
    let a0 = 0, a1 = 0, a2 = 0;
    for (let k = -r - 1; k < r; k++) { // the window centred on −1
      const p = row + (k < 0 ? 0 : k > last ? last : k) * 3;
      a0 += src[p], a1 += src[p + 1], a2 += src[p + 2];
    }
    for (let x = 0; x < W; x++) {
      const lo = x - r - 1, hi = x + r;
      const pl = row + (lo < 0 ? 0 : lo) * 3;
      const ph = row + (hi > last ? last : hi) * 3;
      const pf = row + (hi + 1 > last ? last : hi + 1) * 3;
      a0 += src[ph] - src[pl], a1 += src[ph + 1] - src[pl + 1], a2 += src[ph + 2] - src[pl + 2];
      const o = row + x * 3;
      // Uint8Array stores truncate: (bulk + 2^23) >> 24
      dst[o] = (a0 * ww + (src[pl] + src[pf]) * fw + 0x800000) * 2 ** -24;
      dst[o + 1] = (a1 * ww + (src[pl + 1] + src[pf + 1]) * fw + 0x800000) * 2 ** -24;
      dst[o + 2] = (a2 * ww + (src[pl + 2] + src[pf + 2]) * fw + 0x800000) * 2 ** -24;
    }
  }
}

/** The same pass along y, row by row with one accumulator per column and channel. */
function boxPassY(
  src: Uint8Array,
  dst: Uint8Array,
  acc: Int32Array,
  W: number,
  H: number,
  r: number,
  ww: number,
  fw: number,
) {
  const last = H - 1, L = W * 3;
  acc.fill(0);
  for (let k = -r - 1; k < r; k++) {
    const p = (k < 0 ? 0 : k > last ? last : k) * L;
    for (let i = 0; i < L; i++) acc[i] += src[p + i];
  }
  for (let y = 0; y < H; y++) {
    const lo = y - r - 1, hi = y + r;
    const pl = (lo < 0 ? 0 : lo) * L;
    const ph = (hi > last ? last : hi) * L;
    const pf = (hi + 1 > last ? last : hi + 1) * L;
    const o = y * L;
    for (let i = 0; i < L; i++) {
      const left = src[pl + i];
      const a = (acc[i] += src[ph + i] - left);
      dst[o + i] = (a * ww + (left + src[pf + i]) * fw + 0x800000) * 2 ** -24;
    }
  }
}

/** Pillow's ImageFilter.GaussianBlur(radius = σ): 3 extended box passes along x, then along y. */
export function gaussianBlur(img: RGBImage, sigma: number): RGBImage {
  checkImage("gaussianBlur", img);
  if (!(sigma >= 0)) fail("gaussianBlur", `σ must be ≥ 0, got ${sigma}`);
  const { width: W, height: H } = img;
  if (sigma === 0) return { width: W, height: H, data: img.data.slice() };
  const fr = pilBoxRadius(sigma, 3);
  const r = Math.trunc(fr);
  const ww = Math.trunc(f32(16777216 / f32(f32(fr * 2) + 1)));
  const fw = Math.floor((16777216 - (r * 2 + 1) * ww) / 2);
  // ping-pong between two buffers; the caller's image is only read
  const bufs = [new Uint8Array(img.data.length), new Uint8Array(img.data.length)];
  const acc = new Int32Array(W * 3);
  let src = img.data;
  for (let pass = 0; pass < 6; pass++) {
    const dst = bufs[pass & 1];
    if (pass < 3) boxPassX(src, dst, W, H, r, ww, fw);
    else boxPassY(src, dst, acc, W, H, r, ww, fw);
    src = dst;
  }
  return { width: W, height: H, data: src };
}

/** MoCo v3's GaussianBlur([0.1, 2]): σ ~ U(lo, hi) (one draw). */
export function randomGaussianBlur(img: RGBImage, rng: Rng, lo = 0.1, hi = 2): RGBImage {
  return gaussianBlur(img, rng.uniform(lo, hi));
}

// ================================================================================================
// AugMix
// ================================================================================================

function lutApply(img: RGBImage, luts: Uint8Array[]): RGBImage {
  const d = img.data, out = new Uint8Array(d.length);
  const [l0, l1, l2] = luts;
  for (let p = 0; p < d.length; p += 3) {
    out[p] = l0[d[p]];
    out[p + 1] = l1[d[p + 1]];
    out[p + 2] = l2[d[p + 2]];
  }
  return { width: img.width, height: img.height, data: out };
}

function histograms(img: RGBImage): Uint32Array[] {
  const h = [new Uint32Array(256), new Uint32Array(256), new Uint32Array(256)];
  const d = img.data;
  for (let p = 0; p < d.length; p += 3) {
    h[0][d[p]]++;
    h[1][d[p + 1]]++;
    h[2][d[p + 2]]++;
  }
  return h;
}

/** ImageOps.autocontrast (cutoff 0): each channel's [lo, hi] stretched to [0, 255]. */
export function autocontrast(img: RGBImage): RGBImage {
  return lutApply(
    img,
    histograms(img).map((h) => {
      let lo = 0, hi = 255;
      while (lo < 256 && !h[lo]) lo++;
      while (hi >= 0 && !h[hi]) hi--;
      const lut = new Uint8Array(256);
      if (hi <= lo) {
        for (let i = 0; i < 256; i++) lut[i] = i;
      } else {
        const scale = 255.0 / (hi - lo), offset = -lo * scale;
        for (let i = 0; i < 256; i++) lut[i] = clip8(Math.trunc(i * scale + offset));
      }
      return lut;
    }),
  );
}

/** ImageOps.equalize: per channel, step = (count − last non-empty bin) // 255. */
export function equalize(img: RGBImage): RGBImage {
  return lutApply(
    img,
    histograms(img).map((h) => {
      const lut = new Uint8Array(256);
      let total = 0, lastNz = 0, nz = 0;
      for (let i = 0; i < 256; i++) {
        if (h[i]) total += h[i], lastNz = h[i], nz++;
      }
      const step = nz <= 1 ? 0 : Math.floor((total - lastNz) / 255);
      if (!step) {
        for (let i = 0; i < 256; i++) lut[i] = i;
      } else {
        let n = Math.floor(step / 2);
        for (let i = 0; i < 256; i++) {
          lut[i] = Math.min(255, Math.floor(n / step));
          n += h[i];
        }
      }
      return lut;
    }),
  );
}

/** ImageOps.posterize: keep the top `bits` bits. */
export function posterize(img: RGBImage, bits: number): RGBImage {
  const mask = ~((1 << (8 - bits)) - 1) & 255, lut = new Uint8Array(256);
  for (let i = 0; i < 256; i++) lut[i] = i & mask;
  return lutApply(img, [lut, lut, lut]);
}

/** ImageOps.solarize: invert values ≥ threshold. */
export function solarize(img: RGBImage, threshold: number): RGBImage {
  const lut = new Uint8Array(256);
  for (let i = 0; i < 256; i++) lut[i] = i < threshold ? i : 255 - i;
  return lutApply(img, [lut, lut, lut]);
}

/** AugMix's level sampling and magnitude mappings. */
const sampleLevel = (rng: Rng, n: number) => rng.uniform(0.1, n);
const intParameter = (level: number, maxval: number) => Math.trunc((level * maxval) / 10);
const floatParameter = (level: number, maxval: number) => (level * maxval) / 10;
const signed = (rng: Rng, v: number) => (rng.uniform() > 0.5 ? -v : v);

export type AugMixOp = (img: RGBImage, rng: Rng, severity: number) => RGBImage;

/** AugMix's `augmentations` list, in its order (IMAGE_SIZE = the image's width). */
export const AUGMIX_OPS: Record<string, AugMixOp> = {
  autocontrast: (img) => autocontrast(img),
  equalize: (img) => equalize(img),
  posterize: (img, rng, sev) => posterize(img, 4 - intParameter(sampleLevel(rng, sev), 4)),
  rotate: (img, rng, sev) => rotate(img, signed(rng, intParameter(sampleLevel(rng, sev), 30))),
  solarize: (img, rng, sev) => solarize(img, 256 - intParameter(sampleLevel(rng, sev), 256)),
  shear_x: (img, rng, sev) => {
    const l = signed(rng, floatParameter(sampleLevel(rng, sev), 0.3));
    return affineBilinear(img, [1, l, 0, 0, 1, 0]);
  },
  shear_y: (img, rng, sev) => {
    const l = signed(rng, floatParameter(sampleLevel(rng, sev), 0.3));
    return affineBilinear(img, [1, 0, 0, l, 1, 0]);
  },
  translate_x: (img, rng, sev) => {
    const l = signed(rng, intParameter(sampleLevel(rng, sev), img.width / 3));
    return affineBilinear(img, [1, 0, l, 0, 1, 0]);
  },
  translate_y: (img, rng, sev) => {
    const l = signed(rng, intParameter(sampleLevel(rng, sev), img.width / 3));
    return affineBilinear(img, [1, 0, 0, 0, 1, l]);
  },
};

export interface AugMixOptions {
  /** Number of chains (mixture_width), default 3. */
  width?: number;
  /** Ops per chain; < 0 draws 1–3 per chain (default −1). */
  depth?: number;
  /** default 1 */
  severity?: number;
  /** Dirichlet and Beta concentration (aug_prob_coeff), default 1. */
  alpha?: number;
  /** Op names from AUGMIX_OPS (default all nine). */
  ops?: readonly string[];
}

/** The pieces AugMix blends: the clean image, each chain's image and the weights. */
export interface AugMixParts {
  clean: RGBImage;
  chains: RGBImage[];
  /** Chain weights (float32, sum ≈ 1). */
  weights: number[];
  /** Weight of the chains' mix against the clean image (float32). */
  m: number;
}

/** Draws AugMix's weights and chains (draws: Dirichlet, Beta, then per chain depth and ops). */
export function augmixParts(img: RGBImage, rng: Rng, opts: AugMixOptions = {}): AugMixParts {
  checkImage("augmix", img);
  const { width = 3, depth = -1, severity = 1, alpha = 1 } = opts;
  const names = opts.ops ?? Object.keys(AUGMIX_OPS);
  const ops = names.map((n) => AUGMIX_OPS[n] ?? fail("augmix", `unknown op ${JSON.stringify(n)}`));
  if (!(Number.isInteger(width) && width >= 1)) fail("augmix", `width must be ≥ 1, got ${width}`);
  if (!ops.length) fail("augmix", "no ops");
  const weights = sampleDirichlet(rng, Array(width).fill(alpha)).map(f32);
  const m = f32(sampleBeta(rng, alpha, alpha));
  const chains: RGBImage[] = [];
  for (let i = 0; i < width; i++) {
    let aug = img;
    const d = depth > 0 ? depth : 1 + rng.int(3);
    for (let k = 0; k < d; k++) aug = ops[rng.int(ops.length)](aug, rng, severity);
    chains.push(aug);
  }
  return { clean: img, chains, weights, m };
}

/**
 * `(1 − m) · pre(clean) + m · Σ w_i pre(chain_i)` in float32 (accumulated chain by chain as the
 * reference does), pre = ToTensor + CLIP Normalize; written as [3, H, W] at `offset` in `out`.
 */
export function augmixMix(parts: AugMixParts, out?: Float32Array, offset = 0): Float32Array {
  const { clean, chains, weights, m } = parts;
  const n = 3 * clean.width * clean.height;
  const dst = out ?? new Float32Array(n);
  if (dst.length < offset + n) fail("augmix", `output too small (${dst.length} < ${offset + n})`);
  const mix = new Float32Array(n), pre = new Float32Array(n);
  chains.forEach((img, i) => {
    toNormalizedCHW(img, pre, 0);
    const w = weights[i];
    for (let j = 0; j < n; j++) mix[j] = mix[j] + f32(w * pre[j]);
  });
  toNormalizedCHW(clean, pre, 0);
  const a = f32(1 - m);
  for (let j = 0; j < n; j++) dst[offset + j] = f32(a * pre[j]) + f32(m * mix[j]);
  return dst;
}

/** AugMix of an image, CLIP-normalised [3, H, W]. */
export function augmix(
  img: RGBImage,
  rng: Rng,
  opts: AugMixOptions = {},
  out?: Float32Array,
  offset = 0,
): Float32Array {
  return augmixMix(augmixParts(img, rng, opts), out, offset);
}

// ================================================================================================
// Views
// ================================================================================================

/**
 * A view: image → CLIP-normalised Float32Array [3, size, size], written at `offset` in `out`
 * when given (the batch buffer), which is then what it returns.
 */
export type ViewFn = (
  img: RGBImage,
  rng: Rng,
  size: number,
  out?: Float32Array,
  offset?: number,
  opts?: ViewOptions,
) => Float32Array;

/** Settings of the training views. */
export interface ViewOptions {
  /**
   * The area range of the training views' RandomResizedCrop (Dassl's INPUT.RRCROP_SCALE): default
   * (0.08, 1), as CoOp, CoCoOp, MaPLe and GOPro train on ImageNet-sized photos. Tip-Adapter's
   * cache view keeps its own (0.5, 1).
   */
  cropScale?: readonly [number, number];
}

/** torchvision's and Dassl's RandomResizedCrop area range. */
export const RRC_SCALE: readonly [number, number] = [0.08, 1];

/** A usable crop area range: two fractions 0 < min ≤ max ≤ 1. */
export const isCropScale = (c: readonly number[]): c is readonly [number, number] =>
  c.length === 2 && c[0] > 0 && c[0] <= c[1] && c[1] <= 1;

const finish = (img: RGBImage, out?: Float32Array, offset = 0) => toNormalizedCHW(img, out, offset);

/** CoOp/GOPro training transform: RandomResizedCrop(0.08–1, bicubic), flip p = 0.5. */
export const trainView: ViewFn = (img, rng, size, out, offset, opts) =>
  finish(
    randomHFlip(randomResizedCrop(img, rng, size, opts?.cropScale ?? RRC_SCALE), rng),
    out,
    offset,
  );

/**
 * GOPro's MoCo-v3 view: RandomResizedCrop(0.08–1; bicubic here, MoCo v3's default is bilinear),
 * ColorJitter(0.4, 0.4, 0.2, 0.1) with p = 0.8, grayscale p = 0.2, Pillow Gaussian blur
 * σ ~ U(0.1, 2) with p = 1, flip p = 0.5; built from the decoded image, CLIP statistics.
 */
export const mocoView: ViewFn = (img, rng, size, out, offset, opts) => {
  let x = randomResizedCrop(img, rng, size, opts?.cropScale ?? RRC_SCALE);
  x = randomApply(
    x,
    rng,
    0.8,
    (y, r) => colorJitter(y, r, { brightness: 0.4, contrast: 0.4, saturation: 0.2, hue: 0.1 }),
  );
  x = randomGrayscale(x, rng, 0.2);
  x = randomApply(x, rng, 1.0, (y, r) => randomGaussianBlur(y, r, 0.1, 2));
  x = randomHFlip(x, rng);
  return finish(x, out, offset);
};

/** GOPro's AugMix view of this image: RandomResizedCrop(0.08–1) + flip, then AugMix(3, 1–3, 1). */
export const augmixView: ViewFn = (img, rng, size, out, offset, opts) =>
  augmix(
    randomHFlip(randomResizedCrop(img, rng, size, opts?.cropScale ?? RRC_SCALE), rng),
    rng,
    {},
    out,
    offset,
  );

/** Tip-Adapter's cache-building transform: RandomResizedCrop(0.5–1, bicubic), flip p = 0.5. */
export const cacheView: ViewFn = (img, rng, size, out, offset) =>
  finish(randomHFlip(randomResizedCrop(img, rng, size, [0.5, 1]), rng), out, offset);

/** CLIP's test transform (deterministic; the rng is not used). */
export const testView: ViewFn = (img, _rng, size, out, offset) =>
  clipPreprocess(img, size, out, offset);

export type ViewKind = "orig" | "moco" | "augmix" | "cache" | "test";

export const VIEWS: Record<ViewKind, ViewFn> = {
  orig: trainView,
  moco: mocoView,
  augmix: augmixView,
  cache: cacheView,
  test: testView,
};

/** The view's code in the rng derivation. */
export const VIEW_CODES: Record<ViewKind, number> = {
  orig: 1,
  moco: 2,
  augmix: 3,
  cache: 4,
  test: 5,
};

/** Domain-separation tag of the derivation ("AUG1"). */
const VIEW_TAG = 0x41554731;

/**
 * The seed of the generator for image `id` at `step` in `view`:
 *   w = Philox4x32-10(counter = [id, step, VIEW_CODES[view], 0x41554731],
 *                     key = [seed mod 2^32, ⌊seed / 2^32⌋])
 *   viewSeed = w[0] + 2^32 · (w[1] mod 2^21)          (a 53-bit integer)
 * and the generator is hostRng(viewSeed) from stream position 0. So an image's view depends only
 * on (seed, step, id, view) and its own pixels: not on the batch's other images, their order,
 * or which other views are made.
 */
export function viewSeed(seed: number, step: number, id: number, view: ViewKind): number {
  if (!Number.isSafeInteger(seed) || seed < 0) {
    fail("viewSeed", `seed must be a non-negative safe integer, got ${seed}`);
  }
  for (const [k, v] of [["step", step], ["id", id]] as const) {
    if (!(Number.isInteger(v) && v >= 0 && v < 2 ** 32)) {
      fail("viewSeed", `${k} must be an integer in [0, 2^32), got ${v}`);
    }
  }
  const code = VIEW_CODES[view] ?? fail("viewSeed", `unknown view ${JSON.stringify(view)}`);
  const w = philox4x32([id, step, code, VIEW_TAG], seedKey(seed));
  return w[0] + 2 ** 32 * (w[1] & 0x1fffff);
}

/** hostRng(viewSeed(seed, step, id, view)). */
export function viewRng(seed: number, step: number, id: number, view: ViewKind): Rng {
  return new HostRng(viewSeed(seed, step, id, view));
}

/**
 * A batch's views: for each requested view a Float32Array [B, 3, size, size] (in `views` order),
 * image i drawn with viewRng(seed, step, ids[i], view). `ids` (default: the batch positions)
 * should be the images' dataset indices, so that an image's views do not depend on which batch
 * it lands in or where.
 */
export function makeViews(
  images: readonly RGBImage[],
  views: readonly ViewKind[],
  size: number,
  seed: number,
  step: number,
  ids?: readonly number[],
  opts?: ViewOptions,
): Float32Array[] {
  checkSize("makeViews", size);
  const c = opts?.cropScale;
  if (c && !isCropScale(c)) fail("makeViews", `cropScale must be 0 < min ≤ max ≤ 1, got [${c}]`);
  if (ids && ids.length !== images.length) {
    fail("makeViews", `${ids.length} ids for ${images.length} images`);
  }
  images.forEach((img, i) => checkImage(`makeViews (image ${i})`, img));
  const per = 3 * size * size;
  return views.map((view) => {
    const fn = VIEWS[view] ?? fail("makeViews", `unknown view ${JSON.stringify(view)}`);
    const out = new Float32Array(images.length * per);
    images.forEach((img, i) =>
      fn(img, viewRng(seed, step, ids ? ids[i] : i, view), size, out, i * per, opts)
    );
    return out;
  });
}
