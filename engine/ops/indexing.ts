/**
 * Indexing and combining ops: embedding, indexSelect, gather, takeRows, scatterAdd, indexAdd,
 * concat, stack, sliceAssign. Index tensors are i32; an index outside the indexed axis reads 0
 * and scatters nothing (the GPU cannot raise mid-kernel, and a readback per op would stall).
 * Float outputs are f32 (f16 tables are upcast on load); gathering an i32 tensor gives i32.
 */
import { E, grid1d } from "../device.ts";
import { EngineError, fmtShape } from "../errors.ts";
import { record } from "../autograd.ts";
import {
  gatherWgsl,
  indexAddWgsl,
  scatterAddWgsl,
  segmentsWgsl,
  sortInitWgsl,
  sortStepWgsl,
} from "../../kernels/gather.ts";
import { broadcastShapes } from "../../kernels/elementwise.ts";
import { type DType, empty, MAX_RANK, sizeOf, type Tensor } from "../tensor.ts";
import { launchMap, zeros } from "./elementwise.ts";
import { sumTo } from "./reduce.ts";
import { reshape, sliceView } from "./views.ts";
import { assignInto } from "./assign.ts";

/**
 * How index-add (embedding and indexSelect gradients) picks its kernel: index lists up to
 * `loopList` long, or scatters of at most `loopWork` comparisons (out.size × list length), take
 * the per-output loop, longer ones the sort. Both add in the same order, so the results are
 * identical; tests lower the limits to reach the sort on small shapes.
 */
export const indexAddConfig = { loopList: 8, loopWork: 1 << 20 };

// ----- checks --------------------------------------------------------------------------------

function needI32(op: string, idx: Tensor) {
  idx.buf(op);
  if (idx.dtype !== "i32") {
    throw new EngineError(op, `indices must be i32, got ${idx.dtype} ${fmtShape(idx.shape)}`);
  }
}

function needFloat(op: string, x: Tensor, what: string) {
  if (x.dtype === "i32") {
    throw new EngineError(op, `${what} must be a float tensor, got i32 ${fmtShape(x.shape)}`);
  }
}

function normAxis(op: string, axis: number, rank: number, shape: readonly number[]): number {
  const d = axis < 0 ? axis + rank : axis;
  if (!Number.isInteger(d) || d < 0 || d >= rank) {
    throw new EngineError(op, `axis ${axis} out of range for ${fmtShape(shape)}`);
  }
  return d;
}

// ----- kernel launches (no tape) -------------------------------------------------------------

/**
 * out[c] = x[xOff + Σ c·xStrides + k·axisStride] with k = idx[c] − first (0 where k ∉ [0, bound)),
 * the index read at idx.offset + Σ c·idxStrides.
 */
function launchGather(
  op: string,
  x: Tensor,
  outShape: number[],
  xStrides: number[],
  idx: Tensor,
  idxStrides: number[],
  axisStride: number,
  bound: number,
  first = 0,
): Tensor {
  const out = empty(outShape, x.dtype === "i32" ? "i32" : "f32");
  if (out.size === 0) return out;
  const u = new Array(26).fill(0);
  [u[0], u[1], u[2], u[3], u[4], u[5], u[6]] = [
    out.size,
    outShape.length,
    x.offset,
    idx.offset,
    axisStride,
    bound,
    first >>> 0,
  ];
  outShape.forEach((s, d) => {
    u[8 + d] = s;
    u[14 + d] = xStrides[d];
    u[20 + d] = idxStrides[d];
  });
  E().launch({
    kernel: "gather",
    key: x.dtype,
    wgsl: () => gatherWgsl(x.dtype),
    inputs: [x.buf(op), idx.buf(op)],
    outputs: [out.buf()],
    uniforms: u,
    workgroups: grid1d(out.size),
  });
  return out;
}

/**
 * torch.scatter_add into a new f32 tensor of `shape`: base (or zeros when null) plus src[p] at
 * p with axis → idx[p], for every p of idx. idxView/srcView give each tensor's strides per
 * output axis (the axis itself: along the index list).
 */
