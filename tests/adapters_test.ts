/**
 * The training-free and feature-level methods on the golden micro CLIP: zero-shot CLIP (single
 * template and ensemble), the linear probe, CLIP-Adapter, Tip-Adapter and Tip-Adapter-F.
 * Forward passes against direct model calls or float64 host twins, gradients against central
 * differences of the twins, the α/β grid search and the L2 sweep against host brute force, and
 * a few optimiser steps on separable synthetic features.
 */
import { assert, rng, setup, T } from "./util.ts";
import { golden, tokenizer, within } from "./golden.ts";
import {
  type FeatureSet,
  type Method,
  type MethodInstance,
  resolveOptions,
} from "../pipeline/method.ts";
import { cpuHitCounts, hitCounts, type ZeroShot, zeroshot } from "../pipeline/methods/zeroshot.ts";
import { type LinearProbe, linearProbe } from "../pipeline/methods/linear_probe.ts";
import { type ClipAdapter, clipAdapter } from "../pipeline/methods/clip_adapter.ts";
import {
  searchGrid,
  type TipAdapter,
  tipAdapter,
  tipAdapterF,
} from "../pipeline/methods/tip_adapter.ts";
import { resolveTemplates } from "../pipeline/templates.ts";

await setup();
const tok = await tokenizer();
const g = await golden("micro");
const model = g.model;
const CLASSES = ["dog", "elephant", "giraffe", "guitar", "horse", "house", "person"];
const C = CLASSES.length;
const D = model.config.embedDim;
const SCALE = Math.exp((await model.w("logit_scale").data())[0]);

function create<M extends MethodInstance>(
  m: Method,
  options: Record<string, unknown> = {},
  seed = 1,
) {
  return m.create({
    model,
    tokenizer: tok,
    classnames: CLASSES,
    options: resolveOptions(m, options),
    seed,
  }) as M;
}

// ----- host helpers (float64) ----------------------------------------------------------------

function rand(n: number, seed: number, lo = -1, hi = 1): Float32Array {
  const r = rng(seed);
  return Float32Array.from({ length: n }, () => lo + (hi - lo) * r());
}

function normRows(x: ArrayLike<number>, cols: number): Float64Array {
  const out = new Float64Array(x.length);
  for (let r = 0; r < x.length / cols; r++) {
    let s = 0;
    for (let k = 0; k < cols; k++) s += x[r * cols + k] ** 2;
    const inv = 1 / Math.max(Math.sqrt(s), 1e-12);
    for (let k = 0; k < cols; k++) out[r * cols + k] = x[r * cols + k] * inv;
  }
  return out;
}

/** a [M, K] · b[N, K]ᵀ */
function mmT(a: ArrayLike<number>, b: ArrayLike<number>, M: number, N: number, K: number) {
  const out = new Float64Array(M * N);
  for (let i = 0; i < M; i++) {
    for (let j = 0; j < N; j++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += a[i * K + k] * b[j * K + k];
      out[i * N + j] = s;
    }
  }
  return out;
}

function meanCE(logits: ArrayLike<number>, labels: ArrayLike<number>, classes: number): number {
  const B = labels.length;
  let loss = 0;
  for (let b = 0; b < B; b++) {
    let m = -Infinity;
    for (let c = 0; c < classes; c++) m = Math.max(m, logits[b * classes + c]);
    let s = 0;
    for (let c = 0; c < classes; c++) s += Math.exp(logits[b * classes + c] - m);
    loss += m + Math.log(s) - logits[b * classes + labels[b]];
  }
  return loss / B;
}

/** Central differences of a host loss with respect to every element of `x` (in place). */
function numGrad(x: Float64Array, loss: () => number, eps = 1e-6): Float64Array {
  const out = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const v = x[i];
    x[i] = v + eps;
    const p = loss();
    x[i] = v - eps;
    const m = loss();
    x[i] = v;
    out[i] = (p - m) / (2 * eps);
  }
  return out;
}

function featureSet(
  x: Float32Array,
  labels: Int32Array,
  aug?: { data: Float32Array; passes: number },
): FeatureSet {
  const N = labels.length;
  return {
    features: T.tensor(x, [N, D]),
    augmented: aug ? T.tensor(aug.data, [aug.passes, N, D]) : undefined,
    labels: T.tensor(labels, [N], "i32"),
    hostLabels: labels,
    classes: C,
  };
}
const disposeSet = (s: FeatureSet) =>
  [s.features, s.augmented, s.labels].forEach((t) => t?.dispose());

