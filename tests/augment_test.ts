// Augmentations are host-only: no engine setup needed.
import assert from "node:assert/strict";
import { sharedDir } from "./util.ts";
import * as A from "../pipeline/augment.ts";
import { hostRng } from "../engine/ops/random.ts";
import { philox4x32 } from "../kernels/random.ts";
import { loadImageSync, type RGBImage } from "../model/image.ts";
import {
  centerCrop,
  CLIP_MEAN,
  CLIP_STD,
  clipPreprocess,
  resizeBicubic,
  toNormalizedCHW,
} from "../model/preprocess.ts";

/** A smooth colourful image with some texture, deterministic. */
function synth(w: number, h: number, seed: number): RGBImage {
  const r = hostRng(seed);
  const fx = 1 + r.uniform(0, 3), fy = 1 + r.uniform(0, 3), ph = r.uniform(0, 6);
  const data = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const p = (y * w + x) * 3;
      data[p] = 128 + 100 * Math.sin((fx * x) / w * 6 + ph) + r.int(20);
      data[p + 1] = 128 + 100 * Math.cos((fy * y) / h * 6 - ph) + r.int(20);
      data[p + 2] = ((x * 255) / w + (y * 100) / h) % 256;
    }
  }
  return { width: w, height: h, data };
}

const ALL: A.ViewKind[] = ["orig", "moco", "augmix", "cache", "test"];
const same = (a: ArrayLike<number>, b: ArrayLike<number>) =>
  a.length === b.length && Array.prototype.every.call(a, (v: number, i: number) => v === b[i]);

function assertNormalisedRange(x: Float32Array, size: number, msg: string) {
  const n = size * size;
  for (let i = 0; i < x.length; i++) {
    const c = Math.floor(i / n) % 3;
    const lo = (0 - CLIP_MEAN[c]) / CLIP_STD[c] - 1e-5,
      hi = (1 - CLIP_MEAN[c]) / CLIP_STD[c] + 1e-5;
    if (!(x[i] >= lo && x[i] <= hi)) {
      assert.fail(`${msg}: element ${i} = ${x[i]} outside [${lo}, ${hi}]`);
    }
  }
}

Deno.test("makeViews: same seed gives identical bytes; seed, step, id and view all matter", () => {
  const imgs = [synth(40, 30, 1), synth(25, 37, 2), synth(33, 33, 3)];
  const a = A.makeViews(imgs, ALL, 16, 7, 3);
  const b = A.makeViews(imgs, ALL, 16, 7, 3);
  ALL.forEach((v, k) => assert.ok(same(a[k], b[k]), `${v} not reproducible`));
  const c = A.makeViews(imgs, ALL, 16, 8, 3);
  const d = A.makeViews(imgs, ALL, 16, 7, 4);
  ALL.forEach((v, k) => {
    if (v === "test") {
      assert.ok(same(a[k], c[k]) && same(a[k], d[k]), "the test view is deterministic");
    } else {
      assert.ok(!same(a[k], c[k]), `${v}: another seed gave the same views`);
      assert.ok(!same(a[k], d[k]), `${v}: another step gave the same views`);
    }
  });
  // the derivation is the documented Philox call
  const w = philox4x32([5, 9, A.VIEW_CODES.moco, 0x41554731], [7, 0]);
  assert.equal(A.viewSeed(7, 9, 5, "moco"), w[0] + 2 ** 32 * (w[1] & 0x1fffff));
  const seeds = new Set(
    [[7, 9, 5, "moco"], [7, 9, 5, "orig"], [7, 9, 6, "moco"], [7, 10, 5, "moco"], [8, 9, 5, "moco"]]
      .map(([s, t, i, v]) => A.viewSeed(s as number, t as number, i as number, v as A.ViewKind)),
  );
  assert.equal(seeds.size, 5);
});

