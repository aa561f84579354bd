/**
 * View ops: metadata only (shape, strides, offset over the same storage), never a copy, except
 * contiguous() and a reshape of a view whose strides cannot express the new shape.
 */
import { EngineError, fmtShape } from "../errors.ts";
import { record } from "../autograd.ts";
import { contiguousStrides, sizeOf, type Tensor } from "../tensor.ts";
import { launchMap } from "./elementwise.ts";
import { sumTo } from "./reduce.ts";
import { assignInto } from "./assign.ts";
import { zeros } from "./elementwise.ts";

/** A contiguous copy when needed (or always, with copy = true). */
export function contiguous(x: Tensor, copy = false): Tensor {
  x.buf("contiguous");
  if (x.isContiguous && !copy) return x;
  const out = launchMap("copy", [x], [], x.dtype);
  return record("contiguous", out, [x], [], (g) => [g]);
}

/** Strides for viewing x as `shape` without a copy, or null when impossible: old axes are
 * grouped into chunks that are contiguous among themselves, and each chunk is re-split. */
function viewStrides(x: Tensor, shape: number[]): number[] | null {
  if (x.isContiguous || x.size === 0) return contiguousStrides(shape);
  const os = x.shape, ot = x.strides;
  const st = new Array(shape.length);
  let vd = shape.length - 1;
  let base = ot[os.length - 1], tn = 1, vn = 1;
  for (let td = os.length - 1; td >= 0; td--) {
    tn *= os[td];
    if (td === 0 || (os[td - 1] !== 1 && ot[td - 1] !== tn * base)) {
      while (vd >= 0 && (vn < tn || shape[vd] === 1)) {
        st[vd] = vn * base;
        vn *= shape[vd];
        vd--;
      }
      if (vn !== tn) return null;
      if (td > 0) {
        base = ot[td - 1];
        tn = 1;
        vn = 1;
      }
    }
  }
  return vd === -1 ? st : null;
}

export function reshape(x: Tensor, shape: number[]): Tensor {
  const inferred = shape.indexOf(-1);
  if (inferred >= 0) {
    const rest = sizeOf(shape.filter((_, i) => i !== inferred));
    shape = shape.map((s) => (s === -1 ? x.size / rest : s));
  }
  if (sizeOf(shape) !== x.size || shape.some((s) => !Number.isInteger(s) || s < 0)) {
    throw new EngineError(
      "reshape",
      `cannot reshape ${fmtShape(x.shape)} (${x.size}) to ${fmtShape(shape)}`,
    );
  }
  const st = viewStrides(x, shape);
  const out = st ? x.view(shape, st, x.offset) : reshape(contiguous(x, true), shape);
  const xs = x.shape;
  return record("reshape", out, [x], [], (g) => [reshape(g, xs)]);
}

export const flatten = (x: Tensor) => reshape(x, [x.size]);

export function permute(x: Tensor, perm: number[]): Tensor {
  const r = x.rank;
  const p = perm.map((a) => (a < 0 ? a + r : a));
  if (p.length !== r || new Set(p).size !== r || p.some((a) => a < 0 || a >= r)) {
    throw new EngineError("permute", `invalid permutation [${perm}] for ${fmtShape(x.shape)}`);
  }
  const out = x.view(p.map((a) => x.shape[a]), p.map((a) => x.strides[a]), x.offset);
  const inv = new Array(r);
  p.forEach((a, i) => (inv[a] = i));
  return record("permute", out, [x], [], (g) => [permute(g, inv)]);
}

/** Swaps two axes (default: the last two). */
export function transpose(x: Tensor, a = -2, b = -1): Tensor {
  const r = x.rank;
  const p = [...Array(r).keys()];
  const [i, j] = [a < 0 ? a + r : a, b < 0 ? b + r : b];
  [p[i], p[j]] = [p[j], p[i]];
  return permute(x, p);
}

/** Broadcasts size-1 axes (and new leading axes) to `shape`; stride 0, no copy. */
export function expand(x: Tensor, shape: number[]): Tensor {
  const lead = shape.length - x.rank;
  if (lead < 0) {
    throw new EngineError("expand", `cannot expand ${fmtShape(x.shape)} to ${fmtShape(shape)}`);
  }
  const st = shape.map((s, d) => {
    if (d < lead) return 0;
    const xs = x.shape[d - lead];
    if (xs === s) return xs === 1 ? 0 : x.strides[d - lead];
    if (xs === 1) return 0;
    throw new EngineError("expand", `cannot expand ${fmtShape(x.shape)} to ${fmtShape(shape)}`);
  });
  const out = x.view([...shape], st, x.offset);
  const xs = x.shape;
  return record("expand", out, [x], [], (g) => [sumTo(g, xs)]);
}

export function unsqueeze(x: Tensor, axis: number): Tensor {
  const a = axis < 0 ? axis + x.rank + 1 : axis;
  const s = [...x.shape];
  s.splice(a, 0, 1);
  return reshape(x, s);
}

export function squeeze(x: Tensor, axis?: number): Tensor {
  const a = axis === undefined ? undefined : axis < 0 ? axis + x.rank : axis;
  if (a !== undefined && x.shape[a] !== 1) {
    throw new EngineError("squeeze", `axis ${axis} of ${fmtShape(x.shape)} is not 1`);
  }
  return reshape(x, x.shape.filter((s, d) => (a === undefined ? s !== 1 : d !== a)));
}

/**
 * A sub-block view: `begin[d]` to `begin[d] + size[d]` along each axis (size -1: to the end).
 * Its gradient is scattered back into zeros of the input's shape.
 */
export function slice(x: Tensor, begin: number[], size?: number[]): Tensor {
  const b = x.shape.map((_, d) => begin[d] ?? 0);
  const sz = x.shape.map((
    s,
    d,
  ) => (size?.[d] === undefined || size[d] === -1 ? s - b[d] : size[d]));
  for (let d = 0; d < x.rank; d++) {
    if (b[d] < 0 || sz[d] < 0 || b[d] + sz[d] > x.shape[d]) {
      throw new EngineError(
        "slice",
        `begin [${b}] size [${sz}] out of bounds for ${fmtShape(x.shape)}`,
      );
    }
  }
  let off = x.offset;
  b.forEach((v, d) => (off += v * x.strides[d]));
  const out = x.view(sz, [...x.strides], off);
  const xs = x.shape;
  return record("slice", out, [x], [], (g) => {
    const z = zeros(xs);
    assignInto(sliceView(z, b, sz), g);
    return [z];
  });
}

/** `length` entries of axis `dim` from `start`. */
export function narrow(x: Tensor, dim: number, start: number, length: number): Tensor {
  const d = dim < 0 ? dim + x.rank : dim;
  const begin = x.shape.map((_, i) => (i === d ? start : 0));
  const size = x.shape.map((s, i) => (i === d ? length : s));
  return slice(x, begin, size);
}

/** Raw sub-block view with no tape entry (for kernels that write into part of a tensor). */
export function sliceView(x: Tensor, begin: number[], size: number[]): Tensor {
  let off = x.offset;
  begin.forEach((v, d) => (off += v * x.strides[d]));
  return x.view(size, [...x.strides], off);
}
