/**
 * K-means on the GPU against its float64 reference (kernels/kmeans.ts cpuKmeans): from the same
 * initial centroids the labels agree exactly and the centroids to 1e-5; k-means++ draws the same
 * points on both sides and is deterministic under a seed; restarts keep the lowest inertia; empty
 * clusters are re-seeded with the farthest points; the cosine metric; chunked assignment; the
 * segment sums/means; bad input.
 */
import {
  assert,
  assertClose,
  download,
  gradCheck,
  type HostTensor,
  rng,
  setup,
  T,
} from "./util.ts";
import { cpuKmeans } from "../kernels/kmeans.ts";
import { kmeans, kmeansConfig, segmentMean, segmentSum } from "../engine/ops/kmeans.ts";

await setup();

/** Gaussian blobs: `sizes[b]` points around centre b (spread `gap` apart), deterministic order
 * mixed so clusters are not contiguous runs. */
function blobs(sizes: number[], D: number, seed: number, gap = 8, std = 0.6): HostTensor {
  const r = rng(seed);
  const normal = () => Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
  const centres = sizes.map(() => Array.from({ length: D }, () => gap * (r() * 2 - 1)));
  const rows: number[][] = [];
  sizes.forEach((n, b) => {
    for (let i = 0; i < n; i++) rows.push(centres[b].map((c) => c + std * normal()));
  });
  for (let i = rows.length - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    [rows[i], rows[j]] = [rows[j], rows[i]];
  }
  return { shape: [rows.length, D], data: Float64Array.from(rows.flat().map(Math.fround)) };
}

const up = (h: HostTensor) => T.tensor(Float32Array.from(h.data), h.shape);

async function gpu(x: HostTensor, k: number, opts: Parameters<typeof kmeans>[2] = {}) {
  return await T.scopeAsync(async () => {
    const r = await kmeans(up(x), k, opts);
    return {
      centroids: await download(r.centroids),
      labels: Array.from(await r.labels.data()),
      inertia: r.inertia,
      iterations: r.iterations,
      inertias: r.inertias,
      initIndices: r.initIndices ? Array.from(await r.initIndices.data()) : null,
    };
  });
}

const X = blobs([40, 25, 31, 17], 5, 1);

Deno.test("kmeans from given centroids equals the float64 reference", async () => {
  for (const metric of ["euclidean", "cosine"] as const) {
    // starting points: four rows of the data, deliberately poor (two from one blob)
    const init: HostTensor = { shape: [4, 5], data: new Float64Array(20) };
    [0, 1, 2, 3].forEach((p, j) => init.data.set(X.data.subarray(p * 5, p * 5 + 5), j * 5));
    const ref = cpuKmeans(X, 4, { init, metric });
    const got = await gpu(X, 4, { init: up(init), metric });
    assert.deepEqual(got.labels, Array.from(ref.labels), `${metric} labels`);
    assertClose(got.centroids, ref.centroids, {
      rtol: 1e-5,
      atol: 1e-5,
      msg: `${metric} centroids`,
    });
    assert.equal(got.iterations, ref.iterations, `${metric} iterations`);
    assertClose([got.inertia], [ref.inertia], { rtol: 1e-4, atol: 1e-4, msg: `${metric} inertia` });
    assert.ok(ref.iterations > 1, "the start must need several updates");
  }
});

