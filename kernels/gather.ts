/**
 * Indexing kernels: gather (embedding, index_select, torch.gather) and deterministic scatter-add.
 *
 * Versions (selected by the op layer, never by the pipeline key's shape):
 *   - gather: one invocation per output element. Every indexed read is described by the output
 *     shape, per-output-axis strides into x and into the index tensor, and the stride of the
 *     indexed axis of x, so embedding, index_select, gather and takeRows are one kernel and read
 *     views (transposed, sliced, expanded) without a copy. An index outside [0, bound) reads 0.
 *   - scatter_add (loop): one invocation per output element, looping over the index axis and
 *     adding the sources whose index names it, in ascending source order. No atomics (WGSL has no
 *     float atomics, and atomic CAS loops would add in a run-dependent order): deterministic. Cost
 *     out.size × idx.shape[axis]; serves torch.scatter_add and short index lists.
 *   - index_add (sorted): for a 1-D index list along one axis (embedding and index_select
 *     gradients, where the list is long and the target axis huge, e.g. a 49408-token vocabulary)
 *     the (index, position) pairs are bitonic-sorted (unique keys, so any sort order is the same
 *     order), each target row finds its segment by binary search, and each output element sums its
 *     segment in ascending position order: the same additions in the same order as the loop
 *     version, so both give bitwise equal results. Cost O(P log² P) for the sort (P = next power
 *     of two of the list) plus O(out.size + idx-matches) for the sums.
 * An index outside [0, size) never matches an output: it contributes nothing.
 *
 * Uniform words:
 *   gather:      [0] n, [1] rank, [2] x offset, [3] idx offset, [4] x stride of the indexed axis,
 *                [5] bound, [6] first index (i32: the index read is idx − first; a block of a
 *                larger table), [8..14) out shape, [14..20) x strides, [20..26) idx strides.
 *   scatter_add: [0] n, [1] rank, [2] axis, [3] base offset, [4] idx offset, [5] src offset,
 *                [8..14) out shape, [14..20) base strides, [20..26) idx strides,
 *                [26..32) src strides, [32..38) idx shape.
 *   sort_init:   [0] n (list length), [1] P, [2] idx offset, [3] idx rank, [8..14) idx shape,
 *                [14..20) idx strides.
 *   sort_step:   [0] P, [1] k (merge size), [2] j (compare distance).
 *   segments:    [0] rows + 1, [1] P.
 *   index_add:   [0] n, [1] rank, [2] axis, [3] base offset, [4] src offset, [8..14) out shape,
 *                [14..20) base strides, [20..26) src strides.
 *
 * The float64 CPU references (cpuGather, cpuIndexSelect, cpuEmbedding, cpuScatterAdd,
 * cpuIndexAdd) work on contiguous host tensors.
 */
import { WGSL_PRELUDE } from "../engine/device.ts";
import type { DType } from "../engine/tensor.ts";
import type { HostTensor } from "./elementwise.ts";

const wt = (d: DType) => (d === "f16" ? "f16" : d === "i32" ? "i32" : "f32");

/** WGSL of the gather kernel; x of dtype `xType`, output f32 (or i32 for an i32 x). */
export function gatherWgsl(xType: DType): string {
  const outT = xType === "i32" ? "i32" : "f32";
  return `${WGSL_PRELUDE}
@group(0) @binding(1) var<storage, read> x: array<${wt(xType)}>;
@group(0) @binding(2) var<storage, read> idx: array<i32>;
@group(0) @binding(3) var<storage, read_write> out: array<${outT}>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linearIndex(gid, nwg);
  if (i >= uw(0u)) { return; }
  var rem = i;
  var ox = uw(2u);
  var oi = uw(3u);
  for (var d = i32(uw(1u)) - 1; d >= 0; d--) {
    let s = uw(8u + u32(d));
    let c = rem % s;
    rem = rem / s;
    ox += c * uw(14u + u32(d));
    oi += c * uw(20u + u32(d));
  }
  let k = idx[oi] - ui(6u);
  if (k < 0 || u32(k) >= uw(5u)) { out[i] = ${outT}(0); return; }
  out[i] = ${outT}(x[ox + u32(k) * uw(4u)]);
}`;
}