/** Features clustered around one random centre per class: separable by a linear head. */
function clustered(perClass: number, seed: number, spread = 0.3, centreSeed = 1000) {
  const centres = rand(C * D, centreSeed);
  const noise = rand(perClass * C * D, seed, -spread, spread);
  const labels = Int32Array.from({ length: perClass * C }, (_, n) => n % C);
  const x = Float32Array.from(
    noise,
    (v, i) => v + 2 * centres[labels[Math.floor(i / D)] * D + (i % D)],
  );
  return { x, labels };
}

const predictFeatures = (m: MethodInstance, f: T.Tensor) =>
  m.predict(undefined as unknown as T.Tensor, f);
const hostData = async (t: T.Tensor) => Float64Array.from(await t.data());

// ----- zero-shot -----------------------------------------------------------------------------

Deno.test("zeroshot: logits equal model.logits(encodeImage, encodeText of 'a photo of a {c}.')", async () => {
  const m = create<ZeroShot>(zeroshot);
  assert.equal(m.params.size, 0);
  assert.equal(zeroshot.defaults.optimizer, "none");
  assert.equal(zeroshot.defaults.epochs, 0);
  await T.scopeAsync(async () => {
    const pixels = T.tensor(g.f("pixels"), g.shape("pixels"));
    const ids = tok.tokenize(CLASSES.map((c) => `a photo of a ${c}.`), model.config.contextLength);
    const ref = T.noGrad(() =>
      model.logits(model.encodeImage(pixels).features, model.encodeText(ids))
    );
    const ours = m.predict(pixels);
    assert.deepEqual(ours.shape, [4, C]);
    within(await ours.data(), await ref.data(), 1e-5, "zero-shot logits from pixels");
    const feats = T.noGrad(() => model.encodeImage(pixels).features);
    within(
      await m.predict(pixels, feats).data(),
      await ref.data(),
      1e-5,
      "zero-shot logits from cached features",
    );
    const out = m.forward({
      views: {},
      features: feats,
      labels: T.tensor([0, 2, 5, 4], [4], "i32"),
    });
    within(await out.logits.data(), await ref.data(), 1e-5, "forward logits");
    assert.ok(Number.isFinite(await out.loss.item()));
  });
  m.dispose();
});

Deno.test("zeroshot: a template ensemble is the normalised mean of normalised prompt features", async () => {
  const templates = [
    "a photo of a {}.",
    "a sketch of a {}.",
    "art of the {}.",
    "a {} in a video game.",
  ];
  const m = create<ZeroShot>(zeroshot, { templates });
  await T.scopeAsync(async () => {
    const sum = new Float64Array(C * D);
    for (const t of templates) {
      const ids = tok.tokenize(CLASSES.map((c) => t.replace("{}", c)), model.config.contextLength);
      const f = normRows(await T.noGrad(() => model.encodeText(ids)).data(), D);
      f.forEach((v, i) => (sum[i] += v));
    }
    const W = normRows(sum, D);
    within(await m.classWeights.data(), W, 1e-6, "ensemble class weights");
    const pixels = T.tensor(g.f("pixels"), g.shape("pixels"));
    const img = normRows(await T.noGrad(() => model.encodeImage(pixels).features).data(), D);
    const ref = mmT(img, W, 4, C, D).map((v) => SCALE * v);
    within(await m.predict(pixels).data(), ref, 1e-5, "ensemble logits");
    // switching the class list rebuilds the weights
    m.setClasses(CLASSES.slice(0, 3));
    assert.deepEqual(m.classWeights.shape, [3, D]);
    within(
      await m.classWeights.data(),
      W.subarray(0, 3 * D),
      1e-6,
      "weights of the new class list",
    );
  });
  m.dispose();
  assert.deepEqual(resolveTemplates("imagenet7").length, 7);
  assert.deepEqual(resolveTemplates(["single", "a sketch of a {}."]), [
    "a photo of a {}.",
    "a sketch of a {}.",
  ]);
  assert.throws(
    () => resolveTemplates("a photo of a cat"),
    /templates: "a photo of a cat" is neither/,
  );
  assert.throws(() => create(zeroshot, { template: "x" }), /zeroshot: unknown option "template"/);
});

// ----- hitCounts -----------------------------------------------------------------------------

