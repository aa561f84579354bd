/**
 * Softmax and log-softmax over the last axis, one workgroup of 256 invocations per row.
 *
 * Versions (pipeline key: input dtype, log flag; never the shape):
 *   - forward: each invocation folds its strided run of the row into an online (max, Σ exp)
 *     pair, a workgroup tree merges the pairs, and a second pass writes exp(x − max) / Σ, or
 *     x − max − log Σ. Max-subtracted, so any finite input is safe; any row length (1, 7, 1000…).
 *   - backward (fused): one pass reduces Σ g·y (softmax) or Σ g (log-softmax), a second writes
 *     y·(g − Σ g·y), or g − exp(y)·Σ g.
 * Rows are read through the view's offset and strides (ROW_WGSL), so a transposed, sliced or
 * broadcast input needs no copy; outputs are contiguous.
 *
 * Row layout, shared with layernorm.ts and cross_entropy.ts. Uniform words: [0] rows, [1] row
 * length L, [2] batch rank (≤ 5), [4..9) batch shape; operand k at 16 + 8k: offset, stride
 * along the row, then its 5 batch strides (operands k = 0..4). Kernel scalars from word 56.
 * Rows beyond 65,535 are split over workgroup y (rowGrid).
 */
import { WGSL_PRELUDE } from "../engine/device.ts";
import type { DType } from "../engine/tensor.ts";
import type { HostTensor } from "./elementwise.ts";

export const wgslType = (d: DType) => (d === "f16" ? "f16" : d === "i32" ? "i32" : "f32");

/** Row addressing and workgroup reductions shared by the row kernels. Each reduction ends with a
 * barrier, so the scratch array can be reused by the next call. */
export const ROW_WGSL = /* wgsl */ `
const NEG: f32 = -3.4028235e38;
fn rowIndex(wid: vec3<u32>, nwg: vec3<u32>) -> u32 { return wid.x + wid.y * nwg.x; }
fn rowBase(k: u32, row: u32) -> u32 {
  let b = 16u + 8u * k;
  var off = uw(b);
  var rem = row;
  for (var d = i32(uw(2u)) - 1; d >= 0; d--) {
    let s = uw(4u + u32(d));
    off += (rem % s) * uw(b + 2u + u32(d));
    rem = rem / s;
  }
  return off;
}
fn rowStride(k: u32) -> u32 { return uw(17u + 8u * k); }
fn nan() -> f32 { return bitcast<f32>(0x7fc00000u); }

var<workgroup> red: array<vec2<f32>, 256>;
fn wgSum2(lid: u32, v: vec2<f32>) -> vec2<f32> {
  red[lid] = v;
  workgroupBarrier();
  for (var k = 128u; k > 0u; k = k >> 1u) {
    if (lid < k) { red[lid] += red[lid + k]; }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}
fn wgSum(lid: u32, v: f32) -> f32 { return wgSum2(lid, vec2<f32>(v, 0.0)).x; }
// merges online (max, Σ exp(x − max)) pairs
fn wgMaxSum(lid: u32, v: vec2<f32>) -> vec2<f32> {
  red[lid] = v;
  workgroupBarrier();
  for (var k = 128u; k > 0u; k = k >> 1u) {
    if (lid < k) {
      let a = red[lid];
      let b = red[lid + k];
      let m = max(a.x, b.x);
      red[lid] = vec2<f32>(m, a.y * exp(a.x - m) + b.y * exp(b.x - m));
    }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}
// folds one value into an online (max, Σ exp) pair
fn onlineAdd(p: vec2<f32>, v: f32) -> vec2<f32> {
  if (v > p.x) { return vec2<f32>(v, p.y * exp(p.x - v) + 1.0); }
  return vec2<f32>(p.x, p.y + exp(v - p.x));
}
`;

/** Workgroup counts for one workgroup per row. */
export function rowGrid(rows: number): [number, number] {
  const x = Math.max(1, Math.min(rows, 65535));
  return [x, Math.ceil(rows / x)];
}

const HEAD = /* wgsl */ `
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let row = rowIndex(wid, nwg);
  let ok = row < uw(0u);
  let L = uw(1u);`;

export function softmaxWgsl(dtype: DType, log: boolean): string {
  return `${WGSL_PRELUDE}
${ROW_WGSL}
@group(0) @binding(1) var<storage, read> x: array<${wgslType(dtype)}>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
${HEAD}
  let base = rowBase(0u, row);
  let st = rowStride(0u);
  var p = vec2<f32>(NEG, 0.0);
  if (ok) {
    for (var j = lid; j < L; j += 256u) { p = onlineAdd(p, f32(x[base + j * st])); }
  }
  let ms = wgMaxSum(lid, p);
  if (ok) {
    let o = row * L;
    let inv = 1.0 / ms.y;
    let shift = ms.x + log(ms.y);
    for (var j = lid; j < L; j += 256u) {
      let v = f32(x[base + j * st]);
      y[o + j] = ${log ? "v - shift" : "exp(v - ms.x) * inv"};
    }
  }
}`;
}

/** dx from the saved output y (operand 0) and the incoming gradient g (operand 1). */
export function softmaxBackwardWgsl(gType: DType, log: boolean): string {
  return `${WGSL_PRELUDE}
${ROW_WGSL}
@group(0) @binding(1) var<storage, read> y: array<f32>;
@group(0) @binding(2) var<storage, read> g: array<${wgslType(gType)}>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;
${HEAD}
  let yb = rowBase(0u, row);
  let ys = rowStride(0u);
  let gb = rowBase(1u, row);
  let gs = rowStride(1u);
  var acc = 0.0;
  if (ok) {
    for (var j = lid; j < L; j += 256u) {
      acc += f32(g[gb + j * gs])${log ? "" : " * y[yb + j * ys]"};
    }
  }
  let s = wgSum(lid, acc);
  if (ok) {
    let o = row * L;
    for (var j = lid; j < L; j += 256u) {
      let gv = f32(g[gb + j * gs]);
      let yv = y[yb + j * ys];
      dx[o + j] = ${log ? "gv - exp(yv) * s" : "yv * (gv - s)"};
    }
  }
}`;
}

// ---------------------------------------------------------------------------------------------
// float64 references (contiguous host tensors, last axis)

function rowsOf(x: HostTensor): [number, number] {
  const L = x.shape.length ? x.shape[x.shape.length - 1] : 1;
  return [L ? x.data.length / L : 0, L];
}

export function cpuSoftmax(x: HostTensor): HostTensor {
  const [rows, L] = rowsOf(x);
  const out = new Float64Array(x.data.length);
  for (let r = 0; r < rows; r++) {
    let m = -Infinity, s = 0;
    for (let j = 0; j < L; j++) m = Math.max(m, x.data[r * L + j]);
    for (let j = 0; j < L; j++) s += Math.exp(x.data[r * L + j] - m);
    for (let j = 0; j < L; j++) out[r * L + j] = Math.exp(x.data[r * L + j] - m) / s;
  }
  return { shape: [...x.shape], data: out };
}

export function cpuLogSoftmax(x: HostTensor): HostTensor {
  const [rows, L] = rowsOf(x);
  const out = new Float64Array(x.data.length);
  for (let r = 0; r < rows; r++) {
    let m = -Infinity, s = 0;
    for (let j = 0; j < L; j++) m = Math.max(m, x.data[r * L + j]);
    for (let j = 0; j < L; j++) s += Math.exp(x.data[r * L + j] - m);
    const shift = m + Math.log(s);
    for (let j = 0; j < L; j++) out[r * L + j] = x.data[r * L + j] - shift;
  }
  return { shape: [...x.shape], data: out };
}