/** WGSL of the per-output loop scatter-add; `hasBase` false adds onto zeros. */
export function scatterAddWgsl(baseType: DType | null, srcType: DType): string {
  const b = baseType !== null;
  const bind = b ? 1 : 0;
  return `${WGSL_PRELUDE}
${b ? `@group(0) @binding(1) var<storage, read> base: array<${wt(baseType!)}>;` : ""}
@group(0) @binding(${bind + 1}) var<storage, read> idx: array<i32>;
@group(0) @binding(${bind + 2}) var<storage, read> src: array<${wt(srcType)}>;
@group(0) @binding(${bind + 3}) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linearIndex(gid, nwg);
  if (i >= uw(0u)) { return; }
  let axis = i32(uw(2u));
  var rem = i;
  var ob = uw(3u);
  var oi = uw(4u);
  var os = uw(5u);
  var tgt = 0;
  var inside = true;
  for (var d = i32(uw(1u)) - 1; d >= 0; d--) {
    let s = uw(8u + u32(d));
    let c = rem % s;
    rem = rem / s;
    ob += c * uw(14u + u32(d));
    if (d == axis) {
      tgt = i32(c);
    } else {
      if (c >= uw(32u + u32(d))) { inside = false; }
      oi += c * uw(20u + u32(d));
      os += c * uw(26u + u32(d));
    }
  }
  var acc = ${b ? "f32(base[ob])" : "0.0"};
  if (inside) {
    let J = uw(32u + u32(axis));
    let si = uw(20u + u32(axis));
    let ss = uw(26u + u32(axis));
    for (var j = 0u; j < J; j++) {
      if (idx[oi + j * si] == tgt) { acc += f32(src[os + j * ss]); }
    }
  }
  out[i] = acc;
}`;
}

/** Pairs (index as u32, position) for the sort; the index list is read through its view (any
 * rank, flat order); padding sorts last. */
export function sortInitWgsl(): string {
  return `${WGSL_PRELUDE}
@group(0) @binding(1) var<storage, read> idx: array<i32>;
@group(0) @binding(2) var<storage, read_write> pairs: array<vec2<u32>>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linearIndex(gid, nwg);
  if (i >= uw(1u)) { return; }
  if (i < uw(0u)) {
    var rem = i;
    var o = uw(2u);
    for (var d = i32(uw(3u)) - 1; d >= 0; d--) {
      let s = uw(8u + u32(d));
      o += (rem % s) * uw(14u + u32(d));
      rem = rem / s;
    }
    pairs[i] = vec2<u32>(bitcast<u32>(idx[o]), i);
  } else {
    pairs[i] = vec2<u32>(0xffffffffu, i);
  }
}`;
}

/** One compare-exchange step (merge size k, distance j) of a bitonic sort of P pairs, ascending
 * by (key, position); P / 2 invocations, one per compared couple. */
export function sortStepWgsl(): string {
  return `${WGSL_PRELUDE}
@group(0) @binding(1) var<storage, read_write> pairs: array<vec2<u32>>;
fn less(a: vec2<u32>, b: vec2<u32>) -> bool { return a.x < b.x || (a.x == b.x && a.y < b.y); }
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let t = linearIndex(gid, nwg);
  let k = uw(1u);
  let j = uw(2u);
  if (t >= uw(0u) / 2u) { return; }
  let i = ((t & ~(j - 1u)) << 1u) | (t & (j - 1u));
  let l = i | j;
  let a = pairs[i];
  let b = pairs[l];
  let up = (i & k) == 0u;
  if (select(less(a, b), less(b, a), up)) {
    pairs[i] = b;
    pairs[l] = a;
  }
}`;
}

/** starts[v] = first sorted position whose key is ≥ v, for v in [0, rows]. */
export function segmentsWgsl(): string {
  return `${WGSL_PRELUDE}
@group(0) @binding(1) var<storage, read> pairs: array<vec2<u32>>;
@group(0) @binding(2) var<storage, read_write> starts: array<u32>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let v = linearIndex(gid, nwg);
  if (v >= uw(0u)) { return; }
  var lo = 0u;
  var hi = uw(1u);
  while (lo < hi) {
    let m = (lo + hi) / 2u;
    if (pairs[m].x < v) { lo = m + 1u; } else { hi = m; }
  }
  starts[v] = lo;
}`;
}

/** out[c] = base[c] + Σ src[c with axis → position] over the sorted segment of row c[axis]. */
export function indexAddWgsl(baseType: DType | null, srcType: DType): string {
  const b = baseType !== null;
  const bind = b ? 1 : 0;
  return `${WGSL_PRELUDE}
${b ? `@group(0) @binding(1) var<storage, read> base: array<${wt(baseType!)}>;` : ""}
@group(0) @binding(${bind + 1}) var<storage, read> src: array<${wt(srcType)}>;
@group(0) @binding(${bind + 2}) var<storage, read> pairs: array<vec2<u32>>;
@group(0) @binding(${bind + 3}) var<storage, read> starts: array<u32>;
@group(0) @binding(${bind + 4}) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linearIndex(gid, nwg);
  if (i >= uw(0u)) { return; }
  let axis = i32(uw(2u));
  var rem = i;
  var ob = uw(3u);
  var os = uw(4u);
  var row = 0u;
  for (var d = i32(uw(1u)) - 1; d >= 0; d--) {
    let s = uw(8u + u32(d));
    let c = rem % s;
    rem = rem / s;
    ob += c * uw(14u + u32(d));
    if (d == axis) { row = c; } else { os += c * uw(20u + u32(d)); }
  }
  let ss = uw(20u + u32(axis));
  var acc = ${b ? "f32(base[ob])" : "0.0"};
  for (var k = starts[row]; k < starts[row + 1u]; k++) {
    acc += f32(src[os + pairs[k].y * ss]);
  }
  out[i] = acc;
}`;
}