Deno.test("hitCounts: grid accuracy table equals the float64 argmax count, with and without base", async () => {
  for (
    const [B, N, Cc, A, withBase] of [[3, 17, 5, 4, true], [2, 9, 1, 3, false], [
      5,
      33,
      12,
      7,
      true,
    ]] as const
  ) {
    const base = rand(N * Cc, 1), scores = rand(B * N * Cc, 2), alphas = rand(A, 3, 0.1, 3);
    const labels = Int32Array.from(rand(N, 4, 0, Cc), Math.floor);
    const ref = cpuHitCounts(withBase ? base : null, scores, alphas, labels, [B, N, Cc]);
    const got = await T.scopeAsync(async () =>
      await hitCounts(
        withBase ? T.tensor(base, [N, Cc]) : null,
        T.tensor(scores, [B, N, Cc]),
        T.tensor(alphas),
        T.tensor(labels, [N], "i32"),
      ).data()
    );
    assert.deepEqual(Array.from(got), Array.from(ref), `B=${B} N=${N} C=${Cc} A=${A}`);
  }
  // a strided (sliced) base and labels view read through offsets
  await T.scopeAsync(async () => {
    const base = rand(10 * 4, 5),
      scores = rand(2 * 6 * 4, 6),
      labels = Int32Array.from(rand(10, 7, 0, 4), Math.floor);
    const got = await hitCounts(
      T.narrow(T.tensor(base, [10, 4]), 0, 4, 6),
      T.tensor(scores, [2, 6, 4]),
      T.tensor([0.5, 2]),
      T.narrow(T.tensor(labels, [10], "i32"), 0, 4, 6),
    ).data();
    const ref = cpuHitCounts(base.subarray(16), scores, [0.5, 2], labels.subarray(4), [2, 6, 4]);
    assert.deepEqual(Array.from(got), Array.from(ref), "views with offsets");
    assert.throws(
      () =>
        hitCounts(
          T.tensor(base, [10, 4]),
          T.tensor(scores, [2, 6, 4]),
          T.tensor([1]),
          T.tensor(labels, [10], "i32"),
        ),
      /hitCounts: base \[10, 4\] does not fit scores \[2, 6, 4\]/,
    );
  });
});

// ----- linear probe --------------------------------------------------------------------------

Deno.test("linear probe: logits and head gradients match a float64 twin (central differences)", async () => {
  const m = create<LinearProbe>(linearProbe);
  assert.deepEqual([...m.params.keys()], ["head.weight", "head.bias"]);
  assert.deepEqual(m.params.get("head.weight")!.shape, [C, D]);
  const W = Float64Array.from(rand(C * D, 11, -3, 3)), bias = Float64Array.from(rand(C, 12));
  m.load(new Map([["head.weight", Float32Array.from(W)], ["head.bias", Float32Array.from(bias)]]));
  const B = 6, x = rand(B * D, 13, -2, 2), labels = Int32Array.from([0, 3, 6, 2, 2, 5]);
  const xn = normRows(x, D);
  const hostLogits = () => mmT(xn, W, B, C, D).map((v, i) => v + bias[i % C]);
  const loss = () => meanCE(hostLogits(), labels, C);
  await T.scopeAsync(async () => {
    const out = m.forward({
      views: {},
      features: T.tensor(x, [B, D]),
      labels: T.tensor(labels, [B], "i32"),
    });
    within(await out.logits.data(), hostLogits(), 1e-5, "linear probe logits");
    within(await out.loss.data(), [loss()], 1e-5, "linear probe loss");
    T.backward(out.loss);
    within(
      await m.params.get("head.weight")!.grad!.data(),
      numGrad(W, loss),
      1e-4,
      "d loss / d head.weight",
    );
    within(
      await m.params.get("head.bias")!.grad!.data(),
      numGrad(bias, loss),
      1e-4,
      "d loss / d head.bias",
    );
  });
  assert.throws(
    () => m.setClasses(CLASSES.slice(0, 3)),
    /linear-probe: the head is trained for 7 classes/,
  );
  assert.throws(
    () => m.load(new Map([["head.weight", new Float32Array(C * D)]])),
    /linear-probe: load: missing head.bias/,
  );
  assert.throws(
    () =>
      m.load(new Map([["head.weight", new Float32Array(3)], ["head.bias", new Float32Array(C)]])),
    /linear-probe: load: head.weight has 3 values, expected \[7, 64\]/,
  );
  m.dispose();
  // the text init starts as the zero-shot classifier
  const zs = create<ZeroShot>(zeroshot), lt = create<LinearProbe>(linearProbe, { init: "text" });
  await T.scopeAsync(async () => {
    const f = T.tensor(rand(3 * D, 14), [3, D]);
    within(
      await predictFeatures(lt, f).data(),
      await predictFeatures(zs, f).data(),
      1e-5,
      "text-initialised probe",
    );
  });
  zs.dispose();
  lt.dispose();
});

/** Float64 twin of the sweep's full-batch Nesterov fit for one λ (PyTorch SGD semantics, step
 * lr/(1 + λ)). */
