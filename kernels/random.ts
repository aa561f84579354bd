/**
 * Counter-based random numbers: Philox-4x32-10 (Salmon et al., SC 2011), keyed by the seed.
 *
 * Element i of every stream is word i % 4 of philox(counter = (i / 4 low, high, 0, 0),
 * key = (seed low 32 bits, seed high bits)): values depend only on (seed, i), never on the
 * dispatch split, the shape or the machine (integer arithmetic only, up to the float conversion).
 *
 * Versions (pipeline key = mode):
 *   - bits:    the raw u32 words (stored in an i32 tensor, same bits).
 *   - uniform: lo + (hi − lo) · u, u = (w >> 8) · 2⁻²⁴ ∈ [0, 1) (exact in f32).
 *   - normal:  Box–Muller on the word pairs (w0, w1), (w2, w3) of each block: u1 ∈ (0, 1],
 *              θ = π (2 u2 − 1); element 4b+0 / 4b+1 take r cos θ / r sin θ of the first pair,
 *              4b+2 / 4b+3 of the second.
 * One invocation computes one block (four elements).
 *
 * Uniform words: [0] n, [1] seed low, [2] seed high, [3] a (lo or mean), [4] b (hi − lo or std).
 *
 * The CPU reference (philox4x32, cpuRandomBits/Uniform/Normal) produces the same u32 stream
 * exactly; uniforms match bitwise for lo = 0, hi = 1, normals to float rounding of log/cos/sin.
 */
import { WGSL_PRELUDE } from "../engine/device.ts";

export type RandomMode = "bits" | "uniform" | "normal";

const M0 = 0xd2511f53, M1 = 0xcd9e8d57, W0 = 0x9e3779b9, W1 = 0xbb67ae85;
const hex = (x: number) => `0x${x.toString(16)}u`;

export function randomWgsl(mode: RandomMode): string {
  const outT = mode === "bits" ? "i32" : "f32";
  const values = mode === "bits"
    ? "let v = bitcast<vec4<i32>>(w);"
    : mode === "uniform"
    ? "let v = uf(3u) + uf(4u) * (vec4<f32>(w >> vec4<u32>(8u)) * 5.9604644775390625e-8);"
    : `let p = boxMuller(w.x, w.y);
  let q = boxMuller(w.z, w.w);
  let v = uf(3u) + uf(4u) * vec4<f32>(p.x, p.y, q.x, q.y);`;
  return `${WGSL_PRELUDE}
@group(0) @binding(1) var<storage, read_write> out: array<${outT}>;

// 32×32 → 64-bit product as (hi, lo), from 16-bit halves (WGSL has no mulhi).
fn mulhilo(a: u32, b: u32) -> vec2<u32> {
  let al = a & 0xffffu; let ah = a >> 16u;
  let bl = b & 0xffffu; let bh = b >> 16u;
  let lh = al * bh; let hl = ah * bl;
  let mid = ((al * bl) >> 16u) + (lh & 0xffffu) + (hl & 0xffffu);
  return vec2<u32>(ah * bh + (lh >> 16u) + (hl >> 16u) + (mid >> 16u), a * b);
}

fn philox(c0: vec4<u32>, k0: vec2<u32>) -> vec4<u32> {
  var c = c0;
  var k = k0;
  for (var r = 0u; r < 10u; r++) {
    if (r > 0u) { k += vec2<u32>(${hex(W0)}, ${hex(W1)}); }
    let p = mulhilo(${hex(M0)}, c.x);
    let q = mulhilo(${hex(M1)}, c.z);
    c = vec4<u32>(q.x ^ c.y ^ k.x, q.y, p.x ^ c.w ^ k.y, p.y);
  }
  return c;
}

fn boxMuller(a: u32, b: u32) -> vec2<f32> {
  let u1 = (f32(a >> 8u) + 1.0) * 5.9604644775390625e-8;
  let u2 = f32(b >> 8u) * 5.9604644775390625e-8;
  let r = sqrt(-2.0 * log(u1));
  let t = 3.14159265358979 * (2.0 * u2 - 1.0);
  return vec2<f32>(r * cos(t), r * sin(t));
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let b = linearIndex(gid, nwg);
  let n = uw(0u);
  if (b * 4u >= n) { return; }
  let w = philox(vec4<u32>(b, 0u, 0u, 0u), vec2<u32>(uw(1u), uw(2u)));
  ${values}
  for (var l = 0u; l < 4u; l++) {
    if (b * 4u + l < n) { out[b * 4u + l] = v[l]; }
  }
}`;
}

// ---------------------------------------------------------------------------------------------
// CPU reference: the same stream, exactly.