Deno.test("makeViews: cropScale sets the training views' crop area; the default is (0.08, 1)", () => {
  const imgs = [synth(40, 30, 1), synth(25, 37, 2)];
  const crops = ["orig", "moco", "augmix"] as A.ViewKind[];
  const dflt = A.makeViews(imgs, crops, 16, 7, 3);
  const same08 = A.makeViews(imgs, crops, 16, 7, 3, undefined, { cropScale: [0.08, 1] });
  const full = A.makeViews(imgs, crops, 16, 7, 3, undefined, { cropScale: [1, 1] });
  crops.forEach((v, k) => {
    assert.ok(same(dflt[k], same08[k]), `${v}: the default is not (0.08, 1)`);
    assert.ok(!same(dflt[k], full[k]), `${v}: cropScale changed nothing`);
  });
  // full area, square image, aspect ratio fixed: the train view is the image itself, maybe flipped
  const sq = synth(16, 16, 9);
  const box = A.randomResizedCropParams(16, 16, hostRng(1), [1, 1], [1, 1]);
  assert.deepEqual([box.width, box.height], [16, 16]);
  for (const bad of [[0, 1], [0.6, 0.5], [0.5, 1.5]] as [number, number][]) {
    assert.throws(
      () => A.makeViews([sq], ["orig"], 16, 1, 1, undefined, { cropScale: bad }),
      /cropScale must be 0 < min ≤ max ≤ 1/,
    );
  }
});

Deno.test("views have shape [B, 3, R, R] and values in CLIP's normalised range", () => {
  const imgs = [synth(50, 41, 4), synth(19, 23, 5)]; // one smaller than R: crops upsample
  for (const size of [1, 24, 31]) {
    const outs = A.makeViews(imgs, ALL, size, 1, 0);
    assert.equal(outs.length, ALL.length);
    outs.forEach((x, k) => {
      assert.equal(x.length, 2 * 3 * size * size, `${ALL[k]} length`);
      assertNormalisedRange(x, size, `${ALL[k]} R=${size}`);
    });
  }
  const single = A.trainView(imgs[0], hostRng(3), 12);
  assert.equal(single.length, 3 * 12 * 12);
  assert.deepEqual(A.makeViews([], ["orig"], 8, 0, 0), [new Float32Array(0)]);
});

Deno.test("an image's views depend on its own pixels and id only (AugMix defect fixed)", () => {
  const [a, b, c] = [synth(30, 30, 11), synth(30, 30, 12), synth(30, 30, 13)];
  const R = 20, per = 3 * R * R;
  const [ab] = A.makeViews([a, b], ["augmix"], R, 5, 2);
  const [cb] = A.makeViews([c, b], ["augmix"], R, 5, 2);
  const ownB = A.augmixView(b, A.viewRng(5, 2, 1, "augmix"), R);
  const fromA = A.augmixView(a, A.viewRng(5, 2, 1, "augmix"), R);
  assert.ok(same(ab.subarray(per), ownB), "image 1's AugMix view is not built from image 1");
  assert.ok(!same(ab.subarray(per), fromA), "image 1's AugMix view equals one built from image 0");
  assert.ok(same(ab.subarray(per), cb.subarray(per)), "image 1's view changed with image 0");
  assert.ok(!same(ab.subarray(0, per), cb.subarray(0, per)), "image 0's view ignores its pixels");
  // with dataset ids, reordering the batch permutes the views
  for (const v of ["orig", "moco", "augmix", "cache"] as const) {
    const [x] = A.makeViews([a, b], [v], R, 5, 2, [40, 7]);
    const [y] = A.makeViews([b, a], [v], R, 5, 2, [7, 40]);
    assert.ok(same(x.subarray(0, per), y.subarray(per)), `${v}: order changed image a's view`);
    assert.ok(same(x.subarray(per), y.subarray(0, per)), `${v}: order changed image b's view`);
  }
});

Deno.test("flip is an exact mirror; randomHFlip obeys p", () => {
  const img = synth(7, 5, 21);
  const f = A.hflip(img);
  for (let y = 0; y < 5; y++) {
    for (let x = 0; x < 7; x++) {
      for (let c = 0; c < 3; c++) {
        assert.equal(f.data[(y * 7 + x) * 3 + c], img.data[(y * 7 + 6 - x) * 3 + c]);
      }
    }
  }
  assert.ok(same(A.hflip(f).data, img.data));
  assert.ok(same(A.randomHFlip(img, hostRng(1), 1).data, f.data));
  assert.ok(same(A.randomHFlip(img, hostRng(1), 0).data, img.data));
});