function hostSweepFit(
  xn: Float64Array,
  labels: Int32Array,
  lam: number,
  steps: number,
  lr: number,
): { W: Float64Array; b: Float64Array } {
  const N = labels.length, W = new Float64Array(C * D), b = new Float64Array(C);
  const mW = new Float64Array(C * D), mb = new Float64Array(C), mu = 0.9;
  for (let s = 0; s < steps; s++) {
    const logits = mmT(xn, W, N, C, D).map((v, i) => v + b[i % C]);
    const gW = new Float64Array(C * D), gb = new Float64Array(C);
    for (let n = 0; n < N; n++) {
      let m = -Infinity;
      for (let c = 0; c < C; c++) m = Math.max(m, logits[n * C + c]);
      let z = 0;
      for (let c = 0; c < C; c++) z += Math.exp(logits[n * C + c] - m);
      for (let c = 0; c < C; c++) {
        const d = (Math.exp(logits[n * C + c] - m) / z - (labels[n] === c ? 1 : 0)) / N;
        gb[c] += d;
        for (let k = 0; k < D; k++) gW[c * D + k] += d * xn[n * D + k];
      }
    }
    const step = lr / (1 + lam);
    for (let i = 0; i < C * D; i++) {
      const gi = gW[i] + lam * W[i];
      mW[i] = mu * mW[i] + gi;
      W[i] -= step * (gi + mu * mW[i]);
    }
    for (let c = 0; c < C; c++) {
      mb[c] = mu * mb[c] + gb[c];
      b[c] -= step * (gb[c] + mu * mb[c]);
    }
  }
  return { W, b };
}

Deno.test("linear probe: the L2 sweep keeps the head with the best validation accuracy", async () => {
  const grid = [1e-4, 1e-2, 0.3, 3];
  const steps = 40, lr = 1;
  const m = create<LinearProbe>(linearProbe, { sweep: true, sweepGrid: grid, sweepSteps: steps });
  const tr = clustered(3, 21, 4.5), va = clustered(4, 22, 4.5);
  const vaX = va.x;
  const train = featureSet(tr.x, tr.labels), val = featureSet(vaX, va.labels);
  m.fit(train);
  const res = await m.tune!(val);
  const hits = m.lastSweep!.hits;
  // host brute force: fit each λ in float64, count validation hits
  const xn = normRows(tr.x, D), vn = normRows(vaX, D);
  const hostHits = grid.map((lam) => {
    const { W, b } = hostSweepFit(xn, tr.labels, lam, steps, lr);
    const lg = mmT(vn, W, va.labels.length, C, D).map((v, i) => v + b[i % C]);
    return cpuHitCounts(null, lg, [1], va.labels, [1, va.labels.length, C])[0];
  });
  console.log(
    `  sweep hits ${
      Array.from(hits)
    } (host ${hostHits}) of ${va.labels.length}; chose λ = ${res.weightDecay}`,
  );
  assert.deepEqual(Array.from(hits), hostHits, "per-λ validation hits");
  let best = 0;
  hostHits.forEach((h, k) => (best = h >= hostHits[best] ? k : best));
  assert.equal(res.weightDecay, grid[best]);
  assert.deepEqual(m.state(), { weightDecay: grid[best] });
  // the chosen head was written into the parameters: it matches the host fit
  const { W, b } = hostSweepFit(xn, tr.labels, grid[best], steps, lr);
  within(await m.params.get("head.weight")!.data(), W, 1e-3, "swept head.weight");
  within(await m.params.get("head.bias")!.data(), b, 1e-3, "swept head.bias");
  const acc = await T.scopeAsync(async () => {
    const p = await predictFeatures(m, val.features).data();
    return cpuHitCounts(null, p, [1], va.labels, [1, va.labels.length, C])[0] / va.labels.length;
  });
  assert.ok(
    Math.abs(acc - res.valAccuracy) < 1e-9,
    `reported ${res.valAccuracy}, predict gives ${acc}`,
  );
  disposeSet(train);
  disposeSet(val);
  m.dispose();
});

// ----- CLIP-Adapter --------------------------------------------------------------------------

