/**
 * Reductions: sum / max / min of R elements per output, one workgroup of 256 per output row.
 *
 * The op layer permutes the input view so the reduced axes come last; this kernel then reads the
 * view through its shape and strides (uniform), so a reduction over any axes of any view needs no
 * copy. Each invocation folds a strided run of the row, then a workgroup tree finishes it.
 *
 * Uniform words: [0] outputs, [1] R (row length), [2] rank, [3] input offset, [8..14) the view's
 *   shape (kept axes then reduced axes), [14..20) its strides.
 *
 * Version 1. A split-row two-pass variant would serve very long rows with few outputs better.
 */
import { WGSL_PRELUDE } from "../engine/device.ts";
import type { DType } from "../engine/tensor.ts";

export type ReduceOp = "sum" | "max" | "min";

const INIT: Record<ReduceOp, string> = { sum: "0.0", max: "-3.4028235e38", min: "3.4028235e38" };
const FOLD: Record<ReduceOp, (a: string, b: string) => string> = {
  sum: (a, b) => `${a} + ${b}`,
  max: (a, b) => `max(${a}, ${b})`,
  min: (a, b) => `min(${a}, ${b})`,
};

export function reduceWgsl(op: ReduceOp, dtype: DType): string {
  const t = dtype === "f16" ? "f16" : "f32";
  return `${WGSL_PRELUDE}
@group(0) @binding(1) var<storage, read> x: array<${t}>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
var<workgroup> part: array<f32, 256>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let row = wid.x + wid.y * nwg.x;
  let rows = uw(0u);
  let R = uw(1u);
  let rank = i32(uw(2u));
  var acc: f32 = ${INIT[op]};
  if (row < rows) {
    for (var r = lid; r < R; r += 256u) {
      var rem = row * R + r;
      var off = uw(3u);
      for (var d = rank - 1; d >= 0; d--) {
        let s = uw(8u + u32(d));
        off += (rem % s) * uw(14u + u32(d));
        rem = rem / s;
      }
      acc = ${FOLD[op]("acc", "f32(x[off])")};
    }
  }
  part[lid] = acc;
  workgroupBarrier();
  for (var s = 128u; s > 0u; s = s >> 1u) {
    if (lid < s) { part[lid] = ${FOLD[op]("part[lid]", "part[lid + s]")}; }
    workgroupBarrier();
  }
  if (lid == 0u && row < rows) { out[row] = part[0]; }
}`;
}

/** float64 reference: reduce `axes` of a contiguous host tensor (keepdim shape). */
export function cpuReduce(
  op: ReduceOp,
  x: { shape: number[]; data: Float64Array },
  axes: number[],
): { shape: number[]; data: Float64Array } {
  const shape = x.shape.map((s, d) => (axes.includes(d) ? 1 : s));
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float64Array(n).fill(op === "sum" ? 0 : op === "max" ? -Infinity : Infinity);
  const coord = new Array(x.shape.length).fill(0);
  for (let i = 0; i < x.data.length; i++) {
    let r = i;
    for (let d = x.shape.length - 1; d >= 0; d--) {
      coord[d] = r % x.shape[d];
      r = Math.floor(r / x.shape[d]);
    }
    let o = 0;
    for (let d = 0; d < shape.length; d++) o = o * shape[d] + (axes.includes(d) ? 0 : coord[d]);
    const v = x.data[i];
    data[o] = op === "sum"
      ? data[o] + v
      : op === "max"
      ? Math.max(data[o], v)
      : Math.min(data[o], v);
  }
  return { shape, data };
}