Deno.test("grayscale is Pillow's L with equal channels", () => {
  const px: RGBImage = {
    width: 4,
    height: 1,
    data: Uint8Array.from([255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255]),
  };
  assert.deepEqual([...A.luma(px)], [76, 150, 29, 255]);
  const g = A.grayscale(synth(9, 8, 22));
  for (let p = 0; p < g.data.length; p += 3) {
    assert.ok(g.data[p] === g.data[p + 1] && g.data[p] === g.data[p + 2], `pixel ${p / 3}`);
  }
  const img = synth(9, 8, 22);
  assert.ok(same(A.randomGrayscale(img, hostRng(0), 1).data, g.data));
  assert.ok(same(A.randomGrayscale(img, hostRng(0), 0).data, img.data));
});

Deno.test("random resized crop: scale 1, ratio 1 is a plain resize (square) or the centre crop", () => {
  const sq = synth(37, 37, 31);
  for (const R of [16, 37, 50]) {
    const out = A.randomResizedCrop(sq, hostRng(R), R, [1, 1], [1, 1]);
    assert.ok(same(out.data, resizeBicubic(sq, R, R).data), `R=${R}`);
  }
  // 30×20 with ratio 1 and the whole area never fits: torchvision's centre fallback
  const wide = synth(30, 20, 32);
  assert.deepEqual(A.randomResizedCropParams(30, 20, hostRng(0), [1, 1], [1, 1]), {
    top: 0,
    left: 5,
    height: 20,
    width: 20,
  });
  const out = A.randomResizedCrop(wide, hostRng(0), 12, [1, 1], [1, 1]);
  assert.ok(same(out.data, resizeBicubic(centerCrop(wide, 20, 20), 12, 12).data));
  // random boxes always lie inside the image with a bounded aspect ratio
  const r = hostRng(9);
  for (let i = 0; i < 500; i++) {
    const b = A.randomResizedCropParams(64, 48, r);
    assert.ok(b.top >= 0 && b.left >= 0 && b.top + b.height <= 48 && b.left + b.width <= 64);
    assert.ok(b.width * b.height >= 0.07 * 64 * 48 || b.width / b.height <= 4 / 3 + 0.1);
  }
});

Deno.test("colour jitter: zero strengths and neutral factors are the identity", () => {
  const img = synth(21, 17, 41);
  const r = hostRng(4);
  assert.ok(same(A.colorJitter(img, r, {}).data, img.data));
  assert.ok(
    same(
      A.colorJitter(img, r, { brightness: 0, contrast: 0, saturation: 0, hue: 0 }).data,
      img.data,
    ),
  );
  for (const f of [A.adjustBrightness, A.adjustContrast, A.adjustSaturation]) {
    assert.ok(same(f(img, 1).data, img.data), f.name);
  }
  // the degenerate images
  assert.ok(A.adjustBrightness(img, 0).data.every((v) => v === 0));
  assert.ok(same(A.adjustSaturation(img, 0).data, A.grayscale(img).data));
  const flat = A.adjustContrast(img, 0).data;
  assert.ok(flat.every((v) => v === flat[0]));
  // brightness 1.5 of 100 = 150, saturated at 255
  const two: RGBImage = {
    width: 2,
    height: 1,
    data: Uint8Array.from([100, 100, 100, 200, 200, 200]),
  };
  assert.deepEqual([...A.adjustBrightness(two, 1.5).data], [150, 150, 150, 255, 255, 255]);
  // hue 0 only quantises H to 8 bits (Pillow): a few levels at most; greys unchanged
  const h0 = A.adjustHue(img, 0).data;
  for (let i = 0; i < h0.length; i++) {
    assert.ok(Math.abs(h0[i] - img.data[i]) <= 6, `hue 0 at ${i}`);
  }
  assert.ok(same(A.adjustHue(two, 0.3).data, two.data));
  // hue 0.5 of pure red: H = 0 + uint8(127.5) = 127, sector 2 with f = 762/255 − 2, so
  // t = round(255 f) = 252 (cyan but for H's quantisation); 1/3 lands exactly on green
  const red: RGBImage = { width: 1, height: 1, data: Uint8Array.from([255, 0, 0]) };
  assert.deepEqual([...A.adjustHue(red, 0.5).data], [0, 255, 252]);
  assert.deepEqual([...A.adjustHue(red, 1 / 3).data], [0, 255, 0]);
  // a real jitter changes the image, reproducibly
  const s = { brightness: 0.4, contrast: 0.4, saturation: 0.2, hue: 0.1 };
  const j1 = A.colorJitter(img, hostRng(8), s), j2 = A.colorJitter(img, hostRng(8), s);
  assert.ok(same(j1.data, j2.data) && !same(j1.data, img.data));
});