Deno.test("CLIP-Adapter: logits and adapter gradients match a float64 twin (central differences)", async () => {
  const m = create<ClipAdapter>(clipAdapter);
  assert.deepEqual([...m.params.keys()], ["adapter.fc1.weight", "adapter.fc2.weight"]);
  const H = D / 4;
  assert.deepEqual(m.params.get("adapter.fc1.weight")!.shape, [H, D]);
  assert.deepEqual(m.params.get("adapter.fc2.weight")!.shape, [D, H]);
  const w1 = await hostData(m.params.get("adapter.fc1.weight")!);
  const w2 = await hostData(m.params.get("adapter.fc2.weight")!);
  const Wt = await hostData(m.classWeights);
  const B = 5, x = rand(B * D, 31, -2, 2), labels = Int32Array.from([1, 0, 6, 3, 3]);
  const hostLogits = () => {
    const h = mmT(x, w1, B, H, D).map((v) => Math.max(v, 0));
    const a = mmT(h, w2, B, D, H).map((v) => Math.max(v, 0));
    const f = normRows(a.map((v, i) => 0.2 * v + 0.8 * x[i]), D);
    return mmT(f, Wt, B, C, D).map((v) => SCALE * v);
  };
  const loss = () => meanCE(hostLogits(), labels, C);
  await T.scopeAsync(async () => {
    const out = m.forward({
      views: {},
      features: T.tensor(x, [B, D]),
      labels: T.tensor(labels, [B], "i32"),
    });
    within(await out.logits.data(), hostLogits(), 1e-5, "CLIP-Adapter logits");
    T.backward(out.loss);
    within(
      await m.params.get("adapter.fc1.weight")!.grad!.data(),
      numGrad(w1, loss),
      1e-4,
      "d loss / d adapter.fc1.weight",
    );
    within(
      await m.params.get("adapter.fc2.weight")!.grad!.data(),
      numGrad(w2, loss),
      1e-4,
      "d loss / d adapter.fc2.weight",
    );
    // predict from pixels = predict from the image tower's features
    const pixels = T.tensor(g.f("pixels"), g.shape("pixels"));
    const feats = T.noGrad(() => model.encodeImage(pixels).features);
    within(
      await m.predict(pixels).data(),
      await m.predict(pixels, feats).data(),
      1e-6,
      "pixels vs features",
    );
  });
  m.dispose();
  assert.throws(
    () => create(clipAdapter, { reduction: 128 }),
    /clip-adapter: reduction 128 leaves no hidden unit/,
  );
});

// ----- Tip-Adapter ---------------------------------------------------------------------------

/** Float64 Tip-Adapter logits: SCALE·f̂ Wᵀ + α·exp(−β(1 − f̂ Fᵀ)) L. */
function hostTip(
  f: ArrayLike<number>,
  keys: ArrayLike<number>,
  labels: Int32Array,
  Wt: ArrayLike<number>,
  alpha: number,
  beta: number,
) {
  const B = f.length / D, NK = labels.length;
  const fn = normRows(f, D);
  const clip = mmT(fn, Wt, B, C, D);
  const aff = mmT(fn, keys, B, NK, D);
  const out = new Float64Array(B * C);
  for (let b = 0; b < B; b++) {
    for (let c = 0; c < C; c++) out[b * C + c] = SCALE * clip[b * C + c];
    for (let k = 0; k < NK; k++) {
      out[b * C + labels[k]] += alpha * Math.exp(-beta * (1 - aff[b * NK + k]));
    }
  }
  return out;
}

Deno.test("Tip-Adapter: cache from augmented passes and logits match the float64 reference", async () => {
  const m = create<TipAdapter>(tipAdapter, { alpha: 1.7, beta: 3.2 });
  assert.equal(m.params.size, 0);
  const N = 2 * C, P = 3;
  const labels = Int32Array.from({ length: N }, (_, n) => (n * 3) % C);
  const x = rand(N * D, 41), aug = rand(P * N * D, 42);
  const train = featureSet(x, labels, { data: aug, passes: P });
  assert.throws(
    () => m.predict(undefined as unknown as T.Tensor, train.features),
    /tip-adapter: the cache is empty: call fit\(train\) or load a checkpoint first/,
  );
  m.fit(train);
  // keys: the raw features averaged over passes, then normalised
  const avg = new Float64Array(N * D);
  for (let p = 0; p < P; p++) for (let i = 0; i < N * D; i++) avg[i] += aug[p * N * D + i] / P;
  const keys = normRows(avg, D);
  within(await m.keys!.data(), keys, 1e-6, "cache keys");
  const onehot = new Float64Array(N * C);
  labels.forEach((y, n) => (onehot[n * C + y] = 1));
  within(await m.values!.data(), onehot, 0, "cache values");
  const Wt = await hostData(m.classWeights);
  const f = rand(5 * D, 43, -2, 2);
  await T.scopeAsync(async () => {
    const ours = await predictFeatures(m, T.tensor(f, [5, D])).data();
    within(ours, hostTip(f, keys, labels, Wt, 1.7, 3.2), 1e-5, "Tip-Adapter logits (α 1.7, β 3.2)");
  });
  // without augmented passes the keys are the normalised test-transform features
  const plain = featureSet(x, labels);
  m.fit(plain);
  within(await m.keys!.data(), normRows(x, D), 1e-6, "cache keys without augmentation");
  disposeSet(train);
  disposeSet(plain);
  m.dispose();
});

