/**
 * Synthetic world: a seeded, procedural image dataset the toolkit makes itself, so that it can be
 * tried (and tested) without downloading anything.
 *
 * Images (32 or 64 px) of 1–3 objects of one of ten shape classes with attributes (colour, size,
 * position, count, background texture), rendered in four visual domains with the same semantics
 * and clearly different styles:
 * - photo: shaded objects lit from a random direction, a soft cast shadow, sensor noise;
 * - sketch: graphite outlines drawn twice with wobbling strokes on white paper, a light
 *   coloured-pencil hatching inside (so colour words stay true), faint paper textures;
 * - cartoon: flat fills, thick dark outlines, a flat highlight, posterised backgrounds;
 * - painting: brush-streaked colour with jitter, ragged edges, warm varnish, canvas weave.
 * Each image has a caption from a small grammar ("a sketch of two small red stars on the left").
 *
 * Determinism: every image draws from its own `hostRng` streams, seeded by a hash of (world seed,
 * domain, class, index), so an image does not depend on which other classes or domains are
 * generated. Rendering uses only IEEE-exact operations (+ − × ÷, sqrt, floor, integer hashing;
 * sin/cos are our own polynomials, not Math.sin), PNGs and zips are written with fixed options
 * and timestamps: a seed gives identical bytes on every machine (for a given fflate version).
 *
 * Written as `root/<domain>/<class>/<id>.png` with `captions.jsonl`, `classes.txt` and
 * `world.json` beside the domain folders, or the same tree as a zip: both read back through
 * pipeline/data.ts `readDataset` in the domain layout.
 *
 * CLI: `deno task world --out DIR|FILE.zip [--seed 0] [--size 32] [--per 50] [--snap CELLS]
 *       [--upright] [--terse F] [--classes a,b] [--domains a,b] [--sheet FILE.png] [--force]`
 */
import { type ZipOptions, zipSync, zlibSync } from "fflate";
import { createHash } from "node:crypto";
import { type HostRng, hostRng } from "../engine/ops/random.ts";
import type { RGBImage } from "../model/image.ts";
import { byteCompare, crc32 } from "./data.ts";

// ------------------------------------------------------------------------------------------------
// Vocabulary
// ------------------------------------------------------------------------------------------------

export const WORLD_CLASSES = [
  "arrow",
  "circle",
  "crescent",
  "cross",
  "diamond",
  "heart",
  "ring",
  "square",
  "star",
  "triangle",
] as const;
export const WORLD_DOMAINS = ["photo", "sketch", "cartoon", "painting"] as const;
export const COLOURS = [
  "red",
  "orange",
  "yellow",
  "green",
  "blue",
  "purple",
  "pink",
  "brown",
] as const;
export const SIZES = ["small", "medium", "large"] as const;
export const POSITIONS = ["centre", "left", "right", "top", "bottom"] as const;
export const BACKGROUNDS = ["plain", "stripes", "dots", "noise", "gradient"] as const;

export type Colour = typeof COLOURS[number];
export type SizeWord = typeof SIZES[number];
export type Position = typeof POSITIONS[number];
export type Background = typeof BACKGROUNDS[number];

export interface WorldAttributes {
  count: 1 | 2 | 3;
  size: SizeWord;
  colour: Colour;
  position: Position;
  background: Background;
}

const RGB: Record<Colour, [number, number, number]> = {
  red: [214, 38, 40],
  orange: [242, 130, 20],
  yellow: [238, 206, 28],
  green: [38, 156, 62],
  blue: [36, 84, 214],
  purple: [128, 54, 184],
  pink: [240, 118, 178],
  brown: [122, 74, 36],
};

const PLURAL: Record<string, string> = { cross: "crosses" };
export const pluralOf = (noun: string) => PLURAL[noun] ?? noun + "s";

/** The phrases a caption may use for each count (the test checks one of them is present). */
export const COUNT_WORDS: Record<1 | 2 | 3, string[]> = {
  1: ["a", "an", "one", "a single"],
  2: ["two", "a pair of"],
  3: ["three"],
};
const SIZE_WORDS: Record<SizeWord, string[]> = {
  small: ["small", "tiny", "little"],
  medium: ["medium", "medium-sized", "mid-sized"],
  large: ["large", "big", "huge"],
};
const POSITION_WORDS: Record<Position, string[]> = {
  centre: ["in the centre", "in the middle", "in the center"],
  left: ["on the left", "at the left", "to the left"],
  right: ["on the right", "at the right", "to the right"],
  top: ["at the top", "near the top", "in the upper part"],
  bottom: ["at the bottom", "near the bottom", "in the lower part"],
};
const BACKGROUND_WORDS: Record<Background, string[]> = {
  plain: ["on a plain background", "against a plain backdrop"],
  stripes: ["on a striped background", "against stripes"],
  dots: ["on a dotted background", "on a polka-dot background"],
  noise: ["on a mottled background", "on a noisy background"],
  gradient: ["on a gradient background", "against a smooth gradient"],
};
/** "%" is the noun phrase. */
const DOMAIN_FRAMES: Record<string, string[]> = {
  photo: ["a photo of %", "a photograph of %", "% in a photo", "a close-up photo of %"],
  sketch: ["a sketch of %", "a pencil drawing of %", "% in a sketch", "a line drawing of %"],
  cartoon: ["a cartoon of %", "% in a cartoon style", "a cartoon drawing of %", "clip art of %"],
  painting: [
    "a painting of %",
    "an oil painting of %",
    "% in a painting",
    "a painted picture of %",
  ],
};
const PLAIN_FRAMES = ["%", "a picture of %", "an image of %"];

export class WorldError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "WorldError";
  }
}

// ------------------------------------------------------------------------------------------------
// Exact-everywhere arithmetic: hashing, value noise, polynomial sin/cos
// ------------------------------------------------------------------------------------------------

const HALF_PI = Math.PI / 2;

/** sin(x) from Taylor polynomials on |r| ≤ π/4 (error < 2e-10): the same bits on every engine. */
export function dsin(x: number): number {
  const k = Math.floor(x / HALF_PI + 0.5);
  const r = x - k * HALF_PI, r2 = r * r;
  const s = r *
    (1 + r2 * (-1 / 6 + r2 * (1 / 120 + r2 * (-1 / 5040 + r2 * (1 / 362880 - r2 / 39916800)))));
  const c = 1 + r2 * (-0.5 + r2 * (1 / 24 + r2 * (-1 / 720 + r2 * (1 / 40320 - r2 / 3628800))));
  const q = ((k % 4) + 4) % 4;
  return q === 0 ? s : q === 1 ? c : q === 2 ? -s : -c;
}
export const dcos = (x: number) => dsin(x + HALF_PI);

