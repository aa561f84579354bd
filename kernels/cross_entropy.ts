/**
 * Cross-entropy from logits [N, C], with a fused log-softmax: one workgroup of 256 per row.
 *
 * The target distribution of row i is q = (1 − ε)·t + ε/C, where t is the one-hot of the class
 * index (i32 targets) or the given probabilities (soft f32/f16 targets [N, C]) and ε the label
 * smoothing. loss_i = Σ_c q_c · (lse_i − x_ic) = lse_i · Σq − Σ q·x, lse = log Σ exp(x).
 *
 * Versions (pipeline key: logits dtype, index or soft target, target dtype):
 *   - forward: one pass folds the online (max, Σ exp) pair and Σ x (and Σ t, Σ t·x for soft
 *     targets), then writes loss_i and lse_i (saved for the backward).
 *   - backward: dx_ic = g_i · (exp(x_ic − lse_i) · Σq_i − q_ic); soft targets first reduce Σ t.
 * A class index outside [0, C) cannot be checked on the device without a readback: the kernel
 * writes NaN for that row's loss and gradient, so the error shows in the loss instead of being
 * silently wrong. (Host-side labels are checked by the op before upload.)
 *
 * Operands in the row layout of softmax.ts: 0 = logits, 1 = soft target rows; an index target
 * uses offset/stride words 24/25, g (backward, [N]) words 40/41. Scalar: ε at word 56.
 */
import { WGSL_PRELUDE } from "../engine/device.ts";
import type { DType } from "../engine/tensor.ts";
import type { HostTensor } from "./elementwise.ts";
import { ROW_WGSL, wgslType } from "./softmax.ts";

const HEAD = /* wgsl */ `
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let row = rowIndex(wid, nwg);
  let ok = row < uw(0u);
  let C = uw(1u);
  let eps = uf(56u);
  let xb = rowBase(0u, row);
  let xs = rowStride(0u);`;

export function crossEntropyWgsl(xt: DType, tt: DType): string {
  const soft = tt !== "i32";
  return `${WGSL_PRELUDE}
${ROW_WGSL}
@group(0) @binding(1) var<storage, read> x: array<${wgslType(xt)}>;
@group(0) @binding(2) var<storage, read> t: array<${wgslType(tt)}>;
@group(0) @binding(3) var<storage, read_write> loss: array<f32>;
@group(0) @binding(4) var<storage, read_write> lseOut: array<f32>;
${HEAD}
  var p = vec2<f32>(NEG, 0.0);
  var sx = 0.0;
  var stx = vec2<f32>(0.0, 0.0);
  if (ok) {
    ${soft ? "let tb = rowBase(1u, row);\n    let ts = rowStride(1u);" : ""}
    for (var j = lid; j < C; j += 256u) {
      let v = f32(x[xb + j * xs]);
      p = onlineAdd(p, v);
      sx += v;
      ${soft ? "let tv = f32(t[tb + j * ts]);\n      stx += vec2<f32>(tv, tv * v);" : ""}
    }
  }
  let ms = wgMaxSum(lid, p);
  let lse = ms.x + log(ms.y);
  let sumx = wgSum(lid, sx);
  ${soft ? "let s = wgSum2(lid, stx);" : ""}
  if (ok && lid == 0u) {
    ${
    soft
      ? `let sq = (1.0 - eps) * s.x + eps;
    loss[row] = lse * sq - ((1.0 - eps) * s.y + eps / f32(C) * sumx);`
      : `let y = t[uw(24u) + row * uw(25u)];
    if (y < 0 || u32(y) >= C) {
      loss[row] = nan();
    } else {
      loss[row] = lse - (1.0 - eps) * f32(x[xb + u32(y) * xs]) - eps / f32(C) * sumx;
    }`
  }
    lseOut[row] = lse;
  }
}`;
}

/** dlogits from logits, target, g ([N], strided: words 40/41) and the saved lse. */
export function crossEntropyBackwardWgsl(xt: DType, tt: DType, gt: DType): string {
  const soft = tt !== "i32";
  return `${WGSL_PRELUDE}
${ROW_WGSL}
@group(0) @binding(1) var<storage, read> x: array<${wgslType(xt)}>;
@group(0) @binding(2) var<storage, read> t: array<${wgslType(tt)}>;
@group(0) @binding(3) var<storage, read> g: array<${wgslType(gt)}>;
@group(0) @binding(4) var<storage, read> lseIn: array<f32>;
@group(0) @binding(5) var<storage, read_write> dx: array<f32>;
${HEAD}
  var gi = 0.0;
  var lse = 0.0;
  if (ok) {
    gi = f32(g[uw(40u) + row * uw(41u)]);
    lse = lseIn[row];
  }
  let u = eps / f32(C);
  ${
    soft
      ? `let tb = rowBase(1u, row);
  let ts = rowStride(1u);
  var acc = 0.0;
  if (ok) {
    for (var j = lid; j < C; j += 256u) { acc += f32(t[tb + j * ts]); }
  }
  let sq = (1.0 - eps) * wgSum(lid, acc) + eps;`
      : `let sq = 1.0;
  var y = -1;
  if (ok) { y = t[uw(24u) + row * uw(25u)]; }
  let bad = y < 0 || u32(y) >= C;`
  }
  if (ok) {
    let o = row * C;
    for (var j = lid; j < C; j += 256u) {
      ${
    soft
      ? "let q = (1.0 - eps) * f32(t[tb + j * ts]) + u;"
      : "let q = select(u, 1.0 - eps + u, i32(j) == y);"
  }
      var d = gi * (exp(f32(x[xb + j * xs]) - lse) * sq - q);
      ${soft ? "" : "if (bad) { d = nan(); }"}
      dx[o + j] = d;
    }
  }
}`;
}

// ---------------------------------------------------------------------------------------------
// float64 reference

export interface CrossEntropyRefOptions {
  reduction?: "mean" | "sum" | "none";
  labelSmoothing?: number;
}

/** `target` holds class indices [N] (as numbers) when `soft` is false, else probabilities [N, C]. */
export function cpuCrossEntropy(
  logits: HostTensor,
  target: HostTensor,
  soft: boolean,
  { reduction = "mean", labelSmoothing = 0 }: CrossEntropyRefOptions = {},
): HostTensor {
  const [N, C] = logits.shape;
  const eps = labelSmoothing;
  const rows = new Float64Array(N);
  for (let i = 0; i < N; i++) {
    let m = -Infinity, s = 0;
    for (let c = 0; c < C; c++) m = Math.max(m, logits.data[i * C + c]);
    for (let c = 0; c < C; c++) s += Math.exp(logits.data[i * C + c] - m);
    const lse = m + Math.log(s);
    let l = 0;
    for (let c = 0; c < C; c++) {
      const t = soft ? target.data[i * C + c] : +(target.data[i] === c);
      l += ((1 - eps) * t + eps / C) * (lse - logits.data[i * C + c]);
    }
    rows[i] = l;
  }
  if (reduction === "none") return { shape: [N], data: rows };
  const total = rows.reduce((a, b) => a + b, 0);
  return { shape: [], data: new Float64Array([reduction === "mean" ? total / N : total]) };
}