function launchScatterLoop(
  op: string,
  base: Tensor | null,
  shape: number[],
  axis: number,
  idx: Tensor,
  idxShape: number[],
  idxStrides: number[],
  src: Tensor,
  srcStrides: number[],
): Tensor {
  const out = empty(shape);
  if (out.size === 0) return out;
  const u = new Array(38).fill(0);
  [u[0], u[1], u[2], u[3], u[4], u[5]] = [
    out.size,
    shape.length,
    axis,
    base?.offset ?? 0,
    idx.offset,
    src.offset,
  ];
  shape.forEach((s, d) => {
    u[8 + d] = s;
    u[14 + d] = base ? base.strides[d] : 0;
    u[20 + d] = idxStrides[d];
    u[26 + d] = srcStrides[d];
    u[32 + d] = idxShape[d];
  });
  const bt: DType | null = base ? base.dtype : null;
  E().launch({
    kernel: "scatter_add",
    key: `${bt ?? "zero"},${src.dtype}`,
    wgsl: () => scatterAddWgsl(bt, src.dtype),
    inputs: [...(base ? [base.buf(op)] : []), idx.buf(op), src.buf(op)],
    outputs: [out.buf()],
    uniforms: u,
    workgroups: grid1d(out.size),
  });
  return out;
}

/** The single stride that walks t in flat order, or null when its view has none. */
function flatStride(t: Tensor): number | null {
  const dims = t.shape.map((s, d) => [s, t.strides[d]]).filter(([s]) => s !== 1);
  if (dims.length === 0) return 1;
  let expect = dims[dims.length - 1][1];
  for (let k = dims.length - 1; k >= 0; k--) {
    if (dims[k][1] !== expect) return null;
    expect *= dims[k][0];
  }
  return dims[dims.length - 1][1];
}

/**
 * torch.index_add into a new f32 tensor of `shape`: base (or zeros) plus slice j of src at
 * position idx[j] (flat order of idx, any rank) along axis. src has `shape` with axis → idx.size.
 */
function launchIndexAdd(
  op: string,
  base: Tensor | null,
  shape: number[],
  axis: number,
  idx: Tensor,
  src: Tensor,
): Tensor {
  const n = idx.size;
  const outSize = sizeOf(shape);
  const fs = flatStride(idx);
  if (fs !== null && (n <= indexAddConfig.loopList || outSize * n <= indexAddConfig.loopWork)) {
    const is = shape.map((_, d) => (d === axis ? fs : 0));
    const ishape = shape.map((s, d) => (d === axis ? n : s));
    return launchScatterLoop(op, base, shape, axis, idx, ishape, is, src, src.strides);
  }
  const out = empty(shape);
  if (outSize === 0) return out;
  const rows = shape[axis];
  let P = 1;
  while (P < n) P *= 2;
  const pairs = empty([2 * P], "i32");
  const starts = empty([rows + 1], "i32");
  const e = E();
  const ui = new Array(20).fill(0);
  [ui[0], ui[1], ui[2], ui[3]] = [n, P, idx.offset, idx.rank];
  idx.shape.forEach((s, d) => {
    ui[8 + d] = s;
    ui[14 + d] = idx.strides[d];
  });
  e.launch({
    kernel: "index_sort_init",
    wgsl: sortInitWgsl,
    inputs: [idx.buf(op)],
    outputs: [pairs.buf()],
    uniforms: ui,
    workgroups: grid1d(P),
  });
  for (let k = 2; k <= P; k *= 2) {
    for (let j = k >> 1; j > 0; j >>= 1) {
      e.launch({
        kernel: "index_sort_step",
        wgsl: sortStepWgsl,
        inputs: [],
        outputs: [pairs.buf()],
        uniforms: [P, k, j],
        workgroups: grid1d(P / 2),
      });
    }
  }
  e.launch({
    kernel: "index_segments",
    wgsl: segmentsWgsl,
    inputs: [pairs.buf()],
    outputs: [starts.buf()],
    uniforms: [rows + 1, P],
    workgroups: grid1d(rows + 1),
  });
  const u = new Array(26).fill(0);
  [u[0], u[1], u[2], u[3], u[4]] = [outSize, shape.length, axis, base?.offset ?? 0, src.offset];
  shape.forEach((s, d) => {
    u[8 + d] = s;
    u[14 + d] = base ? base.strides[d] : 0;
    u[20 + d] = src.strides[d];
  });
  const bt: DType | null = base ? base.dtype : null;
  e.launch({
    kernel: "index_add",
    key: `${bt ?? "zero"},${src.dtype}`,
    wgsl: () => indexAddWgsl(bt, src.dtype),
    inputs: [...(base ? [base.buf(op)] : []), src.buf(op), pairs.buf(), starts.buf()],
    outputs: [out.buf()],
    uniforms: u,
    workgroups: grid1d(outSize),
  });
  pairs.dispose();
  starts.dispose();
  return out;
}

// ----- gathers -------------------------------------------------------------------------------