// ---------------------------------------------------------------------------------------------
// CPU references (float64, contiguous host tensors).

const prod = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);
const stridesOf = (s: readonly number[]) => {
  const st = new Array(s.length);
  let k = 1;
  for (let d = s.length - 1; d >= 0; d--) {
    st[d] = k;
    k *= s[d];
  }
  return st as number[];
};
function coords(i: number, shape: readonly number[]): number[] {
  const c = new Array(shape.length);
  for (let d = shape.length - 1; d >= 0; d--) {
    c[d] = i % shape[d];
    i = Math.floor(i / shape[d]);
  }
  return c;
}
const at = (t: HostTensor, c: number[]) => {
  const st = stridesOf(t.shape);
  let o = 0;
  c.forEach((v, d) => (o += v * st[d]));
  return o;
};

/** torch.gather: out[c] = x[c with axis → idx[c]]. */
export function cpuGather(x: HostTensor, axis: number, idx: HostTensor): HostTensor {
  const data = new Float64Array(prod(idx.shape));
  for (let i = 0; i < data.length; i++) {
    const c = coords(i, idx.shape);
    const k = idx.data[i];
    if (k < 0 || k >= x.shape[axis]) continue;
    c[axis] = k;
    data[i] = x.data[at(x, c)];
  }
  return { shape: [...idx.shape], data };
}

/** torch.index_select: out[c] = x[c with axis → idx[c[axis]]]. */
export function cpuIndexSelect(x: HostTensor, axis: number, idx: HostTensor): HostTensor {
  const shape = x.shape.map((s, d) => (d === axis ? idx.data.length : s));
  const data = new Float64Array(prod(shape));
  for (let i = 0; i < data.length; i++) {
    const c = coords(i, shape);
    const k = idx.data[c[axis]];
    if (k < 0 || k >= x.shape[axis]) continue;
    c[axis] = k;
    data[i] = x.data[at(x, c)];
  }
  return { shape, data };
}

/** Rows of weight [V, D] for ids of any shape → [...ids.shape, D]. */
export function cpuEmbedding(weight: HostTensor, ids: HostTensor): HostTensor {
  const r = cpuIndexSelect(weight, 0, { shape: [ids.data.length], data: ids.data });
  return { shape: [...ids.shape, weight.shape[1]], data: r.data };
}

/** torch.scatter_add (functional): base plus src[p] at p with axis → idx[p], for p in idx. */
export function cpuScatterAdd(
  base: HostTensor,
  axis: number,
  idx: HostTensor,
  src: HostTensor,
): HostTensor {
  const data = Float64Array.from(base.data);
  for (let i = 0; i < idx.data.length; i++) {
    const c = coords(i, idx.shape);
    const v = src.data[at(src, c)];
    const k = idx.data[i];
    if (k < 0 || k >= base.shape[axis]) continue;
    c[axis] = k;
    data[at(base, c)] += v;
  }
  return { shape: [...base.shape], data };
}

/** torch.index_add (functional): base plus src slice j at position idx[j] along axis. */
export function cpuIndexAdd(
  base: HostTensor,
  axis: number,
  idx: HostTensor,
  src: HostTensor,
): HostTensor {
  const data = Float64Array.from(base.data);
  for (let i = 0; i < src.data.length; i++) {
    const c = coords(i, src.shape);
    const k = idx.data[c[axis]];
    if (k < 0 || k >= base.shape[axis]) continue;
    c[axis] = k;
    data[at(base, c)] += src.data[i];
  }
  return { shape: [...base.shape], data };
}

/** Concatenation along axis (also the reference of stack, after inserting the axis). */
export function cpuConcat(xs: HostTensor[], axis: number): HostTensor {
  const shape = [...xs[0].shape];
  shape[axis] = xs.reduce((a, t) => a + t.shape[axis], 0);
  const data = new Float64Array(prod(shape));
  let base = 0;
  for (const t of xs) {
    for (let i = 0; i < t.data.length; i++) {
      const c = coords(i, t.shape);
      c[axis] += base;
      data[at({ shape, data }, c)] = t.data[i];
    }
    base += t.shape[axis];
  }
  return { shape, data };
}

/** x with the block at `begin` of shape `size` replaced by value (broadcast to size). */
export function cpuSliceAssign(
  x: HostTensor,
  value: HostTensor,
  begin: number[],
  size: number[],
): HostTensor {
  const data = Float64Array.from(x.data);
  const lead = size.length - value.shape.length;
  for (let i = 0; i < prod(size); i++) {
    const c = coords(i, size);
    const vc = value.shape.map((s, d) => (s === 1 ? 0 : c[d + lead]));
    data[at(x, c.map((v, d) => v + begin[d]))] = value.data[at(value, vc)];
  }
  return { shape: [...x.shape], data };
}
