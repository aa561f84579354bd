/**
 * LayerNorm over the last axis: y = (x − mean) · rstd · w + b, rstd = 1 / sqrt(var + eps).
 *
 * Versions (pipeline key: dtypes of x / w / b / g, which of w and b are present):
 *   - forward: one workgroup of 256 per row; a pass for the mean, a second for the centred
 *     variance (two passes: no cancellation for rows with a large mean), a third writes y. Saves
 *     mean and rstd per row for the backward.
 *   - backward dx: one workgroup per row; one pass reduces Σ g·w and Σ g·w·x̂ together, a second
 *     writes dx = rstd · (g·w − mean(g·w) − x̂ · mean(g·w·x̂)).
 *   - backward dw partials: 64 columns × 4 row lanes per workgroup, over chunks of 256 rows;
 *     writes Σ g·x̂ per (chunk, column), which the op sums over chunks. Launched only when the
 *     weight needs a gradient (a frozen weight costs nothing); db is a plain reduction of g.
 * Weight and bias may be f16 (frozen checkpoints): upcast on load. x and g are read through the
 * row layout of softmax.ts (operand 0 = x, 1 = w or g, 2 = b or w); w and b use only their offset
 * and stride. Scalar: eps at word 56.
 */
import { WGSL_PRELUDE } from "../engine/device.ts";
import type { DType } from "../engine/tensor.ts";
import type { HostTensor } from "./elementwise.ts";
import { ROW_WGSL, wgslType } from "./softmax.ts";

export const LN_ROW_CHUNK = 256;

const HEAD = /* wgsl */ `
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let row = rowIndex(wid, nwg);
  let ok = row < uw(0u);
  let L = uw(1u);
  let fL = f32(L);`;

export function layerNormWgsl(xt: DType, wt: DType | null, bt: DType | null): string {
  let b = 2;
  const wDecl = wt
    ? `@group(0) @binding(${b++}) var<storage, read> w: array<${wgslType(wt)}>;`
    : "";
  const bDecl = bt
    ? `@group(0) @binding(${b++}) var<storage, read> bias: array<${wgslType(bt)}>;`
    : "";
  const wv = wt ? " * f32(w[uw(24u) + j * uw(25u)])" : "";
  const bv = bt ? " + f32(bias[uw(32u) + j * uw(33u)])" : "";
  return `${WGSL_PRELUDE}
${ROW_WGSL}
@group(0) @binding(1) var<storage, read> x: array<${wgslType(xt)}>;
${wDecl}
${bDecl}
@group(0) @binding(${b}) var<storage, read_write> y: array<f32>;
@group(0) @binding(${b + 1}) var<storage, read_write> meanOut: array<f32>;
@group(0) @binding(${b + 2}) var<storage, read_write> rstdOut: array<f32>;
${HEAD}
  let base = rowBase(0u, row);
  let st = rowStride(0u);
  var acc = 0.0;
  if (ok) {
    for (var j = lid; j < L; j += 256u) { acc += f32(x[base + j * st]); }
  }
  let mu = wgSum(lid, acc) / fL;
  acc = 0.0;
  if (ok) {
    for (var j = lid; j < L; j += 256u) {
      let c = f32(x[base + j * st]) - mu;
      acc += c * c;
    }
  }
  let r = inverseSqrt(wgSum(lid, acc) / fL + uf(56u));
  if (ok) {
    let o = row * L;
    for (var j = lid; j < L; j += 256u) {
      y[o + j] = (f32(x[base + j * st]) - mu) * r${wv}${bv};
    }
    if (lid == 0u) {
      meanOut[row] = mu;
      rstdOut[row] = r;
    }
  }
}`;
}

