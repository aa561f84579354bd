/**
 * K-means on the GPU (Lloyd's algorithm with k-means++ seeding), and deterministic segment sums
 * and means (the same one-hot matmul, differentiable). Kernels and the float64 reference
 * (cpuKmeans): kernels/kmeans.ts.
 *
 * One run: the points are prepared once (euclidean: centred on their mean, which leaves every
 * distance unchanged and keeps the ‖x‖² − 2x·c + ‖c‖² expansion accurate; cosine: normalised,
 * i.e. spherical k-means) with a ones column appended. k-means++ (plain D² sampling, one candidate
 * per draw, not scikit-learn's greedy variant) picks the k starting points on the GPU with
 * host-drawn uniforms: no readback, 2k small dispatches. Each Lloyd iteration, in chunks
 * of rows that bound the [rows, k] scores, computes scores by matmul, the argmin labels and
 * distances, and the one-hot matmul that sums every cluster; only two numbers (inertia and how many
 * labels changed) are read back, every `checkEvery` iterations. New centroids are the means
 * (cosine: normalised sums); an empty cluster takes the farthest point (see kmeans_reseed).
 *
 * Stopping: when no label changed (a fixed point: further iterations change nothing, so the
 * result does not depend on checkEvery), after `iters` centroid updates, or, with tol > 0, when
 * the inertia fell by at most tol·inertia since the last check. The returned labels are always
 * the assignment to the returned centroids, and the inertia theirs. Restarts draw from the same
 * seeded stream one after the other and keep the lowest inertia (the first on a tie).
 */
import { E, f32Bits, grid1d } from "../device.ts";
import { EngineError, fmtShape } from "../errors.ts";
import { isGradEnabled, noGrad } from "../autograd.ts";
import { empty, scope, type Tensor, tensor } from "../tensor.ts";
import {
  kmeansAssignWgsl,
  type KmeansMetric,
  kmeansMinDistWgsl,
  kmeansPickWgsl,
  kmeansReseedWgsl,
  kmeansStatsWgsl,
  kmeansUpdateWgsl,
  plusPlusDraw,
} from "../../kernels/kmeans.ts";
import { concat, indexSelect } from "./indexing.ts";
import { add, div, eq, launchMap, ones, square, sub } from "./elementwise.ts";
import { mean, sum } from "./reduce.ts";
import { reshape, slice, sliceView } from "./views.ts";
import { launchMatmul, matmul } from "./matmul.ts";
import { normalize } from "./nn.ts";
import { type HostRng, hostRng } from "./random.ts";

export type { KmeansMetric };

/** Rows × k elements of one chunk of scores (and of one-hot). Tests lower it to reach chunking. */
export const kmeansConfig = { chunkElems: 1 << 22 };

export interface KmeansOptions {
  /** Seed of the initialisation draws (default 0). */
  seed?: number;
  /** Maximum centroid updates per run (default 20). */
  iters?: number;
  /** Independent seeded runs; the lowest inertia is kept (default 1). */
  restarts?: number;
  /** "kmeans++" (default), "random" (k distinct points), or initial centroids [k, D] (f32; then
   * one run). */
  init?: "kmeans++" | "random" | Tensor;
  /** Relative inertia decrease under which a run stops (default 0: only at a fixed point). */
  tol?: number;
  /** "euclidean" (default) or "cosine" (spherical k-means on normalised rows; centroids unit). */
  metric?: KmeansMetric;
  /** Read the stopping statistics back every this many iterations (default 1). */
  checkEvery?: number;
}

export interface KmeansResult {
  /** [k, D] f32; the caller disposes it. */
  centroids: Tensor;
  /** [N] i32, the nearest centroid of each point (ties: lowest index). */
  labels: Tensor;
  /** Σ over points of the distance to their centroid: ‖x − c‖² (euclidean), 1 − cos (cosine). */
  inertia: number;
  /** Centroid updates of the kept run. */
  iterations: number;
  /** Final inertia of every restart, in order. */
  inertias: number[];
  /** i32 [k], the points the kept run started from (null for given centroids). */
  initIndices: Tensor | null;
}

interface Prepared {
  N: number;
  D: number;
  k: number;
  metric: KmeansMetric;
  /** [N, D + 1]: prepared points and a ones column. */
  xa: Tensor;
  /** [N, D] view of the points in xa. */
  xs: Tensor;
  /** [1, D] mean added back to euclidean centroids (null for cosine). */
  shift: Tensor | null;
  /** [1, k] f32 class indices for the one-hot. */
  classes: Tensor;
}

interface Run {
  cent: Tensor;
  labels: Tensor;
  inertia: number;
  iterations: number;
  picks: Tensor | null;
}