/** A 32-bit integer hash of three integers (murmur3-style finaliser). */
function hash3(a: number, b: number, c: number): number {
  let h = Math.imul(a ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(b ^ 0x7f4a7c15, 0xc2b2ae35);
  h = Math.imul(h ^ (h >>> 15), 0x27d4eb2d) ^ Math.imul(c ^ 0x165667b1, 0x9e3779b1);
  h = Math.imul(h ^ (h >>> 13), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 16), 0xc2b2ae35);
  return (h ^ (h >>> 15)) >>> 0;
}

/** FNV-1a over the string's UTF-16 units. */
function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

const unitHash = (x: number, y: number, seed: number) => hash3(x, y, seed) * 2.3283064365386963e-10;

/** Smooth value noise in [0, 1): lattice hashes interpolated with smoothstep. */
function vnoise(x: number, y: number, seed: number): number {
  const x0 = Math.floor(x), y0 = Math.floor(y);
  const fx = x - x0, fy = y - y0;
  const sx = fx * fx * (3 - 2 * fx), sy = fy * fy * (3 - 2 * fy);
  const a = unitHash(x0, y0, seed), b = unitHash(x0 + 1, y0, seed);
  const c = unitHash(x0, y0 + 1, seed), d = unitHash(x0 + 1, y0 + 1, seed);
  return a + (b - a) * sx + (c - a) * sy + (a - b - c + d) * sx * sy;
}

/** The seed of one image's stream `salt` (a safe integer for hostRng). */
export function imageSeed(
  seed: number,
  domain: string,
  className: string,
  index: number,
  salt = 0,
): number {
  const lo = seed % 2 ** 32 >>> 0, hi = Math.floor(seed / 2 ** 32) >>> 0;
  const h1 = hash3(lo, hi, fnv1a(domain) ^ salt);
  const h2 = hash3(h1, fnv1a(className), index);
  const h3 = hash3(h2, index ^ 0x5bd1e995, salt + 1);
  return (h2 & 0x1fffff) * 2 ** 32 + h3;
}

const clamp01 = (x: number) => (x < 0 ? 0 : x > 1 ? 1 : x);
const frac = (x: number) => x - Math.floor(x);

// ------------------------------------------------------------------------------------------------
// Shapes: signed distance functions in shape units (radius ~1, y up), negative inside
// ------------------------------------------------------------------------------------------------

type Sdf = (u: number, v: number) => number;

function polygonSdf(pts: number[]): Sdf {
  const vs = Float64Array.from(pts), n = vs.length / 2;
  return (px, py) => {
    let dx = px - vs[0], dy = py - vs[1];
    let d = dx * dx + dy * dy, s = 1;
    for (let i = 0, j = n - 1; i < n; j = i, i++) {
      const vix = vs[2 * i], viy = vs[2 * i + 1], vjy = vs[2 * j + 1];
      const ex = vs[2 * j] - vix, ey = vjy - viy;
      const wx = px - vix, wy = py - viy;
      let t = (wx * ex + wy * ey) / (ex * ex + ey * ey);
      t = t < 0 ? 0 : t > 1 ? 1 : t;
      dx = wx - ex * t;
      dy = wy - ey * t;
      const bb = dx * dx + dy * dy;
      if (bb < d) d = bb;
      const c1 = py >= viy, c2 = py < vjy, c3 = ex * wy > ey * wx;
      if ((c1 && c2 && c3) || (!c1 && !c2 && !c3)) s = -s;
    }
    return s * Math.sqrt(d);
  };
}

function boxSdf(px: number, py: number, bx: number, by: number): number {
  const qx = Math.abs(px) - bx, qy = Math.abs(py) - by;
  const ox = qx > 0 ? qx : 0, oy = qy > 0 ? qy : 0;
  const inner = qx > qy ? qx : qy;
  return Math.sqrt(ox * ox + oy * oy) + (inner < 0 ? inner : 0);
}

const starPts: number[] = [];
for (let k = 0; k < 10; k++) {
  const a = HALF_PI + (k * Math.PI) / 5, r = k % 2 ? 0.44 : 1.02;
  starPts.push(r * dcos(a), r * dsin(a));
}
const heartPts: number[] = [];
for (let k = 0; k < 36; k++) {
  // the classic parametric heart, clockwise from the dip at the top
  const t = (k / 36) * 2 * Math.PI, s = dsin(t);
  const x = 16 * s * s * s;
  const y = 13 * dcos(t) - 5 * dcos(2 * t) - 2 * dcos(3 * t) - dcos(4 * t);
  heartPts.push(x / 16.5, (y + 2.5) / 16.5);
}

const star = polygonSdf(starPts);
const heart = polygonSdf(heartPts);
const triangle = polygonSdf([0, 0.92, -0.9, -0.62, 0.9, -0.62]);
const diamond = polygonSdf([0, 1, 0.62, 0, 0, -1, -0.62, 0]);
const ARROW = [[-0.95, 0.24], [0.04, 0.24], [0.04, 0.68], [0.96, 0], [0.04, -0.68]];
const arrow = polygonSdf([...ARROW, [0.04, -0.24], [-0.95, -0.24]].flat());

const SHAPES: Record<string, { sdf: Sdf; turn: number; anyTurn?: boolean }> = {
  arrow: { sdf: arrow, turn: 0.35, anyTurn: true },
  circle: { sdf: (u, v) => Math.sqrt(u * u + v * v) - 0.92, turn: 0 },
  crescent: {
    sdf: (u, v) => {
      const a = Math.sqrt(u * u + v * v) - 0.94;
      const bu = u - 0.44, bv = v - 0.2;
      const b = 0.76 - Math.sqrt(bu * bu + bv * bv);
      return a > b ? a : b;
    },
    turn: 0,
    anyTurn: true,
  },
  cross: {
    sdf: (u, v) => {
      const a = boxSdf(u, v, 0.92, 0.3), b = boxSdf(u, v, 0.3, 0.92);
      return a < b ? a : b;
    },
    turn: 0.25,
  },
  diamond: { sdf: diamond, turn: 0.15 },
  heart: { sdf: heart, turn: 0.25 },
  ring: { sdf: (u, v) => Math.abs(Math.sqrt(u * u + v * v) - 0.68) - 0.26, turn: 0 },
  square: { sdf: (u, v) => boxSdf(u, v, 0.72, 0.72), turn: 0.2 },
  star: { sdf: star, turn: 0.6 },
  triangle: { sdf: triangle, turn: 0.25 },
};

// ------------------------------------------------------------------------------------------------
// Scenes
// ------------------------------------------------------------------------------------------------

/** Object radius (in image widths) by count and size. */
const RADIUS: Record<number, number[]> = {
  1: [0.19, 0.25, 0.33],
  2: [0.15, 0.18, 0.21],
  3: [0.13, 0.145, 0.165],
};

