/**
 * Neural-network ops with fused kernels, MLX `fast` style: every fused op has a composite twin
 * built from elementwise / reduce / matmul ops (`{ fused: false }`), whose gradient autograd
 * derives, and the tests hold the two against each other.
 *
 *   softmax, logSoftmax  fused forward and fused backward (kernels/softmax.ts)
 *   layerNorm            fused forward, fused dx backward, fused dw partial sums; db a reduction
 *   crossEntropy         fused log-softmax + loss forward, fused backward (kernels/cross_entropy.ts)
 *   attention            flash-style fused forward (kernels/attention.ts); the backward
 *                        recomputes the probabilities from the saved log-sum-exp with matmuls
 *   mse, normalize       composite only
 */
import { E, f32Bits } from "../device.ts";
import { EngineError, fmtShape } from "../errors.ts";
import { noGrad, record } from "../autograd.ts";
import { empty, type Tensor, tensor } from "../tensor.ts";
import {
  add,
  affine,
  div,
  eq,
  exp,
  log,
  maximum,
  mul,
  neg,
  rsqrt,
  square,
  sub,
  zeros,
} from "./elementwise.ts";
import { max, mean, sum } from "./reduce.ts";
import { reshape } from "./views.ts";
import { matmul } from "./matmul.ts";
import { rowGrid, softmaxBackwardWgsl, softmaxWgsl } from "../../kernels/softmax.ts";
import {
  layerNormBackwardWgsl,
  layerNormWeightGradWgsl,
  layerNormWgsl,
  LN_ROW_CHUNK,
} from "../../kernels/layernorm.ts";
import { crossEntropyBackwardWgsl, crossEntropyWgsl } from "../../kernels/cross_entropy.ts";
import { attentionTile, attentionWgsl, ATTN_BQ, ATTN_MAX_D } from "../../kernels/attention.ts";

export interface FusedOptions {
  /** Run the fused kernel (default) or the composite twin made of other ops. */
  fused?: boolean;
}

function floatInput(op: string, name: string, t: Tensor) {
  t.buf(op);
  if (t.dtype === "i32") {
    throw new EngineError(op, `${name} must be a float tensor, got i32 ${fmtShape(t.shape)}`);
  }
}

/** Uniform words of the row layout (kernels/softmax.ts): x defines the rows; operand k at 16+8k.
 * An operand of lower rank (a weight [L], a per-row vector [N]) contributes offset and stride. */
function rowUniforms(x: Tensor, operands: (Tensor | null)[]): number[] {
  const u = new Array(64).fill(0);
  const L = x.shape[x.rank - 1];
  u[0] = L ? x.size / L : 0;
  u[1] = L;
  u[2] = x.rank - 1;
  x.shape.slice(0, -1).forEach((s, d) => (u[4 + d] = s));
  operands.forEach((t, k) => {
    if (!t) return;
    const b = 16 + 8 * k;
    u[b] = t.offset;
    u[b + 1] = t.strides[t.rank - 1];
    if (t.rank === x.rank) t.strides.slice(0, -1).forEach((s, d) => (u[b + 2 + d] = s));
  });
  return u;
}

const rowsOf = (x: Tensor) => (x.shape[x.rank - 1] ? x.size / x.shape[x.rank - 1] : 0);

// ---------------------------------------------------------------------------------------------
// softmax / logSoftmax

function launchSoftmax(x: Tensor, log: boolean): Tensor {
  const y = empty([...x.shape]);
  if (!y.size) return y;
  E().launch({
    kernel: log ? "log_softmax" : "softmax",
    key: x.dtype,
    wgsl: () => softmaxWgsl(x.dtype, log),
    inputs: [x.buf()],
    outputs: [y.buf()],
    uniforms: rowUniforms(x, [x]),
    workgroups: rowGrid(rowsOf(x)),
  });
  return y;
}

function launchSoftmaxBackward(y: Tensor, g: Tensor, log: boolean): Tensor {
  const dx = empty([...y.shape]);
  if (!dx.size) return dx;
  E().launch({
    kernel: log ? "log_softmax_backward" : "softmax_backward",
    key: g.dtype,
    wgsl: () => softmaxBackwardWgsl(g.dtype, log),
    inputs: [y.buf(), g.buf()],
    outputs: [dx.buf()],
    uniforms: rowUniforms(y, [y, g]),
    workgroups: rowGrid(rowsOf(y)),
  });
  return dx;
}