Deno.test("k-means++ draws the reference's points and is deterministic under a seed", async () => {
  const a = await gpu(X, 4, { seed: 7 });
  const b = await gpu(X, 4, { seed: 7 });
  const ref = cpuKmeans(X, 4, { seed: 7 });
  assert.deepEqual(a.initIndices, ref.initIndices, "initial points");
  assert.deepEqual(a.labels, Array.from(ref.labels), "labels");
  assertClose(a.centroids, ref.centroids, { rtol: 1e-5, atol: 1e-5, msg: "centroids" });
  assert.deepEqual(b.initIndices, a.initIndices, "same seed, same points");
  assert.deepEqual(Array.from(b.centroids.data), Array.from(a.centroids.data), "bitwise repeat");
  assert.deepEqual(b.labels, a.labels);
  // k-means++ spreads the starts: one point from each blob on this data
  const blobOf = (i: number) => ref.labels[i];
  assert.equal(new Set(a.initIndices!.map(blobOf)).size, 4, "one start per blob");
  // another seed draws other points (the same as the reference's)
  const c = await gpu(X, 4, { seed: 8 });
  assert.notDeepEqual(c.initIndices, a.initIndices, "another seed");
  assert.deepEqual(c.initIndices, cpuKmeans(X, 4, { seed: 8 }).initIndices);
  // more points than the pick kernel's 256 lanes: each lane owns a block of the D² weights
  const big = blobs([300, 200, 150, 90, 60, 40, 30, 20], 3, 9, 10, 1);
  for (const seed of [1, 2]) {
    const g = await gpu(big, 8, { seed, iters: 3 });
    const r = cpuKmeans(big, 8, { seed, iters: 3 });
    assert.deepEqual(g.initIndices, r.initIndices, `initial points of 890 (seed ${seed})`);
    assert.deepEqual(g.labels, Array.from(r.labels));
  }
  // "random" init: k distinct points from the same stream
  const d = await gpu(X, 4, { seed: 7, init: "random" });
  assert.deepEqual(d.initIndices, cpuKmeans(X, 4, { seed: 7, init: "random" }).initIndices);
  assert.equal(new Set(d.initIndices).size, 4);
});

Deno.test("kmeans frees everything but its results", async () => {
  const x = up(X);
  const before = T.memory().bytesInUse;
  for (const metric of ["euclidean", "cosine"] as const) {
    const r = await kmeans(x, 4, { seed: 1, restarts: 2, metric });
    r.centroids.dispose();
    r.labels.dispose();
    r.initIndices?.dispose();
  }
  assert.equal(T.memory().bytesInUse, before);
  x.dispose();
});

Deno.test("restarts keep the lowest inertia", async () => {
  // six blobs, four clusters: where the starts land decides the local optimum
  const Y = blobs([30, 30, 30, 30, 30, 30], 2, 3, 10, 0.5);
  const opts = { seed: 3, restarts: 6 };
  const got = await gpu(Y, 4, opts);
  const ref = cpuKmeans(Y, 4, opts);
  assert.equal(got.inertias.length, 6);
  assertClose(got.inertias, ref.inertias, { rtol: 1e-4, atol: 1e-4, msg: "per-restart inertia" });
  const lo = Math.min(...got.inertias), hi = Math.max(...got.inertias);
  assert.ok(hi > lo * 1.01, `restarts must reach different optima (${got.inertias})`);
  assert.equal(got.inertia, lo, "kept run has the lowest inertia");
  assert.ok(got.inertia < got.inertias[0], "on this data a later restart wins");
  assert.deepEqual(got.labels, Array.from(ref.labels));
  assertClose(got.centroids, ref.centroids, { rtol: 1e-5, atol: 1e-5, msg: "centroids" });
  // the first restart is the single run of the same seed
  const one = await gpu(Y, 4, { seed: 3 });
  assert.equal(one.inertia, got.inertias[0]);
});