interface Obj {
  cx: number;
  cy: number;
  r: number;
  cos: number;
  sin: number;
  sdf: Sdf;
}

interface Scene {
  domain: string;
  objs: Obj[];
  colour: [number, number, number];
  bgA: [number, number, number];
  bgB: [number, number, number];
  texture: Background;
  /** Texture parameters: direction, period, phases. */
  tc: number;
  ts: number;
  period: number;
  ph1: number;
  ph2: number;
  /** Noise seeds. */
  n1: number;
  n2: number;
  n3: number;
  /** Light (photo) or stroke (painting) or hatch (sketch) direction. */
  lx: number;
  ly: number;
  /** Smooth fields evaluated once per pixel (at its centre) rather than per sample. */
  pf: Float64Array;
}

function pick<T>(rng: HostRng, a: readonly T[]): T {
  return a[rng.int(a.length)];
}

function sampleAttributes(rng: HostRng): WorldAttributes {
  const c = rng.int(10);
  return {
    count: (c < 5 ? 1 : c < 8 ? 2 : 3) as 1 | 2 | 3,
    size: pick(rng, SIZES),
    colour: pick(rng, COLOURS),
    position: pick(rng, POSITIONS),
    background: pick(rng, BACKGROUNDS),
  };
}

/**
 * Centres for the objects inside the position's region, apart where possible (shrinking); with
 * `snap`, on a lattice of `snap` cells per side.
 */
export function layout(
  rng: HostRng,
  a: WorldAttributes,
  snap = 0,
): { cx: number; cy: number; r: number }[] {
  const lattice = (v: number) => (snap ? Math.round(v * snap) / snap : v);
  let r = RADIUS[a.count][SIZES.indexOf(a.size)];
  let best: { cx: number; cy: number; r: number }[] = [];
  for (let shrink = 0; shrink < 4; shrink++, r *= 0.9) {
    const m = r * 1.02 + 0.02;
    const span = (lo: number, hi: number) => (lo < hi ? [lo, hi] : [(lo + hi) / 2, (lo + hi) / 2]);
    let xr = span(m, 1 - m), yr = span(m, 1 - m);
    const half = a.count === 1 ? 0.4 : 0.47;
    if (a.position === "left") xr = span(m, half);
    if (a.position === "right") xr = span(1 - half, 1 - m);
    if (a.position === "top") yr = span(m, half);
    if (a.position === "bottom") yr = span(1 - half, 1 - m);
    if (a.position === "centre") {
      const w = a.count === 1 ? 0.06 : 0.25;
      xr = span(Math.max(m, 0.5 - w), Math.min(1 - m, 0.5 + w));
      yr = xr;
    }
    for (let attempt = 0; attempt < 12; attempt++) {
      const out: { cx: number; cy: number; r: number }[] = [];
      let apart = true;
      for (let k = 0; k < a.count; k++) {
        for (let t = 0; t < 16; t++) {
          const cx = lattice(rng.uniform(xr[0], xr[1])), cy = lattice(rng.uniform(yr[0], yr[1]));
          const ok = out.every((o) => {
            const dx = o.cx - cx, dy = o.cy - cy;
            return dx * dx + dy * dy >= (2.1 * r) * (2.1 * r);
          });
          if (ok || t === 15) {
            out.push({ cx, cy, r });
            apart &&= ok;
            break;
          }
        }
      }
      if (apart) return out;
      best = out;
    }
  }
  return best;
}

const PHOTO_BG: [number, number, number][] = [
  [200, 200, 196],
  [226, 214, 190],
  [176, 196, 214],
  [92, 96, 104],
  [196, 176, 150],
  [182, 204, 176],
  [60, 62, 70],
  [236, 232, 226],
];
const CARTOON_BG: [number, number, number][] = [
  [120, 200, 250],
  [150, 235, 170],
  [255, 240, 120],
  [214, 170, 250],
  [255, 190, 150],
  [255, 255, 255],
  [90, 220, 210],
  [255, 160, 200],
];
const PAINT_BG: [number, number, number][] = [
  [196, 160, 96],
  [110, 84, 60],
  [84, 110, 140],
  [134, 142, 84],
  [226, 212, 176],
  [150, 80, 60],
  [60, 80, 70],
  [200, 186, 150],
];
const PAPER: [number, number, number] = [249, 247, 241];

