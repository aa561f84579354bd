/**
 * matmul with transpose flags and broadcast batch axes; linear (PyTorch layout).
 * The backward reads the saved operands through transposed views (flags), never materialised
 * transposes, and computes only the gradients that are needed.
 *
 * Kernel choice (kernels/matmul.ts): on a software adapter the texture path once the product
 * is big enough to repay packing, on a GPU the tiled storage-buffer kernel; the naive kernel
 * for tiny products. `setMatmulKernel` (or env MATMUL_KERNEL) forces one, for tests and bench.
 */
import { E } from "../device.ts";
import { EngineError, fmtShape } from "../errors.ts";
import { record } from "../autograd.ts";
import {
  matmulNaiveWgsl,
  matmulPackWgsl,
  matmulTextureWgsl,
  matmulTiledWgsl,
  TEX_COLS,
  TEX_ROWS,
  TEX_WG,
  TILED_TILE,
} from "../../kernels/matmul.ts";
import { broadcastShapes } from "../../kernels/elementwise.ts";
import { empty, registerPool, type Tensor } from "../tensor.ts";
import { reshape, transpose } from "./views.ts";
import { add } from "./elementwise.ts";
import { sumTo } from "./reduce.ts";

export interface MatmulOptions {
  transA?: boolean;
  transB?: boolean;
}

export type MatmulKernel = "naive" | "tiled" | "texture" | "auto";

/** Up to this many multiply-adds the naive kernel wins (one dispatch, no packing). */
const NAIVE_MAX = 32 ** 3;
const MAX_Z = 65535;

let forced: MatmulKernel | null = null;
let texLimits: { dim?: number; layers?: number; poolBytes?: number; kChunk?: number } = {};

function envKernel(): MatmulKernel {
  let v: string | undefined;
  try {
    v = Deno.env.get("MATMUL_KERNEL");
  } catch { /* no env permission: auto */ }
  return v === "naive" || v === "tiled" || v === "texture" ? v : "auto";
}

/**
 * Forces one matmul kernel ("auto" restores the adapter-based choice). `limits` shrink the
 * texture path's dimension / layer limits and its pool (default 256 MiB) so tests can exercise
 * chunking and eviction on small shapes.
 */
export function setMatmulKernel(
  kind: MatmulKernel,
  limits: { maxTextureDim?: number; maxLayers?: number; maxPoolBytes?: number; kChunk?: number } =
    {},
) {
  forced = kind;
  texLimits = {
    dim: limits.maxTextureDim,
    layers: limits.maxLayers,
    poolBytes: limits.maxPoolBytes,
    kChunk: limits.kChunk,
  };
}

let lastKernel: Exclude<MatmulKernel, "auto"> | null = null;
/** The kernel the last launchMatmul used (for benchmarks and logs). */
export function lastMatmulKernel() {
  return lastKernel;
}

/** The kernel in force ("auto" unless forced by setMatmulKernel or MATMUL_KERNEL). */
export function matmulKernel(): MatmulKernel {
  return forced ??= envKernel();
}

/** A matmul reduced to kernel parameters: C [batch, M, N] = op(A) · op(B). */
interface Plan {
  M: number;
  N: number;
  K: number;
  batch: number;
  batchShape: number[];
  aStrides: number[]; // per batch axis, 0 where broadcast
  bStrides: number[];
  sAm: number;
  sAk: number;
  sBk: number;
  sBn: number;
}