/** Host brute force of the α/β search: correct counts [β, α] and the first best (β-major). */
function hostSearch(
  f: Float32Array,
  keys: ArrayLike<number>,
  cacheLabels: Int32Array,
  valLabels: Int32Array,
  Wt: ArrayLike<number>,
  betas: number[],
  alphas: number[],
) {
  const Nv = valLabels.length;
  const counts: number[] = [];
  let best = 0;
  for (const beta of betas) {
    const zero = hostTip(f, keys, cacheLabels, Wt, 0, beta);
    const one = hostTip(f, keys, cacheLabels, Wt, 1, beta);
    const cache = one.map((v, i) => v - zero[i]);
    const hits = cpuHitCounts(zero, cache, alphas, valLabels, [1, Nv, C]);
    for (const h of hits) {
      if (h > counts[best] || !counts.length) best = counts.length;
      counts.push(h);
    }
  }
  return { counts, best };
}

Deno.test("Tip-Adapter: the batched α/β grid search picks the best validation grid point", async () => {
  const perClass = 2, NK = perClass * C;
  const tr = clustered(perClass, 51, 3), va = clustered(4, 52, 3.2);
  const vaX = va.x;
  const train = featureSet(tr.x, tr.labels), val = featureSet(vaX, va.labels);
  for (const opts of [{}, { searchSteps: [37, 9], searchScale: [12, 10], searchChunk: 100 }]) {
    const m = create<TipAdapter>(tipAdapter, opts);
    m.fit(train);
    const res = await m.tune(val);
    const o = resolveOptions(tipAdapter, opts);
    const [sB, sA] = o.searchScale as number[], [nB, nA] = o.searchSteps as number[];
    const betas = searchGrid(sB, nB), alphas = searchGrid(sA, nA);
    assert.equal(betas.length, nB);
    assert.ok(Math.abs(betas[1] - betas[0] - (sB - 0.1) / nB) < 1e-12 && betas[0] === 0.1);
    const host = hostSearch(
      vaX,
      normRows(tr.x, D),
      tr.labels,
      va.labels,
      await hostData(m.classWeights),
      betas,
      alphas,
    );
    const gpu = Array.from(m.lastSearch!.counts);
    assert.equal(gpu.length, nB * nA);
    const differ = gpu.filter((v, k) => v !== host.counts[k]).length;
    const lo = Math.min(...host.counts), hi = Math.max(...host.counts);
    console.log(
      `  ${
        JSON.stringify(opts)
      }: ${nB}×${nA} grid, hits ${lo}..${hi} of ${va.labels.length}, chose α ${
        res.alpha.toFixed(3)
      } β ${res.beta.toFixed(3)}, ${differ} table entries differ from float64`,
    );
    assert.ok(hi > lo, "the grid must matter for this test to mean anything");
    assert.equal(differ, 0, "accuracy table");
    assert.equal(res.beta, betas[Math.floor(host.best / nA)]);
    assert.equal(res.alpha, alphas[host.best % nA]);
    assert.deepEqual(m.state(), res);
    // predict now uses the chosen pair
    const p = await T.scopeAsync(async () => await predictFeatures(m, val.features).data());
    assert.equal(
      cpuHitCounts(null, p, [1], va.labels, [1, va.labels.length, C])[0],
      host.counts[host.best],
    );
    m.dispose();
  }
  assert.equal(NK, train.features.shape[0]);
  disposeSet(train);
  disposeSet(val);
});

Deno.test("Tip-Adapter: a new class list keeps cache entries by class name (unseen classes: CLIP alone)", async () => {
  const m = create<TipAdapter>(tipAdapter, { alpha: 2, beta: 4 });
  const tr = clustered(2, 81, 1);
  const train = featureSet(tr.x, tr.labels);
  m.fit(train);
  const f = rand(4 * D, 82, -2, 2);
  const keys = normRows(tr.x, D);
  const next = ["person", "cat", "dog"];
  m.setClasses(next);
  const Wt = await hostData(m.classWeights);
  // host: entries of dog/person map to their new columns, the rest drop out
  const mapped = Int32Array.from(tr.labels, (y) => next.indexOf(CLASSES[y]));
  const B = 4, ref = new Float64Array(B * 3);
  const fn = normRows(f, D),
    clip = mmT(fn, Wt, B, 3, D),
    aff = mmT(fn, keys, B, tr.labels.length, D);
  for (let b = 0; b < B; b++) {
    for (let c = 0; c < 3; c++) ref[b * 3 + c] = SCALE * clip[b * 3 + c];
    mapped.forEach((c, k) =>
      c >= 0 && (ref[b * 3 + c] += 2 * Math.exp(-4 * (1 - aff[b * tr.labels.length + k])))
    );
  }
  await T.scopeAsync(async () => {
    within(
      await predictFeatures(m, T.tensor(f, [B, D])).data(),
      ref,
      1e-5,
      "logits over the new list",
    );
  });
  // the checkpointed values stay those of the training list
  assert.deepEqual(m.params.get("cache_values")!.shape, [tr.labels.length, C]);
  m.setClasses(CLASSES);
  const Wt2 = await hostData(m.classWeights);
  await T.scopeAsync(async () => {
    within(
      await predictFeatures(m, T.tensor(f, [B, D])).data(),
      hostTip(f, keys, tr.labels, Wt2, 2, 4),
      1e-5,
      "back on the training list",
    );
  });
  disposeSet(train);
  m.dispose();
});

