/**
 * K-means kernels, driven by engine/ops/kmeans.ts, and their float64 reference `cpuKmeans`.
 * No float atomics anywhere: every sum runs in a fixed order, so a run is bitwise reproducible
 * on a given adapter.
 *
 * The points are the rows of X (row stride S ≥ D, at an offset). The op passes the centred
 * (euclidean) or row-normalised (cosine) points with a ones column appended, X̃ = [X, 1]: one
 * matmul of the one-hot assignment against X̃ then yields every cluster's sum and count at once
 * (the deterministic segmented sum), and the score matmul reads the X part as a view.
 *
 * Version 1:
 *   - kmeans_pick (one workgroup of 256): one k-means++ D² draw without a readback. The host
 *     draws u ∈ [0, 1) from the seed's stream (and the fallback index ⌊u·N⌋), so the stream never
 *     depends on GPU values. Each invocation sums a contiguous block of the min-distance vector,
 *     invocation 0 scans the 256 block sums in order, r = u·total (kept below total), the block
 *     owning r walks its elements and picks the first whose running sum exceeds r (or, should
 *     rounding leave none, its last positive element). total = 0 (every point coincides with a
 *     chosen centre) picks the fallback.
 *   - kmeans_mindist: min over chosen centres of ‖x_i − x_pick‖², one invocation per point,
 *     computed directly (no expansion): it decides the D² draws.
 *   - kmeans_assign (key: metric): one invocation per row of a chunk of scores s = X·Cᵀ;
 *     euclidean argmin_j ‖c_j‖² − 2 s_ij (then dist = max(‖x_i‖² + min, 0)), cosine argmax_j s_ij
 *     (dist = max(1 − max, 0)). Strict comparisons: ties go to the lowest index.
 *   - kmeans_stats (one workgroup): Σ dist and the number of labels that changed since the
 *     previous assignment, in a fixed strided order and tree: the only values read back per
 *     iteration.
 *   - kmeans_update (key: metric): one workgroup of 64 per centroid: sum / count (euclidean) or
 *     sum / ‖sum‖ (cosine, spherical k-means). An empty cluster gets zeros, then:
 *   - kmeans_reseed (one workgroup): each empty cluster, in index order, takes the next point in
 *     the order (distance to its centroid descending, index ascending), i.e. the farthest points
 *     first, each point at most once. One pass over the counts decides that nothing is empty.
 *
 * Uniform words:
 *   pick:    [0] N, [1] t (centre being chosen), [2] fallback index, [3] u (f32), [4] first.
 *   mindist: [0] N, [1] D, [2] X offset, [3] S, [4] t.
 *   assign:  [0] rows, [1] k, [2] first row, [3] X offset, [4] S, [5] D.
 *   stats:   [0] N, [1] has previous labels.
 *   update:  [0] k, [1] D.
 *   reseed:  [0] N, [1] k, [2] D, [3] X offset, [4] S.
 *
 * cpuKmeans runs the same algorithm in float64 with the same draws from hostRng(seed): given the
 * same initial centroids it gives the same labels, and the same centroids up to rounding.
 */
import { WGSL_PRELUDE } from "../engine/device.ts";
import { type HostRng, hostRng } from "../engine/ops/random.ts";
import type { HostTensor } from "./elementwise.ts";

export type KmeansMetric = "euclidean" | "cosine";

export function kmeansPickWgsl(): string {
  return `${WGSL_PRELUDE}
@group(0) @binding(1) var<storage, read> dmin: array<f32>;
@group(0) @binding(2) var<storage, read_write> picks: array<i32>;
var<workgroup> part: array<f32, 256>;
@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) lid: u32) {
  let N = uw(0u);
  let t = uw(1u);
  let fallback = i32(uw(2u));
  if (uw(4u) == 1u) {
    if (lid == 0u) { picks[t] = fallback; }
    return;
  }
  let block = (N + 255u) / 256u;
  let b0 = min(lid * block, N);
  let b1 = min(b0 + block, N);
  var s = 0.0;
  for (var i = b0; i < b1; i++) { s += dmin[i]; }
  part[lid] = s;
  workgroupBarrier();
  if (lid == 0u) {
    // in order, so the owners' ranges [part[l-1], part[l]) tile [0, total) exactly
    var acc = 0.0;
    for (var l = 0u; l < 256u; l++) {
      acc += part[l];
      part[l] = acc;
    }
  }
  workgroupBarrier();
  let total = part[255];
  if (!(total > 0.0)) {
    if (lid == 0u) { picks[t] = fallback; }
    return;
  }
  let r = min(uf(3u) * total, bitcast<f32>(bitcast<u32>(total) - 1u));
  var lo = 0.0;
  if (lid > 0u) { lo = part[lid - 1u]; }
  if (lo <= r && r < part[lid]) {
    var cum = lo;
    var pick = b0;
    for (var i = b0; i < b1; i++) {
      let d = dmin[i];
      if (d > 0.0) { pick = i; }
      cum += d;
      if (cum > r) { break; }
    }
    picks[t] = i32(pick);
  }
}`;
}