function softmaxOp(name: string, x: Tensor, isLog: boolean, opts: FusedOptions): Tensor {
  floatInput(name, "input", x);
  if (x.rank < 1) throw new EngineError(name, `needs rank ≥ 1, got a scalar ${fmtShape(x.shape)}`);
  if (opts.fused === false) {
    // the max only shifts for stability; its gradient cancels exactly, so it is taken as constant
    const m = noGrad(() => max(x, -1, true));
    const z = sub(x, m);
    return isLog ? sub(z, log(sum(exp(z), -1, true))) : div(exp(z), sum(exp(z), -1, true));
  }
  const y = launchSoftmax(x, isLog);
  return record(name, y, [x], [y], (g, [sy]) => [launchSoftmaxBackward(sy, g, isLog)]);
}

/** Softmax over the last axis. */
export function softmax(x: Tensor, opts: FusedOptions = {}): Tensor {
  return softmaxOp("softmax", x, false, opts);
}

/** Log-softmax over the last axis. */
export function logSoftmax(x: Tensor, opts: FusedOptions = {}): Tensor {
  return softmaxOp("logSoftmax", x, true, opts);
}

// ---------------------------------------------------------------------------------------------
// layerNorm

/**
 * LayerNorm over the last axis with optional weight and bias of shape [L] (f32, or f16 for frozen
 * checkpoints). Only the gradients of inputs that require one are computed.
 */
export function layerNorm(
  x: Tensor,
  weight?: Tensor | null,
  bias?: Tensor | null,
  eps = 1e-5,
  opts: FusedOptions = {},
): Tensor {
  const op = "layerNorm";
  floatInput(op, "input", x);
  if (x.rank < 1) throw new EngineError(op, `needs rank ≥ 1, got a scalar ${fmtShape(x.shape)}`);
  const L = x.shape[x.rank - 1];
  for (const [name, t] of [["weight", weight], ["bias", bias]] as const) {
    if (!t) continue;
    floatInput(op, name, t);
    if (t.rank !== 1 || t.shape[0] !== L) {
      throw new EngineError(
        op,
        `${name} ${fmtShape(t.shape)} does not match the normalised axis of input ${
          fmtShape(x.shape)
        } (expected [${L}])`,
      );
    }
  }
  if (opts.fused === false) {
    const c = sub(x, mean(x, -1, true));
    let y = mul(c, rsqrt(add(mean(square(c), -1, true), eps)));
    if (weight) y = mul(y, weight);
    return bias ? add(y, bias) : y;
  }
  const y = empty([...x.shape]);
  const rows = rowsOf(x);
  const mu = empty([rows]), rstd = empty([rows]);
  if (y.size) {
    const u = rowUniforms(x, [x, weight ?? null, bias ?? null]);
    u[56] = f32Bits(eps);
    const wt = weight?.dtype ?? null, bt = bias?.dtype ?? null;
    E().launch({
      kernel: "layernorm",
      key: `${x.dtype},${wt},${bt}`,
      wgsl: () => layerNormWgsl(x.dtype, wt, bt),
      inputs: [x, weight, bias].filter((t): t is Tensor => !!t).map((t) => t.buf()),
      outputs: [y.buf(), mu.buf(), rstd.buf()],
      uniforms: u,
      workgroups: rowGrid(rows),
    });
  }
  const inputs = [x, weight, bias].filter((t): t is Tensor => !!t);
  const iw = weight ? 1 : -1, ib = bias ? (weight ? 2 : 1) : -1;
  const save = weight ? [x, weight, mu, rstd] : [x, mu, rstd];
  const out = record(op, y, inputs, save, (g, s, needs) => {
    const [sx, sw, smu, sr] = weight ? s : [s[0], null, s[1], s[2]];
    const grads: (Tensor | null)[] = inputs.map(() => null);
    if (needs[0]) grads[0] = launchLayerNormBackward(sx, g, sw, smu, sr);
    if (iw >= 0 && needs[iw]) grads[iw] = launchLayerNormWeightGrad(sx, g, smu, sr);
    if (ib >= 0 && needs[ib]) {
      grads[ib] = x.rank === 1 ? g : sum(g, [...Array(x.rank - 1).keys()]);
    }
    return grads;
  });
  mu.dispose();
  rstd.dispose();
  return out;
}

function launchLayerNormBackward(
  x: Tensor,
  g: Tensor,
  w: Tensor | null,
  mu: Tensor,
  rstd: Tensor,
): Tensor {
  const dx = empty([...x.shape]);
  if (!dx.size) return dx;
  const u = rowUniforms(x, [x, g, w]);
  const wt = w?.dtype ?? null;
  E().launch({
    kernel: "layernorm_backward",
    key: `${x.dtype},${g.dtype},${wt}`,
    wgsl: () => layerNormBackwardWgsl(x.dtype, g.dtype, wt),
    inputs: [x.buf(), g.buf(), ...(w ? [w.buf()] : []), mu.buf(), rstd.buf()],
    outputs: [dx.buf()],
    uniforms: u,
    workgroups: rowGrid(rowsOf(x)),
  });
  return dx;
}