Deno.test("Tip-Adapter-F: cache_keys train (gradients match a float64 twin), state() round-trips", async () => {
  assert.equal(tipAdapterF.defaults.optimizer, "adamw");
  assert.equal(tipAdapterF.defaults.eps, 1e-4);
  assert.equal(tipAdapterF.defaults.epochs, 20);
  assert.equal(tipAdapterF.defaults.batch, 256);
  const m = create<TipAdapter>(tipAdapterF, { alpha: 1.3, beta: 2.1 });
  assert.throws(
    () => m.load(new Map([["cache_keys", new Float32Array(4)]])),
    /tip-adapter-f: load: a checkpoint holds cache_keys and cache_values/,
  );
  const tr = clustered(2, 61, 2), va = clustered(3, 62, 2.4);
  const train = featureSet(tr.x, tr.labels), val = featureSet(va.x, va.labels);
  m.fit(train);
  const NK = tr.labels.length;
  assert.deepEqual([...m.params.keys()], ["cache_keys", "cache_values"]);
  assert.deepEqual(m.params.get("cache_keys")!.shape, [NK, D]);
  assert.deepEqual(m.params.get("cache_values")!.shape, [NK, C]);
  const onehot = await m.values!.data() as Float32Array;
  // move the keys off F so the check is not at the initial point
  const keys = Float64Array.from(normRows(tr.x, D), (v, i) => v + 0.05 * rand(NK * D, 62)[i]);
  m.load(new Map([["cache_keys", Float32Array.from(keys)], ["cache_values", onehot]]));
  const Wt = await hostData(m.classWeights);
  const B = 6, f = rand(B * D, 63, -2, 2), labels = Int32Array.from([0, 1, 2, 3, 4, 6]);
  const loss = () => meanCE(hostTip(f, keys, tr.labels, Wt, 1.3, 2.1), labels, C);
  await T.scopeAsync(async () => {
    const out = m.forward({
      views: {},
      features: T.tensor(f, [B, D]),
      labels: T.tensor(labels, [B], "i32"),
    });
    within(await out.loss.data(), [loss()], 1e-5, "Tip-Adapter-F loss");
    T.backward(out.loss);
    const grad = await m.params.get("cache_keys")!.grad!.data();
    assert.ok(
      grad.some((v) => v !== 0) && grad.every(Number.isFinite),
      "gradient reaches cache_keys",
    );
    within(grad, numGrad(keys, loss), 1e-4, "d loss / d cache_keys");
    assert.equal(m.params.get("cache_values")!.grad, null, "the values never receive a gradient");
  });
  m.params.get("cache_keys")!.grad!.dispose();
  m.params.get("cache_keys")!.grad = null;
  const st = { ...(await m.tune(val)) };
  assert.deepEqual(m.state(), st);
  // a checkpoint = the params (cache included) + state(); evaluation restores without fit()
  const saved = new Map<string, Float32Array>();
  for (const [k, t] of m.params) saved.set(k, (await t.data()) as Float32Array);
  const m2 = create<TipAdapter>(tipAdapterF);
  m2.load(saved);
  assert.notDeepEqual(m2.state(), st, "the search moved α, β off their defaults");
  m2.restore(st);
  assert.deepEqual(m2.state(), st);
  // resuming: fit() first, then the checkpoint overwrites the cache
  const m3 = create<TipAdapter>(tipAdapterF, st);
  m3.fit(train);
  m3.load(saved);
  await T.scopeAsync(async () => {
    const a = await predictFeatures(m, val.features).data();
    assert.deepEqual(
      Array.from(await predictFeatures(m2, val.features).data()),
      Array.from(a),
      "restored (no fit)",
    );
    assert.deepEqual(
      Array.from(await predictFeatures(m3, val.features).data()),
      Array.from(a),
      "resumed (fit, load)",
    );
  });
  assert.throws(
    () =>
      m2.load(
        new Map([["cache_keys", saved.get("cache_keys")!], [
          "cache_values",
          new Float32Array(NK * C),
        ]]),
      ),
    /tip-adapter-f: load: cache_values row 0 is not one-hot/,
  );
  m3.dispose();
  disposeSet(train);
  disposeSet(val);
  m.dispose();
  m2.dispose();
});