function check(x: Tensor, k: number, o: KmeansOptions) {
  const op = "kmeans";
  x.buf(op);
  if (x.dtype !== "f32") {
    throw new EngineError(op, `points must be f32, got ${x.dtype} ${fmtShape(x.shape)}`);
  }
  if (x.rank !== 2 || x.shape[0] < 1 || x.shape[1] < 1) {
    throw new EngineError(op, `points must be a non-empty [N, D] matrix, got ${fmtShape(x.shape)}`);
  }
  const N = x.shape[0];
  if (!Number.isInteger(k) || k < 1 || k > N) {
    throw new EngineError(
      op,
      `k must be an integer in [1, N = ${N}], got ${k} for ${fmtShape(x.shape)}`,
    );
  }
  const int = (name: string, v: number | undefined, min: number) => {
    if (v !== undefined && !(Number.isInteger(v) && v >= min)) {
      throw new EngineError(op, `${name} must be an integer ≥ ${min}, got ${v}`);
    }
  };
  int("iters", o.iters, 0);
  int("restarts", o.restarts, 1);
  int("checkEvery", o.checkEvery, 1);
  if (o.tol !== undefined && !(o.tol >= 0)) {
    throw new EngineError(op, `tol must be ≥ 0, got ${o.tol}`);
  }
  if (o.metric !== undefined && o.metric !== "euclidean" && o.metric !== "cosine") {
    throw new EngineError(op, `metric must be "euclidean" or "cosine", got "${o.metric}"`);
  }
  const init = o.init;
  if (init !== undefined && typeof init !== "string") {
    init.buf(op);
    if (
      init.dtype !== "f32" || init.rank !== 2 || init.shape[0] !== k || init.shape[1] !== x.shape[1]
    ) {
      throw new EngineError(
        op,
        `initial centroids must be f32 [${k}, ${x.shape[1]}], got ${init.dtype} ${
          fmtShape(init.shape)
        }`,
      );
    }
  } else if (init !== undefined && init !== "kmeans++" && init !== "random") {
    throw new EngineError(op, `init must be "kmeans++", "random" or a tensor, got "${init}"`);
  }
}

/**
 * K-means of the rows of x [N, D] (f32) into k clusters. See the file comment for the algorithm,
 * and cpuKmeans (kernels/kmeans.ts) for its float64 twin.
 */
export async function kmeans(
  x: Tensor,
  k: number,
  opts: KmeansOptions = {},
): Promise<KmeansResult> {
  check(x, k, opts);
  const { seed = 0, iters = 20, restarts = 1, tol = 0, checkEvery = 1 } = opts;
  const metric = opts.metric ?? "euclidean";
  const init = opts.init ?? "kmeans++";
  const p = noGrad(() => scope(() => prepare(x, k, metric)));
  const rng = hostRng(seed);
  let best: Run | null = null;
  const inertias: number[] = [];
  try {
    const runs = typeof init === "string" ? restarts : 1;
    for (let r = 0; r < runs; r++) {
      const start = noGrad(() => scope(() => initialise(p, init, rng)));
      const run = await lloyd(p, start.cent, start.picks, iters, tol, checkEvery);
      inertias.push(run.inertia);
      if (!best || run.inertia < best.inertia) {
        if (best) disposeRun(best);
        best = run;
      } else disposeRun(run);
    }
  } catch (e) {
    if (best) disposeRun(best);
    for (const t of [p.xa, p.xs, p.shift, p.classes]) t?.dispose();
    throw e;
  }
  const b = best!;
  let centroids = b.cent;
  if (p.shift) {
    centroids = noGrad(() => launchMap("add", [b.cent, p.shift!]));
    b.cent.dispose();
  }
  for (const t of [p.xa, p.xs, p.shift, p.classes]) t?.dispose();
  return {
    centroids,
    labels: b.labels,
    inertia: b.inertia,
    iterations: b.iterations,
    inertias,
    initIndices: b.picks,
  };
}

function disposeRun(r: Run) {
  r.cent.dispose();
  r.labels.dispose();
  r.picks?.dispose();
}

function prepare(x: Tensor, k: number, metric: KmeansMetric): Prepared {
  const [N, D] = x.shape;
  let pts: Tensor, shift: Tensor | null = null;
  if (metric === "cosine") pts = normalize(x);
  else {
    shift = mean(x, 0, true);
    pts = sub(x, shift);
  }
  const one = ones([N, 1]);
  const xa = concat([pts, one], 1);
  pts.dispose();
  one.dispose();
  const classes = tensor(Float32Array.from({ length: k }, (_, j) => j), [1, k]);
  return { N, D, k, metric, xa, xs: sliceView(xa, [0, 0], [N, D]), shift, classes };
}