function launchLayerNormWeightGrad(x: Tensor, g: Tensor, mu: Tensor, rstd: Tensor): Tensor {
  const L = x.shape[x.rank - 1], rows = rowsOf(x);
  const chunks = Math.max(1, Math.ceil(rows / LN_ROW_CHUNK));
  if (!rows || !L) return zeros([L]);
  const part = empty([chunks, L]);
  E().launch({
    kernel: "layernorm_weight_grad",
    key: `${x.dtype},${g.dtype}`,
    wgsl: () => layerNormWeightGradWgsl(x.dtype, g.dtype),
    inputs: [x.buf(), g.buf(), mu.buf(), rstd.buf()],
    outputs: [part.buf()],
    uniforms: rowUniforms(x, [x, g]),
    workgroups: [Math.ceil(L / 64), chunks],
  });
  return chunks === 1 ? reshape(part, [L]) : sum(part, 0);
}

// ---------------------------------------------------------------------------------------------
// crossEntropy

export interface CrossEntropyOptions extends FusedOptions {
  /** "mean" (default) averages over the N rows, "sum" adds them, "none" returns [N]. */
  reduction?: "mean" | "sum" | "none";
  /** ε: the target becomes (1 − ε)·target + ε/C. */
  labelSmoothing?: number;
}

/**
 * Cross-entropy of logits [N, C] against class indices (i32 tensor [N], or host labels, which
 * are range-checked before upload) or soft targets (float [N, C], probabilities). A class index
 * outside [0, C) in a device tensor cannot be checked without a readback: that row's loss and
 * gradient become NaN (fused path) so the mistake is visible in the loss.
 */
export function crossEntropy(
  logits: Tensor,
  target: Tensor | Int32Array | number[],
  opts: CrossEntropyOptions = {},
): Tensor {
  const op = "crossEntropy";
  const { reduction = "mean", labelSmoothing: ls = 0, fused = true } = opts;
  floatInput(op, "logits", logits);
  if (logits.rank !== 2) {
    throw new EngineError(op, `logits must be [N, C], got ${fmtShape(logits.shape)}`);
  }
  const [N, C] = logits.shape;
  if (!(ls >= 0 && ls <= 1)) throw new EngineError(op, `labelSmoothing ${ls} is not in [0, 1]`);
  if (!["mean", "sum", "none"].includes(reduction)) {
    throw new EngineError(op, `reduction must be "mean", "sum" or "none", got "${reduction}"`);
  }
  let t: Tensor;
  let madeHere = false;
  if (target instanceof Int32Array || Array.isArray(target)) {
    if (target.length !== N) {
      throw new EngineError(
        op,
        `${target.length} labels for logits ${fmtShape(logits.shape)} (expected ${N})`,
      );
    }
    for (let i = 0; i < target.length; i++) {
      const y = target[i];
      if (!Number.isInteger(y) || y < 0 || y >= C) {
        throw new EngineError(
          op,
          `label ${y} at index ${i} is not a class index in [0, ${C}) for logits ${
            fmtShape(logits.shape)
          }`,
        );
      }
    }
    t = tensor(Int32Array.from(target), [N], "i32");
    madeHere = true;
  } else {
    t = target;
    t.buf(op);
    const okIndex = t.dtype === "i32" && t.rank === 1 && t.shape[0] === N;
    const okSoft = t.dtype !== "i32" && t.rank === 2 && t.shape[0] === N && t.shape[1] === C;
    if (!okIndex && !okSoft) {
      throw new EngineError(
        op,
        `target ${t.dtype} ${fmtShape(t.shape)} does not fit logits ${
          fmtShape(logits.shape)
        }: expected i32 class indices [${N}] or float probabilities [${N}, ${C}]`,
      );
    }
  }
  const rows = fused ? crossEntropyRows(logits, t, ls) : crossEntropyComposite(logits, t, ls);
  if (madeHere) t.dispose();
  if (reduction === "none") return rows;
  return reduction === "mean" ? mean(rows) : sum(rows);
}

function crossEntropyComposite(x: Tensor, t: Tensor, ls: number): Tensor {
  const [N, C] = x.shape;
  let q: Tensor;
  if (t.dtype === "i32") {
    const classes = tensor(Float32Array.from({ length: C }, (_, c) => c), [1, C]);
    q = affine(eq(reshape(t, [N, 1]), classes), 1 - ls, ls / C);
  } else q = ls ? affine(t, 1 - ls, ls / C) : t;
  return neg(sum(mul(q, logSoftmax(x, { fused: false })), -1));
}

