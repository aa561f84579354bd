/**
 * Optimiser kernels: fused in-place parameter updates (one dispatch per parameter per step) and
 * the global gradient-norm clip.
 *
 * Versions (selected by the pipeline key, never by shape or hyperparameter):
 *   - sgd: p -= lr·(g + wd·p) (no momentum buffer bound);
 *   - sgd_momentum: b = μ·b + (g + wd·p); p -= lr·b (PyTorch, dampening 0);
 *   - sgd_nesterov: b as above; p -= lr·((g + wd·p) + μ·b);
 *   - adamw: p ·= 1 − lr·wd; m = β1·m + (1−β1)·g; v = β2·v + (1−β2)·g²;
 *            p -= (lr / (1−β1^t)) · m / (√v / √(1−β2^t) + ε)   (PyTorch's order of operations);
 *   - sumsq: per-workgroup partial sums of g² (≤ 256 workgroups per gradient), written to a slot
 *     range of one partials buffer; clip_finish: one workgroup folds every partial into the norm
 *     and the scale min(1, max / (norm + 1e-6)); grad_scale: g ·= scale, read from the GPU.
 *
 * p, m, v, b (and g for grad_scale) are bound read_write and updated in place; g is read-only in
 * the updates. Every scalar travels in the uniform, so a new learning rate, step or bias
 * correction compiles nothing. Scalars derived from hyperparameters (1−β, 1−lr·wd, lr/(1−β1^t),
 * √(1−β2^t)) are computed on the host in float64 and rounded once: 1 − f32(0.999) computed in f32
 * would be off by 1.3e-5 relative.
 *
 * Uniform words (updates): [0] n, [1] p offset, [2] g offset, [4..] f32 scalars (below).
 *   sgd*:  [4] lr, [5] momentum, [6] weight decay.
 *   adamw: [4] β1, [5] 1−β1, [6] β2, [7] 1−β2, [8] ε, [9] 1−lr·wd, [10] lr/(1−β1^t), [11] √(1−β2^t).
 * sumsq: [0] n, [1] g offset, [2] first partial slot. clip_finish: [0] partial count, [4] max norm.
 * grad_scale: [0] n, [1] g offset.
 *
 * Parameters, gradients and state are contiguous f32 (the optimiser checks); state has offset 0.
 * The float64 references (`cpuSgdStep`, `cpuAdamWStep`, `cpuGradNorm`) sit at the end.
 */
import { WGSL_PRELUDE } from "../engine/device.ts";

export type SgdVariant = "sgd" | "sgd_momentum" | "sgd_nesterov";

export function sgdWgsl(variant: SgdVariant): string {
  const momentum = variant !== "sgd";
  const update = variant === "sgd" ? "let step = d;" : `let b = mom * buf[i] + d;
  buf[i] = b;
  ${variant === "sgd_nesterov" ? "let step = d + mom * b;" : "let step = b;"}`;
  return `${WGSL_PRELUDE}
@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read_write> p: array<f32>;
${momentum ? "@group(0) @binding(3) var<storage, read_write> buf: array<f32>;" : ""}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linearIndex(gid, nwg);
  if (i >= uw(0u)) { return; }
  let lr = uf(4u);
  let mom = uf(5u);
  let wd = uf(6u);
  let pi = uw(1u) + i;
  let w = p[pi];
  let d = g[uw(2u) + i] + wd * w;
  ${update}
  p[pi] = w - lr * step;
}`;
}

export function adamwWgsl(): string {
  return `${WGSL_PRELUDE}
@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read_write> p: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linearIndex(gid, nwg);
  if (i >= uw(0u)) { return; }
  let gv = g[uw(2u) + i];
  let mv = uf(4u) * m[i] + uf(5u) * gv;
  let vv = uf(6u) * v[i] + uf(7u) * gv * gv;
  m[i] = mv;
  v[i] = vv;
  let pi = uw(1u) + i;
  let w = p[pi] * uf(9u);
  p[pi] = w - uf(10u) * mv / (sqrt(vv) / uf(11u) + uf(8u));
}`;
}

/** Uniform scalars [4..12) of the AdamW kernel for step t (1-based), in float64 then f32. */
export function adamwScalars(
  o: { lr: number; beta1: number; beta2: number; eps: number; weightDecay: number },
  t: number,
): number[] {
  return [
    o.beta1,
    1 - o.beta1,
    o.beta2,
    1 - o.beta2,
    o.eps,
    1 - o.lr * o.weightDecay,
    o.lr / (1 - o.beta1 ** t),
    Math.sqrt(1 - o.beta2 ** t),
  ];
}

/** Most workgroups one gradient's sum of squares is split over (its partial-slot count). */
export const SUMSQ_MAX_GROUPS = 256;
/** Elements each invocation folds before a new workgroup is worth it. */
const SUMSQ_PER_INVOCATION = 4;

