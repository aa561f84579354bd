/**
 * Elementwise ops with broadcasting, each with its gradient written in other ops.
 */
import { E, f32Bits, grid1d } from "../device.ts";
import { EngineError, fmtShape } from "../errors.ts";
import { record } from "../autograd.ts";
import { broadcastShapes, MAPS, mapWgsl } from "../../kernels/elementwise.ts";
import { type DType, empty, scalar, Tensor } from "../tensor.ts";
import { sumTo } from "./reduce.ts";

export type TensorLike = Tensor | number;

const asTensor = (x: TensorLike): Tensor => (x instanceof Tensor ? x : scalar(x));

/** Strides of `t` seen as `shape` (broadcast dims get stride 0). */
export function broadcastStrides(t: Tensor, shape: number[], op: string): number[] {
  const r = shape.length, tr = t.rank;
  const st = new Array(r).fill(0);
  for (let i = 0; i < tr; i++) {
    const d = r - tr + i;
    if (t.shape[i] === shape[d]) st[d] = t.shape[i] === 1 ? 0 : t.strides[i];
    else if (t.shape[i] === 1) st[d] = 0;
    else throw new EngineError(op, `cannot broadcast ${fmtShape(t.shape)} to ${fmtShape(shape)}`);
  }
  return st;
}

/** Launches map kernel `op` over `inputs` (already tensors) into a new contiguous tensor. */
export function launchMap(
  op: string,
  inputs: Tensor[],
  scalars: number[] = [],
  outType: DType = "f32",
  into?: Tensor,
): Tensor {
  const shape = into ? into.shape : broadcastShapes(...inputs.map((t) => t.shape));
  if (!shape) {
    throw new EngineError(
      op,
      `shapes ${inputs.map((t) => fmtShape(t.shape)).join(" and ")} do not broadcast`,
    );
  }
  for (const t of inputs) t.buf(op);
  const out = into ?? empty(shape, outType);
  if (into) outType = into.dtype;
  const n = out.size;
  if (n === 0) return out;
  const outStrided = !!into && (!into.isContiguous || into.offset !== 0);
  const u = new Array(48).fill(0);
  u[0] = n;
  u[1] = shape.length;
  shape.forEach((s, d) => (u[8 + d] = s));
  const direct: boolean[] = [];
  inputs.forEach((t, k) => {
    u[2 + k] = t.offset;
    const same = t.rank === shape.length && t.shape.every((s, d) => s === shape[d]);
    direct.push(same && t.isContiguous);
    broadcastStrides(t, shape, op).forEach((s, d) => (u[14 + 6 * k + d] = s));
  });
  if (into) {
    u[5] = into.offset;
    into.strides.forEach((s, d) => (u[32 + d] = s));
  }
  scalars.forEach((s, i) => (u[40 + i] = f32Bits(s)));
  const dtypes = inputs.map((t) => t.dtype);
  E().launch({
    kernel: `map_${op}`,
    key: `${dtypes.join(",")}>${outType}:${direct.map(Number).join("")}${outStrided ? ":so" : ""}`,
    wgsl: () => mapWgsl(op, dtypes, outType, direct, outStrided),
    inputs: inputs.map((t) => t.buf(op)),
    outputs: [out.buf()],
    uniforms: u,
    workgroups: grid1d(n),
  });
  return out;
}

function floatOnly(op: string, ...ts: Tensor[]) {
  for (const t of ts) {
    if (t.dtype === "i32") {
      throw new EngineError(
        op,
        `expects float tensors, got i32 ${fmtShape(t.shape)}; cast() it first`,
      );
    }
  }
}

// ----- unary ---------------------------------------------------------------------------------

/** A unary op whose rule reads the input x and/or the output y (only those are saved). */
type UnaryRule = (g: Tensor, x: Tensor, y: Tensor) => Tensor;
function unary(op: string, rule: UnaryRule, saveX = true, saveY = false) {
  return (x: Tensor): Tensor => {
    floatOnly(op, x);
    const y = launchMap(op, [x]);
    const save = [...(saveX ? [x] : []), ...(saveY ? [y] : [])];
    return record(
      op,
      y,
      [x],
      save,
      (g, s) => [rule(g, saveX ? s[0] : g, saveY ? s[s.length - 1] : g)],
    );
  };
}