/** Kernel launch for C = op(A) · op(B) over broadcast batch axes; no tape. */
export function launchMatmul(a: Tensor, b: Tensor, transA = false, transB = false): Tensor {
  const op = "matmul";
  if (a.rank < 2 || b.rank < 2) {
    throw new EngineError(
      op,
      `operands need rank ≥ 2, got ${fmtShape(a.shape)} and ${fmtShape(b.shape)}`,
    );
  }
  if (a.dtype === "i32" || b.dtype === "i32") {
    throw new EngineError(
      op,
      `expects float operands, got ${a.dtype} ${fmtShape(a.shape)} and ${b.dtype} ${
        fmtShape(b.shape)
      }`,
    );
  }
  a.buf(op);
  b.buf(op);
  const [ar, br] = [a.rank, b.rank];
  const M = transA ? a.shape[ar - 1] : a.shape[ar - 2];
  const Ka = transA ? a.shape[ar - 2] : a.shape[ar - 1];
  const Kb = transB ? b.shape[br - 1] : b.shape[br - 2];
  const N = transB ? b.shape[br - 2] : b.shape[br - 1];
  const flags = `${transA ? "Aᵀ" : "A"}·${transB ? "Bᵀ" : "B"}`;
  if (Ka !== Kb) {
    throw new EngineError(
      op,
      `inner sizes differ: ${fmtShape(a.shape)} · ${
        fmtShape(b.shape)
      } (${flags}: K ${Ka} vs ${Kb})`,
    );
  }
  const batchShape = broadcastShapes(a.shape.slice(0, -2), b.shape.slice(0, -2));
  if (!batchShape) {
    throw new EngineError(
      op,
      `batch axes do not broadcast: ${fmtShape(a.shape)} · ${fmtShape(b.shape)}`,
    );
  }
  if (batchShape.length > 4) {
    throw new EngineError(op, `at most 4 batch axes, got ${fmtShape(batchShape)}`);
  }
  const out = empty([...batchShape, M, N]);
  if (out.size === 0) return out;
  const bstride = (t: Tensor, d: number) => {
    const td = d - (batchShape.length - (t.rank - 2));
    return td < 0 || t.shape[td] === 1 ? 0 : t.strides[td];
  };
  const plan = foldBatch({
    M,
    N,
    K: Ka,
    batch: batchShape.reduce((x, y) => x * y, 1),
    batchShape,
    aStrides: batchShape.map((_, d) => bstride(a, d)),
    bStrides: batchShape.map((_, d) => bstride(b, d)),
    sAm: transA ? a.strides[ar - 1] : a.strides[ar - 2],
    sAk: transA ? a.strides[ar - 2] : a.strides[ar - 1],
    sBk: transB ? b.strides[br - 1] : b.strides[br - 2],
    sBn: transB ? b.strides[br - 2] : b.strides[br - 1],
  });
  const kind = chooseKernel(plan);
  if (kind === "texture" && launchTexture(a, b, plan, out)) {
    lastKernel = "texture";
    return out;
  }
  lastKernel = kind === "naive" ? "naive" : "tiled";
  launchBuffer(lastKernel, a, b, plan, out);
  return out;
}

/** When B is the same matrix for every batch and A's batch axes continue its row stride, the
 * batch folds into M: one larger product instead of many small ones (linear on [B, T, D]). */
function foldBatch(p: Plan): Plan {
  if (p.batch === 1 || p.bStrides.some((s) => s !== 0)) return p;
  let expect = p.M * p.sAm;
  for (let d = p.batchShape.length - 1; d >= 0; d--) {
    if (p.batchShape[d] === 1) continue;
    if (p.aStrides[d] !== expect) return p;
    expect *= p.batchShape[d];
  }
  return {
    ...p,
    M: p.M * p.batch,
    batch: 1,
    batchShape: [],
    aStrides: [],
    bStrides: [],
  };
}

function chooseKernel(p: Plan): Exclude<MatmulKernel, "auto"> {
  const k = matmulKernel();
  if (k !== "auto") return k;
  const work = p.batch * p.M * p.N * p.K;
  if (E().info.isFallbackAdapter) {
    // packing costs about one read of each operand: it pays once rows and columns are reused
    return work <= NAIVE_MAX || p.M < 4 || p.N < 4 ? "naive" : "texture";
  }
  return work <= NAIVE_MAX ? "naive" : "tiled";
}

function baseUniforms(p: Plan, aOff: number, bOff: number): number[] {
  const u = new Array(24).fill(0);
  [u[0], u[1], u[2], u[3], u[4], u[5], u[6]] = [
    p.M,
    p.N,
    p.K,
    p.batch,
    p.batchShape.length,
    aOff,
    bOff,
  ];
  [u[7], u[8], u[9], u[10]] = [p.sAm, p.sAk, p.sBk, p.sBn];
  p.batchShape.forEach((s, d) => {
    u[12 + d] = s;
    u[16 + d] = p.aStrides[d];
    u[20 + d] = p.bStrides[d];
  });
  return u;
}

