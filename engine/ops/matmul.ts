/**
 * matmul with transpose flags and broadcast batch axes; linear (PyTorch layout).
 * The backward reads the saved operands through transposed views (flags), never materialised
 * transposes, and computes only the gradients that are needed.
 */
import { E } from "../device.ts";
import { EngineError, fmtShape } from "../errors.ts";
import { record } from "../autograd.ts";
import { matmulNaiveWgsl } from "../../kernels/matmul.ts";
import { broadcastShapes } from "../../kernels/elementwise.ts";
import { empty, type Tensor } from "../tensor.ts";
import { transpose } from "./views.ts";
import { add } from "./elementwise.ts";
import { sumTo } from "./reduce.ts";

export interface MatmulOptions {
  transA?: boolean;
  transB?: boolean;
}

/** Kernel launch for C = op(A) · op(B) over broadcast batch axes; no tape. */
export function launchMatmul(a: Tensor, b: Tensor, transA = false, transB = false): Tensor {
  const op = "matmul";
  if (a.rank < 2 || b.rank < 2) {
    throw new EngineError(op, `operands need rank ≥ 2, got ${fmtShape(a.shape)} and ${fmtShape(b.shape)}`);
  }
  if (a.dtype === "i32" || b.dtype === "i32") {
    throw new EngineError(op, `expects float operands, got ${a.dtype} ${fmtShape(a.shape)} and ${b.dtype} ${fmtShape(b.shape)}`);
  }
  const [ar, br] = [a.rank, b.rank];
  const M = transA ? a.shape[ar - 1] : a.shape[ar - 2];
  const Ka = transA ? a.shape[ar - 2] : a.shape[ar - 1];
  const Kb = transB ? b.shape[br - 1] : b.shape[br - 2];
  const N = transB ? b.shape[br - 2] : b.shape[br - 1];
  const sAm = transA ? a.strides[ar - 1] : a.strides[ar - 2];
  const sAk = transA ? a.strides[ar - 2] : a.strides[ar - 1];
  const sBk = transB ? b.strides[br - 1] : b.strides[br - 2];
  const sBn = transB ? b.strides[br - 2] : b.strides[br - 1];
  const flags = `${transA ? "Aᵀ" : "A"}·${transB ? "Bᵀ" : "B"}`;
  if (Ka !== Kb) {
    throw new EngineError(op, `inner sizes differ: ${fmtShape(a.shape)} · ${fmtShape(b.shape)} (${flags}: K ${Ka} vs ${Kb})`);
  }
  const batchShape = broadcastShapes(a.shape.slice(0, -2), b.shape.slice(0, -2));
  if (!batchShape) {
    throw new EngineError(op, `batch axes do not broadcast: ${fmtShape(a.shape)} · ${fmtShape(b.shape)}`);
  }
  if (batchShape.length > 4) throw new EngineError(op, `at most 4 batch axes, got ${fmtShape(batchShape)}`);
  const out = empty([...batchShape, M, N]);
  const batch = batchShape.reduce((x, y) => x * y, 1);
  if (out.size === 0) return out;
  const u = new Array(24).fill(0);
  [u[0], u[1], u[2], u[3], u[4], u[5], u[6]] = [M, N, Ka, batch, batchShape.length, a.offset, b.offset];
  [u[7], u[8], u[9], u[10]] = [sAm, sAk, sBk, sBn];
  const bstride = (t: Tensor, d: number) => {
    const td = d - (batchShape.length - (t.rank - 2));
    return td < 0 || t.shape[td] === 1 ? 0 : t.strides[td];
  };
  batchShape.forEach((s, d) => {
    u[12 + d] = s;
    u[16 + d] = bstride(a, d);
    u[20 + d] = bstride(b, d);
  });
  E().launch({
    kernel: "matmul_naive",
    key: `${a.dtype},${b.dtype}`,
    wgsl: () => matmulNaiveWgsl(a.dtype, b.dtype),
    inputs: [a.buf(op), b.buf(op)],
    outputs: [out.buf()],
    uniforms: u,
    workgroups: [Math.ceil(N / 16), Math.ceil(M / 16), batch],
  });
  return out;
}

/**
 * op(A) · op(B) with batch broadcasting: A [..., M, K] (or [..., K, M] with transA),
 * B [..., K, N] (or [..., N, K] with transB).
 */
export function matmul(a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor {
  const { transA = false, transB = false } = opts;
  const out = launchMatmul(a, b, transA, transB);
  const [as, bs] = [a.shape, b.shape];
  return record("matmul", out, [a, b], [a, b], (g, [sa, sb], needs) => {
    // C = A·B: dA = g·Bᵀ, dB = Aᵀ·g (with the flags folded in)
    let da: Tensor | null = null, db: Tensor | null = null;
    if (needs[0]) {
      da = transA ? launchMatmul(sb, g, transB, true) : launchMatmul(g, sb, false, !transB);
      da = sumTo(da, as);
    }
    if (needs[1]) {
      db = transB ? launchMatmul(g, sa, true, transA) : launchMatmul(sa, g, !transA, false);
      db = sumTo(db, bs);
    }
    return [da, db];
  });
}

/** y = x · Wᵀ + b with W in PyTorch's (out × in) layout. */
export function linear(x: Tensor, w: Tensor, b?: Tensor): Tensor {
  if (w.rank !== 2 || x.shape[x.rank - 1] !== w.shape[1]) {
    throw new EngineError("linear", `input ${fmtShape(x.shape)} does not fit weight ${fmtShape(w.shape)} (out × in)`);
  }
  const y = matmul(x, w, { transB: true });
  return b ? add(y, b) : y;
}

export { transpose };