// ----- a few steps on separable features ----------------------------------------------------

async function lossAfterSteps(method: Method, opts: Record<string, unknown>, steps: number) {
  const m = create(method, opts, 3);
  const tr = clustered(4, 71, 1);
  const train = featureSet(tr.x, tr.labels);
  m.fit?.(train);
  const before = new Map<string, Float32Array>();
  for (const [k, t] of m.params) before.set(k, (await t.data()) as Float32Array);
  const d = method.defaults;
  const params = [...m.params.values()];
  const opt = d.optimizer === "sgd"
    ? new T.SGD(params, { lr: d.lr, momentum: d.momentum, weightDecay: d.weightDecay })
    : new T.AdamW(params, { lr: d.lr, eps: d.eps, weightDecay: d.weightDecay });
  const losses: number[] = [];
  for (let s = 0; s <= steps; s++) {
    const l = await T.scopeAsync(async () => {
      const out = m.forward({ views: {}, features: train.features, labels: train.labels });
      const v = await out.loss.item();
      T.backward(out.loss);
      return v;
    });
    losses.push(l);
    opt.step();
    opt.zeroGrad();
  }
  opt.dispose();
  const changed: string[] = [];
  for (const [k, t] of m.params) {
    const now = await t.data();
    if (now.some((v, i) => v !== before.get(k)![i])) changed.push(k);
  }
  disposeSet(train);
  m.dispose();
  return { losses, changed };
}

Deno.test("a few optimiser steps (paper defaults) lower the loss on separable features", async () => {
  for (
    const [method, opts, steps, trained] of [
      [linearProbe, {}, 10, ["head.weight", "head.bias"]],
      [clipAdapter, {}, 10, ["adapter.fc1.weight", "adapter.fc2.weight"]],
      [tipAdapterF, {}, 10, ["cache_keys"]],
    ] as const
  ) {
    const { losses, changed } = await lossAfterSteps(method, opts, steps);
    assert.deepEqual(changed, trained, `${method.name}: what the optimiser moved`);
    console.log(`  ${method.name}: loss ${losses[0].toFixed(4)} → ${losses[steps].toFixed(4)}`);
    assert.ok(losses.every(Number.isFinite), `${method.name}: finite losses`);
    assert.ok(
      losses[steps] < losses[0],
      `${method.name}: loss went from ${losses[0]} to ${losses[steps]}`,
    );
  }
});

Deno.test("graphs name each method's stages; options are validated", () => {
  for (const m of [zeroshot, linearProbe, clipAdapter, tipAdapter, tipAdapterF]) {
    const stages = m.graph(resolveOptions(m, {})).map((s) => s.stage);
    assert.deepEqual(stages, ["load", "views", "encode", "prompt", "loss", "step"], m.name);
    assert.ok(m.frozenImageFeatures, m.name);
  }
  assert.equal(tipAdapter.defaults.optimizer, "none");
  assert.throws(
    () => create(tipAdapter, { searchSteps: [200] }),
    /tip-adapter: searchSteps must be two positive integers/,
  );
  assert.throws(
    () => create(linearProbe, { init: "ones" }),
    /linear-probe: init must be "zeros" or "text"/,
  );
});

Deno.test("every method frees what it allocates (create, fit, train step, tune, predict, dispose)", async () => {
  const tr = clustered(2, 91, 1), va = clustered(2, 92, 1);
  for (
    const [method, opts] of [
      [zeroshot, {}],
      [linearProbe, { sweep: true, sweepGrid: [1e-3, 1e-1], sweepSteps: 3 }],
      [clipAdapter, {}],
      [tipAdapter, { searchSteps: [5, 3] }],
      [tipAdapterF, { searchSteps: [5, 3] }],
    ] as const
  ) {
    const train = featureSet(tr.x, tr.labels), val = featureSet(va.x, va.labels);
    const before = T.memory().bytesInUse;
    const m = create(method, opts);
    m.fit?.(train);
    await T.scopeAsync(async () => {
      const out = m.forward({ views: {}, features: train.features, labels: train.labels });
      if (out.loss.requiresGrad) T.backward(out.loss);
      await out.loss.data();
    });
    for (const p of m.params.values()) {
      p.grad?.dispose();
      p.grad = null;
    }
    await m.tune?.(val);
    await T.scopeAsync(async () => await predictFeatures(m, val.features).data());
    m.dispose();
    assert.equal(T.memory().bytesInUse, before, `${method.name}: bytes in use after dispose`);
    disposeSet(train);
    disposeSet(val);
  }
});
