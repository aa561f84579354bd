/**
 * Reductions over any axes, with keepdim: sum, mean, max, min, variance; and sumTo, the
 * reduction that undoes broadcasting in gradients.
 */
import { E } from "../device.ts";
import { EngineError, fmtShape } from "../errors.ts";
import { record } from "../autograd.ts";
import { type ReduceOp, reduceWgsl } from "../../kernels/reduce.ts";
import { empty, type Tensor } from "../tensor.ts";
import { expand, reshape } from "./views.ts";
import { full, launchMap, mul, sub } from "./elementwise.ts";

export type Axes = number | number[] | undefined;

export function normAxes(axes: Axes, rank: number, op: string): number[] {
  const list = axes === undefined ? [...Array(rank).keys()] : Array.isArray(axes) ? axes : [axes];
  const out = list.map((a) => {
    const d = a < 0 ? a + rank : a;
    if (!Number.isInteger(d) || d < 0 || d >= rank) {
      throw new EngineError(op, `axis ${a} out of range for rank ${rank}`);
    }
    return d;
  });
  return [...new Set(out)].sort((a, b) => a - b);
}

/** Kernel launch: reduce `axes` of x into a contiguous tensor of the keepdim shape. */
function launchReduce(op: ReduceOp, x: Tensor, axes: number[], name: string): Tensor {
  x.buf(name);
  if (x.dtype === "i32") {
    throw new EngineError(name, `expects a float tensor, got i32 ${fmtShape(x.shape)}`);
  }
  const keptShape = x.shape.map((s, d) => (axes.includes(d) ? 1 : s));
  const out = empty(keptShape);
  const rows = out.size;
  let R = 1;
  for (const a of axes) R *= x.shape[a];
  if (rows === 0) return out;
  if (R === 0) {
    out.dispose();
    if (op !== "sum") {
      throw new EngineError(name, `cannot reduce an empty axis of ${fmtShape(x.shape)}`);
    }
    return full(keptShape, 0);
  }
  const kept = x.shape.map((_, d) => d).filter((d) => !axes.includes(d));
  const order = [...kept, ...axes];
  const u = new Array(20).fill(0);
  u[0] = rows;
  u[1] = R;
  u[2] = order.length;
  u[3] = x.offset;
  order.forEach((d, i) => {
    u[8 + i] = x.shape[d];
    u[14 + i] = x.strides[d];
  });
  const gx = Math.min(rows, 65535);
  E().launch({
    kernel: `reduce_${op}`,
    key: x.dtype,
    wgsl: () => reduceWgsl(op, x.dtype),
    inputs: [x.buf()],
    outputs: [out.buf()],
    uniforms: u,
    workgroups: [gx, Math.ceil(rows / gx)],
  });
  return out;
}

function finish(out: Tensor, x: Tensor, axes: number[], keepdim: boolean): Tensor {
  if (keepdim) return out;
  return reshape(out, x.shape.filter((_, d) => !axes.includes(d)));
}

export function sum(x: Tensor, axes?: Axes, keepdim = false): Tensor {
  const ax = normAxes(axes, x.rank, "sum");
  const out = finish(launchReduce("sum", x, ax, "sum"), x, ax, keepdim);
  return record("sum", out, [x], [], (g) => [
    expand(reshape(g, x.shape.map((s, d) => (ax.includes(d) ? 1 : s))), x.shape),
  ]);
}

export function mean(x: Tensor, axes?: Axes, keepdim = false): Tensor {
  const ax = normAxes(axes, x.rank, "mean");
  let R = 1;
  for (const a of ax) R *= x.shape[a];
  const s = launchReduce("sum", x, ax, "mean");
  const out = finish(launchMap("affine", [s], [1 / R, 0]), x, ax, keepdim);
  s.dispose();
  return record("mean", out, [x], [], (g) => [
    expand(
      reshape(
        launchMap("affine", [g], [1 / R, 0]),
        x.shape.map((s, d) => (ax.includes(d) ? 1 : s)),
      ),
      x.shape,
    ),
  ]);
}

function extremum(op: "max" | "min") {
  return (x: Tensor, axes?: Axes, keepdim = false): Tensor => {
    const ax = normAxes(axes, x.rank, op);
    const m = launchReduce(op, x, ax, op);
    const out = finish(m, x, ax, keepdim);
    // the gradient is shared equally among tied extrema
    return record(op, out, [x], [x, m], (g, [sx, sm]) => {
      const mask = launchMap("eq", [sx, sm]);
      const count = launchReduce("sum", mask, ax, op);
      const gk = reshape(g, sm.shape);
      return [launchMap("mul", [mask, launchMap("div", [gk, count])])];
    });
  };
}
export const max = extremum("max");
export const min = extremum("min");

/** Variance with `correction` (0: population, 1: unbiased like torch.var's default). */
export function variance(x: Tensor, axes?: Axes, keepdim = false, correction = 0): Tensor {
  const ax = normAxes(axes, x.rank, "variance");
  let R = 1;
  for (const a of ax) R *= x.shape[a];
  const c = sub(x, mean(x, ax, true));
  return mul(sum(mul(c, c), ax, keepdim), 1 / Math.max(R - correction, 1));
}
/** Sums `g` down to `shape` (the inverse of broadcasting `shape` up to g.shape). */
export function sumTo(g: Tensor, shape: readonly number[]): Tensor {
  if (g.shape.length === shape.length && g.shape.every((s, d) => s === shape[d])) return g;
  const lead = g.rank - shape.length;
  if (lead < 0) {
    throw new EngineError("sumTo", `cannot reduce ${fmtShape(g.shape)} to ${fmtShape(shape)}`);
  }
  const axes: number[] = [];
  for (let d = 0; d < g.rank; d++) {
    if (d < lead || (shape[d - lead] === 1 && g.shape[d] !== 1)) axes.push(d);
  }
  const r = launchReduce("sum", g, axes, "sumTo");
  return reshape(r, [...shape]);
}