Deno.test("Gaussian blur: tiny σ is near identity, constants stay constant, σ = 2 smooths", () => {
  const img = synth(23, 19, 51);
  const tiny = A.gaussianBlur(img, 0.1).data;
  let moved = 0;
  for (let i = 0; i < tiny.length; i++) {
    const d = Math.abs(tiny[i] - img.data[i]);
    assert.ok(d <= 2, `σ 0.1 moved element ${i} by ${d}`);
    moved += d;
  }
  assert.ok(moved / tiny.length < 0.2);
  const flat: RGBImage = { width: 6, height: 5, data: new Uint8Array(90).fill(77) };
  assert.ok(A.gaussianBlur(flat, 2).data.every((v) => v === 77));
  // a 1-pixel-wide line spreads with variance ≈ σ² (Pillow matches the variance exactly)
  const W = 41, line: RGBImage = { width: W, height: 3, data: new Uint8Array(W * 9) };
  for (let y = 0; y < 3; y++) line.data.fill(255, (y * W + 20) * 3, (y * W + 21) * 3);
  for (const s of [1, 2]) {
    const b = A.gaussianBlur(line, s).data;
    let m0 = 0, m2 = 0;
    for (let x = 0; x < W; x++) m0 += b[(W + x) * 3], m2 += b[(W + x) * 3] * (x - 20) ** 2;
    assert.ok(Math.abs(m0 - 255) < 12, `σ ${s} mass ${m0}`);
    assert.ok(Math.abs(Math.sqrt(m2 / m0) - s) < 0.15, `σ ${s}: measured ${Math.sqrt(m2 / m0)}`);
  }
  assert.equal(A.pilBoxRadius(2), 1.375);
  // against the per-sample definition of Pillow's pass, odd sizes and images thinner than the box
  const refBlur = (im: RGBImage, sigma: number) => {
    const fr = A.pilBoxRadius(sigma), r = Math.trunc(fr);
    const ww = Math.trunc(Math.fround(2 ** 24 / Math.fround(Math.fround(2 * fr) + 1)));
    const fw = Math.floor((2 ** 24 - (2 * r + 1) * ww) / 2);
    let d = Array.from(im.data);
    const { width: w, height: h } = im;
    const get = (x: number, y: number, c: number) =>
      d[((Math.min(h - 1, Math.max(0, y)) * w) + Math.min(w - 1, Math.max(0, x))) * 3 + c];
    for (let pass = 0; pass < 6; pass++) {
      const [dx, dy] = pass < 3 ? [1, 0] : [0, 1];
      const next = d.slice();
      for (let y = 0; y < h; y++) {
        for (let x = 0; x < w; x++) {
          for (let c = 0; c < 3; c++) {
            let s = 0;
            for (let k = -r; k <= r; k++) s += get(x + k * dx, y + k * dy, c);
            const far = get(x - (r + 1) * dx, y - (r + 1) * dy, c) +
              get(x + (r + 1) * dx, y + (r + 1) * dy, c);
            next[(y * w + x) * 3 + c] = Math.floor((s * ww + far * fw + 2 ** 23) / 2 ** 24);
          }
        }
      }
      d = next;
    }
    return d;
  };
  for (const [w, h, s] of [[13, 9, 2], [2, 7, 1.7], [1, 5, 0.8], [11, 1, 2], [17, 12, 0.3]]) {
    const im = synth(w, h, w * 100 + h);
    assert.deepEqual([...A.gaussianBlur(im, s).data], refBlur(im, s), `${w}×${h} σ ${s}`);
  }
  assert.ok(same(img.data, synth(23, 19, 51).data), "blur wrote into its input");
});