Deno.test("empty clusters take the farthest points, as in the reference", async () => {
  // two of five starts lie far from every point: both clusters are empty after the first
  // assignment and must take two distinct far points
  const init: HostTensor = { shape: [5, 5], data: new Float64Array(25) };
  [0, 1, 2].forEach((p, j) => init.data.set(X.data.subarray(p * 5, p * 5 + 5), j * 5));
  init.data.fill(100, 15, 20);
  init.data.fill(-100, 20, 25);
  for (const metric of ["euclidean", "cosine"] as const) {
    const ref = cpuKmeans(X, 5, { init, metric });
    const got = await gpu(X, 5, { init: up(init), metric });
    assert.deepEqual(got.labels, Array.from(ref.labels), `${metric} labels`);
    assertClose(got.centroids, ref.centroids, { rtol: 1e-5, atol: 1e-5, msg: `${metric}` });
    const counts = new Array(5).fill(0);
    for (const l of got.labels) counts[l]++;
    assert.ok(counts.every((c) => c > 0), `${metric}: no cluster left empty (${counts})`);
  }
  // only two distinct points and k = 3: a cluster stays empty, nothing becomes NaN
  const dup: HostTensor = {
    shape: [6, 2],
    data: Float64Array.from([1, 2, 1, 2, 1, 2, -3, 0, -3, 0, -3, 0]),
  };
  const got = await gpu(dup, 3, { seed: 1 });
  const ref = cpuKmeans(dup, 3, { seed: 1 });
  assert.deepEqual(got.labels, Array.from(ref.labels));
  // the empty cluster took the first of the equally far points, as the reference
  assertClose(got.centroids, ref.centroids, { atol: 1e-6, msg: "duplicates" });
  assert.ok(got.centroids.data.every(Number.isFinite), "finite centroids");
  assert.equal(got.inertia, 0);
  assert.equal(new Set(got.labels).size, 2);
});

Deno.test("cosine metric: unit centroids, invariant to the points' norms", async () => {
  const scaled: HostTensor = { shape: X.shape, data: Float64Array.from(X.data) };
  const r = rng(4);
  for (let i = 0; i < X.shape[0]; i++) {
    const f = 0.1 + 5 * r();
    for (let c = 0; c < 5; c++) scaled.data[i * 5 + c] = Math.fround(X.data[i * 5 + c] * f);
  }
  const a = await gpu(X, 4, { seed: 2, metric: "cosine" });
  const b = await gpu(scaled, 4, { seed: 2, metric: "cosine" });
  const ref = cpuKmeans(scaled, 4, { seed: 2, metric: "cosine" });
  assert.deepEqual(b.labels, Array.from(ref.labels));
  assertClose(b.centroids, ref.centroids, { rtol: 1e-5, atol: 1e-5, msg: "cosine centroids" });
  assert.deepEqual(a.labels, b.labels, "norms do not matter");
  for (let j = 0; j < 4; j++) {
    let n = 0;
    for (let c = 0; c < 5; c++) n += b.centroids.data[j * 5 + c] ** 2;
    assertClose([n], [1], { rtol: 1e-5, atol: 1e-6, msg: "unit centroid" });
  }
});

Deno.test("chunked assignment, checkEvery and tol", async () => {
  const ref = cpuKmeans(X, 4, { seed: 11 });
  const whole = await gpu(X, 4, { seed: 11 });
  const saved = kmeansConfig.chunkElems;
  kmeansConfig.chunkElems = 4 * 7; // 7 rows per chunk, last chunk shorter
  try {
    const chunked = await gpu(X, 4, { seed: 11 });
    assert.deepEqual(chunked.labels, Array.from(ref.labels));
    assertClose(chunked.centroids, ref.centroids, { rtol: 1e-5, atol: 1e-5, msg: "chunked" });
  } finally {
    kmeansConfig.chunkElems = saved;
  }
  // a fixed point does not depend on how often the statistics are read
  const sparse = await gpu(X, 4, { seed: 11, checkEvery: 3 });
  assert.deepEqual(sparse.labels, whole.labels);
  assert.deepEqual(Array.from(sparse.centroids.data), Array.from(whole.centroids.data));
  // iters bounds the updates; 0 is the assignment to the starting points
  const zero = await gpu(X, 4, { seed: 11, iters: 0 });
  const zref = cpuKmeans(X, 4, { seed: 11, iters: 0 });
  assert.equal(zero.iterations, 0);
  assert.deepEqual(zero.labels, Array.from(zref.labels));
  // a loose tol stops earlier, at the reference's iteration
  const init: HostTensor = { shape: [4, 5], data: X.data.slice(0, 20) };
  const full = cpuKmeans(X, 4, { init });
  const loose = cpuKmeans(X, 4, { init, tol: 0.2 });
  assert.ok(loose.iterations < full.iterations, "tol must stop early on this start");
  const got = await gpu(X, 4, { init: up(init), tol: 0.2 });
  assert.equal(got.iterations, loose.iterations);
  assert.deepEqual(got.labels, Array.from(loose.labels));
});

