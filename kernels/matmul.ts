/**
 * Batched matrix multiply C[b] = A[b] · B[b], A: M×K, B: K×N, read through strides.
 *
 * Transposes are views with swapped strides, so one kernel serves A, Aᵀ, B, Bᵀ; batch axes
 * (up to 4, broadcast with stride 0) are addressed through the uniform.
 *
 * Versions:
 *   - naive: one output per invocation, 16×16 workgroups (reference and fallback).
 *
 * Uniform words: [0] M, [1] N, [2] K, [3] batch count, [4] batch rank, [5] A offset, [6] B offset,
 *   [7] sAm, [8] sAk, [9] sBk, [10] sBn, [12..16) batch shape, [16..20) A batch strides,
 *   [20..24) B batch strides.
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
  let n = gid.x; let m = gid.y; let bi = gid.z;
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
