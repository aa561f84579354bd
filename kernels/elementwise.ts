/**
 * Elementwise kernels: one generic strided map over 1–3 inputs with broadcasting.
 *
 * Versions (selected by the pipeline key, never by shape):
 *   - contiguous inputs of the output's shape index directly (`x[off + i]`);
 *   - any other input (a view: transposed, sliced, broadcast with stride 0) is addressed through
 *     the shape and its strides in the uniform, so views never need a copy.
 * Inputs may be f32, f16 (upcast on load) or i32 (converted); the output is f32, f16 or i32.
 *
 * Uniform words: [0] n, [1] rank, [2..5) input offsets, [5] output offset, [8..14) output shape,
 *   [14 + 6k .. 20 + 6k) strides of input k, [32..38) output strides (strided-output version,
 *   used to write into a view: slice-assign, concat), [40..48) f32 scalars s0..s7.
 *
 * The CPU reference (`cpuMap`) evaluates the same expression table in float64.
 */
import { WGSL_PRELUDE } from "../engine/device.ts";
import type { DType } from "../engine/tensor.ts";

/** WGSL expressions over inputs a, b, c (f32) and scalars s0, s1; with a float64 twin. */
export interface MapDef {
  arity: 1 | 2 | 3;
  wgsl: string;
  cpu: (a: number, b: number, c: number, s: number[]) => number;
}

const erfWgsl = /* wgsl */ `
fn erf_(x: f32) -> f32 {
  // Abramowitz & Stegun 7.1.26, |error| < 1.5e-7
  let t = 1.0 / (1.0 + 0.3275911 * abs(x));
  let y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * exp(-x * x);
  return select(-y, y, x >= 0.0);
}
fn sigmoid_(x: f32) -> f32 {
  if (x >= 0.0) { return 1.0 / (1.0 + exp(-x)); }
  let e = exp(x);
  return e / (1.0 + e);
}
fn tanh_(x: f32) -> f32 {
  let t = exp(-2.0 * abs(x));
  return sign(x) * (1.0 - t) / (1.0 + t);
}
fn pow_(a: f32, b: f32) -> f32 {
  if (b == 0.0) { return 1.0; }
  if (b == 1.0) { return a; }
  if (b == 2.0) { return a * a; }
  if (b == floor(b)) {
    let r = pow(abs(a), b);
    return select(r, -r, a < 0.0 && (b - 2.0 * floor(b * 0.5)) != 0.0);
  }
  return pow(a, b);
}
const INV_SQRT2: f32 = 0.7071067811865476;
const INV_SQRT2PI: f32 = 0.3989422804014327;
`;

function erf(x: number): number {
  // float64 reference: series / continued fraction accurate to ~1e-15
  const ax = Math.abs(x);
  if (ax < 2.5) {
    let sum = x, term = x;
    for (let n = 1; n < 100; n++) {
      term *= (-x * x) / n;
      const add = term / (2 * n + 1);
      sum += add;
      if (Math.abs(add) < 1e-17) break;
    }
    return (2 / Math.sqrt(Math.PI)) * sum;
  }
  // erfc continued fraction for large |x|
  let f = 0;
  for (let n = 60; n >= 1; n--) f = (n / 2) / (ax + f);
  const erfc = Math.exp(-ax * ax) / Math.sqrt(Math.PI) / (ax + f);
  return Math.sign(x) * (1 - erfc);
}
const sig = (x: number) => 1 / (1 + Math.exp(-x));
const Phi = (x: number) => 0.5 * (1 + erf(x / Math.SQRT2));
const phi = (x: number) => Math.exp(-0.5 * x * x) / Math.sqrt(2 * Math.PI);
function powRef(a: number, b: number) {
  return Math.pow(a, b);
}

