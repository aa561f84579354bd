/**
 * Batched matrix multiply C[b] = A[b] · B[b], A: M×K, B: K×N, read through strides; and the
 * float64 references for matmul and the patch-embedding conv2d built on it.
 *
 * Transposes are views with swapped strides, so one kernel serves A, Aᵀ, B, Bᵀ; batch axes
 * (up to 4, broadcast with stride 0) are addressed through the uniform. Operands may be f32 or
 * f16 (upcast on load); C is always f32, contiguous [batch, M, N].
 *
 * Versions:
 *   - naive: one output per invocation, 16×16 workgroups (reference and fallback).
 *   - tiled: the storage-buffer path for real GPUs. A workgroup of 16×8 invocations computes a
 *     64×64 tile of C, each invocation an 8-row × 4-column block in vec4 registers; K advances
 *     16 at a time through workgroup memory. The load mapping follows the operand's layout
 *     (key flags aK / bN: unit stride along K for A, along N for B) so neighbouring
 *     invocations read neighbouring addresses; the addressing itself always uses the strides,
 *     so every flag setting is correct for every view.
 *   - texture: for software adapters (llvmpipe), where storage-buffer loads become scalar loops
 *     but read-only storage-texture loads are cheap (shared/notes/WEBGPU_ON_CPU.md). A pack
 *     kernel copies each operand from its strided (possibly f16) buffer into an rgba32float
 *     2D-array texture, 4 consecutive k (A) or n (B) per texel, zero-padding K to a multiple
 *     of 4; the multiply kernel then has each invocation accumulate 8 rows × 8 columns in 16
 *     vec4 registers, workgroup 8×4 (a 32×64 tile), no workgroup memory, no barrier. Key flags:
 *     v4 (N % 4 == 0: C stored a vec4 at a time, 2–3× faster than scalar stores on llvmpipe),
 *     acc (add into C, for K split in chunks to fit the texture limits).
 *
 * Measured on the 2-core llvmpipe machine (GFLOP/s, 256³ / 512³ / 1024³, other jobs running):
 *   naive 0.5–1.8 / 0.6–1.8 / 0.6–1.6; tiled 2–5 / 2.5–7.5 / 1.4–4.8;
 *   texture 12–20 / 18–30 / 11–43 (packing included). bench/matmul.ts reproduces these.
 *
 * Uniform words (naive, tiled): [0] M, [1] N, [2] K, [3] batch count, [4] batch rank,
 *   [5] A offset, [6] B offset, [7] sAm, [8] sAk, [9] sBk, [10] sBn, [11] first batch index of
 *   this dispatch (batches beyond 65,535 take several), [12..16) batch shape,
 *   [16..20) A batch strides, [20..24) B batch strides.
 * Uniform words (pack): [0] rows R, [1] columns Cn, [2] texels per row W, [3] rows written Rp
 *   (rows R..Rp are zeros), [4] offset, [5] row stride, [6] column stride, [7] batch rank,
 *   [8] first batch index, [9] first row, [10] first column, [12..16) batch shape,
 *   [16..20) batch strides. Texel (x, r, layer) = X[batch first+layer][first row + r,
 *   first column + 4x .. 4x+3], zero beyond Cn.
 * Uniform words (texture multiply): [0] M, [1] N (of the whole C), [2] K/4 texels of this
 *   chunk, [3] A layer step (0: one layer shared by every batch), [4] B layer step,
 *   [5] first row, [6] first batch, [7] first column, [8] rows, [9] columns of this chunk.
 */
import { WGSL_PRELUDE } from "../engine/device.ts";
import type { DType } from "../engine/tensor.ts";

const T = (d: DType) => (d === "f16" ? "f16" : "f32");

const batchOffsets = /* wgsl */ `
fn batchOffsets(bi: u32) -> vec2<u32> {
  var rem = bi;
  var oa = uw(5u);
  var ob = uw(6u);
  for (var d = i32(uw(4u)) - 1; d >= 0; d--) {
    let s = uw(12u + u32(d));
    let c = rem % s;
    rem = rem / s;
    oa += c * uw(16u + u32(d));
    ob += c * uw(20u + u32(d));
  }
  return vec2<u32>(oa, ob);
}`;