Deno.test("segment sums and means match the reference, with gradients", async () => {
  const N = 23, D = 3, k = 5;
  const x = randX(N, D);
  const labels = Int32Array.from({ length: N }, (_, i) => (i * 7) % 4); // segment 4 empty
  labels[5] = 9; // outside [0, k): counts nowhere
  const ref = cpuSegments(x, labels, k);
  for (const chunk of [1 << 22, 3 * k]) {
    const saved = kmeansConfig.chunkElems;
    kmeansConfig.chunkElems = chunk;
    try {
      await T.scopeAsync(async () => {
        const xt = up(x), lt = T.tensor(labels, [N], "i32");
        const { sums, counts } = segmentSum(xt, lt, k);
        assertClose(await download(sums), ref.sums, { msg: "sums" });
        assertClose(await download(counts), ref.counts, { msg: "counts" });
        assertClose(await download(segmentMean(xt, lt, k)), ref.means, { msg: "means" });
      });
      await gradCheck(
        ([xt]) => segmentMean(xt, T.tensor(labels, [N], "i32"), k),
        ([h]) => cpuSegments(h, labels, k).means,
        [x],
        { msg: `segmentMean (chunk ${chunk})` },
      );
    } finally {
      kmeansConfig.chunkElems = saved;
    }
  }
});

function randX(N: number, D: number): HostTensor {
  const r = rng(N * 31 + D);
  return {
    shape: [N, D],
    data: Float64Array.from({ length: N * D }, () => Math.fround(r() * 2 - 1)),
  };
}

function cpuSegments(x: HostTensor, labels: Int32Array, k: number) {
  const [N, D] = x.shape;
  const sums = new Float64Array(k * D), counts = new Float64Array(k);
  for (let i = 0; i < N; i++) {
    const l = labels[i];
    if (l < 0 || l >= k) continue;
    counts[l]++;
    for (let c = 0; c < D; c++) sums[l * D + c] += x.data[i * D + c];
  }
  const means = sums.map((v, j) => v / Math.max(counts[Math.floor(j / D)], 1));
  return {
    sums: { shape: [k, D], data: sums },
    counts: { shape: [k], data: counts },
    means: { shape: [k, D], data: means },
  };
}

Deno.test("kmeans refuses bad input, naming the op", async () => {
  const x = up(X);
  const bad: [() => Promise<unknown>, RegExp][] = [
    [() => kmeans(x, 200), /kmeans: k must be an integer in \[1, N = 113\]/],
    [() => kmeans(x, 0), /kmeans: k must be/],
    [
      () => kmeans(T.tensor(new Int32Array(10), [5, 2], "i32"), 2),
      /kmeans: points must be f32, got i32 \[5, 2\]/,
    ],
    [() => kmeans(T.tensor(new Float32Array(5)), 2), /kmeans: points must be a non-empty \[N, D\]/],
    [
      () => kmeans(x, 3, { init: T.zeros([2, 5]) }),
      /kmeans: initial centroids must be f32 \[3, 5\]/,
    ],
    [() => kmeans(x, 3, { metric: "manhattan" as "cosine" }), /kmeans: metric must be/],
    [() => kmeans(x, 3, { restarts: 0 }), /kmeans: restarts must be an integer ≥ 1/],
  ];
  for (const [f, re] of bad) await assert.rejects(f, re);
  assert.throws(
    () => segmentSum(x, T.tensor(new Int32Array(3), [3], "i32"), 2),
    /segmentSum: labels must be i32 \[113\]/,
  );
  x.dispose();
});