/** Rows of weight [V, D] (f32 or f16) for ids (i32, any shape) → [...ids.shape, D] (f32). Its
 * weight gradient (only when weight requires grad) is a deterministic index-add. With
 * `firstRow`, weight holds rows firstRow … firstRow + V − 1 of a larger table (ids outside them
 * read 0), so a table too large for one binding is the sum of its blocks' lookups (frozen only). */
export function embedding(weight: Tensor, ids: Tensor, firstRow = 0): Tensor {
  const op = "embedding";
  if (firstRow && weight.requiresGrad) {
    throw new EngineError(op, "a table block (firstRow > 0) cannot be trained");
  }
  weight.buf(op);
  needI32(op, ids);
  needFloat(op, weight, "weight");
  if (weight.rank !== 2) {
    throw new EngineError(op, `weight must be [V, D], got ${fmtShape(weight.shape)}`);
  }
  if (ids.rank >= MAX_RANK) {
    throw new EngineError(
      op,
      `ids ${fmtShape(ids.shape)} leave no axis for D (rank ≤ ${MAX_RANK - 1})`,
    );
  }
  const [V, D] = weight.shape;
  const outShape = [...ids.shape, D];
  const r = ids.rank;
  const out = launchGather(
    op,
    weight,
    outShape,
    outShape.map((_, d) => (d === r ? weight.strides[1] : 0)),
    ids,
    outShape.map((_, d) => (d === r ? 0 : ids.strides[d])),
    weight.strides[0],
    V,
    firstRow,
  );
  return record(op, out, [weight], [ids], (g, [si]) => {
    const g2 = reshape(g, [si.size, D]);
    return [launchIndexAdd(op, null, [V, D], 0, si, g2)];
  });
}

/** torch.index_select: idx i32 [n] picks entries along axis. Gradient: an index-add. */
export function indexSelect(x: Tensor, axis: number, idx: Tensor): Tensor {
  const op = "indexSelect";
  x.buf(op);
  needI32(op, idx);
  const a = normAxis(op, axis, x.rank, x.shape);
  if (idx.rank !== 1) {
    throw new EngineError(
      op,
      `indices must be 1-D, got ${fmtShape(idx.shape)} for x ${fmtShape(x.shape)}`,
    );
  }
  const outShape = x.shape.map((s, d) => (d === a ? idx.size : s));
  const out = launchGather(
    op,
    x,
    outShape,
    x.strides.map((s, d) => (d === a ? 0 : s)),
    idx,
    outShape.map((_, d) => (d === a ? idx.strides[0] : 0)),
    x.strides[a],
    x.shape[a],
  );
  const xs = [...x.shape];
  return record(op, out, [x], [idx], (g, [si]) => [launchIndexAdd(op, null, xs, a, si, g)]);
}

function checkGatherShapes(op: string, ref: Tensor, a: number, idx: Tensor, what: string) {
  if (idx.rank !== ref.rank || idx.shape.some((s, d) => d !== a && s > ref.shape[d])) {
    throw new EngineError(
      op,
      `indices ${fmtShape(idx.shape)} must have the rank of ${what} ${fmtShape(ref.shape)} and ` +
        `no larger size on any axis but ${a}`,
    );
  }
}

/** torch.gather: out[c] = x[c with axis → idx[c]], out shaped like idx. Gradient: scatter-add. */
export function gather(x: Tensor, axis: number, idx: Tensor): Tensor {
  const op = "gather";
  x.buf(op);
  needI32(op, idx);
  const a = normAxis(op, axis, x.rank, x.shape);
  checkGatherShapes(op, x, a, idx, "x");
  const out = launchGather(
    op,
    x,
    [...idx.shape],
    x.strides.map((s, d) => (d === a ? 0 : s)),
    idx,
    idx.strides,
    x.strides[a],
    x.shape[a],
  );
  const xs = [...x.shape];
  return record(op, out, [x], [idx], (g, [si]) => [
    launchScatterLoop(op, null, xs, a, si, si.shape, si.strides, g, g.strides),
  ]);
}

/** x [..., T, D] and pos i32 [...] → x[..., pos, :] of shape [..., D] (e.g. the end-of-text
 * row of each sequence). */
export function takeRows(x: Tensor, pos: Tensor): Tensor {
  const op = "takeRows";
  x.buf(op);
  needI32(op, pos);
  const lead = x.shape.slice(0, -2);
  if (x.rank < 2 || pos.rank !== lead.length || pos.shape.some((s, d) => s !== lead[d])) {
    throw new EngineError(
      op,
      `x ${fmtShape(x.shape)} needs positions of shape ${fmtShape(lead)}, got ${
        fmtShape(pos.shape)
      }`,
    );
  }
  const D = x.shape[x.rank - 1];
  const idx = pos.view([...lead, 1, D], [...pos.strides, 0, 0], pos.offset);
  const out = reshape(gather(x, -2, idx), [...lead, D]);
  idx.dispose();
  return out;
}