export function kmeansMinDistWgsl(): string {
  return `${WGSL_PRELUDE}
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> picks: array<i32>;
@group(0) @binding(3) var<storage, read_write> dmin: array<f32>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linearIndex(gid, nwg);
  if (i >= uw(0u)) { return; }
  let D = uw(1u);
  let S = uw(3u);
  let t = uw(4u);
  let a = uw(2u) + i * S;
  let b = uw(2u) + u32(picks[t]) * S;
  var d = 0.0;
  for (var c = 0u; c < D; c++) {
    let e = x[a + c] - x[b + c];
    d += e * e;
  }
  if (t == 0u) { dmin[i] = d; } else { dmin[i] = min(dmin[i], d); }
}`;
}

export function kmeansAssignWgsl(metric: KmeansMetric): string {
  const cos = metric === "cosine";
  const bindings = cos
    ? `@group(0) @binding(1) var<storage, read> s: array<f32>;
@group(0) @binding(2) var<storage, read_write> labels: array<i32>;
@group(0) @binding(3) var<storage, read_write> dist: array<f32>;`
    : `@group(0) @binding(1) var<storage, read> s: array<f32>;
@group(0) @binding(2) var<storage, read> cn: array<f32>;
@group(0) @binding(3) var<storage, read> x: array<f32>;
@group(0) @binding(4) var<storage, read_write> labels: array<i32>;
@group(0) @binding(5) var<storage, read_write> dist: array<f32>;`;
  const body = cos
    ? `  var best = s[base];
  var bi = 0u;
  for (var j = 1u; j < k; j++) {
    let v = s[base + j];
    if (v > best) { best = v; bi = j; }
  }
  labels[i] = i32(bi);
  dist[i] = max(1.0 - best, 0.0);`
    : `  var best = cn[0] - 2.0 * s[base];
  var bi = 0u;
  for (var j = 1u; j < k; j++) {
    let v = cn[j] - 2.0 * s[base + j];
    if (v < best) { best = v; bi = j; }
  }
  let a = uw(3u) + i * uw(4u);
  var xn = 0.0;
  for (var c = 0u; c < uw(5u); c++) { xn += x[a + c] * x[a + c]; }
  labels[i] = i32(bi);
  dist[i] = max(xn + best, 0.0);`;
  return `${WGSL_PRELUDE}
${bindings}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let r = linearIndex(gid, nwg);
  if (r >= uw(0u)) { return; }
  let k = uw(1u);
  let i = uw(2u) + r;
  let base = r * k;
${body}
}`;
}

export function kmeansStatsWgsl(): string {
  return `${WGSL_PRELUDE}
@group(0) @binding(1) var<storage, read> dist: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<i32>;
@group(0) @binding(3) var<storage, read> prev: array<i32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
var<workgroup> red: array<vec2<f32>, 256>;
@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) lid: u32) {
  let N = uw(0u);
  let hasPrev = uw(1u) == 1u;
  var acc = vec2<f32>(0.0, 0.0);
  for (var i = lid; i < N; i += 256u) {
    acc.x += dist[i];
    if (hasPrev && labels[i] != prev[i]) { acc.y += 1.0; }
  }
  red[lid] = acc;
  workgroupBarrier();
  for (var s = 128u; s > 0u; s = s >> 1u) {
    if (lid < s) { red[lid] += red[lid + s]; }
    workgroupBarrier();
  }
  if (lid == 0u) {
    out[0] = red[0].x;
    out[1] = select(f32(N), red[0].y, hasPrev);
  }
}`;
}

export function kmeansUpdateWgsl(metric: KmeansMetric): string {
  const cos = metric === "cosine";
  return `${WGSL_PRELUDE}
@group(0) @binding(1) var<storage, read> sums: array<f32>;
@group(0) @binding(2) var<storage, read_write> cent: array<f32>;
var<workgroup> red: array<f32, 64>;
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let c = wid.x + wid.y * nwg.x;
  if (c >= uw(0u)) { return; }
  let D = uw(1u);
  let W = D + 1u;
  let cnt = sums[c * W + D];
${
    cos
      ? `  var p = 0.0;
  for (var d = lid; d < D; d += 64u) { p += sums[c * W + d] * sums[c * W + d]; }
  red[lid] = p;
  workgroupBarrier();
  for (var s = 32u; s > 0u; s = s >> 1u) {
    if (lid < s) { red[lid] += red[lid + s]; }
    workgroupBarrier();
  }
  let norm = sqrt(red[0]);
  let ok = cnt > 0.0 && norm > 0.0;
  for (var d = lid; d < D; d += 64u) { cent[c * D + d] = select(0.0, sums[c * W + d] / norm, ok); }`
      : `  for (var d = lid; d < D; d += 64u) {
    cent[c * D + d] = select(0.0, sums[c * W + d] / cnt, cnt > 0.0);
  }`
  }
}`;
}