Deno.test("AugMix is a convex blend of the clean image and its chains", () => {
  const img = synth(24, 24, 61);
  for (let seed = 0; seed < 6; seed++) {
    const parts = A.augmixParts(img, hostRng(seed));
    assert.equal(parts.chains.length, 3);
    assert.ok(Math.abs(parts.weights.reduce((a, b) => a + b, 0) - 1) < 1e-6);
    assert.ok(parts.weights.every((w) => w >= 0) && parts.m >= 0 && parts.m <= 1);
    const out = A.augmixMix(parts);
    assert.ok(same(out, A.augmix(img, hostRng(seed))), "augmix ≠ augmixMix(augmixParts)");
    const comps = [parts.clean, ...parts.chains].map((c) => toNormalizedCHW(c));
    for (let i = 0; i < out.length; i++) {
      let lo = Infinity, hi = -Infinity;
      for (const c of comps) lo = Math.min(lo, c[i]), hi = Math.max(hi, c[i]);
      assert.ok(out[i] >= lo - 1e-5 && out[i] <= hi + 1e-5, `seed ${seed} element ${i}`);
    }
  }
  // with m = 0 the clean image comes back; with one op and one chain, that op's image
  const parts = A.augmixParts(img, hostRng(3), { width: 1, depth: 1, ops: ["autocontrast"] });
  assert.ok(same(parts.chains[0].data, A.autocontrast(img).data));
  assert.ok(same(A.augmixMix({ ...parts, m: 0 }), toNormalizedCHW(img)));
  assert.throws(
    () => A.augmixParts(img, hostRng(0), { ops: ["cutout"] }),
    /augment\.augmix.*cutout/,
  );
});

Deno.test("AugMix ops follow Pillow's ImageOps and affine semantics", () => {
  const img = synth(16, 16, 71);
  assert.ok(A.posterize(img, 4).data.every((v, i) => v === (img.data[i] & 0xf0)));
  assert.ok(
    A.solarize(img, 200).data.every((v, i) =>
      v === (img.data[i] < 200 ? img.data[i] : 255 - img.data[i])
    ),
  );
  const ac = A.autocontrast(A.adjustContrast(img, 0.3));
  for (let c = 0; c < 3; c++) {
    const ch = ac.data.filter((_, i) => i % 3 === c);
    // Pillow's int(hi · scale + offset) may land on 254.99… → 254, as here
    assert.equal(Math.min(...ch), 0);
    assert.ok(Math.max(...ch) >= 254);
  }
  // equalize, 16 levels × 256 pixels: step = (4096 − 256) // 255 = 15, level k → (7 + 256 k) // 15
  // (saturated at 255, as Image.point clips); with 16 × 16 pixels the step is 0: identity
  const ramp = (n: number): RGBImage => {
    const d = new Uint8Array(n * 3);
    for (let i = 0; i < n; i++) d.fill((i % 16) * 3, 3 * i, 3 * i + 3);
    return { width: n / 16, height: 16, data: d };
  };
  const eq = A.equalize(ramp(4096)).data;
  for (let k = 0; k < 16; k++) {
    assert.equal(eq[3 * k], Math.min(255, Math.floor((7 + 256 * k) / 15)), `level ${k}`);
  }
  assert.ok(same(A.equalize(ramp(256)).data, ramp(256).data));
  // counts 255, 255, 1 at levels 0, 5, 9: step = 510 // 255 = 2, so 5 → (1 + 255) // 2 = 128
  const three = new Uint8Array(511 * 3);
  three.fill(5, 255 * 3, 510 * 3);
  three.fill(9, 510 * 3);
  assert.deepEqual([...A.equalize({ width: 511, height: 1, data: three }).data.slice(765, 768)], [
    128,
    128,
    128,
  ]);
  // an integer translation shifts exactly and fills black
  const t = A.affineBilinear(img, [1, 0, 3, 0, 1, 0]);
  for (let y = 0; y < 16; y++) {
    for (let x = 0; x < 16; x++) {
      for (let c = 0; c < 3; c++) {
        const want = x + 3 < 16 ? img.data[(y * 16 + x + 3) * 3 + c] : 0;
        assert.equal(t.data[(y * 16 + x) * 3 + c], want);
      }
    }
  }
  assert.ok(same(A.rotate(img, 0).data, img.data));
  assert.ok(same(A.rotate(img, 360).data, img.data));
  // a small rotation about the centre keeps the centre pixel's neighbourhood
  const rot = A.rotate(img, 2);
  const centre = (8 * 16 + 8) * 3;
  for (let c = 0; c < 3; c++) assert.ok(Math.abs(rot.data[centre + c] - img.data[centre + c]) < 40);
  assert.ok(!same(rot.data, img.data));
});

