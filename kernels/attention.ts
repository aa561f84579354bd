/**
 * Scaled dot-product attention, flash-attention style forward: out = softmax(q·kᵀ·scale + mask)·v
 * without materialising the Tq × Tk score matrix.
 *
 * Version 2 (pipeline key: dtypes, causal flag, DM = padded head size, BK):
 *   one workgroup per (batch·head, block of BQ = 16 queries); BQ × BK invocations. The block's
 *   queries (pre-multiplied by scale) stay in workgroup memory as vec4; for each block of BK keys
 *   the workgroup loads K, each invocation computes one score, then V replaces K in the tile and
 *   each invocation turns its own score into a probability exp(s − m_new) (computed once), after
 *   which it updates its query row's running max m, running Σ l and its vec4 output columns
 *   (group lane + c·BK). Causal blocks stop at the block's last query.
 *   Writes out [B, H, Tq, Dv] and the row log-sum-exp m + log l [B, H, Tq], which the backward
 *   uses to recompute the probabilities without a second softmax.
 *   BK = DM / 4 for DM ≤ 64 (one vec4 column group per invocation) and 8 for DM = 128, keeping
 *   workgroup memory (BQ·DM + BK·DM + BQ·BK floats) within 12.5 KiB, under WebGPU's 16 KiB
 *   default. Head sizes over 128 use the composite path (see engine/ops/nn.ts).
 *   Version 1 recomputed every exp once per invocation of the row (BK times) and read the tiles
 *   as scalars: 1.7× slower than the composite on llvmpipe at [1, 12, 197, 64].
 *
 * q, k, v are read through offset and [b, h, t, d] strides (a permuted [B, T, H, D] view or an
 * expanded k/v need no copy); f16 storage is upcast on load.
 * Uniform words: [0] B, [1] H, [2] Tq, [3] Tk, [4] D, [5] Dv, [6] scale (f32), [7] B·H;
 *   q at 8: offset, strides b, h, t, d; k at 16; v at 24 (same layout).
 */
import { WGSL_PRELUDE } from "../engine/device.ts";
import type { DType } from "../engine/tensor.ts";
import type { HostTensor } from "./elementwise.ts";
import { wgslType } from "./softmax.ts";

export const ATTN_BQ = 16;
export const ATTN_MAX_D = 128;

/** Padded head size DM (a power of two ≥ 16) and key block BK for head sizes D and Dv. Each
 * invocation owns DM / (4·BK) vec4 output columns: one, except four for DM = 128. */
export function attentionTile(D: number, Dv: number): { DM: number; BK: number } {
  const DM = Math.max(16, 2 ** Math.ceil(Math.log2(Math.max(D, Dv, 1))));
  return { DM, BK: DM === 128 ? 8 : DM / 4 };
}