export const MAPS: Record<string, MapDef> = {
  copy: { arity: 1, wgsl: "a", cpu: (a) => a },
  neg: { arity: 1, wgsl: "-a", cpu: (a) => -a },
  exp: { arity: 1, wgsl: "exp(a)", cpu: Math.exp },
  log: { arity: 1, wgsl: "log(a)", cpu: Math.log },
  sqrt: { arity: 1, wgsl: "sqrt(a)", cpu: Math.sqrt },
  rsqrt: { arity: 1, wgsl: "inverseSqrt(a)", cpu: (a) => 1 / Math.sqrt(a) },
  abs: { arity: 1, wgsl: "abs(a)", cpu: Math.abs },
  sign: { arity: 1, wgsl: "sign(a)", cpu: Math.sign },
  tanh: { arity: 1, wgsl: "tanh_(a)", cpu: Math.tanh },
  sigmoid: { arity: 1, wgsl: "sigmoid_(a)", cpu: sig },
  relu: { arity: 1, wgsl: "max(a, 0.0)", cpu: (a) => Math.max(a, 0) },
  gelu: { arity: 1, wgsl: "0.5 * a * (1.0 + erf_(a * INV_SQRT2))", cpu: (a) => a * Phi(a) },
  quick_gelu: { arity: 1, wgsl: "a * sigmoid_(1.702 * a)", cpu: (a) => a * sig(1.702 * a) },
  square: { arity: 1, wgsl: "a * a", cpu: (a) => a * a },
  reciprocal: { arity: 1, wgsl: "1.0 / a", cpu: (a) => 1 / a },
  // scalar-parameterised
  clamp: {
    arity: 1,
    wgsl: "clamp(a, s0, s1)",
    cpu: (a, _b, _c, s) => Math.min(Math.max(a, s[0]), s[1]),
  },
  in_range: {
    arity: 1,
    wgsl: "select(0.0, 1.0, a >= s0 && a <= s1)",
    cpu: (a, _b, _c, s) => (a >= s[0] && a <= s[1] ? 1 : 0),
  },
  affine: { arity: 1, wgsl: "a * s0 + s1", cpu: (a, _b, _c, s) => a * s[0] + s[1] },
  pow_scalar: { arity: 1, wgsl: "pow_(a, s0)", cpu: (a, _b, _c, s) => powRef(a, s[0]) },
  fill: { arity: 1, wgsl: "s0", cpu: (_a, _b, _c, s) => s[0] },
  // binary
  add: { arity: 2, wgsl: "a + b", cpu: (a, b) => a + b },
  sub: { arity: 2, wgsl: "a - b", cpu: (a, b) => a - b },
  mul: { arity: 2, wgsl: "a * b", cpu: (a, b) => a * b },
  div: { arity: 2, wgsl: "a / b", cpu: (a, b) => a / b },
  pow: { arity: 2, wgsl: "pow_(a, b)", cpu: powRef },
  maximum: { arity: 2, wgsl: "max(a, b)", cpu: (a, b) => Math.max(a, b) },
  minimum: { arity: 2, wgsl: "min(a, b)", cpu: (a, b) => Math.min(a, b) },
  eq: { arity: 2, wgsl: "select(0.0, 1.0, a == b)", cpu: (a, b) => +(a === b) },
  ne: { arity: 2, wgsl: "select(0.0, 1.0, a != b)", cpu: (a, b) => +(a !== b) },
  lt: { arity: 2, wgsl: "select(0.0, 1.0, a < b)", cpu: (a, b) => +(a < b) },
  le: { arity: 2, wgsl: "select(0.0, 1.0, a <= b)", cpu: (a, b) => +(a <= b) },
  gt: { arity: 2, wgsl: "select(0.0, 1.0, a > b)", cpu: (a, b) => +(a > b) },
  ge: { arity: 2, wgsl: "select(0.0, 1.0, a >= b)", cpu: (a, b) => +(a >= b) },
  // gradient helpers (g, x): one dispatch instead of a chain of small ones
  gelu_backward: {
    arity: 2,
    wgsl: "a * (0.5 * (1.0 + erf_(b * INV_SQRT2)) + b * INV_SQRT2PI * exp(-0.5 * b * b))",
    cpu: (g, x) => g * (Phi(x) + x * phi(x)),
  },
  quick_gelu_backward: {
    arity: 2,
    wgsl: "a * (sigmoid_(1.702 * b) * (1.0 + 1.702 * b * (1.0 - sigmoid_(1.702 * b))))",
    cpu: (g, x) => g * (sig(1.702 * x) * (1 + 1.702 * x * (1 - sig(1.702 * x)))),
  },
  // ternary
  where: { arity: 3, wgsl: "select(c, b, a != 0.0)", cpu: (a, b, c) => (a !== 0 ? b : c) },
  lerp: { arity: 3, wgsl: "a + (b - a) * c", cpu: (a, b, c) => a + (b - a) * c },
};

