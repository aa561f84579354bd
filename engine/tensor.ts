/**
 * Tensors: a view (shape, strides, offset, all in elements) over a reference-counted storage.
 * Views share storage; `dispose()` drops a view's reference, and the buffer goes back to the pool
 * when the last reference is gone. `scope(fn)` disposes every tensor created inside it that is not
 * returned or kept. Nothing is left to the garbage collector.
 */
import { E } from "./device.ts";
import { EngineError, fmtShape } from "./errors.ts";

export type DType = "f32" | "f16" | "i32";
export const BYTES: Record<DType, number> = { f32: 4, f16: 2, i32: 4 };
export const MAX_RANK = 6;

export class Storage {
  refs = 1;
  constructor(public buffer: GPUBuffer, public bytes: number) {}
  retain() {
    this.refs++;
  }
  release() {
    if (--this.refs === 0) E().release(this.buffer);
  }
}

/** A node of the autograd tape: how to turn the output's gradient into the inputs'. */
export interface Node {
  op: string;
  out: Tensor;
  inputs: Tensor[];
  /** Returns one gradient (or null) per input; only inputs with `needs[i]` are asked for. */
  backward: (g: Tensor, needs: boolean[]) => (Tensor | null)[];
  /** Tensors saved for backward (private views); released after backward or when dropped. */
  saved: Tensor[];
  released: boolean;
  seq: number;
}

let nextId = 1;

export class Tensor {
  readonly id = nextId++;
  readonly shape: number[];
  readonly strides: number[];
  readonly offset: number;
  readonly dtype: DType;
  storage: Storage | null;
  requiresGrad = false;
  grad: Tensor | null = null;
  node: Node | null = null;
  name?: string;

  constructor(
    storage: Storage,
    shape: number[],
    dtype: DType,
    strides?: number[],
    offset = 0,
    track = true,
  ) {
    if (shape.length > MAX_RANK) {
      throw new EngineError(
        "tensor",
        `rank ${shape.length} exceeds ${MAX_RANK}: ${fmtShape(shape)}`,
      );
    }
    this.storage = storage;
    this.shape = shape;
    this.dtype = dtype;
    this.strides = strides ?? contiguousStrides(shape);
    this.offset = offset;
    if (track) trackTensor(this);
  }

  get size(): number {
    return sizeOf(this.shape);
  }
  get rank(): number {
    return this.shape.length;
  }
  get disposed(): boolean {
    return this.storage === null;
  }
  get isContiguous(): boolean {
    return isContiguous(this.shape, this.strides);
  }

  /** The storage buffer; throws if the tensor was disposed. */
  buf(op = "use"): GPUBuffer {
    if (!this.storage) {
      throw new EngineError(
        op,
        `tensor #${this.id}${this.name ? ` (${this.name})` : ""} ${
          fmtShape(this.shape)
        } was disposed`,
      );
    }
    return this.storage.buffer;
  }

  /** A new view over the same storage (shares memory; counts as a reference). */
  view(shape: number[], strides: number[], offset: number, track = true): Tensor {
    this.buf("view");
    this.storage!.retain();
    return new Tensor(this.storage!, shape, this.dtype, strides, offset, track);
  }

  dispose() {
    if (this.storage) {
      this.storage.release();
      this.storage = null;
    }
    if (this.grad) {
      this.grad.dispose();
      this.grad = null;
    }
    // .node stays: a result kept past this tensor's scope still reaches the leaves through it
    // (the node's saved tensors are freed by releaseNode, not here)
  }

  /** Reads the tensor back as a host array (f32 and f16 as Float32Array, i32 as Int32Array). */
  async data(): Promise<Float32Array | Int32Array> {
    this.buf("data");
    const { contiguous } = await import("./ops/views.ts");
    const { noGrad } = await import("./autograd.ts");
    const t = this.isContiguous ? this : noGrad(() => contiguous(this));
    try {
      const bytes = BYTES[t.dtype];
      const raw = await E().read(t.buf("data"), t.offset * bytes, t.size * bytes);
      if (t.dtype === "i32") return new Int32Array(raw);
      if (t.dtype === "f16") return f16ToF32(new Uint16Array(raw));
      return new Float32Array(raw);
    } finally {
      if (t !== this) t.dispose();
    }
  }

  /** Nested arrays, for debugging and tests. */
  async array(): Promise<unknown> {
    const d = Array.from(await this.data());
    const nest = (dim: number, off: number): unknown => {
      if (dim === this.rank) return d[off];
      const step = sizeOf(this.shape.slice(dim + 1));
      return Array.from({ length: this.shape[dim] }, (_, i) => nest(dim + 1, off + i * step));
    };
    return nest(0, 0);
  }

  /** The single value of a one-element tensor. */
  async item(): Promise<number> {
    if (this.size !== 1) {
      throw new EngineError("item", `tensor has ${this.size} elements ${fmtShape(this.shape)}`);
    }
    return (await this.data())[0];
  }

  toString() {
    return `Tensor#${this.id}(${fmtShape(this.shape)}, ${this.dtype}${
      this.requiresGrad ? ", requiresGrad" : ""
    })`;
  }
}