export const neg = unary("neg", (g) => launchMap("neg", [g]), false);
export const exp = unary("exp", (g, _x, y) => mul(g, y), false, true);
export const log = unary("log", (g, x) => div(g, x));
export const sqrt = unary("sqrt", (g, _x, y) => div(mul(g, 0.5), y), false, true);
export const rsqrt = unary("rsqrt", (g, x, y) => mul(mul(g, -0.5), div(y, x)), true, true);
export const abs = unary("abs", (g, x) => mul(g, launchMap("sign", [x])));
export const tanh = unary(
  "tanh",
  (g, _x, y) => mul(g, launchMap("affine", [launchMap("square", [y])], [-1, 1])),
  false,
  true,
);
export const sigmoid = unary(
  "sigmoid",
  (g, _x, y) => mul(g, mul(y, launchMap("affine", [y], [-1, 1]))),
  false,
  true,
);
export const relu = unary("relu", (g, x) => mul(g, launchMap("gt", [x, scalar(0)])));
export const gelu = unary("gelu", (g, x) => launchMap("gelu_backward", [g, x]));
/** CLIP's activation: x · σ(1.702 x). */
export const quickGelu = unary("quick_gelu", (g, x) => launchMap("quick_gelu_backward", [g, x]));
export const square = unary("square", (g, x) => mul(g, mul(x, 2)));

/** Elementwise clamp to [lo, hi]; the gradient passes where lo ≤ x ≤ hi. */
export function clamp(x: Tensor, lo = -Infinity, hi = Infinity): Tensor {
  floatOnly("clamp", x);
  const l = Math.max(lo, -3.4e38), h = Math.min(hi, 3.4e38);
  const y = launchMap("clamp", [x], [l, h]);
  return record("clamp", y, [x], [x], (g, [sx]) => [mul(g, launchMap("in_range", [sx], [l, h]))]);
}

/** x · a + b in one kernel. */
export function affine(x: Tensor, a: number, b: number): Tensor {
  floatOnly("affine", x);
  const y = launchMap("affine", [x], [a, b]);
  return record("affine", y, [x], [], (g) => [launchMap("affine", [g], [a, 0])]);
}

// ----- binary --------------------------------------------------------------------------------

export function add(a: TensorLike, b: TensorLike): Tensor {
  const [x, y] = [asTensor(a), asTensor(b)];
  floatOnly("add", x, y);
  const out = launchMap("add", [x, y]);
  return record("add", out, [x, y], [], (g, _s, needs) => [
    needs[0] ? sumTo(g, x.shape) : null,
    needs[1] ? sumTo(g, y.shape) : null,
  ]);
}

export function sub(a: TensorLike, b: TensorLike): Tensor {
  const [x, y] = [asTensor(a), asTensor(b)];
  floatOnly("sub", x, y);
  const out = launchMap("sub", [x, y]);
  return record("sub", out, [x, y], [], (g, _s, needs) => [
    needs[0] ? sumTo(g, x.shape) : null,
    needs[1] ? sumTo(launchMap("neg", [g]), y.shape) : null,
  ]);
}

export function mul(a: TensorLike, b: TensorLike): Tensor {
  const [x, y] = [asTensor(a), asTensor(b)];
  floatOnly("mul", x, y);
  const out = launchMap("mul", [x, y]);
  return record("mul", out, [x, y], [x, y], (g, [sx, sy], needs) => [
    needs[0] ? sumTo(launchMap("mul", [g, sy]), x.shape) : null,
    needs[1] ? sumTo(launchMap("mul", [g, sx]), y.shape) : null,
  ]);
}

export function div(a: TensorLike, b: TensorLike): Tensor {
  const [x, y] = [asTensor(a), asTensor(b)];
  floatOnly("div", x, y);
  const out = launchMap("div", [x, y]);
  return record("div", out, [x, y], [y, out], (g, [sy, so], needs) => [
    needs[0] ? sumTo(launchMap("div", [g, sy]), x.shape) : null,
    // d(x/y)/dy = -(x/y)/y
    needs[1]
      ? sumTo(launchMap("neg", [launchMap("div", [launchMap("mul", [g, so]), sy])]), y.shape)
      : null,
  ]);
}