export function attentionWgsl(
  qt: DType,
  kt: DType,
  vt: DType,
  causal: boolean,
  DM: number,
  BK: number,
): string {
  const BQ = ATTN_BQ, NT = BQ * BK, D4 = DM / 4, C4 = DM / (4 * BK);
  // loads 4 consecutive d (zero past `lim`) of one row of a [b, h, t, d]-strided operand
  const load4 = (buf: string, st: number, lim: string) => /* wgsl */ `
fn load_${buf}(base: u32, d0: u32) -> vec4<f32> {
  var r = vec4<f32>(0.0);
  for (var e = 0u; e < 4u; e++) {
    if (d0 + e < ${lim}) { r[e] = f32(${buf}[base + (d0 + e) * uw(${st}u)]); }
  }
  return r;
}`;
  return `${WGSL_PRELUDE}
const NEG: f32 = -3.4028235e38;
const BQ: u32 = ${BQ}u;
const BK: u32 = ${BK}u;
const D4: u32 = ${D4}u;
const NT: u32 = ${NT}u;
const C4: u32 = ${C4}u;
@group(0) @binding(1) var<storage, read> q: array<${wgslType(qt)}>;
@group(0) @binding(2) var<storage, read> k: array<${wgslType(kt)}>;
@group(0) @binding(3) var<storage, read> v: array<${wgslType(vt)}>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<storage, read_write> lse: array<f32>;
var<workgroup> Qs: array<vec4<f32>, ${BQ * D4}>;
var<workgroup> KV: array<vec4<f32>, ${BK * D4}>;
var<workgroup> S: array<f32, ${NT}>;
${load4("q", 12, "uw(4u)")}
${load4("k", 20, "uw(4u)")}
${load4("v", 28, "uw(5u)")}
@compute @workgroup_size(${NT})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let bh = wid.y + wid.z * nwg.y;
  let ok = bh < uw(7u);
  let H = uw(1u);
  let b = bh / H;
  let h = bh % H;
  let Tq = uw(2u);
  let Tk = uw(3u);
  let nD4 = (uw(4u) + 3u) / 4u;
  let Dv = uw(5u);
  let scale = uf(6u);
  let q0 = wid.x * BQ;
  let qb = uw(8u) + b * uw(9u) + h * uw(10u);
  let kb = uw(16u) + b * uw(17u) + h * uw(18u);
  let vb = uw(24u) + b * uw(25u) + h * uw(26u);
  for (var idx = lid; idx < BQ * D4; idx += NT) {
    let i = idx / D4;
    var val = vec4<f32>(0.0);
    if (ok && q0 + i < Tq) { val = load_q(qb + (q0 + i) * uw(11u), (idx % D4) * 4u) * scale; }
    Qs[idx] = val;
  }
  let i = lid / BK;
  let lane = lid % BK;
  var acc: array<vec4<f32>, ${C4}>;
  for (var c = 0u; c < C4; c++) { acc[c] = vec4<f32>(0.0); }
  var m = NEG;
  var l = 0.0;
  let kEnd = ${causal ? "min(Tk, q0 + BQ)" : "Tk"};
  for (var k0 = 0u; k0 < kEnd; k0 += BK) {
    workgroupBarrier();
    for (var idx = lid; idx < BK * D4; idx += NT) {
      let j = idx / D4;
      var val = vec4<f32>(0.0);
      if (ok && k0 + j < Tk) { val = load_k(kb + (k0 + j) * uw(19u), (idx % D4) * 4u); }
      KV[idx] = val;
    }
    workgroupBarrier();
    var sc = NEG;
    if (k0 + lane < Tk${causal ? " && k0 + lane <= q0 + i" : ""}) {
      var dt = 0.0;
      for (var d = 0u; d < nD4; d++) { dt += dot(Qs[i * D4 + d], KV[lane * D4 + d]); }
      sc = dt;
    }
    S[lid] = sc;
    workgroupBarrier();
    // K is no longer read: V goes into the same tile
    for (var idx = lid; idx < BK * D4; idx += NT) {
      let j = idx / D4;
      var val = vec4<f32>(0.0);
      if (ok && k0 + j < Tk) { val = load_v(vb + (k0 + j) * uw(27u), (idx % D4) * 4u); }
      KV[idx] = val;
    }
    var mx = m;
    for (var j = 0u; j < BK; j++) { mx = max(mx, S[i * BK + j]); }
    let alpha = exp(m - mx);
    m = mx;
    workgroupBarrier();
    S[lid] = exp(sc - mx); // each probability computed once, by its own invocation
    workgroupBarrier();
    l *= alpha;
    for (var c = 0u; c < C4; c++) { acc[c] *= alpha; }
    for (var j = 0u; j < BK; j++) {
      let p = S[i * BK + j];
      l += p;
      for (var c = 0u; c < C4; c++) { acc[c] += p * KV[j * D4 + lane + c * BK]; }
    }
  }
  if (ok && q0 + i < Tq) {
    let row = bh * Tq + q0 + i;
    let inv = 1.0 / l;
    for (var c = 0u; c < C4; c++) {
      let d0 = (lane + c * BK) * 4u;
      for (var e = 0u; e < 4u; e++) {
        if (d0 + e < Dv) { out[row * Dv + d0 + e] = acc[c][e] * inv; }
      }
    }
    if (lane == 0u) { lse[row] = m + log(l); }
  }
}`;
}

// ---------------------------------------------------------------------------------------------
// float64 reference: contiguous q [B, H, Tq, D], k [B, H, Tk, D], v [B, H, Tk, Dv]

export function cpuAttention(
  q: HostTensor,
  k: HostTensor,
  v: HostTensor,
  { causal = false, scale }: { causal?: boolean; scale?: number } = {},
): HostTensor {
  const [B, H, Tq, D] = q.shape;
  const Tk = k.shape[2], Dv = v.shape[3];
  const sc = scale ?? 1 / Math.sqrt(D);
  const out = new Float64Array(B * H * Tq * Dv);
  const s = new Float64Array(Tk);
  for (let bh = 0; bh < B * H; bh++) {
    for (let i = 0; i < Tq; i++) {
      let m = -Infinity;
      for (let j = 0; j < Tk; j++) {
        let dot = 0;
        for (let d = 0; d < D; d++) {
          dot += q.data[(bh * Tq + i) * D + d] * k.data[(bh * Tk + j) * D + d];
        }
        s[j] = causal && j > i ? -Infinity : dot * sc;
        m = Math.max(m, s[j]);
      }
      let z = 0;
      for (let j = 0; j < Tk; j++) z += s[j] = Math.exp(s[j] - m);
      for (let j = 0; j < Tk; j++) {
        const p = s[j] / z;
        for (let d = 0; d < Dv; d++) {
          out[(bh * Tq + i) * Dv + d] += p * v.data[(bh * Tk + j) * Dv + d];
        }
      }
    }
  }
  return { shape: [B, H, Tq, Dv], data: out };
}