export function sizeOf(shape: readonly number[]): number {
  let n = 1;
  for (const s of shape) n *= s;
  return n;
}

export function contiguousStrides(shape: readonly number[]): number[] {
  const st = new Array(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    st[i] = s;
    s *= shape[i];
  }
  return st;
}

export function isContiguous(shape: readonly number[], strides: readonly number[]): boolean {
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    if (shape[i] !== 1 && strides[i] !== s) return false;
    s *= shape[i];
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Creation

/** An uninitialised contiguous tensor (kernels write it). */
export function empty(shape: number[], dtype: DType = "f32"): Tensor {
  for (const s of shape) {
    if (!Number.isInteger(s) || s < 0) {
      throw new EngineError("empty", `invalid shape ${fmtShape(shape)}`);
    }
  }
  const bytes = sizeOf(shape) * BYTES[dtype];
  const buf = E().alloc(Math.max(4, bytes), `a ${dtype} tensor ${fmtShape(shape)}`);
  return new Tensor(new Storage(buf, bytes), shape, dtype);
}

export type HostData = ArrayLike<number> | Float32Array | Int32Array | Uint16Array;

/** Uploads host data. f16 tensors accept f32 numbers (converted) or raw Uint16Array bits. */
export function tensor(data: HostData, shape?: number[], dtype: DType = "f32"): Tensor {
  const shp = shape ?? [data.length];
  if (sizeOf(shp) !== data.length) {
    throw new EngineError(
      "tensor",
      `${data.length} values do not fill shape ${fmtShape(shp)} (${sizeOf(shp)} elements)`,
    );
  }
  const t = empty(shp, dtype);
  let host: ArrayBufferView;
  if (dtype === "f32") host = data instanceof Float32Array ? data : Float32Array.from(data);
  else if (dtype === "i32") host = data instanceof Int32Array ? data : Int32Array.from(data);
  else host = data instanceof Uint16Array ? data : f32ToF16(data);
  if (host.byteLength % 4) {
    const padded = new Uint8Array(host.byteLength + 2);
    padded.set(new Uint8Array(host.buffer, host.byteOffset, host.byteLength));
    host = padded;
  }
  if (host.byteLength) E().write(t.buf(), 0, host);
  return t;
}

export const scalar = (x: number) => tensor([x], []);

/**
 * Overwrites a contiguous tensor's values from the host. Work already recorded is submitted
 * first: queue.writeBuffer would otherwise overtake it (e.g. the kernel that initialised t).
 */
export function writeTensor(t: Tensor, data: Float32Array | Int32Array) {
  if (!t.isContiguous || t.dtype === "f16") {
    throw new EngineError("writeTensor", `needs a contiguous f32/i32 tensor, got ${t}`);
  }
  if (data.length !== t.size) {
    throw new EngineError(
      "writeTensor",
      `${data.length} values for ${fmtShape(t.shape)} (${t.size})`,
    );
  }
  E().flush();
  E().write(t.buf("writeTensor"), t.offset * 4, data);
}

// ---------------------------------------------------------------------------------------------
// Scopes: every tensor made inside `scope(fn)` is disposed at its end unless returned or kept.

interface Frame {
  tensors: Tensor[];
  nodes: Node[];
}
const frames: Frame[] = [];

export function trackTensor(t: Tensor) {
  if (frames.length) frames[frames.length - 1].tensors.push(t);
}
export function trackNode(n: Node) {
  if (frames.length) frames[frames.length - 1].nodes.push(n);
}

/** Takes a tensor out of scope management: its owner (a leaf's .grad, an optimiser's state)
 * disposes it. */
export function own<T extends Tensor>(t: T): T {
  (t as Tensor & { owned?: boolean }).owned = true;
  return t;
}

/** Keeps a tensor alive past the scope it was created in (moves it to the enclosing scope). */
export function keep<T extends Tensor>(t: T): T {
  (t as Tensor & { kept?: boolean }).kept = true;
  return t;
}

function collect(v: unknown, out: Set<Tensor>, depth = 0) {
  if (depth > 4 || v == null) return;
  if (v instanceof Tensor) out.add(v);
  else if (Array.isArray(v)) { for (const x of v) collect(x, out, depth + 1); }
  else if (typeof v === "object" && Object.getPrototypeOf(v) === Object.prototype) {
    for (const x of Object.values(v as object)) collect(x, out, depth + 1);
  } else if (v instanceof Map) { for (const x of v.values()) collect(x, out, depth + 1); }
}

function closeFrame(frame: Frame, result: unknown) {
  const survivors = new Set<Tensor>();
  collect(result, survivors);
  const outer = frames[frames.length - 1];
  // Tape nodes still reachable from a surviving tensor stay (backward may run later).
  const liveNodes = new Set<Node>();
  const stack: Node[] = [];
  for (const t of frame.tensors) {
    const k = t as Tensor & { kept?: boolean };
    if (survivors.has(t) || k.kept) {
      survivors.add(t);
      if (t.node) stack.push(t.node);
    }
  }
  for (const t of survivors) if (t.node) stack.push(t.node);
  while (stack.length) {
    const n = stack.pop()!;
    if (liveNodes.has(n)) continue;
    liveNodes.add(n);
    for (const i of n.inputs) if (i.node) stack.push(i.node);
  }
  for (const t of frame.tensors) {
    if ((t as Tensor & { owned?: boolean }).owned) continue;
    if (survivors.has(t)) {
      delete (t as Tensor & { kept?: boolean }).kept;
      if (outer) outer.tensors.push(t);
    } else t.dispose();
  }
  for (const n of frame.nodes) {
    if (liveNodes.has(n)) {
      if (outer) outer.nodes.push(n);
    } else releaseNode(n);
  }
}

export function releaseNode(n: Node) {
  if (n.released) return;
  n.released = true;
  for (const s of n.saved) s.dispose();
  n.saved = [];
}

/** Runs `fn`, then disposes every tensor it created except those in its result (or kept). */
export function scope<T>(fn: () => T): T {
  const frame: Frame = { tensors: [], nodes: [] };
  frames.push(frame);
  let result: T;
  try {
    result = fn();
  } catch (e) {
    frames.pop();
    closeFrame(frame, undefined);
    throw e;
  }
  if (result instanceof Promise) {
    frames.pop();
    closeFrame(frame, undefined);
    throw new EngineError("scope", "scope(fn) takes a synchronous function; use scopeAsync");
  }
  frames.pop();
  closeFrame(frame, result);
  if (!frames.length) E().trimTo();
  return result;
}

/** scope() for async functions: no other tensor work may interleave while it runs. */
export async function scopeAsync<T>(fn: () => Promise<T>): Promise<T> {
  const frame: Frame = { tensors: [], nodes: [] };
  frames.push(frame);
  let result: T;
  try {
    result = await fn();
  } catch (e) {
    frames.splice(frames.indexOf(frame), 1);
    closeFrame(frame, undefined);
    throw e;
  }
  frames.splice(frames.indexOf(frame), 1);
  closeFrame(frame, result);
  if (!frames.length) E().trimTo();
  return result;
}

/** Pooled GPU memory that lives outside tensors (the matmul texture path's operand textures). */
const extraPools: { bytes: () => number; release: () => void }[] = [];
export function registerPool(p: { bytes: () => number; release: () => void }) {
  extraPools.push(p);
}

/** Bytes of GPU memory held by live tensors, by the buffer pool and by other pools. */
export function memory() {
  const e = E();
  return {
    bytesInUse: e.bytesInUse,
    peakBytesInUse: e.peakBytesInUse,
    bytesAllocated: e.bytesAllocated,
    textureBytes: extraPools.reduce((a, p) => a + p.bytes(), 0),
    buffers: e.buffersAllocated,
    compilations: e.compilations,
    dispatches: e.dispatches,
  };
}

/** Frees every pooled buffer and texture not in use (after a big job, before another). */
export function trim() {
  for (const p of extraPools) p.release();
  E().trim();
}

// ---------------------------------------------------------------------------------------------
// f16 conversion on the host (round to nearest even).

export function f32ToF16(src: ArrayLike<number>): Uint16Array {
  const out = new Uint16Array(src.length);
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  for (let i = 0; i < src.length; i++) {
    f[0] = src[i];
    const x = u[0];
    const sign = (x >>> 16) & 0x8000;
    const exp = (x >>> 23) & 0xff;
    let mant = x & 0x7fffff;
    if (exp === 0xff) {
      out[i] = sign | 0x7c00 | (mant ? 0x200 : 0);
      continue;
    }
    let e = exp - 127 + 15;
    if (e >= 0x1f) {
      out[i] = sign | 0x7c00;
      continue;
    }
    if (e <= 0) {
      if (e < -10) {
        out[i] = sign;
        continue;
      }
      mant |= 0x800000;
      const shift = 14 - e;
      let h = mant >>> shift;
      const rem = mant & ((1 << shift) - 1);
      const half = 1 << (shift - 1);
      if (rem > half || (rem === half && (h & 1))) h++;
      out[i] = sign | h;
      continue;
    }
    let h = (e << 10) | (mant >>> 13);
    const rem = mant & 0x1fff;
    if (rem > 0x1000 || (rem === 0x1000 && (h & 1))) h++;
    e = h; // may carry into the exponent, which is the correct rounding
    out[i] = sign | e;
  }
  return out;
}

export function f16ToF32(src: Uint16Array): Float32Array {
  const out = new Float32Array(src.length);
  for (let i = 0; i < src.length; i++) {
    const h = src[i];
    const s = h & 0x8000 ? -1 : 1;
    const e = (h >>> 10) & 0x1f;
    const m = h & 0x3ff;
    if (e === 0) out[i] = s * m * 2 ** -24;
    else if (e === 31) out[i] = m ? NaN : s * Infinity;
    else out[i] = s * (1 + m / 1024) * 2 ** (e - 15);
  }
  return out;
}