function initialise(
  p: Prepared,
  init: "kmeans++" | "random" | Tensor,
  rng: HostRng,
): { cent: Tensor; picks: Tensor | null } {
  if (typeof init !== "string") {
    const cent = p.metric === "cosine" ? normalize(init) : sub(init, p.shift!);
    return { cent, picks: null };
  }
  const picks = init === "random"
    ? tensor(Int32Array.from(rng.sample(p.N, p.k)), [p.k], "i32")
    : plusPlus(p, rng);
  return { cent: indexSelect(p.xs, 0, picks), picks };
}

/** k-means++ on the GPU: picks i32 [k]. */
function plusPlus(p: Prepared, rng: HostRng): Tensor {
  const { N, D, k, xa } = p;
  const picks = empty([k], "i32");
  const dmin = empty([N]);
  const e = E();
  for (let t = 0; t < k; t++) {
    const { u, fallback } = plusPlusDraw(rng, N);
    e.launch({
      kernel: "kmeans_pick",
      wgsl: kmeansPickWgsl,
      inputs: [dmin.buf("kmeans")],
      outputs: [picks.buf()],
      uniforms: [N, t, fallback, f32Bits(u), t === 0 ? 1 : 0],
      workgroups: [1],
    });
    if (t === k - 1) break;
    e.launch({
      kernel: "kmeans_mindist",
      wgsl: kmeansMinDistWgsl,
      inputs: [xa.buf("kmeans"), picks.buf()],
      outputs: [dmin.buf()],
      uniforms: [N, D, xa.offset, xa.strides[0], t],
      workgroups: grid1d(N),
    });
  }
  dmin.dispose();
  return picks;
}

/** One assignment: labels, distances and the per-cluster [sum, count] rows [k, D + 1]. */
function assign(p: Prepared, cent: Tensor): { labels: Tensor; dist: Tensor; sums: Tensor } {
  const { N, D, k, xa, metric } = p;
  const labels = empty([N], "i32");
  const dist = empty([N]);
  const cn = metric === "euclidean" ? sum(square(cent), 1) : null;
  const R = Math.max(1, Math.floor(kmeansConfig.chunkElems / k));
  let sums: Tensor | null = null;
  for (let r0 = 0; r0 < N; r0 += R) {
    const rows = Math.min(R, N - r0);
    const xc = sliceView(xa, [r0, 0], [rows, D]);
    const s = launchMatmul(xc, cent, false, true);
    E().launch({
      kernel: "kmeans_assign",
      key: metric,
      wgsl: () => kmeansAssignWgsl(metric),
      inputs: cn ? [s.buf(), cn.buf(), xa.buf()] : [s.buf()],
      outputs: [labels.buf(), dist.buf()],
      uniforms: [rows, k, r0, xa.offset, xa.strides[0], D],
      workgroups: grid1d(rows),
    });
    const lv = labels.view([rows, 1], [1, 0], r0);
    const onehot = launchMap("eq", [lv, p.classes]);
    const xr = sliceView(xa, [r0, 0], [rows, D + 1]);
    const part = launchMatmul(onehot, xr, true, false);
    if (sums) {
      const acc: Tensor = launchMap("add", [sums, part]);
      sums.dispose();
      part.dispose();
      sums = acc;
    } else sums = part;
    for (const t of [xc, s, lv, onehot, xr]) t.dispose();
  }
  cn?.dispose();
  return { labels, dist, sums: sums! };
}

function update(p: Prepared, sums: Tensor, dist: Tensor): Tensor {
  const { N, D, k, xa, metric } = p;
  const cent = empty([k, D]);
  const gx = Math.min(k, 65535);
  E().launch({
    kernel: "kmeans_update",
    key: metric,
    wgsl: () => kmeansUpdateWgsl(metric),
    inputs: [sums.buf()],
    outputs: [cent.buf()],
    uniforms: [k, D],
    workgroups: [gx, Math.ceil(k / gx)],
  });
  E().launch({
    kernel: "kmeans_reseed",
    wgsl: kmeansReseedWgsl,
    inputs: [xa.buf(), sums.buf(), dist.buf()],
    outputs: [cent.buf()],
    uniforms: [N, k, D, xa.offset, xa.strides[0]],
    workgroups: [1],
  });
  return cent;
}

async function stats(dist: Tensor, labels: Tensor, prev: Tensor | null): Promise<number[]> {
  const out = empty([2]);
  E().launch({
    kernel: "kmeans_stats",
    wgsl: kmeansStatsWgsl,
    inputs: [dist.buf(), labels.buf(), (prev ?? labels).buf()],
    outputs: [out.buf()],
    uniforms: [dist.size, prev ? 1 : 0],
    workgroups: [1],
  });
  try {
    return Array.from(await out.data());
  } finally {
    out.dispose();
  }
}