function moments(xs: number[]) {
  const m = xs.reduce((a, b) => a + b, 0) / xs.length;
  const v = xs.reduce((a, b) => a + (b - m) ** 2, 0) / (xs.length - 1);
  return { m, v };
}

Deno.test("Gamma, Beta and Dirichlet samplers have the right means and variances", () => {
  const N = 20000, r = hostRng(2024);
  const check = (xs: number[], mean: number, variance: number, what: string) => {
    const { m, v } = moments(xs);
    const se = Math.sqrt(variance / N);
    assert.ok(Math.abs(m - mean) < 5 * se, `${what}: mean ${m}, expected ${mean} ± ${5 * se}`);
    assert.ok(Math.abs(v / variance - 1) < 0.08, `${what}: variance ${v}, expected ${variance}`);
    assert.ok(xs.every((x) => x >= 0 && Number.isFinite(x)), `${what}: negative or infinite`);
  };
  for (const a of [0.5, 1, 3.5]) {
    check(Array.from({ length: N }, () => A.sampleGamma(r, a)), a, a, `Gamma(${a})`);
  }
  for (const [a, b] of [[1, 1], [0.5, 2], [4, 2]]) {
    const xs = Array.from({ length: N }, () => A.sampleBeta(r, a, b));
    check(xs, a / (a + b), (a * b) / ((a + b) ** 2 * (a + b + 1)), `Beta(${a}, ${b})`);
  }
  const ds = Array.from({ length: N }, () => A.sampleDirichlet(r, [1, 1, 1]));
  assert.ok(ds.every((d) => Math.abs(d[0] + d[1] + d[2] - 1) < 1e-12));
  for (let k = 0; k < 3; k++) {
    check(ds.map((d) => d[k]), 1 / 3, (1 / 3) * (2 / 3) / 4, `Dirichlet[${k}]`);
  }
  const d2 = Array.from({ length: N }, () => A.sampleDirichlet(r, [2, 1, 1]));
  check(d2.map((d) => d[0]), 0.5, (0.5 * 0.5) / 5, "Dirichlet(2,1,1)[0]");
  assert.throws(() => A.sampleGamma(r, 0), /augment\.sampleGamma/);
});

Deno.test("a PACS image: every view at R = 32 and 224, test view = clipPreprocess", () => {
  const img = loadImageSync(`${sharedDir()}data/PACS/photo/dog/056_0001.jpg`);
  for (const R of [32, 224]) {
    const outs = A.makeViews([img], ALL, R, 1, 0);
    outs.forEach((x, k) => {
      assert.equal(x.length, 3 * R * R);
      assertNormalisedRange(x, R, `PACS ${ALL[k]} R=${R}`);
    });
    assert.ok(same(outs[ALL.indexOf("test")], clipPreprocess(img, R)));
    // distinct views of the same image differ
    assert.ok(!same(outs[0], outs[1]) && !same(outs[0], outs[2]) && !same(outs[1], outs[2]));
  }
});

Deno.test("bad inputs raise errors naming the function", () => {
  const img = synth(8, 8, 81);
  assert.throws(() => A.makeViews([img], ["orig"], 0, 0, 0), /augment\.makeViews.*size/);
  assert.throws(
    () => A.makeViews([img], ["orig"], 8, 0, 0, [1, 2]),
    /augment\.makeViews: 2 ids for 1/,
  );
  assert.throws(
    () => A.makeViews([img], ["nope" as A.ViewKind], 8, 0, 0),
    /augment\.makeViews.*nope/,
  );
  assert.throws(
    () => A.makeViews([{ width: 3, height: 3, data: new Uint8Array(5) }], ["orig"], 8, 0, 0),
    /augment\.makeViews \(image 0\).*5 bytes/,
  );
  assert.throws(() => A.viewSeed(-1, 0, 0, "orig"), /augment\.viewSeed.*seed/);
  assert.throws(() => A.viewSeed(0, 2 ** 32, 0, "orig"), /augment\.viewSeed.*step/);
  assert.throws(() => A.crop(img, { top: 4, left: 0, height: 5, width: 2 }), /augment\.crop/);
  assert.throws(
    () => A.randomResizedCrop(img, hostRng(0), 8, [0.5, 0.1]),
    /augment\.randomResizedCrop.*scale/,
  );
  assert.throws(() => A.adjustHue(img, 0.7), /augment\.adjustHue/);
});