export function kmeansReseedWgsl(): string {
  return `${WGSL_PRELUDE}
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> sums: array<f32>;
@group(0) @binding(3) var<storage, read> dist: array<f32>;
@group(0) @binding(4) var<storage, read_write> cent: array<f32>;
const NONE: u32 = 0xffffffffu;
var<workgroup> rd: array<f32, 256>;
var<workgroup> ri: array<u32, 256>;
var<workgroup> flag: u32;
@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) lid: u32) {
  let N = uw(0u);
  let k = uw(1u);
  let D = uw(2u);
  let off = uw(3u);
  let S = uw(4u);
  let W = D + 1u;
  var e = 0u;
  for (var c = lid; c < k; c += 256u) {
    if (!(sums[c * W + D] > 0.0)) { e = 1u; }
  }
  ri[lid] = e;
  workgroupBarrier();
  if (lid == 0u) {
    var any = 0u;
    for (var l = 0u; l < 256u; l++) { any = any | ri[l]; }
    flag = any;
  }
  if (workgroupUniformLoad(&flag) == 0u) { return; }
  var lastD = 0.0;
  var lastI = NONE;
  for (var c = 0u; c < k; c++) {
    if (lid == 0u) { flag = select(0u, 1u, !(sums[c * W + D] > 0.0)); }
    if (workgroupUniformLoad(&flag) == 1u) {
      var bd = 0.0;
      var bi = NONE;
      for (var i = lid; i < N; i += 256u) {
        let d = dist[i];
        let after = lastI == NONE || d < lastD || (d == lastD && i > lastI);
        if (after && (bi == NONE || d > bd)) { bd = d; bi = i; }
      }
      rd[lid] = bd;
      ri[lid] = bi;
      workgroupBarrier();
      for (var s = 128u; s > 0u; s = s >> 1u) {
        if (lid < s) {
          let od = rd[lid + s];
          let oi = ri[lid + s];
          if (oi != NONE && (ri[lid] == NONE || od > rd[lid] || (od == rd[lid] && oi < ri[lid]))) {
            rd[lid] = od;
            ri[lid] = oi;
          }
        }
        workgroupBarrier();
      }
      let p = ri[0];
      let pd = rd[0];
      workgroupBarrier();
      if (p != NONE) {
        lastD = pd;
        lastI = p;
        for (var d = lid; d < D; d += 256u) { cent[c * D + d] = x[off + p * S + d]; }
      }
    }
  }
}`;
}

// ---------------------------------------------------------------------------------------------
// Host-side draws shared by the GPU path and the reference.

/** One k-means++ draw: u ∈ [0, 1) and the index ⌊u·N⌋ used for the first centre and whenever
 * every remaining point coincides with a chosen centre. */
export function plusPlusDraw(rng: HostRng, N: number): { u: number; fallback: number } {
  const u = rng.uniform();
  return { u, fallback: Math.min(Math.floor(u * N), N - 1) };
}

// ---------------------------------------------------------------------------------------------
// float64 reference

export interface CpuKmeansOptions {
  seed?: number;
  iters?: number;
  restarts?: number;
  /** "kmeans++" (default), "random" (k distinct points), or the initial centroids [k, D]. */
  init?: "kmeans++" | "random" | HostTensor;
  tol?: number;
  metric?: KmeansMetric;
}

export interface CpuKmeansResult {
  centroids: HostTensor;
  labels: Int32Array;
  inertia: number;
  /** Centroid updates performed by the kept run. */
  iterations: number;
  /** Final inertia of every restart, in order. */
  inertias: number[];
  /** The points the kept run started from (null for given centroids). */
  initIndices: number[] | null;
}

/** K-means in float64: the same initialisation draws, Lloyd steps, empty-cluster rule and stopping
 * rule as the GPU op. */