function launchBuffer(kind: "naive" | "tiled", a: Tensor, b: Tensor, p: Plan, out: Tensor) {
  const fits = (tile: number) => Math.ceil(Math.max(p.M, p.N) / tile) <= MAX_Z;
  if (kind === "naive" && !fits(16)) kind = "tiled";
  if (!fits(TILED_TILE)) {
    throw new EngineError(
      "matmul",
      `${fmtShape(a.shape)} · ${fmtShape(b.shape)}: M ${p.M} or N ${p.N} exceeds ${
        MAX_Z * TILED_TILE
      }`,
    );
  }
  const u = baseUniforms(p, a.offset, b.offset);
  const aK = p.sAk === 1, bN = p.sBn === 1;
  for (let b0 = 0; b0 < p.batch; b0 += MAX_Z) {
    u[11] = b0;
    const z = Math.min(MAX_Z, p.batch - b0);
    if (kind === "naive") {
      E().launch({
        kernel: "matmul_naive",
        key: `${a.dtype},${b.dtype}`,
        wgsl: () => matmulNaiveWgsl(a.dtype, b.dtype),
        inputs: [a.buf(), b.buf()],
        outputs: [out.buf()],
        uniforms: u,
        workgroups: [Math.ceil(p.N / 16), Math.ceil(p.M / 16), z],
      });
    } else {
      E().launch({
        kernel: "matmul_tiled",
        key: `${a.dtype},${b.dtype},${aK ? "aK" : "aM"},${bN ? "bN" : "bK"}`,
        wgsl: () => matmulTiledWgsl(a.dtype, b.dtype, aK, bN),
        inputs: [a.buf(), b.buf()],
        outputs: [out.buf()],
        uniforms: u,
        workgroups: [Math.ceil(p.N / TILED_TILE), Math.ceil(p.M / TILED_TILE), z],
      });
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Texture path: operands packed into pooled rgba32float 2D-array textures.

const roundUp = (x: number, m: number) => Math.ceil(x / m) * m;

/** Texture dimensions grow in quarter-octave steps (≤ 25 % waste) so shapes share textures. */
function texDim(n: number, limit: number): number {
  const step = 2 ** Math.max(3, Math.floor(Math.log2(Math.max(n, 1))) - 2);
  return Math.min(roundUp(n, step), limit);
}

interface PooledTexture {
  texture: GPUTexture;
  view: GPUTextureView;
  bytes: number;
  used: number;
}

/** One texture per role and size bucket: queue order makes reuse by the next matmul safe. */
const pool = new Map<string, PooledTexture>();
let poolBytes = 0;
let useCounter = 0;
const POOL_CAP = 256 * 2 ** 20;

function poolTexture(
  role: string,
  w: number,
  h: number,
  layers: number,
  lim: TexLimits,
  keepFrom: number,
) {
  const [bw, bh] = [texDim(w, lim.dim), texDim(h, lim.dim)];
  const bl = Math.min(2 ** Math.ceil(Math.log2(layers)), lim.layers);
  const key = `${role}:${bw}x${bh}x${bl}`;
  let t = pool.get(key);
  if (!t) {
    const bytes = bw * bh * bl * 16;
    evict((texLimits.poolBytes ?? POOL_CAP) - bytes, keepFrom);
    const texture = E().device.createTexture({
      label: `matmul ${key}`,
      size: [bw, bh, bl],
      format: "rgba32float",
      usage: GPUTextureUsage.STORAGE_BINDING,
    });
    t = { texture, view: texture.createView({ dimension: "2d-array" }), bytes, used: 0 };
    pool.set(key, t);
    poolBytes += bytes;
  }
  t.used = ++useCounter;
  return t;
}

/** Destroys least-recently used textures until the pool holds at most `target` bytes, sparing
 * those taken since use number `keepFrom` (the current matmul's other operand). */
function evict(target: number, keepFrom = Infinity) {
  if (poolBytes <= target) return;
  E().flush(); // recorded work may still name these textures
  const byAge = [...pool.entries()].sort((x, y) => x[1].used - y[1].used);
  for (const [k, t] of byAge) {
    if (poolBytes <= target || t.used >= keepFrom) break;
    t.texture.destroy();
    poolBytes -= t.bytes;
    pool.delete(k);
  }
}

/** Destroys the texture path's pooled textures (e.g. with E().trim()). */
export function releaseMatmulTextures() {
  evict(0);
}

/** Textures the texture path holds, and their bytes. */
export function matmulTextureMemory() {
  return { textures: pool.size, bytes: poolBytes };
}
registerPool({ bytes: () => poolBytes, release: releaseMatmulTextures });

interface TexLimits {
  dim: number;
  layers: number;
}

let layoutCache: { device: GPUDevice; pack: GPUBindGroupLayout; mul: GPUBindGroupLayout } | null =
  null;

function texLayouts() {
  const device = E().device;
  if (layoutCache?.device === device) return layoutCache;
  const C = GPUShaderStage.COMPUTE;
  const tex = (access: GPUStorageTextureAccess): GPUStorageTextureBindingLayout => ({
    access,
    format: "rgba32float",
    viewDimension: "2d-array",
  });
  const pack = device.createBindGroupLayout({
    entries: [
      { binding: 0, visibility: C, buffer: { type: "uniform" } },
      { binding: 1, visibility: C, buffer: { type: "read-only-storage" } },
      { binding: 2, visibility: C, storageTexture: tex("write-only") },
    ],
  });
  const mul = device.createBindGroupLayout({
    entries: [
      { binding: 0, visibility: C, buffer: { type: "uniform" } },
      { binding: 1, visibility: C, storageTexture: tex("read-only") },
      { binding: 2, visibility: C, storageTexture: tex("read-only") },
      { binding: 3, visibility: C, buffer: { type: "storage" } },
    ],
  });
  layoutCache = { device, pack, mul };
  return layoutCache;
}

interface PackSpec {
  src: Tensor;
  dst: PooledTexture;
  rows: number; // rows of this chunk
  cols: number;
  texels: number; // per row, written (zeros beyond cols)
  rowsPadded: number; // rows written (zeros beyond rows)
  sR: number;
  sC: number;
  row0: number;
  col0: number;
  layers: number;
  batch0: number;
  batchShape: number[];
  batchStrides: number[];
}

function launchPack(s: PackSpec) {
  const u = new Array(24).fill(0);
  [u[0], u[1], u[2], u[3], u[4], u[5], u[6]] = [
    s.rows,
    s.cols,
    s.texels,
    s.rowsPadded,
    s.src.offset,
    s.sR,
    s.sC,
  ];
  [u[7], u[8], u[9], u[10]] = [s.batchShape.length, s.batch0, s.row0, s.col0];
  s.batchShape.forEach((v, d) => {
    u[12 + d] = v;
    u[16 + d] = s.batchStrides[d];
  });
  E().launch({
    kernel: "matmul_pack",
    key: s.src.dtype,
    wgsl: () => matmulPackWgsl(s.src.dtype),
    inputs: [s.src.buf(), s.dst.view],
    outputs: [],
    uniforms: u,
    workgroups: [Math.ceil(s.texels / 16), Math.ceil(s.rowsPadded / 16), s.layers],
    layout: texLayouts().pack,
  });
}

/**
 * Chunks over batch (texture layers), M, N and K (texture dimensions) so any shape fits the
 * limits; normally one chunk each: two packs and one multiply. False when K cannot be split
 * finely enough (then the caller uses the tiled kernel).
 */
function launchTexture(a: Tensor, b: Tensor, p: Plan, out: Tensor): boolean {
  const lim = E().device.limits;
  const L: TexLimits = {
    dim: Math.min(texLimits.dim ?? Infinity, lim.maxTextureDimension2D),
    layers: Math.min(texLimits.layers ?? Infinity, lim.maxTextureArrayLayers),
  };
  const Mc = Math.min(p.M, Math.floor(L.dim / TEX_ROWS) * TEX_ROWS);
  const Nc = Math.min(p.N, Math.floor((4 * L.dim) / TEX_COLS) * TEX_COLS);
  const Kc = Math.min(p.K, Math.floor(L.dim / 4) * 4, texLimits.kChunk ?? Infinity);
  if (Mc < 1 || Nc < 1 || Kc < 1) return false; // K = 0 too: the tiled kernel writes zeros
  const aShared = p.aStrides.every((s) => s === 0);
  const bShared = p.bStrides.every((s) => s === 0);
  const Lc = Math.min(p.batch, L.layers);
  const layouts = texLayouts();
  const K4 = Math.ceil(Kc / 4);
  const keepFrom = useCounter + 1;
  const texA = poolTexture("A", K4, roundUp(Mc, TEX_ROWS), aShared ? 1 : Lc, L, keepFrom);
  const texB = poolTexture(
    "B",
    roundUp(Math.ceil(Nc / 4), TEX_COLS / 4),
    4 * K4,
    bShared ? 1 : Lc,
    L,
    keepFrom,
  );
  const u = new Array(12).fill(0);
  const v4 = p.N % 4 === 0;
  for (let b0 = 0; b0 < p.batch; b0 += Lc) {
    const layers = Math.min(Lc, p.batch - b0);
    for (let m0 = 0; m0 < p.M; m0 += Mc) {
      const rows = Math.min(Mc, p.M - m0);
      for (let n0 = 0; n0 < p.N; n0 += Nc) {
        const cols = Math.min(Nc, p.N - n0);
        for (let k0 = 0; k0 < p.K; k0 += Kc) {
          const kc = Math.min(Kc, p.K - k0);
          const k4 = Math.ceil(kc / 4);
          launchPack({
            src: a,
            dst: texA,
            rows,
            cols: kc,
            texels: k4,
            rowsPadded: roundUp(rows, TEX_ROWS),
            sR: p.sAm,
            sC: p.sAk,
            row0: m0,
            col0: k0,
            layers: aShared ? 1 : layers,
            batch0: b0,
            batchShape: p.batchShape,
            batchStrides: p.aStrides,
          });
          launchPack({
            src: b,
            dst: texB,
            rows: kc,
            cols,
            texels: roundUp(Math.ceil(cols / 4), TEX_COLS / 4),
            rowsPadded: 4 * k4,
            sR: p.sBk,
            sC: p.sBn,
            row0: k0,
            col0: n0,
            layers: bShared ? 1 : layers,
            batch0: b0,
            batchShape: p.batchShape,
            batchStrides: p.bStrides,
          });
          [u[0], u[1], u[2], u[3], u[4], u[5]] = [
            p.M,
            p.N,
            k4,
            aShared ? 0 : 1,
            bShared ? 0 : 1,
            m0,
          ];
          [u[6], u[7], u[8], u[9]] = [b0, n0, rows, cols];
          const acc = k0 > 0;
          E().launch({
            kernel: "matmul_texture",
            key: `${v4 ? "v4" : "s"}${acc ? ",acc" : ""}`,
            wgsl: () => matmulTextureWgsl(v4, acc),
            inputs: [texA.view, texB.view],
            outputs: [out.buf()],
            uniforms: u,
            workgroups: [
              Math.ceil(cols / (TEX_COLS * TEX_WG[0])),
              Math.ceil(rows / (TEX_ROWS * TEX_WG[1])),
              layers,
            ],
            layout: layouts.mul,
          });
        }
      }
    }
  }
  return true;
}

// ---------------------------------------------------------------------------------------------

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
      const gBatch = g.shape.slice(0, -2);
      if (bs.length === 2 && !transA && sameShape(as.slice(0, -2), gBatch) && gBatch.length) {
        // a weight shared over the batch: fold the batch into K, no per-batch partials to sum
        const a2 = reshape(sa, [-1, as[as.length - 1]]);
        const g2 = reshape(g, [-1, g.shape[g.rank - 1]]);
        db = transB ? launchMatmul(g2, a2, true, false) : launchMatmul(a2, g2, true, false);
      } else {
        db = transB ? launchMatmul(g, sa, true, transA) : launchMatmul(sa, g, !transA, false);
        db = sumTo(db, bs);
      }
    }
    return [da, db];
  });
}

const sameShape = (x: readonly number[], y: readonly number[]) =>
  x.length === y.length && x.every((s, i) => s === y[i]);

/** y = x · Wᵀ + b with W in PyTorch's (out × in) layout. */
export function linear(x: Tensor, w: Tensor, b?: Tensor): Tensor {
  if (w.rank !== 2 || x.shape[x.rank - 1] !== w.shape[1]) {
    throw new EngineError(
      "linear",
      `input ${fmtShape(x.shape)} does not fit weight ${fmtShape(w.shape)} (out × in)`,
    );
  }
  const y = matmul(x, w, { transB: true });
  if (!b) return y;
  // the product is read once: free it now rather than at the scope's end (add saves nothing)
  const out = add(y, b);
  y.dispose();
  return out;
}

export { transpose };