const dist2 = (a: number[], b: number[]) =>
  (a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2 + (a[2] - b[2]) ** 2;

/** A list colour far enough from `avoid` (from a random place in the list), else the farthest. */
function contrasting(rng: HostRng, list: [number, number, number][], avoid: number[][]) {
  const start = rng.int(list.length);
  let best = list[start], bestD = -1;
  for (let k = 0; k < list.length; k++) {
    const c = list[(start + k) % list.length];
    const d = Math.min(...avoid.map((a) => dist2(c, a)));
    if (d >= 130 * 130) return c;
    if (d > bestD) [best, bestD] = [c, d];
  }
  return best;
}

const shade = (c: number[], f: number): [number, number, number] => [c[0] * f, c[1] * f, c[2] * f];

function buildScene(
  domain: string,
  className: string,
  a: WorldAttributes,
  lay: { cx: number; cy: number; r: number }[],
  rng: HostRng,
  upright = false,
): Scene {
  const shape = SHAPES[className];
  const objs: Obj[] = lay.map(({ cx, cy, r }) => {
    let turn = shape.turn * (2 * rng.uniform() - 1);
    if (shape.anyTurn) turn += HALF_PI * rng.int(4);
    if (upright) turn = 0; // drawn after the draws, so the rest of the scene is unchanged
    return { cx, cy, r, cos: dcos(turn), sin: dsin(turn), sdf: shape.sdf };
  });
  const base = RGB[a.colour];
  const jit = domain === "painting" ? 26 : domain === "photo" ? 12 : 0;
  const colour: [number, number, number] = [
    base[0] + jit * (2 * rng.uniform() - 1),
    base[1] + jit * (2 * rng.uniform() - 1),
    base[2] + jit * (2 * rng.uniform() - 1),
  ];
  let bgA: [number, number, number], bgB: [number, number, number];
  if (domain === "photo") {
    bgA = contrasting(rng, PHOTO_BG, [base]);
    const lum = bgA[0] + bgA[1] + bgA[2];
    bgB = shade(
      bgA,
      a.background === "gradient" ? (lum > 400 ? 0.55 : 2.1) : lum > 400 ? 0.8 : 1.4,
    );
  } else if (domain === "sketch") {
    bgA = PAPER;
    bgB = a.background === "stripes" || a.background === "dots" ? [196, 196, 194] : [222, 221, 216];
  } else if (domain === "cartoon") {
    bgA = contrasting(rng, CARTOON_BG, [base]);
    bgB = contrasting(rng, CARTOON_BG, [base, bgA]);
  } else {
    bgA = contrasting(rng, PAINT_BG, [base]);
    bgB = contrasting(rng, PAINT_BG, [base, bgA]);
  }
  const angle = domain === "sketch" && a.background !== "gradient"
    ? Math.PI / 4 * (1 + 2 * rng.int(2))
    : Math.PI * rng.uniform();
  const light = domain === "photo"
    ? -Math.PI / 2 + 1.3 * (2 * rng.uniform() - 1) // from above, left to right
    : domain === "sketch"
    ? Math.PI / 4 * (1 + 2 * rng.int(2))
    : Math.PI * rng.uniform();
  return {
    domain,
    objs,
    colour,
    bgA,
    bgB,
    texture: a.background,
    tc: dcos(angle),
    ts: dsin(angle),
    period: rng.uniform(0.11, 0.19),
    ph1: rng.uniform(),
    ph2: rng.uniform(),
    n1: rng.u32() | 0,
    n2: rng.u32() | 0,
    n3: rng.u32() | 0,
    lx: dcos(light),
    ly: dsin(light),
    pf: new Float64Array(4),
  };
}

// ------------------------------------------------------------------------------------------------
// Rendering (per sample, supersampled, then per pixel finishing)
// ------------------------------------------------------------------------------------------------

/** Distance (image units) from (x, y) to object o's outline; negative inside. */
function objDist(o: Obj, x: number, y: number): number {
  const dx = x - o.cx, dy = y - o.cy;
  const u = (dx * o.cos + dy * o.sin) / o.r, v = (dx * o.sin - dy * o.cos) / o.r;
  return o.sdf(u, v) * o.r;
}

/** Objects whose bounds (with `margin`) contain the point. */
const near = (o: Obj, x: number, y: number, margin: number) => {
  const dx = x - o.cx, dy = y - o.cy, R = o.r * 1.12 + margin;
  return dx * dx + dy * dy < R * R;
};

/** Background texture weight (0 = colour A, 1 = colour B). */
function textureT(s: Scene, x: number, y: number): number {
  switch (s.texture) {
    case "plain":
      return 0;
    case "stripes": {
      const f = frac((x * s.tc + y * s.ts) / s.period + s.ph1);
      return f < (s.domain === "sketch" ? 0.16 : 0.5) ? 1 : 0;
    }
    case "dots": {
      const fu = frac(x / s.period + s.ph1) - 0.5, fv = frac(y / s.period + s.ph2) - 0.5;
      const rad = s.domain === "sketch" ? 0.18 : 0.27;
      return fu * fu + fv * fv < rad * rad ? 1 : 0;
    }
    case "noise": {
      // cartoon thresholds the noise, so it needs it per sample
      if (s.domain === "cartoon") return noiseTexture(s, x, y) > 0.5 ? 1 : 0;
      return clamp01((s.pf[0] - 0.5) * 2.2 + 0.5);
    }
    case "gradient": {
      const t = clamp01(0.5 + (x - 0.5) * s.tc + (y - 0.5) * s.ts);
      return s.domain === "cartoon" ? Math.floor(t * 3.999) / 3 : t;
    }
  }
}

const noiseTexture = (s: Scene, x: number, y: number) =>
  0.7 * vnoise(x * 5, y * 5, s.n3) + 0.3 * vnoise(x * 11, y * 11, s.n3 ^ 0x55);

/** The per-pixel fields (see Scene.pf) at a pixel centre. */
function pixelFields(s: Scene, x: number, y: number) {
  const pf = s.pf;
  if (s.texture === "noise" && s.domain !== "cartoon") pf[0] = noiseTexture(s, x, y);
  if (s.domain === "sketch") {
    pf[1] = (vnoise(x * 9, y * 9, s.n1) - 0.5) * 0.045; // stroke wobbles
    pf[2] = (vnoise(x * 7, y * 7, s.n2) - 0.5) * 0.05 + 0.006;
    pf[3] = 70 + 60 * vnoise(x * 40, y * 40, s.n3); // graphite
  } else if (s.domain === "painting") {
    // brush streaks: noise stretched along the stroke direction (across it inside objects)
    const u = x * s.lx + y * s.ly, v = y * s.lx - x * s.ly;
    pf[1] = vnoise(u * 4, v * 26, s.n1);
    pf[2] = vnoise(x * 14, y * 14, s.n2) - 0.5; // ragged edges
    pf[3] = vnoise(v * 4, u * 22, s.n2 ^ 0x3c);
  }
}

function background(s: Scene, x: number, y: number, out: Float64Array) {
  const t = textureT(s, x, y), A = s.bgA, B = s.bgB;
  out[0] = A[0] + (B[0] - A[0]) * t;
  out[1] = A[1] + (B[1] - A[1]) * t;
  out[2] = A[2] + (B[2] - A[2]) * t;
}

interface Style {
  /** Sketch stroke half-width, image units. */
  stroke: number;
  /** Cartoon outline half-width limits, image units (thinner on small objects). */
  outlineMin: number;
  outlineMax: number;
}

function samplePhoto(s: Scene, x: number, y: number, out: Float64Array) {
  const objs = s.objs;
  for (let k = objs.length - 1; k >= 0; k--) {
    const o = objs[k];
    if (!near(o, x, y, 0)) continue;
    const d = objDist(o, x, y);
    if (d >= 0) continue;
    const qx = (x - o.cx) / o.r, qy = (y - o.cy) / o.r, ql = Math.sqrt(qx * qx + qy * qy) + 1e-9;
    const facing = qx * s.lx + qy * s.ly;
    const depth = clamp01(-d / (0.2 * o.r));
    let f = 0.74 + 0.3 * facing;
    f += (1 - depth) * 0.3 * (facing / ql) - (1 - depth) * 0.12; // bevel: lit rim vs dark rim
    const hx = qx - 0.42 * s.lx, hy = qy - 0.42 * s.ly;
    let spec = 1 - (hx * hx + hy * hy) / 0.1;
    spec = spec > 0 ? spec * spec * 120 : 0;
    out[0] = s.colour[0] * f + spec;
    out[1] = s.colour[1] * f + spec;
    out[2] = s.colour[2] * f + spec;
    return;
  }
  background(s, x, y, out);
  // the scene is lit from the light's side; shadows fall away from it
  let f = 1 + 0.28 * ((x - 0.5) * s.lx + (y - 0.5) * s.ly);
  for (const o of objs) {
    const ox = x + 0.06 * s.lx * o.r / 0.2, oy = y + 0.06 * s.ly * o.r / 0.2;
    if (!near(o, ox, oy, 0.05)) continue;
    const ds = objDist(o, ox, oy), sh = clamp01(0.5 - ds / 0.06);
    f *= 1 - 0.5 * sh * sh * (3 - 2 * sh);
  }
  out[0] *= f;
  out[1] *= f;
  out[2] *= f;
}

function sampleSketch(s: Scene, st: Style, x: number, y: number, out: Float64Array) {
  background(s, x, y, out);
  const objs = s.objs;
  let ink = 1;
  for (const o of objs) {
    if (!near(o, x, y, 0.05)) continue;
    const d = objDist(o, x, y);
    if (d < 0 && frac((x * s.lx - y * s.ly) / 0.075 + s.ph1) < 0.42) {
      const c = s.colour;
      out[0] = PAPER[0] + (c[0] - PAPER[0]) * 0.5;
      out[1] = PAPER[1] + (c[1] - PAPER[1]) * 0.5;
      out[2] = PAPER[2] + (c[2] - PAPER[2]) * 0.5;
    }
    const w1 = s.pf[1], w2 = s.pf[2];
    if (Math.abs(d + w1) < st.stroke) ink *= 0.3;
    if (Math.abs(d + w2) < st.stroke * 0.75) ink *= 0.55;
  }
  if (ink < 1) {
    // graphite: gray, grainy
    const g = s.pf[3];
    out[0] = g + (out[0] - g) * ink;
    out[1] = g + (out[1] - g) * ink;
    out[2] = g + (out[2] - g) * ink;
  }
}

function sampleCartoon(s: Scene, st: Style, x: number, y: number, out: Float64Array) {
  const objs = s.objs;
  for (let k = objs.length - 1; k >= 0; k--) {
    const o = objs[k];
    let w = 0.12 * o.r;
    w = w < st.outlineMin ? st.outlineMin : w > st.outlineMax ? st.outlineMax : w;
    if (!near(o, x, y, w)) continue;
    const d = objDist(o, x, y);
    if (d >= w) continue;
    if (d > -w) {
      out[0] = 28;
      out[1] = 22;
      out[2] = 34;
      return;
    }
    const qx = (x - o.cx) / o.r + 0.36, qy = (y - o.cy) / o.r + 0.36;
    const glint = qx * qx + qy * qy < 0.17 * 0.17 && d < -2.2 * w ? 0.55 : 0;
    out[0] = s.colour[0] + (255 - s.colour[0]) * glint;
    out[1] = s.colour[1] + (255 - s.colour[1]) * glint;
    out[2] = s.colour[2] + (255 - s.colour[2]) * glint;
    return;
  }
  background(s, x, y, out);
}

function samplePainting(s: Scene, x: number, y: number, out: Float64Array) {
  const objs = s.objs;
  const streak = s.pf[1];
  for (let k = objs.length - 1; k >= 0; k--) {
    const o = objs[k];
    if (!near(o, x, y, 0.03)) continue;
    const rag = o.r < 0.2 ? 0.15 * o.r : 0.03;
    const d = objDist(o, x, y) + s.pf[2] * rag;
    if (d >= 0) continue;
    const f = 0.8 + 0.34 * s.pf[3];
    const rim = d > -0.6 * rag ? 0.78 : 1;
    const warm = (streak - 0.5) * 40;
    out[0] = s.colour[0] * f * rim + warm;
    out[1] = s.colour[1] * f * rim;
    out[2] = s.colour[2] * f * rim - warm;
    return;
  }
  background(s, x, y, out);
  const f = 0.84 + 0.32 * streak;
  out[0] *= f;
  out[1] *= f;
  out[2] *= f;
}

/** Renders a scene to 8-bit RGB: `ss`×`ss` samples per pixel, then per-pixel finishing. */
function renderScene(s: Scene, size: number, ss: number): RGBImage {
  const px = 1 / size;
  const st: Style = {
    stroke: (0.45 + size / 110) * px,
    outlineMin: 0.6 * px,
    outlineMax: 1.3 * px,
  };
  const data = new Uint8Array(size * size * 3);
  const smp = new Float64Array(3);
  const inv = 1 / (ss * ss);
  const dom = s.domain;
  for (let py = 0; py < size; py++) {
    for (let pxi = 0; pxi < size; pxi++) {
      let r = 0, g = 0, b = 0;
      pixelFields(s, (pxi + 0.5) * px, (py + 0.5) * px);
      for (let sy = 0; sy < ss; sy++) {
        const y = (py + (sy + 0.5) / ss) * px;
        for (let sx = 0; sx < ss; sx++) {
          const x = (pxi + (sx + 0.5) / ss) * px;
          if (dom === "photo") samplePhoto(s, x, y, smp);
          else if (dom === "sketch") sampleSketch(s, st, x, y, smp);
          else if (dom === "cartoon") sampleCartoon(s, st, x, y, smp);
          else samplePainting(s, x, y, smp);
          r += smp[0];
          g += smp[1];
          b += smp[2];
        }
      }
      r *= inv;
      g *= inv;
      b *= inv;
      if (dom === "photo") {
        // sensor noise: mostly luminance, a little chroma
        const h = unitHash(pxi, py, s.n2);
        const l = (h + unitHash(pxi, py, s.n2 ^ 0x9e37) - 1) * 16;
        r += l + (unitHash(pxi, py, s.n1) - 0.5) * 6;
        g += l;
        b += l + (unitHash(pxi, py, s.n3) - 0.5) * 6;
      } else if (dom === "sketch") {
        const grain = (unitHash(pxi, py, s.n1) - 0.5) * 5;
        r += grain;
        g += grain;
        b += grain;
      } else if (dom === "painting") {
        // canvas weave and a warm varnish
        const weave = ((pxi + py) & 1 ? 7 : -7) * (0.6 + 0.4 * unitHash(pxi >> 1, py >> 1, s.n3));
        const l = (r + g + b) / 3;
        r = (r + (l - r) * 0.15) * 1.04 + weave;
        g = (g + (l - g) * 0.15) * 0.98 + weave;
        b = (b + (l - b) * 0.15) * 0.86 + weave;
      }
      const o = (py * size + pxi) * 3;
      data[o] = r <= 0 ? 0 : r >= 255 ? 255 : Math.floor(r + 0.5);
      data[o + 1] = g <= 0 ? 0 : g >= 255 ? 255 : Math.floor(g + 0.5);
      data[o + 2] = b <= 0 ? 0 : b >= 255 ? 255 : Math.floor(b + 0.5);
    }
  }
  return { width: size, height: size, data };
}

// ------------------------------------------------------------------------------------------------
// Captions
// ------------------------------------------------------------------------------------------------

const article = (next: string) => (/^[aeiou]/.test(next) ? "an" : "a");

/** A caption for the image's attributes, in a domain's words (or none), from the stream. */
export function caption(rng: HostRng, domain: string, className: string, a: WorldAttributes) {
  const noun = a.count === 1 ? className : pluralOf(className);
  const sizeW = pick(rng, SIZE_WORDS[a.size]);
  const colourW = a.colour;
  let np: string;
  const form = rng.int(6);
  if (form === 0) np = `${sizeW} ${colourW} ${noun}`;
  else if (form === 1) np = `${colourW} ${noun}`;
  else if (form === 2) np = `${sizeW} ${noun}`;
  else if (form === 3) np = `${noun}, ${sizeW} and ${colourW}`;
  else if (form === 4) np = `${noun} that ${a.count === 1 ? "is" : "are"} ${colourW}`;
  else np = `${sizeW} ${noun} in ${colourW}`;
  let count: string;
  if (a.count === 1) {
    const c = rng.int(4);
    count = c === 0 ? "one" : c === 1 ? "a single" : article(np);
  } else count = pick(rng, COUNT_WORDS[a.count]);
  np = `${count} ${np}`;
  if (rng.uniform() < 0.6) np += " " + pick(rng, POSITION_WORDS[a.position]);
  if (rng.uniform() < 0.25) np += " " + pick(rng, BACKGROUND_WORDS[a.background]);
  const frames = rng.uniform() < 0.75 && DOMAIN_FRAMES[domain]
    ? DOMAIN_FRAMES[domain]
    : PLAIN_FRAMES;
  return pick(rng, frames).replace("%", np);
}

/**
 * A terse caption: count, shape and style only ("a sketch of two stars"). Contrastive
 * pretraining on full captions finds a shortcut: colour, position, count, background and style
 * already tell the pairs of a batch apart, so the image tower never needs the shape. Captions that
 * name little besides the shape remove it (README, "The default run").
 */
export function terseCaption(rng: HostRng, domain: string, className: string, a: WorldAttributes) {
  const noun = a.count === 1 ? className : pluralOf(className);
  const count = a.count === 1 ? article(noun) : pick(rng, COUNT_WORDS[a.count]);
  return pick(rng, DOMAIN_FRAMES[domain] ?? PLAIN_FRAMES).replace("%", `${count} ${noun}`);
}

// ------------------------------------------------------------------------------------------------
// Generating
// ------------------------------------------------------------------------------------------------

export interface WorldOptions {
  seed?: number;
  /** Image side in pixels (32 or 64 are the intended sizes; 16–256 work). */
  size?: number;
  perClassPerDomain?: number;
  classes?: readonly string[];
  domains?: readonly string[];
  /** Samples per pixel along each axis (default 4 up to 32 px, 3 above). */
  supersample?: number;
  /**
   * Object centres on a lattice of `snap` cells per side (0: anywhere). With `snap` = image size
   * / (patch / 2) an object meets a ViT's patch grid in one of four phases instead of all of
   * them, which is what lets a small ViT learn the shapes in minutes (see the README).
   */
  snap?: number;
  /** Shapes drawn unrotated (an arrow still points one of four ways). */
  upright?: boolean;
  /** The fraction of captions that are terse (count, shape and style only; see terseCaption). */
  terse?: number;
}

export interface WorldItem {
  /** `<domain>/<class>/<id>.png`, relative to the dataset root. */
  path: string;
  domain: string;
  className: string;
  index: number;
  caption: string;
  attributes: WorldAttributes;
  png: Uint8Array;
}

export interface World {
  seed: number;
  size: number;
  snap: number;
  upright: boolean;
  terse: number;
  perClassPerDomain: number;
  /** Sorted (byte order), as readDataset lists them. */
  classes: string[];
  domains: string[];
  /** Sorted by path. */
  items: WorldItem[];
}

export interface RenderedImage {
  image: RGBImage;
  caption: string;
  attributes: WorldAttributes;
}

function checkOptions(o: WorldOptions) {
  const seed = o.seed ?? 0, size = o.size ?? 32, per = o.perClassPerDomain ?? 50;
  if (!Number.isSafeInteger(seed) || seed < 0) {
    throw new WorldError(`seed must be a non-negative safe integer, got ${seed}`);
  }
  if (!Number.isInteger(size) || size < 16 || size > 256) {
    throw new WorldError(`size must be an integer in 16..256 (32 or 64 intended), got ${size}`);
  }
  if (!Number.isInteger(per) || per < 1) {
    throw new WorldError(`perClassPerDomain must be a positive integer, got ${per}`);
  }
  const ss = o.supersample ?? (size <= 32 ? 4 : 3);
  const snap = o.snap ?? 0, upright = o.upright ?? false, terse = o.terse ?? 0;
  if (!(terse >= 0 && terse <= 1)) throw new WorldError(`terse must be in 0..1, got ${terse}`);
  if (!Number.isInteger(snap) || snap < 0 || snap > size) {
    throw new WorldError(
      `snap must be an integer in 0..${size} (lattice cells per side), got ${snap}`,
    );
  }
  if (!Number.isInteger(ss) || ss < 1 || ss > 8) {
    throw new WorldError(`supersample must be an integer in 1..8, got ${ss}`);
  }
  const subset = (what: string, got: readonly string[] | undefined, known: readonly string[]) => {
    const list = got ? [...new Set(got)] : [...known];
    const bad = list.filter((c) => !known.includes(c));
    if (bad.length || !list.length) {
      throw new WorldError(
        `unknown ${what} ${bad.map((b) => JSON.stringify(b)).join(", ") || "(none given)"} ` +
          `(known: ${known.join(", ")})`,
      );
    }
    return list.sort(byteCompare);
  };
  return {
    seed,
    size,
    per,
    ss,
    snap,
    upright,
    terse,
    classes: subset("class", o.classes, WORLD_CLASSES),
    domains: subset("domain", o.domains, WORLD_DOMAINS),
  };
}

/**
 * One image of the world: image `index` of `className` in `domain`. `override` fixes attributes
 * (the layout and style are still drawn from the image's own streams).
 */
export function renderWorldImage(
  opts: Omit<WorldOptions, "perClassPerDomain" | "classes" | "domains">,
  domain: string,
  className: string,
  index: number,
  override: Partial<WorldAttributes> = {},
): RenderedImage {
  const o = checkOptions({ ...opts, classes: [className], domains: [domain] });
  const attrRng = hostRng(imageSeed(o.seed, domain, className, index, 0));
  const attributes = { ...sampleAttributes(attrRng), ...override };
  const lay = layout(attrRng, attributes, o.snap);
  const scene = buildScene(
    domain,
    className,
    attributes,
    lay,
    hostRng(imageSeed(o.seed, domain, className, index, 1)),
    o.upright,
  );
  const image = renderScene(scene, o.size, o.ss);
  // a fourth stream decides terseness, so that the other captions keep their words
  const terse = o.terse > 0 &&
    hostRng(imageSeed(o.seed, domain, className, index, 3)).uniform() < o.terse;
  const text = (terse ? terseCaption : caption)(
    hostRng(imageSeed(o.seed, domain, className, index, 2)),
    domain,
    className,
    attributes,
  );
  return { image, caption: text, attributes };
}

/** Generates the world in memory: `perClassPerDomain` images of each class in each domain. */
export function generateWorld(opts: WorldOptions = {}): World {
  const o = checkOptions(opts);
  const width = Math.max(4, String(o.per - 1).length);
  const items: WorldItem[] = [];
  for (const domain of o.domains) {
    for (const className of o.classes) {
      for (let index = 0; index < o.per; index++) {
        const r = renderWorldImage(
          {
            seed: o.seed,
            size: o.size,
            supersample: o.ss,
            snap: o.snap,
            upright: o.upright,
            terse: o.terse,
          },
          domain,
          className,
          index,
        );
        items.push({
          path: `${domain}/${className}/${String(index).padStart(width, "0")}.png`,
          domain,
          className,
          index,
          caption: r.caption,
          attributes: r.attributes,
          png: encodePng(r.image),
        });
      }
    }
  }
  items.sort((a, b) => byteCompare(a.path, b.path));
  return {
    seed: o.seed,
    size: o.size,
    snap: o.snap,
    upright: o.upright,
    terse: o.terse,
    perClassPerDomain: o.per,
    classes: o.classes,
    domains: o.domains,
    items,
  };
}

// ------------------------------------------------------------------------------------------------
// PNG encoding
// ------------------------------------------------------------------------------------------------

/**
 * 8-bit RGB PNG: per-row filter chosen by the minimum sum of absolute differences, zlib at a
 * fixed level and window, so the bytes depend only on the pixels (and the fflate version).
 */
export function encodePng(img: RGBImage, level = 9): Uint8Array {
  const { width: W, height: H, data } = img;
  if (data.length !== W * H * 3) {
    throw new WorldError(`encodePng: ${W}×${H} RGB needs ${W * H * 3} bytes, got ${data.length}`);
  }
  const stride = W * 3;
  const raw = new Uint8Array(H * (stride + 1));
  const cand = new Uint8Array(stride);
  const best = new Uint8Array(stride);
  for (let y = 0; y < H; y++) {
    const row = y * stride, prev = row - stride;
    let bestSum = Infinity, bestF = 0;
    for (let f = 0; f < 5; f++) {
      let sum = 0;
      for (let i = 0; i < stride; i++) {
        const x = data[row + i];
        const a = i >= 3 ? data[row + i - 3] : 0;
        const b = y > 0 ? data[prev + i] : 0;
        const c = i >= 3 && y > 0 ? data[prev + i - 3] : 0;
        let p: number;
        if (f === 0) p = 0;
        else if (f === 1) p = a;
        else if (f === 2) p = b;
        else if (f === 3) p = (a + b) >> 1;
        else {
          const q = a + b - c, pa = Math.abs(q - a), pb = Math.abs(q - b), pc = Math.abs(q - c);
          p = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
        }
        const v = (x - p) & 255;
        cand[i] = v;
        sum += v < 128 ? v : 256 - v;
      }
      if (sum < bestSum) {
        bestSum = sum;
        bestF = f;
        best.set(cand);
      }
    }
    raw[y * (stride + 1)] = bestF;
    raw.set(best, y * (stride + 1) + 1);
  }
  const z = zlibSync(raw, { level: level as 9, mem: 1 });
  const ihdr = new Uint8Array(13);
  const dv = new DataView(ihdr.buffer);
  dv.setUint32(0, W);
  dv.setUint32(4, H);
  ihdr.set([8, 2, 0, 0, 0], 8);
  const chunks: [string, Uint8Array][] = [["IHDR", ihdr], ["IDAT", z], ["IEND", new Uint8Array(0)]];
  const out = new Uint8Array(8 + chunks.reduce((n, [, d]) => n + 12 + d.length, 0));
  out.set([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  const ov = new DataView(out.buffer);
  let p = 8;
  for (const [type, d] of chunks) {
    ov.setUint32(p, d.length);
    for (let i = 0; i < 4; i++) out[p + 4 + i] = type.charCodeAt(i);
    out.set(d, p + 8);
    ov.setUint32(p + 8 + d.length, crc32(out.subarray(p + 4, p + 8 + d.length)));
    p += 12 + d.length;
  }
  return out;
}

// ------------------------------------------------------------------------------------------------
// Writing
// ------------------------------------------------------------------------------------------------

/** The files of a world (path → bytes), sorted by path: images, captions, classes, metadata. */
export function worldFiles(world: World): Map<string, Uint8Array> {
  const enc = new TextEncoder();
  const files = new Map<string, Uint8Array>();
  const lines = world.items.map((it) =>
    JSON.stringify({
      path: it.path,
      domain: it.domain,
      class: it.className,
      caption: it.caption,
      attributes: {
        count: it.attributes.count,
        size: it.attributes.size,
        colour: it.attributes.colour,
        position: it.attributes.position,
        background: it.attributes.background,
      },
    })
  );
  const meta = {
    generator: "clipkit synthetic world",
    version: 1,
    seed: world.seed,
    size: world.size,
    perClassPerDomain: world.perClassPerDomain,
    // written only when set, so that worlds made before these options keep their bytes
    ...(world.snap ? { snap: world.snap } : {}),
    ...(world.upright ? { upright: true } : {}),
    ...(world.terse ? { terse: world.terse } : {}),
    classes: world.classes,
    domains: world.domains,
    images: world.items.length,
  };
  const all: [string, Uint8Array][] = [
    ...world.items.map((it): [string, Uint8Array] => [it.path, it.png]),
    ["captions.jsonl", enc.encode(lines.join("\n") + "\n")],
    ["classes.txt", enc.encode(world.classes.join("\n") + "\n")],
    ["world.json", enc.encode(JSON.stringify(meta, null, 2) + "\n")],
  ];
  all.sort((a, b) => byteCompare(a[0], b[0]));
  for (const [p, b] of all) files.set(p, b);
  return files;
}

/** sha256 over the world's files (path, length, bytes in path order): a folder and its zip agree. */
export function worldDigest(world: World): string {
  const h = createHash("sha256");
  const len = new Uint8Array(4);
  for (const [path, bytes] of worldFiles(world)) {
    h.update(new TextEncoder().encode(path + "\0"));
    new DataView(len.buffer).setUint32(0, bytes.length);
    h.update(len);
    h.update(bytes);
  }
  return "sha256:" + h.digest("hex");
}

/**
 * The world as zip bytes: entries in path order, PNGs stored, text deflated, a fixed timestamp.
 * fflate writes DOS times from local-time fields, so the date is built from local fields too.
 */
export function zipWorld(world: World): Uint8Array {
  const mtime = new Date(2020, 0, 1, 12, 0, 0);
  const tree: Record<string, [Uint8Array, ZipOptions]> = {};
  for (const [p, b] of worldFiles(world)) {
    tree[p] = [b, { level: p.endsWith(".png") ? 0 : 9, mem: 4, mtime, os: 3, attrs: 0o644 << 16 }];
  }
  return zipSync(tree);
}

/**
 * Writes the world to a folder (`root/<domain>/<class>/<id>.png` and the text files) or, for a
 * path ending in .zip, to a zip archive. A non-empty folder or an existing file is refused
 * unless `force` (which replaces only what the world writes). With two or more domains
 * `readDataset` detects the domain layout; a one-domain world needs `{ layout: "domains" }`
 * (and `prefix: ""` for its zip, whose single top folder would otherwise be stripped).
 */
export function writeWorld(
  target: string,
  world: World,
  { force = false }: { force?: boolean } = {},
): { path: string; files: number; bytes: number } {
  let exists = false;
  try {
    const st = Deno.statSync(target);
    exists = st.isFile || [...Deno.readDirSync(target)].length > 0;
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  if (exists && !force) {
    throw new WorldError(`${target} exists and is not empty (pass force / --force to replace)`);
  }
  if (/\.zip$/i.test(target)) {
    const z = zipWorld(world);
    const parent = target.includes("/") ? target.slice(0, target.lastIndexOf("/")) : "";
    if (parent) Deno.mkdirSync(parent, { recursive: true });
    Deno.writeFileSync(target, z);
    return { path: target, files: world.items.length + 3, bytes: z.length };
  }
  const files = worldFiles(world);
  if (force) {
    for (const d of world.domains) {
      try {
        Deno.removeSync(`${target}/${d}`, { recursive: true });
      } catch (e) {
        if (!(e instanceof Deno.errors.NotFound)) throw e;
      }
    }
  }
  let bytes = 0;
  const made = new Set<string>();
  for (const [p, b] of files) {
    const dir = p.includes("/") ? `${target}/${p.slice(0, p.lastIndexOf("/"))}` : target;
    if (!made.has(dir)) {
      Deno.mkdirSync(dir, { recursive: true });
      made.add(dir);
    }
    Deno.writeFileSync(`${target}/${p}`, b);
    bytes += b.length;
  }
  return { path: target, files: files.size, bytes };
}

/** Images tiled into one RGB image, `cols` per row, with a 1-pixel gray gutter. */
export function contactSheet(images: RGBImage[], cols: number): RGBImage {
  const w = images[0].width, h = images[0].height, rows = Math.ceil(images.length / cols);
  const W = cols * (w + 1) + 1, H = rows * (h + 1) + 1;
  const data = new Uint8Array(W * H * 3).fill(128);
  images.forEach((im, k) => {
    const ox = 1 + (k % cols) * (w + 1), oy = 1 + Math.floor(k / cols) * (h + 1);
    for (let y = 0; y < h; y++) {
      data.set(im.data.subarray(y * w * 3, (y + 1) * w * 3), ((oy + y) * W + ox) * 3);
    }
  });
  return { width: W, height: H, data };
}

// ------------------------------------------------------------------------------------------------
// CLI
// ------------------------------------------------------------------------------------------------

const USAGE = `usage: deno task world --out DIR|FILE.zip [--seed 0] [--size 32] [--per 50]
       [--snap CELLS] [--upright] [--terse F] [--classes a,b,...] [--domains a,b,...] [--sheet FILE.png] [--force]`;

function parseArgs(args: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "--help" || a === "-h") out.help = "1";
    else if (a === "--force") out.force = "1";
    else if (a === "--upright") out.upright = "1";
    else if (a.startsWith("--")) {
      const eq = a.indexOf("=");
      if (eq > 0) out[a.slice(2, eq)] = a.slice(eq + 1);
      else if (i + 1 < args.length) out[a.slice(2)] = args[++i];
      else throw new WorldError(`${a} needs a value\n${USAGE}`);
    } else throw new WorldError(`unexpected argument ${a}\n${USAGE}`);
  }
  const known = [
    "out",
    "seed",
    "size",
    "per",
    "snap",
    "upright",
    "terse",
    "classes",
    "domains",
    "sheet",
    "force",
    "help",
  ];
  const bad = Object.keys(out).filter((k) => !known.includes(k));
  if (bad.length) throw new WorldError(`unknown option --${bad[0]}\n${USAGE}`);
  return out;
}

export function main(args: string[]): number {
  let a: Record<string, string>;
  try {
    a = parseArgs(args);
  } catch (e) {
    console.error((e as Error).message);
    return 2;
  }
  if (a.help || !a.out) {
    (a.help ? console.log : console.error)(USAGE);
    return a.help ? 0 : 2;
  }
  const bad = ["seed", "size", "per", "snap", "terse"].find((k) =>
    a[k] !== undefined && (a[k].trim() === "" || !Number.isFinite(Number(a[k])))
  );
  if (bad) {
    console.error(`--${bad}: expected a number, got "${a[bad]}"\n${USAGE}`);
    return 2;
  }
  const num = (k: string, d: number) => (a[k] === undefined ? d : Number(a[k]));
  const list = (k: string) => a[k]?.split(",").map((s) => s.trim()).filter((s) => s);
  try {
    const t0 = performance.now();
    const world = generateWorld({
      seed: num("seed", 0),
      size: num("size", 32),
      perClassPerDomain: num("per", 50),
      snap: num("snap", 0),
      upright: !!a.upright,
      terse: num("terse", 0),
      classes: list("classes"),
      domains: list("domains"),
    });
    const t1 = performance.now();
    const w = writeWorld(a.out, world, { force: !!a.force });
    const t2 = performance.now();
    console.log(
      `${world.items.length} images (${world.domains.length} domains × ${world.classes.length} ` +
        `classes × ${world.perClassPerDomain}), ${world.size} px, seed ${world.seed}`,
    );
    console.log(`domains: ${world.domains.join(", ")}`);
    console.log(`classes: ${world.classes.join(", ")}`);
    console.log(
      `wrote ${w.path}: ${w.files} files, ${(w.bytes / 1024).toFixed(0)} KiB ` +
        `(generated in ${((t1 - t0) / 1000).toFixed(2)} s, written in ${
          ((t2 - t1) / 1000).toFixed(2)
        } s)`,
    );
    console.log(`checksum ${worldDigest(world)}`);
    if (a.sheet) {
      // one row per domain: the first image of each class
      const ims: RGBImage[] = [];
      for (const d of world.domains) {
        for (const c of world.classes) {
          ims.push(renderWorldImage({ seed: world.seed, size: world.size }, d, c, 0).image);
        }
      }
      Deno.writeFileSync(a.sheet, encodePng(contactSheet(ims, world.classes.length)));
      console.log(`contact sheet ${a.sheet}`);
    }
    return 0;
  } catch (e) {
    console.error(`world: ${(e as Error).message}`);
    return 1;
  }
}