// ----- scatters ------------------------------------------------------------------------------

/**
 * torch.scatter_add, functional: base with src[p] added at p with axis → idx[p] for every p of
 * idx (idx: rank of base and src, no larger than src anywhere nor than base off the axis).
 * Duplicate indices add up, in a fixed order. Gradients: base ← g, src ← gather(g, axis, idx).
 */
export function scatterAdd(base: Tensor, axis: number, idx: Tensor, src: Tensor): Tensor {
  const op = "scatterAdd";
  base.buf(op);
  src.buf(op);
  needI32(op, idx);
  needFloat(op, base, "base");
  needFloat(op, src, "src");
  const a = normAxis(op, axis, base.rank, base.shape);
  checkGatherShapes(op, base, a, idx, "base");
  if (src.rank !== idx.rank || idx.shape.some((s, d) => s > src.shape[d])) {
    throw new EngineError(
      op,
      `indices ${fmtShape(idx.shape)} must fit inside src ${fmtShape(src.shape)}`,
    );
  }
  const out = launchScatterLoop(
    op,
    base,
    [...base.shape],
    a,
    idx,
    idx.shape,
    idx.strides,
    src,
    src.strides,
  );
  const ss = [...src.shape];
  return record(op, out, [base, src], [idx], (g, [si], needs) => {
    let gs: Tensor | null = null;
    if (needs[1]) {
      gs = gather(g, a, si);
      if (gs.shape.some((s, d) => s !== ss[d])) {
        const z = zeros(ss);
        const v = sliceView(z, ss.map(() => 0), gs.shape);
        assignInto(v, gs);
        v.dispose();
        gs = z;
      }
    }
    return [needs[0] ? g : null, gs];
  });
}

/**
 * torch.index_add, functional: base with slice j of src added at position idx[j] along axis
 * (src: base's shape with axis → n). Duplicates add up in a fixed order. Gradients: base ← g,
 * src ← indexSelect(g, axis, idx).
 */
export function indexAdd(base: Tensor, axis: number, idx: Tensor, src: Tensor): Tensor {
  const op = "indexAdd";
  base.buf(op);
  src.buf(op);
  needI32(op, idx);
  needFloat(op, base, "base");
  needFloat(op, src, "src");
  const a = normAxis(op, axis, base.rank, base.shape);
  const want = base.shape.map((s, d) => (d === a ? idx.size : s));
  if (idx.rank !== 1 || src.rank !== base.rank || src.shape.some((s, d) => s !== want[d])) {
    throw new EngineError(
      op,
      `needs 1-D indices and src ${fmtShape(want)}; got indices ${fmtShape(idx.shape)}, src ${
        fmtShape(src.shape)
      } for base ${fmtShape(base.shape)}`,
    );
  }
  const out = launchIndexAdd(op, base, [...base.shape], a, idx, src);
  return record(op, out, [base, src], [idx], (g, [si], needs) => [
    needs[0] ? g : null,
    needs[1] ? indexSelect(g, a, si) : null,
  ]);
}

// ----- combining -----------------------------------------------------------------------------

function commonDtype(op: string, ts: Tensor[]): DType {
  const kinds = new Set(ts.map((t) => t.dtype));
  if (kinds.size === 1) return ts[0].dtype;
  if (kinds.has("i32")) {
    throw new EngineError(
      op,
      `cannot mix i32 and float tensors: ${
        ts.map((t) => `${t.dtype} ${fmtShape(t.shape)}`).join(", ")
      }`,
    );
  }
  return "f32";
}

/** Joins tensors along an existing axis. Gradient: the matching slices of g. */
export function concat(tensors: Tensor[], axis = 0): Tensor {
  const op = "concat";
  if (tensors.length === 0) throw new EngineError(op, "needs at least one tensor");
  for (const t of tensors) t.buf(op);
  const first = tensors[0];
  const a = normAxis(op, axis, first.rank, first.shape);
  const shapes = () => tensors.map((t) => fmtShape(t.shape)).join(", ");
  for (const t of tensors) {
    if (t.rank !== first.rank || t.shape.some((s, d) => d !== a && s !== first.shape[d])) {
      throw new EngineError(op, `shapes ${shapes()} differ off axis ${a}`);
    }
  }
  const dtype = commonDtype(op, tensors);
  const shape = [...first.shape];
  shape[a] = tensors.reduce((n, t) => n + t.shape[a], 0);
  const out = empty(shape, dtype);
  const begins: number[][] = [];
  let at = 0;
  for (const t of tensors) {
    const b = shape.map((_, d) => (d === a ? at : 0));
    begins.push(b);
    at += t.shape[a];
    if (t.size === 0) continue;
    const v = sliceView(out, b, t.shape);
    assignInto(v, t);
    v.dispose();
  }
  return record(
    op,
    out,
    tensors,
    [],
    (g, _s, needs) => tensors.map((t, i) => (needs[i] ? sliceView(g, begins[i], t.shape) : null)),
  );
}