function crossEntropyRows(x: Tensor, t: Tensor, ls: number): Tensor {
  const [N, C] = x.shape;
  const loss = empty([N]), lse = empty([N]);
  const soft = t.dtype !== "i32";
  if (N && C) {
    const u = rowUniforms(x, [x, t]);
    u[56] = f32Bits(ls);
    E().launch({
      kernel: "cross_entropy",
      key: `${x.dtype},${t.dtype}`,
      wgsl: () => crossEntropyWgsl(x.dtype, t.dtype),
      inputs: [x.buf(), t.buf()],
      outputs: [loss.buf(), lse.buf()],
      uniforms: u,
      workgroups: rowGrid(N),
    });
  }
  const out = record("crossEntropy", loss, [x, t], [x, t, lse], (g, [sx, st, sl], needs) => {
    let dx: Tensor | null = null, dt: Tensor | null = null;
    if (needs[0]) {
      dx = empty([N, C]);
      if (dx.size) {
        const u = rowUniforms(sx, [sx, st, null, g]);
        u[56] = f32Bits(ls);
        E().launch({
          kernel: "cross_entropy_backward",
          key: `${sx.dtype},${st.dtype},${g.dtype}`,
          wgsl: () => crossEntropyBackwardWgsl(sx.dtype, st.dtype, g.dtype),
          inputs: [sx.buf(), st.buf(), g.buf(), sl.buf()],
          outputs: [dx.buf()],
          uniforms: u,
          workgroups: rowGrid(N),
        });
      }
    }
    if (needs[1] && soft) {
      // d loss_i / d t_ic = (1 − ε) · (lse_i − x_ic)
      dt = mul(sub(reshape(sl, [N, 1]), sx), mul(reshape(g, [N, 1]), 1 - ls));
    }
    return [dx, dt];
  });
  lse.dispose();
  return out;
}

// ---------------------------------------------------------------------------------------------
// mse, normalize (composite)

/** Mean squared error (reduction "mean" by default; "sum" or "none" elementwise). */
export function mse(
  a: Tensor,
  b: Tensor,
  { reduction = "mean" }: { reduction?: "mean" | "sum" | "none" } = {},
): Tensor {
  floatInput("mse", "input", a);
  floatInput("mse", "target", b);
  if (a.rank !== b.rank || a.shape.some((s, d) => s !== b.shape[d])) {
    throw new EngineError("mse", `shapes differ: ${fmtShape(a.shape)} and ${fmtShape(b.shape)}`);
  }
  const e = square(sub(a, b));
  return reduction === "none" ? e : reduction === "sum" ? sum(e) : mean(e);
}

/** x / max(‖x‖₂, eps) along `axis`, like torch.nn.functional.normalize. */
export function normalize(x: Tensor, axis = -1, eps = 1e-12): Tensor {
  floatInput("normalize", "input", x);
  if (x.rank < 1) throw new EngineError("normalize", `needs rank ≥ 1, got ${fmtShape(x.shape)}`);
  // clamping the squared norm keeps the gradient finite (zero) for an all-zero row
  return mul(x, rsqrt(maximum(sum(square(x), axis, true), eps * eps)));
}

// ---------------------------------------------------------------------------------------------
// attention

export interface AttentionOptions extends FusedOptions {
  /** Query i attends to keys 0..i (needs Tq == Tk). */
  causal?: boolean;
  /** Score scale, default 1 / sqrt(D). */
  scale?: number;
}

function causalMask(Tq: number, Tk: number): Tensor {
  const m = new Float32Array(Tq * Tk);
  for (let i = 0; i < Tq; i++) for (let j = i + 1; j < Tk; j++) m[i * Tk + j] = -Infinity;
  return tensor(m, [Tq, Tk]);
}

/**
 * From this many keys on, a software adapter runs the composite (its matmuls take the texture
 * path): measured on llvmpipe (2 cores, bench/block.ts and the fused/composite pairs), fused →
 * composite ms: [8, 12, 197, 64] 549 → 227, [1, 12, 197, 64] 74 → 34, [8, 16, 257, 64] 1249 →
 * 435, while 77 causal tokens favour the fused kernel ([100, 8, 77, 64]: 440 vs 636).
 */
const SOFTWARE_COMPOSITE_TK = 128;