export function sumsqGroups(n: number): number {
  return Math.max(1, Math.min(SUMSQ_MAX_GROUPS, Math.ceil(n / (256 * SUMSQ_PER_INVOCATION))));
}

export function sumsqWgsl(): string {
  return `${WGSL_PRELUDE}
@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read_write> partial: array<f32>;
var<workgroup> part: array<f32, 256>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let n = uw(0u);
  let off = uw(1u);
  var acc = 0.0;
  for (var i = wid.x * 256u + lid; i < n; i += nwg.x * 256u) {
    let x = g[off + i];
    acc += x * x;
  }
  part[lid] = acc;
  workgroupBarrier();
  for (var s = 128u; s > 0u; s = s >> 1u) {
    if (lid < s) { part[lid] = part[lid] + part[lid + s]; }
    workgroupBarrier();
  }
  if (lid == 0u) { partial[uw(2u) + wid.x] = part[0]; }
}`;
}

export function clipFinishWgsl(): string {
  return `${WGSL_PRELUDE}
@group(0) @binding(1) var<storage, read> partial: array<f32>;
@group(0) @binding(2) var<storage, read_write> norm: array<f32>;
@group(0) @binding(3) var<storage, read_write> scale: array<f32>;
var<workgroup> part: array<f32, 256>;
@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) lid: u32) {
  var acc = 0.0;
  for (var i = lid; i < uw(0u); i += 256u) { acc += partial[i]; }
  part[lid] = acc;
  workgroupBarrier();
  for (var s = 128u; s > 0u; s = s >> 1u) {
    if (lid < s) { part[lid] = part[lid] + part[lid + s]; }
    workgroupBarrier();
  }
  if (lid == 0u) {
    let nv = sqrt(part[0]);
    norm[0] = nv;
    scale[0] = min(1.0, uf(4u) / (nv + 1e-6));
  }
}`;
}

export function gradScaleWgsl(): string {
  return `${WGSL_PRELUDE}
@group(0) @binding(1) var<storage, read> scale: array<f32>;
@group(0) @binding(2) var<storage, read_write> g: array<f32>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linearIndex(gid, nwg);
  if (i >= uw(0u)) { return; }
  let j = uw(1u) + i;
  g[j] = g[j] * scale[0];
}`;
}

// ---------------------------------------------------------------------------------------------
// float64 references of one step (PyTorch semantics); they return new arrays.

export interface SgdHyper {
  lr: number;
  momentum: number;
  weightDecay: number;
  nesterov: boolean;
}

/** One SGD step; `buf` is the momentum buffer (zeros before the first step). */
export function cpuSgdStep(
  p: ArrayLike<number>,
  g: ArrayLike<number>,
  buf: ArrayLike<number>,
  h: SgdHyper,
): { p: Float64Array; buf: Float64Array } {
  const P = Float64Array.from(p), B = Float64Array.from(buf);
  for (let i = 0; i < P.length; i++) {
    let d = g[i] + h.weightDecay * P[i];
    if (h.momentum !== 0) {
      B[i] = h.momentum * B[i] + d;
      d = h.nesterov ? d + h.momentum * B[i] : B[i];
    }
    P[i] -= h.lr * d;
  }
  return { p: P, buf: B };
}

export interface AdamWHyper {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

/** One AdamW step number `t` (1-based). */
export function cpuAdamWStep(
  p: ArrayLike<number>,
  g: ArrayLike<number>,
  m: ArrayLike<number>,
  v: ArrayLike<number>,
  h: AdamWHyper,
  t: number,
): { p: Float64Array; m: Float64Array; v: Float64Array } {
  const P = Float64Array.from(p), M = Float64Array.from(m), V = Float64Array.from(v);
  const bc1 = 1 - h.beta1 ** t, bc2 = 1 - h.beta2 ** t;
  for (let i = 0; i < P.length; i++) {
    P[i] *= 1 - h.lr * h.weightDecay;
    M[i] = h.beta1 * M[i] + (1 - h.beta1) * g[i];
    V[i] = h.beta2 * V[i] + (1 - h.beta2) * g[i] * g[i];
    P[i] -= (h.lr * (M[i] / bc1)) / (Math.sqrt(V[i] / bc2) + h.eps);
  }
  return { p: P, m: M, v: V };
}

/** The global L2 norm of several gradients and the clip scale min(1, max / (norm + 1e-6)). */
export function cpuGradNorm(
  grads: ArrayLike<number>[],
  maxNorm: number,
): { norm: number; scale: number } {
  let s = 0;
  for (const g of grads) for (let i = 0; i < g.length; i++) s += g[i] * g[i];
  const norm = Math.sqrt(s);
  return { norm, scale: Math.min(1, maxNorm / (norm + 1e-6)) };
}