/** View of t with `axis` removed at position i (no tape). */
function selectView(t: Tensor, axis: number, i: number): Tensor {
  return t.view(
    t.shape.filter((_, d) => d !== axis),
    t.strides.filter((_, d) => d !== axis),
    t.offset + i * t.strides[axis],
  );
}

/** Joins equally shaped tensors along a new axis. Gradient: the matching slices of g. */
export function stack(tensors: Tensor[], axis = 0): Tensor {
  const op = "stack";
  if (tensors.length === 0) throw new EngineError(op, "needs at least one tensor");
  for (const t of tensors) t.buf(op);
  const first = tensors[0];
  const a = axis < 0 ? axis + first.rank + 1 : axis;
  if (!Number.isInteger(a) || a < 0 || a > first.rank) {
    throw new EngineError(op, `axis ${axis} out of range for stacking ${fmtShape(first.shape)}`);
  }
  for (const t of tensors) {
    if (t.rank !== first.rank || t.shape.some((s, d) => s !== first.shape[d])) {
      throw new EngineError(
        op,
        `shapes ${tensors.map((t) => fmtShape(t.shape)).join(", ")} differ`,
      );
    }
  }
  const shape = [...first.shape];
  shape.splice(a, 0, tensors.length);
  const out = empty(shape, commonDtype(op, tensors));
  if (out.size > 0) {
    tensors.forEach((t, i) => {
      const v = selectView(out, a, i);
      assignInto(v, t);
      v.dispose();
    });
  }
  return record(
    op,
    out,
    tensors,
    [],
    (g, _s, needs) => tensors.map((_, i) => (needs[i] ? selectView(g, a, i) : null)),
  );
}

/**
 * A copy of x with the block at `begin` replaced by value broadcast to the block. The block's
 * size defaults to value's shape aligned right, with the axes value lacks running from begin to
 * the end: x [n, 77, D], value [4, D], begin [0, 1] → block [n, 4, D] at rows 1..4 (CoOp's
 * context splice). Gradients: x ← g with the block zeroed; value ← sumTo(block of g).
 */
export function sliceAssign(x: Tensor, value: Tensor, begin: number[], size?: number[]): Tensor {
  const op = "sliceAssign";
  x.buf(op);
  value.buf(op);
  const lead = x.rank - value.rank;
  const b = x.shape.map((_, d) => begin[d] ?? 0);
  const sz = size
    ? x.shape.map((s, d) => (size[d] === undefined || size[d] === -1 ? s - b[d] : size[d]))
    : x.shape.map((s, d) => (d < lead ? s - b[d] : value.shape[d - lead]));
  const where = `block begin [${b}] size [${sz}]`;
  if (
    lead < 0 || begin.length > x.rank ||
    b.some((v, d) => v < 0 || sz[d] < 0 || v + sz[d] > x.shape[d])
  ) {
    throw new EngineError(
      op,
      `${where} of value ${fmtShape(value.shape)} does not fit x ${fmtShape(x.shape)}`,
    );
  }
  const bs = broadcastShapes(value.shape, sz);
  if (!bs || bs.some((s, d) => s !== sz[d])) {
    throw new EngineError(
      op,
      `value ${fmtShape(value.shape)} does not broadcast to the ${where} of x ${fmtShape(x.shape)}`,
    );
  }
  const dtype = commonDtype(op, [x, value]);
  const out = launchMap("copy", [x], [], dtype);
  if (sizeOf(sz) > 0) {
    const v = sliceView(out, b, sz);
    assignInto(v, value);
    v.dispose();
  }
  const vs = [...value.shape];
  return record(op, out, [x, value], [], (g, _s, needs) => {
    let gx: Tensor | null = null;
    if (needs[0]) {
      gx = launchMap("copy", [g]);
      if (sizeOf(sz) > 0) {
        const v = sliceView(gx, b, sz);
        launchMap("fill", [], [0], "f32", v);
        v.dispose();
      }
    }
    return [gx, needs[1] ? sumTo(sliceView(g, b, sz), vs) : null];
  });
}