async function lloyd(
  p: Prepared,
  cent: Tensor,
  picks: Tensor | null,
  iters: number,
  tol: number,
  checkEvery: number,
): Promise<Run> {
  let prev: Tensor | null = null;
  let prevInertia = Infinity;
  try {
    for (let it = 0;; it++) {
      const a = noGrad(() => scope(() => assign(p, cent)));
      const last = it >= iters;
      if (last || (it + 1) % checkEvery === 0) {
        let inertia: number, changed: number;
        try {
          [inertia, changed] = await stats(a.dist, a.labels, prev);
        } catch (e) {
          for (const t of [a.labels, a.dist, a.sums]) t.dispose();
          throw e;
        }
        if (
          changed === 0 || last || (tol > 0 && prevInertia - inertia <= tol * Math.abs(inertia))
        ) {
          a.dist.dispose();
          a.sums.dispose();
          return { cent, labels: a.labels, inertia, iterations: it, picks };
        }
        prevInertia = inertia;
      }
      prev?.dispose();
      prev = a.labels;
      const next = update(p, a.sums, a.dist);
      a.sums.dispose();
      a.dist.dispose();
      cent.dispose();
      cent = next;
    }
  } catch (e) {
    cent.dispose();
    picks?.dispose();
    throw e;
  } finally {
    prev?.dispose();
  }
}

// ---------------------------------------------------------------------------------------------
// Segment sums and means

function checkSegments(op: string, x: Tensor, labels: Tensor, k: number) {
  x.buf(op);
  labels.buf(op);
  if (x.dtype === "i32" || x.rank !== 2) {
    throw new EngineError(
      op,
      `x must be a float [N, D] matrix, got ${x.dtype} ${fmtShape(x.shape)}`,
    );
  }
  if (labels.dtype !== "i32" || labels.rank !== 1 || labels.shape[0] !== x.shape[0]) {
    throw new EngineError(
      op,
      `labels must be i32 [${x.shape[0]}] for x ${fmtShape(x.shape)}, got ${labels.dtype} ${
        fmtShape(labels.shape)
      }`,
    );
  }
  if (!Number.isInteger(k) || k < 1) {
    throw new EngineError(op, `k must be a positive integer, got ${k}`);
  }
}

/** Σ of the rows of x [N, D] per label (i32 [N], values in [0, k); others count nowhere) → [k, D],
 * and the counts [k]. A one-hot matmul: deterministic, chunked over rows, differentiable in x. */
export function segmentSum(x: Tensor, labels: Tensor, k: number): { sums: Tensor; counts: Tensor } {
  checkSegments("segmentSum", x, labels, k);
  const [N] = x.shape;
  const taped = isGradEnabled() && x.requiresGrad;
  const classes = tensor(Float32Array.from({ length: k }, (_, j) => j), [1, k]);
  const R = Math.max(1, Math.floor(kmeansConfig.chunkElems / k));
  let sums: Tensor | null = null, counts: Tensor | null = null;
  // intermediates on a tape must stay for backward (the caller's scope frees them)
  const drop = (...ts: Tensor[]) => {
    if (!taped) { for (const t of ts) if (t !== x) t.dispose(); }
  };
  for (let r0 = 0; r0 < N; r0 += R) {
    const rows = Math.min(R, N - r0);
    const lv = labels.view(
      [rows, 1],
      [labels.strides[0], 0],
      labels.offset + r0 * labels.strides[0],
    );
    const onehot = eq(lv, classes);
    lv.dispose();
    const xr = rows === N ? x : slice(x, [r0, 0], [rows, x.shape[1]]);
    const part = matmul(onehot, xr, { transA: true });
    const cnt = sum(onehot, 0);
    onehot.dispose();
    drop(xr);
    if (sums && counts) {
      const s2: Tensor = add(sums, part), c2: Tensor = add(counts, cnt);
      drop(sums, part);
      counts.dispose();
      cnt.dispose();
      [sums, counts] = [s2, c2];
    } else [sums, counts] = [part, cnt];
  }
  classes.dispose();
  return { sums: sums!, counts: counts! };
}

/** Mean of the rows of x per label → [k, D]; an empty segment gives a zero row. Differentiable in
 * x (the labels are constants). */
export function segmentMean(x: Tensor, labels: Tensor, k: number): Tensor {
  const { sums, counts } = segmentSum(x, labels, k);
  const den = launchMap("clamp", [counts], [1, 3.4e38]);
  const den2 = reshape(den, [k, 1]);
  const out = div(sums, den2);
  for (const t of [counts, den, den2]) t.dispose();
  if (!(isGradEnabled() && x.requiresGrad)) sums.dispose();
  return out;
}