/** The high 32 bits of the 64-bit product of two u32 (the low ones are Math.imul's). */
function mulhi(a: number, b: number): number {
  const al = a & 0xffff, ah = a >>> 16, bl = b & 0xffff, bh = b >>> 16;
  const lh = al * bh, hl = ah * bl;
  const mid = ((al * bl) >>> 16) + (lh & 0xffff) + (hl & 0xffff);
  return (ah * bh + (lh >>> 16) + (hl >>> 16) + (mid >>> 16)) >>> 0;
}

/** Philox-4x32-10 of counter (c0, c1, c2, c3) under key (k0, k1), written to out[j..j+4). */
function philoxInto(
  c0: number,
  c1: number,
  c2: number,
  c3: number,
  k0: number,
  k1: number,
  out: Uint32Array,
  j: number,
) {
  for (let r = 0; r < 10; r++) {
    if (r > 0) {
      k0 = (k0 + W0) >>> 0;
      k1 = (k1 + W1) >>> 0;
    }
    const phi = mulhi(M0, c0), plo = Math.imul(M0, c0) >>> 0;
    const qhi = mulhi(M1, c2), qlo = Math.imul(M1, c2) >>> 0;
    const n0 = (qhi ^ c1 ^ k0) >>> 0, n2 = (phi ^ c3 ^ k1) >>> 0;
    c0 = n0;
    c1 = qlo;
    c2 = n2;
    c3 = plo;
  }
  out[j] = c0;
  out[j + 1] = c1;
  out[j + 2] = c2;
  out[j + 3] = c3;
}

/** Philox-4x32-10 of counter c (4 u32) under key k (2 u32). */
export function philox4x32(c: ArrayLike<number>, k: ArrayLike<number>): Uint32Array {
  const out = new Uint32Array(4);
  philoxInto(c[0] >>> 0, c[1] >>> 0, c[2] >>> 0, c[3] >>> 0, k[0] >>> 0, k[1] >>> 0, out, 0);
  return out;
}

/** The key words of a seed (a non-negative safe integer). */
export function seedKey(seed: number): [number, number] {
  return [seed % 2 ** 32 >>> 0, Math.floor(seed / 2 ** 32) >>> 0];
}

/** Block b (four stream elements) of a seed's stream. */
export function streamBlock(seed: number, b: number): Uint32Array {
  const out = new Uint32Array(4);
  fillStream(seed, b, out);
  return out;
}

/**
 * Fills `out` (length a multiple of 4) with blocks firstBlock, firstBlock + 1, ... of a seed's
 * stream, without an allocation per block (bulk host draws: random checkpoints).
 */
export function fillStream(seed: number, firstBlock: number, out: Uint32Array) {
  const [k0, k1] = seedKey(seed);
  for (let j = 0; j + 3 < out.length; j += 4) {
    const b = firstBlock + j / 4;
    philoxInto(b % 2 ** 32 >>> 0, Math.floor(b / 2 ** 32) >>> 0, 0, 0, k0, k1, out, j);
  }
}

/** Stream word w as a uniform in [0, 1) (24 bits, exact in f32). */
export const wordToUnit = (w: number) => (w >>> 8) * 2 ** -24;

/** The normal of stream element at lane l of the block at w[base..base+4) (float64 Box–Muller). */
export function blockNormal(w: ArrayLike<number>, l: number, base = 0): number {
  const p = base + (l & 2);
  const u1 = ((w[p] >>> 8) + 1) * 2 ** -24;
  const t = Math.PI * (2 * wordToUnit(w[p + 1]) - 1);
  const r = Math.sqrt(-2 * Math.log(u1));
  return l & 1 ? r * Math.sin(t) : r * Math.cos(t);
}

export function cpuRandomBits(n: number, seed: number): Uint32Array {
  const out = new Uint32Array(n);
  for (let b = 0; b * 4 < n; b++) {
    const w = streamBlock(seed, b);
    for (let l = 0; l < 4 && b * 4 + l < n; l++) out[b * 4 + l] = w[l];
  }
  return out;
}

/** Uniforms as the kernel computes them in f32 (without a fused multiply-add). */
export function cpuRandomUniform(n: number, seed: number, lo = 0, hi = 1): Float64Array {
  const a = Math.fround(lo), s = Math.fround(hi - lo);
  return Float64Array.from(
    cpuRandomBits(n, seed),
    (w) => Math.fround(a + Math.fround(s * wordToUnit(w))),
  );
}

/** Normals in float64 from the same stream. */
export function cpuRandomNormal(n: number, seed: number, mean = 0, std = 1): Float64Array {
  const out = new Float64Array(n);
  for (let b = 0; b * 4 < n; b++) {
    const w = streamBlock(seed, b);
    for (let l = 0; l < 4 && b * 4 + l < n; l++) out[b * 4 + l] = mean + std * blockNormal(w, l);
  }
  return out;
}