export function matmulNaiveWgsl(ta: DType, tb: DType): string {
  return `${WGSL_PRELUDE}
@group(0) @binding(1) var<storage, read> A: array<${T(ta)}>;
@group(0) @binding(2) var<storage, read> B: array<${T(tb)}>;
@group(0) @binding(3) var<storage, read_write> C: array<f32>;
${batchOffsets}
@compute @workgroup_size(16, 16)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let M = uw(0u); let N = uw(1u); let K = uw(2u);
  let n = gid.x; let m = gid.y; let bi = gid.z + uw(11u);
  if (m >= M || n >= N || bi >= uw(3u)) { return; }
  let o = batchOffsets(bi);
  let sAm = uw(7u); let sAk = uw(8u); let sBk = uw(9u); let sBn = uw(10u);
  var acc = 0.0;
  var pa = o.x + m * sAm;
  var pb = o.y + n * sBn;
  for (var k = 0u; k < K; k++) {
    acc += f32(A[pa]) * f32(B[pb]);
    pa += sAk;
    pb += sBk;
  }
  C[(bi * M + m) * N + n] = acc;
}`;
}

/** Tile of the tiled kernel: C rows × columns per workgroup. */
export const TILED_TILE = 64;

/**
 * The workgroup-tiled, register-blocked kernel. `aK`: A has unit stride along K (load
 * neighbouring k together), else along M; `bN`: B has unit stride along N, else along K.
 */
export function matmulTiledWgsl(ta: DType, tb: DType, aK: boolean, bN: boolean): string {
  // 64×16 A elements and 16×64 B elements per K step, 8 of each per invocation (128 of them)
  const aMap = aK ? "let kk = e % 16u; let mm = e / 16u;" : "let mm = e % 64u; let kk = e / 64u;";
  const bMap = bN ? "let nn = e % 64u; let kk = e / 64u;" : "let kk = e % 16u; let nn = e / 16u;";
  return `${WGSL_PRELUDE}
@group(0) @binding(1) var<storage, read> A: array<${T(ta)}>;
@group(0) @binding(2) var<storage, read> B: array<${T(tb)}>;
@group(0) @binding(3) var<storage, read_write> C: array<f32>;
${batchOffsets}
// As[k * 16 + q][i] = A[m0 + 4q + i, k0 + k]; Bs[k * 16 + q][i] = B[k0 + k, n0 + 4q + i]
var<workgroup> As: array<vec4<f32>, 256>;
var<workgroup> Bs: array<vec4<f32>, 256>;
@compute @workgroup_size(16, 8)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let M = uw(0u); let N = uw(1u); let K = uw(2u);
  let bi = wid.z + uw(11u);
  if (bi >= uw(3u)) { return; }
  let o = batchOffsets(bi);
  let sAm = uw(7u); let sAk = uw(8u); let sBk = uw(9u); let sBn = uw(10u);
  let m0 = wid.y * 64u; let n0 = wid.x * 64u;
  let li = lid.y * 16u + lid.x;
  ${[...Array(8).keys()].map((r) => `var c${r} = vec4<f32>(0.0);`).join(" ")}
  for (var k0 = 0u; k0 < K; k0 += 16u) {
    for (var i = 0u; i < 8u; i++) {
      let e = li + i * 128u;
      {
        ${aMap}
        let m = m0 + mm; let k = k0 + kk;
        var v = 0.0;
        if (m < M && k < K) { v = f32(A[o.x + m * sAm + k * sAk]); }
        As[kk * 16u + mm / 4u][mm % 4u] = v;
      }
      {
        ${bMap}
        let n = n0 + nn; let k = k0 + kk;
        var v = 0.0;
        if (n < N && k < K) { v = f32(B[o.y + k * sBk + n * sBn]); }
        Bs[kk * 16u + nn / 4u][nn % 4u] = v;
      }
    }
    workgroupBarrier();
    for (var kk = 0u; kk < 16u; kk++) {
      let a0 = As[kk * 16u + 2u * lid.y];
      let a1 = As[kk * 16u + 2u * lid.y + 1u];
      let b = Bs[kk * 16u + lid.x];
      c0 += a0.x * b; c1 += a0.y * b; c2 += a0.z * b; c3 += a0.w * b;
      c4 += a1.x * b; c5 += a1.y * b; c6 += a1.z * b; c7 += a1.w * b;
    }
    workgroupBarrier();
  }
  let n = n0 + 4u * lid.x;
  let mr = m0 + 8u * lid.y;
  ${[...Array(8).keys()].map((r) => `storeRow(bi, mr + ${r}u, n, c${r}, M, N);`).join("\n  ")}
}
fn storeRow(bi: u32, m: u32, n: u32, v: vec4<f32>, M: u32, N: u32) {
  if (m >= M) { return; }
  let base = (bi * M + m) * N + n;
  if (n + 3u < N) {
    C[base] = v.x; C[base + 1u] = v.y; C[base + 2u] = v.z; C[base + 3u] = v.w;
    return;
  }
  for (var i = 0u; i < 4u; i++) { if (n + i < N) { C[base + i] = v[i]; } }
}`;
}