/** dx from x (operand 0), g (operand 1), w (operand 2, optional), and the saved mean / rstd. */
export function layerNormBackwardWgsl(xt: DType, gt: DType, wt: DType | null): string {
  const wv = wt ? " * f32(w[uw(32u) + j * uw(33u)])" : "";
  const n = wt ? 4 : 3;
  return `${WGSL_PRELUDE}
${ROW_WGSL}
@group(0) @binding(1) var<storage, read> x: array<${wgslType(xt)}>;
@group(0) @binding(2) var<storage, read> g: array<${wgslType(gt)}>;
${wt ? `@group(0) @binding(3) var<storage, read> w: array<${wgslType(wt)}>;` : ""}
@group(0) @binding(${n}) var<storage, read> meanIn: array<f32>;
@group(0) @binding(${n + 1}) var<storage, read> rstdIn: array<f32>;
@group(0) @binding(${n + 2}) var<storage, read_write> dx: array<f32>;
${HEAD}
  let xb = rowBase(0u, row);
  let xs = rowStride(0u);
  let gb = rowBase(1u, row);
  let gs = rowStride(1u);
  var mu = 0.0;
  var r = 0.0;
  if (ok) {
    mu = meanIn[row];
    r = rstdIn[row];
  }
  var acc = vec2<f32>(0.0, 0.0);
  if (ok) {
    for (var j = lid; j < L; j += 256u) {
      let xh = (f32(x[xb + j * xs]) - mu) * r;
      let gw = f32(g[gb + j * gs])${wv};
      acc += vec2<f32>(gw, gw * xh);
    }
  }
  let s = wgSum2(lid, acc) / fL;
  if (ok) {
    let o = row * L;
    for (var j = lid; j < L; j += 256u) {
      let xh = (f32(x[xb + j * xs]) - mu) * r;
      let gw = f32(g[gb + j * gs])${wv};
      dx[o + j] = r * (gw - s.x - xh * s.y);
    }
  }
}`;
}

/** Per-chunk partial sums of g·x̂ over rows: part[chunk, col]. Grid: (⌈L/64⌉, chunks). */
export function layerNormWeightGradWgsl(xt: DType, gt: DType): string {
  return `${WGSL_PRELUDE}
${ROW_WGSL}
@group(0) @binding(1) var<storage, read> x: array<${wgslType(xt)}>;
@group(0) @binding(2) var<storage, read> g: array<${wgslType(gt)}>;
@group(0) @binding(3) var<storage, read> meanIn: array<f32>;
@group(0) @binding(4) var<storage, read> rstdIn: array<f32>;
@group(0) @binding(5) var<storage, read_write> part: array<f32>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let rows = uw(0u);
  let L = uw(1u);
  let col = wid.x * 64u + lid % 64u;
  let r0 = wid.y * ${LN_ROW_CHUNK}u;
  let r1 = min(rows, r0 + ${LN_ROW_CHUNK}u);
  var acc = 0.0;
  if (col < L) {
    let xs = rowStride(0u);
    let gs = rowStride(1u);
    for (var r = r0 + lid / 64u; r < r1; r += 4u) {
      let xh = (f32(x[rowBase(0u, r) + col * xs]) - meanIn[r]) * rstdIn[r];
      acc += f32(g[rowBase(1u, r) + col * gs]) * xh;
    }
  }
  red[lid] = vec2<f32>(acc, 0.0);
  workgroupBarrier();
  if (lid < 64u && col < L) {
    part[wid.y * L + col] = red[lid].x + red[lid + 64u].x + red[lid + 128u].x + red[lid + 192u].x;
  }
}`;
}

// ---------------------------------------------------------------------------------------------
// float64 reference (contiguous host tensors)

export function cpuLayerNorm(
  x: HostTensor,
  w?: HostTensor | null,
  b?: HostTensor | null,
  eps = 1e-5,
): HostTensor {
  const L = x.shape[x.shape.length - 1];
  const rows = L ? x.data.length / L : 0;
  const out = new Float64Array(x.data.length);
  for (let r = 0; r < rows; r++) {
    let mu = 0, v = 0;
    for (let j = 0; j < L; j++) mu += x.data[r * L + j];
    mu /= L;
    for (let j = 0; j < L; j++) v += (x.data[r * L + j] - mu) ** 2;
    const rstd = 1 / Math.sqrt(v / L + eps);
    for (let j = 0; j < L; j++) {
      out[r * L + j] = (x.data[r * L + j] - mu) * rstd * (w ? w.data[j] : 1) + (b ? b.data[j] : 0);
    }
  }
  return { shape: [...x.shape], data: out };
}