export function cpuKmeans(x: HostTensor, k: number, opts: CpuKmeansOptions = {}): CpuKmeansResult {
  const [N, D] = x.shape;
  const { seed = 0, iters = 20, restarts = 1, init = "kmeans++", tol = 0 } = opts;
  const metric = opts.metric ?? "euclidean";
  const cos = metric === "cosine";
  const X = Float64Array.from(x.data);
  if (cos) normaliseRows(X, N, D);
  const rng = hostRng(seed);
  const given = typeof init === "object";
  let best: CpuKmeansResult | null = null;
  const inertias: number[] = [];
  for (let r = 0; r < (given ? 1 : restarts); r++) {
    let C: Float64Array;
    let idx: number[] | null = null;
    if (given) {
      C = Float64Array.from(init.data);
      if (cos) normaliseRows(C, k, D);
    } else {
      idx = init === "random" ? rng.sample(N, k) : plusPlusIndices(X, N, D, k, rng);
      C = new Float64Array(k * D);
      idx.forEach((p, j) => C.set(X.subarray(p * D, p * D + D), j * D));
    }
    const run = lloydRef(X, N, D, k, C, iters, tol, cos);
    inertias.push(run.inertia);
    if (!best || run.inertia < best.inertia) {
      best = {
        centroids: { shape: [k, D], data: run.C },
        labels: run.labels,
        inertia: run.inertia,
        iterations: run.iterations,
        inertias,
        initIndices: idx,
      };
    }
  }
  return best!;
}

function normaliseRows(X: Float64Array, n: number, D: number) {
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let c = 0; c < D; c++) s += X[i * D + c] ** 2;
    const inv = 1 / Math.max(Math.sqrt(s), 1e-12);
    for (let c = 0; c < D; c++) X[i * D + c] *= inv;
  }
}

function sqDist(A: Float64Array, a: number, B: Float64Array, b: number, D: number) {
  let d = 0;
  for (let c = 0; c < D; c++) d += (A[a * D + c] - B[b * D + c]) ** 2;
  return d;
}

function plusPlusIndices(X: Float64Array, N: number, D: number, k: number, rng: HostRng) {
  const picks: number[] = [];
  const dmin = new Float64Array(N).fill(Infinity);
  for (let t = 0; t < k; t++) {
    const { u, fallback } = plusPlusDraw(rng, N);
    let pick = fallback;
    if (t > 0) {
      let total = 0;
      for (let i = 0; i < N; i++) total += dmin[i];
      if (total > 0) {
        const r = u * total;
        let cum = 0;
        pick = -1;
        let lastPos = -1;
        for (let i = 0; i < N; i++) {
          if (dmin[i] > 0) lastPos = i;
          cum += dmin[i];
          if (cum > r) {
            pick = i;
            break;
          }
        }
        if (pick < 0) pick = lastPos;
      }
    }
    picks.push(pick);
    for (let i = 0; i < N; i++) dmin[i] = Math.min(dmin[i], sqDist(X, i, X, pick, D));
  }
  return picks;
}

function lloydRef(
  X: Float64Array,
  N: number,
  D: number,
  k: number,
  C: Float64Array,
  iters: number,
  tol: number,
  cos: boolean,
) {
  let prev: Int32Array | null = null;
  let prevInertia = Infinity;
  for (let it = 0;; it++) {
    const labels = new Int32Array(N);
    const dist = new Float64Array(N);
    let inertia = 0, changed = 0;
    for (let i = 0; i < N; i++) {
      let best = Infinity, bi = 0;
      for (let j = 0; j < k; j++) {
        let d: number;
        if (cos) {
          let s = 0;
          for (let c = 0; c < D; c++) s += X[i * D + c] * C[j * D + c];
          d = 1 - s;
        } else d = sqDist(X, i, C, j, D);
        if (d < best) {
          best = d;
          bi = j;
        }
      }
      labels[i] = bi;
      dist[i] = Math.max(best, 0);
      inertia += dist[i];
      if (prev && prev[i] !== bi) changed++;
    }
    if (!prev) changed = N;
    if (
      changed === 0 || it >= iters || (tol > 0 && prevInertia - inertia <= tol * Math.abs(inertia))
    ) {
      return { C, labels, inertia, iterations: it };
    }
    prevInertia = inertia;
    prev = labels;
    // update: means (or normalised sums), then empty clusters take the farthest points
    const sums = new Float64Array(k * D), counts = new Float64Array(k);
    for (let i = 0; i < N; i++) {
      counts[labels[i]]++;
      for (let c = 0; c < D; c++) sums[labels[i] * D + c] += X[i * D + c];
    }
    const next = new Float64Array(k * D);
    const order = Array.from({ length: N }, (_, i) => i).sort((a, b) => dist[b] - dist[a] || a - b);
    let taken = 0;
    for (let j = 0; j < k; j++) {
      if (counts[j] > 0) {
        let norm = 0;
        for (let c = 0; c < D; c++) norm += sums[j * D + c] ** 2;
        norm = Math.sqrt(norm);
        for (let c = 0; c < D; c++) {
          next[j * D + c] = cos
            ? (norm > 0 ? sums[j * D + c] / norm : 0)
            : sums[j * D + c] / counts[j];
        }
      } else {
        const p = order[taken++];
        next.set(X.subarray(p * D, p * D + D), j * D);
      }
    }
    C = next;
  }
}