/** a ** b; the gradient for b is taken where a > 0. */
export function pow(a: TensorLike, b: TensorLike): Tensor {
  const [x, y] = [asTensor(a), asTensor(b)];
  floatOnly("pow", x, y);
  if (typeof b === "number") {
    const out = launchMap("pow_scalar", [x], [b]);
    return record("pow", out, [x], [x], (g, [sx]) => [
      mul(g, mul(launchMap("pow_scalar", [sx], [b - 1]), b)),
    ]);
  }
  const out = launchMap("pow", [x, y]);
  return record("pow", out, [x, y], [x, y, out], (g, [sx, sy, so], needs) => [
    needs[0]
      ? sumTo(mul(g, mul(sy, launchMap("pow", [sx, launchMap("affine", [sy], [1, -1])]))), x.shape)
      : null,
    needs[1]
      ? sumTo(
        mul(
          g,
          mul(
            so,
            launchMap("where", [
              launchMap("gt", [sx, scalar(0)]),
              launchMap("log", [sx]),
              scalar(0),
            ]),
          ),
        ),
        y.shape,
      )
      : null,
  ]);
}

function minmax(op: "maximum" | "minimum") {
  return (a: TensorLike, b: TensorLike): Tensor => {
    const [x, y] = [asTensor(a), asTensor(b)];
    floatOnly(op, x, y);
    const out = launchMap(op, [x, y]);
    // ties send the gradient to a
    return record(op, out, [x, y], [x, y], (g, [sx, sy], needs) => {
      const pickA = launchMap(op === "maximum" ? "ge" : "le", [sx, sy]);
      return [
        needs[0] ? sumTo(launchMap("mul", [g, pickA]), x.shape) : null,
        needs[1] ? sumTo(launchMap("where", [pickA, scalar(0), g]), y.shape) : null,
      ];
    });
  };
}
export const maximum = minmax("maximum");
export const minimum = minmax("minimum");

// ----- comparisons (no gradient; f32 0/1 masks; i32 inputs allowed) ---------------------------
const cmp = (op: string) => (a: TensorLike, b: TensorLike): Tensor =>
  launchMap(op, [asTensor(a), asTensor(b)]);
export const eq = cmp("eq");
export const ne = cmp("ne");
export const lt = cmp("lt");
export const le = cmp("le");
export const gt = cmp("gt");
export const ge = cmp("ge");

/** cond ? a : b, elementwise with broadcasting (cond is a mask: nonzero is true). */
export function where(cond: Tensor, a: TensorLike, b: TensorLike): Tensor {
  const [x, y] = [asTensor(a), asTensor(b)];
  floatOnly("where", x, y);
  const out = launchMap("where", [cond, x, y]);
  return record("where", out, [x, y], [cond], (g, [c], needs) => [
    needs[0] ? sumTo(launchMap("where", [c, g, scalar(0)]), x.shape) : null,
    needs[1] ? sumTo(launchMap("where", [c, scalar(0), g]), y.shape) : null,
  ]);
}

// ----- creation and casts --------------------------------------------------------------------

export function full(shape: number[], value: number): Tensor {
  const t = empty(shape);
  if (t.size === 0) return t;
  const u = new Array(48).fill(0);
  u[0] = t.size;
  u[1] = shape.length;
  shape.forEach((s, d) => (u[8 + d] = s));
  u[40] = f32Bits(value);
  E().launch({
    kernel: "map_fill",
    key: ">f32:",
    wgsl: () => mapWgsl("fill", [], "f32", []),
    inputs: [],
    outputs: [t.buf()],
    uniforms: u,
    workgroups: grid1d(t.size),
  });
  return t;
}
export const zeros = (shape: number[]) => full(shape, 0);
export const ones = (shape: number[]) => full(shape, 1);
export const zerosLike = (t: Tensor) => full(t.shape, 0);
export const onesLike = (t: Tensor) => full(t.shape, 1);

/** Converts dtype (f32 ↔ f16 ↔ i32; float → i32 truncates toward zero). */
export function cast(x: Tensor, dtype: DType): Tensor {
  if (dtype === "f16" && !E().f16) {
    throw new EngineError("cast", "this adapter has no shader-f16: f16 tensors are unavailable");
  }
  const out = launchMap("copy", [x], [], dtype);
  if (dtype !== "f32") return out;
  return record("cast", out, [x], [], (g) => [g]);
}

export { MAPS };