/** Copies a strided (batched) matrix into an rgba32float 2D-array texture, 4 columns a texel. */
export function matmulPackWgsl(t: DType): string {
  return `${WGSL_PRELUDE}
@group(0) @binding(1) var<storage, read> X: array<${T(t)}>;
@group(0) @binding(2) var P: texture_storage_2d_array<rgba32float, write>;
@compute @workgroup_size(16, 16)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  let x = gid.x; let r = gid.y; let layer = wid.z;
  if (x >= uw(2u) || r >= uw(3u)) { return; }
  var v = vec4<f32>(0.0);
  if (r < uw(0u)) {
    var rem = uw(8u) + layer;
    var off = uw(4u);
    for (var d = i32(uw(7u)) - 1; d >= 0; d--) {
      let s = uw(12u + u32(d));
      off += (rem % s) * uw(16u + u32(d));
      rem = rem / s;
    }
    let row = off + (uw(9u) + r) * uw(5u);
    let sC = uw(6u);
    let c = 4u * x;
    let Cn = uw(1u);
    let p = row + (uw(10u) + c) * sC;
    if (c + 3u < Cn) {
      v = vec4<f32>(f32(X[p]), f32(X[p + sC]), f32(X[p + 2u * sC]), f32(X[p + 3u * sC]));
    } else {
      for (var i = 0u; i < 4u; i++) { if (c + i < Cn) { v[i] = f32(X[p + i * sC]); } }
    }
  }
  textureStore(P, vec2<u32>(x, r), layer, v);
}`;
}

/** Rows and columns of C per invocation of the texture kernel, and its workgroup. */
export const TEX_ROWS = 8, TEX_COLS = 8, TEX_WG: [number, number] = [8, 4];

/**
 * The texture multiply: A texture (K/4)×M, B texture (N/4)×K (rows K..K/4·4 zero).
 * `v4`: C rows start 16-byte aligned (N % 4 == 0), so blocks are stored as vec4 (scalar
 * storage-buffer stores are the slowest thing on llvmpipe); `acc`: add into C (K chunks).
 */