const wgslType = (d: DType) => (d === "f16" ? "f16" : d === "i32" ? "i32" : "f32");

/**
 * WGSL for map `op` over inputs of the given dtypes; `direct[k]` says input k can be indexed
 * directly (contiguous and of the output's shape).
 */
export function mapWgsl(
  op: string,
  dtypes: DType[],
  outType: DType,
  direct: boolean[],
  outStrided = false,
): string {
  const def = MAPS[op];
  const names = ["a", "b", "c"];
  const decls = dtypes.map((d, k) =>
    `@group(0) @binding(${k + 1}) var<storage, read> x${k}: array<${wgslType(d)}>;`
  ).join("\n");
  const strided = outStrided || direct.some((d) => !d);
  const offs = dtypes.map((_, k) => `var o${k} = uw(${2 + k}u)${direct[k] ? " + i" : ""};`).join(
    "\n  ",
  );
  const loop = strided
    ? `var rem = i;
  for (var d = i32(uw(1u)) - 1; d >= 0; d--) {
    let s = uw(8u + u32(d));
    let c = rem % s;
    rem = rem / s;
    ${dtypes.map((_, k) => direct[k] ? "" : `o${k} += c * uw(${14 + 6 * k}u + u32(d));`).join(" ")}
    ${outStrided ? "oo += c * uw(32u + u32(d));" : ""}
  }`
    : "";
  const loads = dtypes.map((_, k) => `let ${names[k]} = f32(x${k}[o${k}]);`).join("\n  ");
  return `${WGSL_PRELUDE}
${erfWgsl}
${decls}
@group(0) @binding(${dtypes.length + 1}) var<storage, read_write> out: array<${wgslType(outType)}>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linearIndex(gid, nwg);
  if (i >= uw(0u)) { return; }
  let s0 = uf(40u); let s1 = uf(41u);
  ${offs}
  var oo = ${outStrided ? "uw(5u)" : "i"};
  ${loop}
  ${loads}
  out[oo] = ${wgslType(outType)}(${def.wgsl});
}`;
}

// ---------------------------------------------------------------------------------------------
// CPU reference (float64), shared by the tests of every op.

export interface HostTensor {
  shape: number[];
  data: Float64Array;
}

export function broadcastShapes(...shapes: number[][]): number[] | null {
  const rank = Math.max(...shapes.map((s) => s.length));
  const out: number[] = [];
  for (let i = 0; i < rank; i++) {
    let d = 1;
    for (const s of shapes) {
      const x = s[s.length - rank + i] ?? 1;
      if (x === 1) continue;
      if (d !== 1 && d !== x) return null;
      d = x;
    }
    out.push(d);
  }
  return out;
}

/** Reads element `idx` (output coordinates) of a broadcast host tensor. */
function bcastIndex(shape: number[], outShape: number[], coord: number[]): number {
  let off = 0, stride = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    const c = coord[coord.length - shape.length + d];
    off += (shape[d] === 1 ? 0 : c) * stride;
    stride *= shape[d];
  }
  void outShape;
  return off;
}

export function cpuMap(op: string, inputs: HostTensor[], scalars: number[] = []): HostTensor {
  const def = MAPS[op];
  const shape = broadcastShapes(...inputs.map((t) => t.shape))!;
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float64Array(n);
  const coord = new Array(shape.length).fill(0);
  for (let i = 0; i < n; i++) {
    let r = i;
    for (let d = shape.length - 1; d >= 0; d--) {
      coord[d] = r % shape[d];
      r = Math.floor(r / shape[d]);
    }
    const v = inputs.map((t) => t.data[bcastIndex(t.shape, shape, coord)]);
    data[i] = def.cpu(v[0], v[1] ?? 0, v[2] ?? 0, scalars);
  }
  return { shape, data };
}