/**
 * Scaled dot-product attention: q [B, H, Tq, D], k [B, H, Tk, D], v [B, H, Tk, Dv] →
 * [B, H, Tq, Dv]. The fused forward serves head sizes up to 128 (larger ones run the composite,
 * as does a software adapter at SOFTWARE_COMPOSITE_TK keys or more unless `fused` is set).
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions = {}): Tensor {
  const op = "attention";
  for (const [n, t] of [["q", q], ["k", k], ["v", v]] as const) floatInput(op, n, t);
  const shapes = `q ${fmtShape(q.shape)}, k ${fmtShape(k.shape)}, v ${fmtShape(v.shape)}`;
  if (q.rank !== 4 || k.rank !== 4 || v.rank !== 4) {
    throw new EngineError(op, `expects rank-4 [B, H, T, D] tensors, got ${shapes}`);
  }
  const [B, H, Tq, D] = q.shape;
  const [Tk, Dv] = [k.shape[2], v.shape[3]];
  if (
    k.shape[0] !== B || k.shape[1] !== H || k.shape[3] !== D || v.shape[0] !== B ||
    v.shape[1] !== H || v.shape[2] !== Tk
  ) {
    throw new EngineError(
      op,
      `shapes do not fit: ${shapes} (expected k [B, H, Tk, D], v [B, H, Tk, Dv])`,
    );
  }
  const causal = !!opts.causal;
  if (causal && Tq !== Tk) {
    throw new EngineError(op, `causal attention needs Tq == Tk, got ${shapes}`);
  }
  if (Tk === 0) throw new EngineError(op, `no keys to attend to: ${shapes}`);
  const scale = opts.scale ?? 1 / Math.sqrt(D);
  const composite = opts.fused === false || D > ATTN_MAX_D || Dv > ATTN_MAX_D ||
    (opts.fused === undefined && E().info.isFallbackAdapter && Tk >= SOFTWARE_COMPOSITE_TK);
  if (composite) {
    // the scale on q (Tq × D) rather than on the Tq × Tk scores; each score-sized tensor is
    // freed as soon as the next op has read it
    const qs = affine(q, scale, 0);
    let s = matmul(qs, k, { transB: true });
    qs.dispose();
    if (causal) {
      const masked = add(s, causalMask(Tq, Tk));
      s.dispose();
      s = masked;
    }
    const p = softmax(s);
    s.dispose();
    const out = matmul(p, v);
    p.dispose();
    return out;
  }
  const out = empty([B, H, Tq, Dv]);
  const lse = empty([B, H, Tq]);
  if (out.size) {
    const { DM, BK } = attentionTile(D, Dv);
    const nBH = B * H;
    const gy = Math.min(nBH, 65535);
    const u = new Array(32).fill(0);
    [u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7]] = [B, H, Tq, Tk, D, Dv, f32Bits(scale), nBH];
    [q, k, v].forEach((t, i) => {
      u[8 + 8 * i] = t.offset;
      t.strides.forEach((s, d) => (u[9 + 8 * i + d] = s));
    });
    E().launch({
      kernel: "attention",
      key: `${q.dtype},${k.dtype},${v.dtype},${causal ? "causal" : "full"},${DM},${BK}`,
      wgsl: () => attentionWgsl(q.dtype, k.dtype, v.dtype, causal, DM, BK),
      inputs: [q.buf(), k.buf(), v.buf()],
      outputs: [out.buf(), lse.buf()],
      uniforms: u,
      workgroups: [Math.ceil(Tq / ATTN_BQ), gy, Math.ceil(nBH / gy)],
    });
  }
  const res = record(op, out, [q, k, v], [q, k, v, out, lse], (g, [sq, sk, sv, so, sl], needs) => {
    // p = exp(q·kᵀ·scale + mask − lse), recomputed from the forward's log-sum-exp
    let z = affine(matmul(sq, sk, { transB: true }), scale, 0);
    if (causal) z = add(z, causalMask(Tq, Tk));
    const p = exp(sub(z, reshape(sl, [B, H, Tq, 1])));
    const dv = needs[2] ? matmul(p, g, { transA: true }) : null;
    let dq: Tensor | null = null, dk: Tensor | null = null;
    if (needs[0] || needs[1]) {
      // dS = p · (g·vᵀ − Σ_d g·out) · scale
      const di = sum(mul(g, so), -1, true);
      const ds = mul(mul(p, sub(matmul(g, sv, { transB: true }), di)), scale);
      if (needs[0]) dq = matmul(ds, sk);
      if (needs[1]) dk = matmul(ds, sq, { transA: true });
    }
    return [dq, dk, dv];
  });
  lse.dispose();
  return res;
}