export function matmulTextureWgsl(v4: boolean, acc: boolean): string {
  const R = [...Array(TEX_ROWS).keys()];
  const J = [0, 1, 2, 3], Q = [...Array(TEX_COLS / 4).keys()]; // k in a texel; column texels
  const comp = "xyzw";
  const decl = R.flatMap((r) => Q.map((q) => `var c${r}_${q} = vec4<f32>(0.0);`)).join(" ");
  const loadA = R.map((r) => `let a${r} = textureLoad(TA, vec2<u32>(k, r0 + ${r}u), la);`);
  const loadB = J.flatMap((j) =>
    Q.map((q) => `let b${j}_${q} = textureLoad(TB, vec2<u32>(x0 + ${q}u, kb + ${j}u), lb);`)
  );
  // independent products summed before the accumulator: shorter dependency chains
  const fmas = R.flatMap((r) =>
    Q.map((q) => `c${r}_${q} += ` + J.map((j) => `a${r}.${comp[j]} * b${j}_${q}`).join(" + ") + ";")
  );
  const stores = R.map((r) =>
    `if (r0 + ${r}u < Mc) { let base = (bi * M + m0 + ${r}u) * N + n0; ` +
    Q.map((q) => `put(base + ${4 * q}u, n0 + ${4 * q}u, Nend, c${r}_${q});`).join(" ") + " }"
  );
  const op = acc ? "+=" : "=";
  const put = v4
    ? `fn put(p: u32, n: u32, Nend: u32, v: vec4<f32>) {
  if (n < Nend) { C[p / 4u] ${op} v; }
}`
    : `fn put(p: u32, n: u32, Nend: u32, v: vec4<f32>) {
  if (n + 3u < Nend) {
    C[p] ${op} v.x; C[p + 1u] ${op} v.y; C[p + 2u] ${op} v.z; C[p + 3u] ${op} v.w;
    return;
  }
  for (var i = 0u; i < 4u; i++) { if (n + i < Nend) { C[p + i] ${op} v[i]; } }
}`;
  return `${WGSL_PRELUDE}
@group(0) @binding(1) var TA: texture_storage_2d_array<rgba32float, read>;
@group(0) @binding(2) var TB: texture_storage_2d_array<rgba32float, read>;
@group(0) @binding(3) var<storage, read_write> C: array<${v4 ? "vec4<f32>" : "f32"}>;
${put}
@compute @workgroup_size(${TEX_WG[0]}, ${TEX_WG[1]})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  let M = uw(0u); let N = uw(1u); let K4 = uw(2u);
  let Mc = uw(8u); let Nc = uw(9u);
  let r0 = gid.y * ${TEX_ROWS}u;
  let x0 = gid.x * ${TEX_COLS / 4}u;
  if (r0 >= Mc || 4u * x0 >= Nc) { return; }
  let layer = wid.z;
  let la = layer * uw(3u); let lb = layer * uw(4u);
  ${decl}
  for (var k = 0u; k < K4; k++) {
    ${loadA.join("\n    ")}
    let kb = 4u * k;
    ${loadB.join("\n    ")}
    ${fmas.join("\n    ")}
  }
  let bi = uw(6u) + layer;
  let m0 = uw(5u) + r0;
  let n0 = uw(7u) + 4u * x0;
  let Nend = uw(7u) + Nc;
  ${stores.join("\n  ")}
}`;
}

/** float64 reference for contiguous row-major [batch, M, K] × [batch, K, N]. */
export function cpuMatmul(
  a: Float64Array,
  b: Float64Array,
  batch: number,
  M: number,
  K: number,
  N: number,
): Float64Array {
  const c = new Float64Array(batch * M * N);
  for (let p = 0; p < batch; p++) {
    for (let i = 0; i < M; i++) {
      for (let k = 0; k < K; k++) {
        const av = a[(p * M + i) * K + k];
        for (let j = 0; j < N; j++) c[(p * M + i) * N + j] += av * b[(p * K + k) * N + j];
      }
    }
  }
  return c;
}

/**
 * float64 reference of conv2d with kernel = stride = p, no padding, no bias:
 * x [B, C, H, W] (row-major), w [O, C, p, p] → [B, O, H/p, W/p].
 */
export function cpuConv2dPatch(
  x: Float64Array,
  w: Float64Array,
  B: number,
  C: number,
  H: number,
  W: number,
  O: number,
  p: number,
): Float64Array {
  const Hp = H / p, Wp = W / p;
  const out = new Float64Array(B * O * Hp * Wp);
  for (let b = 0; b < B; b++) {
    for (let o = 0; o < O; o++) {
      for (let i = 0; i < Hp; i++) {
        for (let j = 0; j < Wp; j++) {
          let s = 0;
          for (let c = 0; c < C; c++) {
            for (let di = 0; di < p; di++) {
              for (let dj = 0; dj < p; dj++) {
                s += x[((b * C + c) * H + i * p + di) * W + j * p + dj] *
                  w[((o * C + c) * p + di) * p + dj];
              }
            }
          }
          out[((b * O + o) * Hp + i) * Wp + j] = s;
        }
      }
    }
  }
  return out;
}
