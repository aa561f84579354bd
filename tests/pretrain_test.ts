/**
 * CLIP pretraining: CLIP.random (OpenAI's names, shapes and initialisation, every weight a
 * trainable f32 leaf with a correct gradient), the symmetric InfoNCE loss against a float64
 * reference, a tiny pretraining run on a synthetic world (the loss falls; the checkpoint reloads
 * through the normal reader with identical outputs), the compact token table against the full one,
 * resuming, and the evaluation of a pretrained model.
 */
import { assert, assertClose, rng, setup, T } from "./util.ts";
import { CLIP, expectedShapes, inferConfig } from "../model/clip.ts";
import { loadStateDict, type StateDict, toFloat32 } from "../model/weights.ts";
import { loadClipStateDict } from "../model/hf.ts";
import { readSafetensors } from "../model/safetensors.ts";
import { Tokenizer } from "../model/tokenizer.ts";
import { generateWorld, writeWorld, zipWorld } from "../pipeline/world.ts";
import {
  centreBias,
  epochOrder,
  infoNCE,
  isHeldOut,
  loadPairs,
  type PairData,
  type Positives,
  pretrain,
  pretrainConfig,
  type PretrainOptions,
  statePathOf,
  symmetricEigen,
  whitenProjection,
} from "../pipeline/pretrain.ts";
import { evaluatePretrained, recallAt } from "../pipeline/evaluate_pretrained.ts";
import { protoclipExtension } from "../pipeline/protoclip.ts";
import { sharedDir, TINY_CLIP } from "./util.ts";

await setup();

const VOCAB = `${sharedDir()}clip/bpe_simple_vocab_16e6.txt.gz`;
const TINY = TINY_CLIP;
const quiet = () => {};

// one small synthetic world for the whole file: 3 classes × 2 domains × 6 images, 16 px
const tmp = await Deno.makeTempDir({ prefix: "pretrain_test_" });
const worldDir = `${tmp}/world`;
const world = generateWorld({
  seed: 3,
  size: 16,
  perClassPerDomain: 6,
  classes: ["circle", "square", "star"],
  domains: ["photo", "sketch"],
});
writeWorld(worldDir, world);
const pairs: PairData = await loadPairs(worldDir, 16, { log: quiet });

function maxRelDiff(a: StateDict, b: StateDict): [number, string] {
  let worst = 0, at = "";
  for (const [k, w] of a) {
    const x = toFloat32(w), y = toFloat32(b.get(k)!);
    let num = 0, den = 0;
    for (let i = 0; i < x.length; i++) {
      num += (x[i] - y[i]) ** 2;
      den += y[i] ** 2;
    }
    const r = Math.sqrt(num / Math.max(den, 1e-30));
    if (!(r <= worst)) [worst, at] = [r, k];
  }
  return [worst, at];
}

const stats = (a: Float32Array) => {
  let s = 0, s2 = 0, m = 0;
  for (const x of a) {
    s += x;
    s2 += x * x;
    m = Math.max(m, Math.abs(x));
  }
  const mean = s / a.length;
  return { mean, std: Math.sqrt(s2 / a.length - mean * mean), max: m };
};

Deno.test("CLIP.random: OpenAI names and shapes, trainable f32 leaves, OpenAI's initialisation", async () => {
  const c = pretrainConfig({ ...TINY, visionLayers: 2, transformerLayers: 2 });
  const m = CLIP.random(c, 7);
  const sd = await m.stateDict();
  // what the checkpoint reader infers is the configuration it was built with
  assert.deepEqual(inferConfig(sd), c);
  const want = expectedShapes(inferConfig(sd));
  assert.deepEqual([...sd.keys()].sort(), [...want.keys()].sort());
  for (const [k, w] of sd) {
    assert.equal(w.dtype, "F32", k);
    assert.deepEqual(w.shape, want.get(k), k);
  }
  assert.deepEqual([...m.trainable.keys()].sort(), [...want.keys()].sort());
  for (const t of m.trainable.values()) assert.ok(t.requiresGrad && t.dtype === "f32");
  const f = (k: string) => toFloat32(sd.get(k)!);
  assert.ok(Math.abs(f("logit_scale")[0] - Math.log(1 / 0.07)) < 1e-6);
  assert.ok(f("visual.ln_pre.weight").every((x) => x === 1));
  assert.ok(f("transformer.resblocks.1.ln_2.bias").every((x) => x === 0));
  assert.ok(f("transformer.resblocks.0.attn.in_proj_bias").every((x) => x === 0));
  const near = (k: string, std: number, tol = 0.08) => {
    const s = stats(f(k));
    assert.ok(Math.abs(s.std / std - 1) < tol, `${k}: std ${s.std}, expected ${std}`);
    assert.ok(Math.abs(s.mean) < 4 * std / Math.sqrt(f(k).length) + 1e-9, `${k}: mean ${s.mean}`);
  };
  const W = 64, L = 2;
  near("token_embedding.weight", 0.02, 0.01);
  near("positional_embedding", 0.01, 0.15);
  near("transformer.resblocks.0.attn.in_proj_weight", W ** -0.5);
  near("transformer.resblocks.1.mlp.c_fc.weight", (2 * W) ** -0.5);
  near("transformer.resblocks.1.mlp.c_proj.weight", W ** -0.5 * (2 * L) ** -0.5);
  near("text_projection", W ** -0.5);
  near("visual.proj", W ** -0.5);
  // vision blocks keep PyTorch's defaults: xavier-uniform in_proj, U(±1/√fan_in) linears
  const xb = Math.sqrt(6 / (4 * W));
  const ip = stats(f("visual.transformer.resblocks.0.attn.in_proj_weight"));
  assert.ok(ip.max <= xb && ip.max > 0.95 * xb, `in_proj max ${ip.max}, bound ${xb}`);
  near("visual.transformer.resblocks.0.attn.in_proj_weight", xb / Math.sqrt(3));
  const fc = stats(f("visual.transformer.resblocks.1.mlp.c_proj.weight"));
  assert.ok(fc.max <= (4 * W) ** -0.5 && fc.max > 0.95 * (4 * W) ** -0.5);
  // seeded: same seed, same weights; another seed, others
  const again = CLIP.random(c, 7), other = CLIP.random(c, 8);
  assert.deepEqual(await again.w("visual.proj").data(), await m.w("visual.proj").data());
  assert.notDeepEqual(await other.w("visual.proj").data(), await m.w("visual.proj").data());
  for (const x of [m, again, other]) x.dispose();
  assert.throws(
    () => CLIP.random(pretrainConfig({ ...TINY, visionWidth: 96 })),
    /vision width 96 with 1\.5 heads/,
  );
});

Deno.test("a random CLIP's gradient reaches every weight and matches a directional difference", async () => {
  const c = pretrainConfig(TINY);
  const m = CLIP.random(c, 1);
  const tok = await Tokenizer.load(VOCAB);
  const ids = tok.tokenize(pairs.captions.slice(0, 6).map((x) => x[0]), c.contextLength);
  const px = T.tensor(pairs.pixels.slice(0, 6 * 3 * 16 * 16), [6, 3, 16, 16]);
  const loss = () => infoNCE(m.encodeImage(px).features, m.encodeText(ids), m.w("logit_scale"));
  const params = [...m.trainable];
  T.scope(() => T.backward(loss()));
  const grads = new Map<string, Float32Array>();
  for (const [k, p] of params) {
    assert.ok(p.grad, `${k} has no gradient`);
    const g = await p.grad.data() as Float32Array;
    assert.ok(g.some((x) => x !== 0), `${k}: gradient is zero`);
    grads.set(k, g);
    p.grad.dispose();
    p.grad = null;
  }
  // (L(θ + εd) − L(θ − εd)) / 2ε = ⟨∇L, d⟩ for a random direction d over all weights
  const r = rng(5);
  const base = new Map<string, Float32Array>();
  const dirs = new Map<string, Float32Array>();
  let dot = 0;
  for (const [k, p] of params) {
    const w = await p.data() as Float32Array;
    base.set(k, w);
    const d = Float32Array.from(w, () => r() - 0.5);
    dirs.set(k, d);
    const g = grads.get(k)!;
    for (let i = 0; i < d.length; i++) dot += g[i] * d[i];
  }
  const eps = 1e-3;
  const at = async (s: number) => {
    for (const [k, p] of params) {
      const w = base.get(k)!, d = dirs.get(k)!;
      T.writeTensor(p, Float32Array.from(w, (x, i) => x + s * eps * d[i]));
    }
    return await T.scopeAsync(async () => await T.noGrad(loss).item());
  };
  const fd = ((await at(1)) - (await at(-1))) / (2 * eps);
  assert.ok(Math.abs(fd - dot) <= 0.02 * Math.abs(dot), `finite difference ${fd}, ⟨∇L, d⟩ ${dot}`);
  px.dispose();
  m.dispose();
});

Deno.test("pretraining a tiny CLIP lowers the loss; the checkpoint reloads with identical outputs", async () => {
  const out = `${tmp}/tiny.safetensors`;
  // batch = every pair, so each step sees the same batch: the loss is a function of the weights
  const r = await pretrain({
    data: pairs,
    out,
    vocab: VOCAB,
    config: TINY,
    epochs: 6,
    batch: pairs.paths.length,
    lr: 2e-3,
    warmup: 0,
    holdout: 0,
    seed: 4,
    log: quiet,
    keepModel: true,
  });
  const model = r.model!;
  try {
    assert.equal(r.steps, 6);
    assert.equal(r.history.length, 6);
    const [first, last] = [r.history[0].loss, r.history[5].loss];
    assert.ok(last < 0.9 * first, `loss ${first} → ${last}`);
    assert.ok(r.history.every((h) => h.scale <= 100 && h.scale > 0 && Number.isFinite(h.gradNorm)));
    assert.ok(r.imagesPerSec > 0);
    // the normal checkpoint reader, and the metadata
    const sd = await loadClipStateDict(out);
    const again = CLIP.fromStateDict(sd, { file: out });
    const meta = JSON.parse((await readSafetensors(out)).metadata["clipkit.pretrain"]);
    assert.deepEqual(meta.config, pretrainConfig(TINY));
    assert.equal(meta.epochsDone, 6);
    const tok = await Tokenizer.load(VOCAB);
    const ids = tok.tokenize(pairs.captions.slice(0, 8).map((c) => c[0]), 16);
    const px = pairs.pixels.slice(0, 8 * 3 * 16 * 16);
    const feats = async (mm: CLIP) =>
      await T.scopeAsync(async () => {
        const [i, t] = T.noGrad(() => [
          mm.encodeImage(T.tensor(px, [8, 3, 16, 16])).features,
          mm.encodeText(ids),
        ]);
        return [await i.data(), await t.data()];
      });
    const [a, b] = [await feats(model), await feats(again)];
    assert.deepEqual(a[0], b[0]);
    assert.deepEqual(a[1], b[1]);
    // the trained model's own state dict is what was written
    assert.equal(maxRelDiff(await model.stateDict(), sd)[0], 0);
    again.dispose();
  } finally {
    model.dispose();
  }
});

/** Two epochs of batch 18 on the tiny world's 36 pairs, all trained on (4 steps); `o` overrides. */
const pretrainTiny = (o: Partial<PretrainOptions> & { out: string }) =>
  pretrain({
    data: pairs,
    vocab: VOCAB,
    config: TINY,
    epochs: 2,
    batch: 18,
    lr: 1e-3,
    warmup: 1,
    holdout: 0,
    log: quiet,
    ...o,
  });

Deno.test("training only the seen token rows equals training the whole table", async () => {
  const run = async (embedRows: "seen" | "all", o: Partial<PretrainOptions> = {}, tag = "") => {
    const out = `${tmp}/rows_${embedRows}${tag}.safetensors`;
    const r = await pretrainTiny({ out, weightDecay: 0.5, embedRows, embedInitStd: 1, ...o });
    return { r, sd: await loadStateDict(out) };
  };
  const seen = await run("seen"), all = await run("all");
  // also when the text tower's rate is its own (locked, ramped, scaled): the unseen rows decay
  // at that rate
  const textRate = { epochs: 3, lockTextEpochs: 1, unlockWarmup: 3, textLrScale: 0.5 };
  const [seenT, allT] = [await run("seen", textRate, "_t"), await run("all", textRate, "_t")];
  const [worstT, atT] = maxRelDiff(seenT.sd, allT.sd);
  assert.ok(worstT < 1e-4, `own text rate: largest relative difference ${worstT} at ${atT}`);
  // the temperature starts where logitScaleInit puts it (a few steps of lr 1e-3 from there)
  const ls = toFloat32(seen.sd.get("logit_scale")!)[0];
  assert.ok(Math.abs(ls - Math.log(1 / 0.07)) < 0.01, `logit_scale ${ls}`);
  const hot = await pretrainTiny({
    out: `${tmp}/hot.safetensors`,
    batch: 36,
    logitScaleInit: 50,
  });
  assert.equal(hot.steps, 2);
  const hotScale =
    toFloat32((await loadStateDict(`${tmp}/hot.safetensors`)).get("logit_scale")!)[0];
  assert.ok(Math.abs(hotScale - Math.log(50)) < 0.01, `logit_scale ${hotScale} (ln 50 = 3.91)`);
  await assert.rejects(
    () => pretrain({ data: pairs, out: `${tmp}/bad.safetensors`, logitScaleInit: 200, log: quiet }),
    /logitScaleInit must be in \[1, 100\]/,
  );
  assert.equal(seen.r.steps, 4);
  const [worst, at] = maxRelDiff(seen.sd, all.sd);
  assert.ok(worst < 1e-4, `largest relative difference ${worst} at ${at}`);
  // unseen rows were decayed, not left alone: compare with the initial table (OpenAI's 0.02);
  // the seen rows started at embedInitStd (1 here)
  const init = CLIP.random(pretrainConfig(TINY), 0);
  const t0 = await init.w("token_embedding.weight").data() as Float32Array;
  const t1 = toFloat32(seen.sd.get("token_embedding.weight")!);
  const used = new Set((await Tokenizer.load(VOCAB)).tokenize(pairs.captions.flat(), 16));
  const row = 64 * [...Array(49408).keys()].find((id) => id > 1000 && !used.has(id))!;
  assert.ok(t1[row] !== t0[row] && Math.abs(t1[row] / t0[row] - 1) < 0.01);
  const rms = (t: Float32Array, id: number) =>
    Math.sqrt(t.subarray(64 * id, 64 * id + 64).reduce((a, x) => a + x * x, 0) / 64);
  const some = [...used].filter((id) => id > 0).slice(0, 8);
  const r = some.map((id) => rms(t1, id) / rms(t0, id));
  assert.ok(r.every((x) => x > 20), `seen rows not scaled up from 0.02: ratios ${r}`);
  init.dispose();
});

Deno.test("resume (with the ProtoCLIP extension) reaches the uninterrupted run's weights", async () => {
  // a fresh extension per run: pretrain disposes the one it was given
  const proto = () => protoclipExtension(pretrainConfig(TINY), { seed: 2, k: 3 });
  const opts = {
    data: pairs,
    vocab: VOCAB,
    config: TINY,
    epochs: 3,
    batch: 12,
    lr: 1e-3,
    warmup: 1,
    holdout: 0.2,
    seed: 2,
    log: quiet,
  };
  const straight = await pretrain({
    ...opts,
    out: `${tmp}/straight.safetensors`,
    extension: proto(),
  });
  // the extension's loss term joins after its InfoNCE-only first epoch
  const spe = straight.stepsPerEpoch;
  assert.ok(straight.history.slice(0, spe).every((h) => !h.terms?.proto));
  for (const h of straight.history.slice(spe)) {
    assert.ok(h.terms!.proto > 0, `step ${h.step}: proto ${h.terms?.proto}`);
    assert.ok(Math.abs(h.loss - h.infoNCE - h.terms!.proto) < 1e-4);
  }
  const out = `${tmp}/resumed.safetensors`;
  const first = await pretrain({ ...opts, out, maxSteps: spe, extension: proto() });
  assert.equal(first.epochs, 1);
  const saved = await readSafetensors(out);
  assert.equal(JSON.parse(saved.metadata["clipkit.pretrain"]).epochsDone, 1);
  assert.equal(JSON.parse(saved.metadata["clipkit.pretrain"]).extension.name, "protoclip");
  assert.ok(![...saved.tensors.keys()].some((k) => k.startsWith("ext.")));
  const state = (await readSafetensors(statePathOf(out))).tensors;
  assert.ok(state.has("ext.logit_scale_proto") && state.has("optim.visual.proj.exp_avg"));
  const rest = await pretrain({ ...opts, out, resume: true, extension: proto() });
  assert.equal(rest.resumedFrom, 1);
  assert.equal(rest.steps, straight.steps);
  assert.equal(rest.history[0].step, spe);
  assert.deepEqual(
    rest.history.map((h) => [h.loss, h.terms?.proto]),
    straight.history.slice(first.steps).map((h) => [h.loss, h.terms?.proto]),
  );
  const [worst, at] = maxRelDiff(
    await loadStateDict(out),
    await loadStateDict(`${tmp}/straight.safetensors`),
  );
  assert.ok(worst < 1e-6, `resumed run differs by ${worst} at ${at}`);
  // a finished run resumes to nothing; another run's state is refused, naming the file
  const done = await pretrain({ ...opts, out, resume: true, extension: proto() });
  assert.equal(done.history.length, 0);
  await assert.rejects(
    () => pretrain({ ...opts, batch: 6, out, resume: true }),
    new RegExp(`${statePathOf(out).replace(/[.]/g, "\\.")} belongs to another run`),
  );
});

Deno.test("evaluation of a pretrained model: zero-shot per domain, linear probe, retrieval", async () => {
  const out = `${tmp}/eval.safetensors`;
  await pretrain({
    data: pairs,
    out,
    vocab: VOCAB,
    config: TINY,
    epochs: 2,
    batch: 12,
    holdout: 0.25,
    seed: 1,
    log: quiet,
  });
  const rep = await evaluatePretrained({ model: out, data: pairs, vocab: VOCAB, log: quiet });
  // the split is the one pretraining held out (read from the checkpoint's metadata)
  const held = pairs.paths.filter((p) => isHeldOut(p, 0.25, 1)).length;
  assert.deepEqual(rep.split, {
    train: pairs.paths.length - held,
    test: held,
    holdout: 0.25,
    seed: 1,
    seenInTraining: false,
  });
  const frac = (x: number | null) => assert.ok(x !== null && x >= 0 && x <= 1, `${x}`);
  frac(rep.zeroShot.overall.plain);
  frac(rep.zeroShot.overall.domain);
  const domains = Object.keys(rep.zeroShot.perDomain);
  assert.ok(domains.every((d) => ["photo", "sketch"].includes(d)));
  assert.equal(Object.values(rep.zeroShot.perDomain).reduce((a, d) => a + d.n, 0), held);
  for (const d of Object.values(rep.zeroShot.perDomain)) [d.plain, d.domain].forEach(frac);
  assert.ok(rep.linearProbe);
  frac(rep.linearProbe.trainAccuracy);
  frac(rep.linearProbe.testAccuracy);
  assert.ok(
    rep.linearProbe.trainAccuracy > 0.5,
    `probe train accuracy ${rep.linearProbe.trainAccuracy}`,
  );
  for (const r of [rep.retrieval.imageToText, rep.retrieval.textToImage]) {
    frac(r.r1);
    frac(r.r5);
    assert.ok(r.r1 <= r.r5);
  }
  assert.equal(rep.retrieval.pairs, held);
});

Deno.test("recall@k ranks by the best true candidate; ties do not count against it", () => {
  // 3 queries × 4 candidates
  const s = Float32Array.from([
    0.9,
    0.1,
    0.2,
    0.3, // truth 0: rank 0
    0.5,
    0.4,
    0.6,
    0.7, // truth 1: rank 3
    0.2,
    0.2,
    0.1,
    0.0, // truth {2, 1}: best 0.2 (c1), tie with c0: rank 0
  ]);
  const truth = [[0], [1], [2, 1]];
  assert.deepEqual(recallAt(s, 3, 4, (q) => truth[q], [1, 3, 4]), [2 / 3, 2 / 3, 1]);
});

Deno.test("pairs: captions from captions.jsonl (folder or zip), the class template otherwise", async () => {
  assert.equal(pairs.paths.length, 36);
  assert.equal(pairs.fallback, 0);
  const byPath = new Map(world.items.map((i) => [i.path, i.caption]));
  pairs.paths.forEach((p, i) => assert.deepEqual(pairs.captions[i], [byPath.get(p)]));
  assert.deepEqual(pairs.domainNames, ["photo", "sketch"]);
  // the same world as a zip gives the same pairs
  const zip = `${tmp}/world.zip`;
  await Deno.writeFile(zip, zipWorld(world));
  const z = await loadPairs(zip, 16, { log: quiet });
  assert.equal(z.digest, pairs.digest);
  assert.deepEqual(z.pixels, pairs.pixels);
  // several captions per image; images without one fall back to the class template
  const lines = (await Deno.readTextFile(`${worldDir}/captions.jsonl`)).trim().split("\n");
  const kept = lines.slice(1).map((l) => JSON.parse(l));
  kept.push({ path: kept[0].path, caption: "another caption" });
  await Deno.writeTextFile(
    `${worldDir}/captions.jsonl`,
    kept.map((k) => JSON.stringify(k)).join("\n"),
  );
  const logs: string[] = [];
  const p2 = await loadPairs(worldDir, 16, { log: (s) => logs.push(s) });
  assert.equal(p2.fallback, 1);
  const first = JSON.parse(lines[0]).path;
  assert.deepEqual(p2.captions[p2.paths.indexOf(first)], ["a photo of a circle."]);
  assert.equal(p2.captions[p2.paths.indexOf(kept[0].path)].length, 2);
  assert.ok(logs.some((l) => /1 image\(s\) without a caption/.test(l)));
  await Deno.writeTextFile(`${worldDir}/captions.jsonl`, lines.join("\n") + "\n");
  // a captions file the caller names replaces the dataset's own; a missing one is refused
  const other = `${tmp}/other-captions.jsonl`;
  await Deno.writeTextFile(other, JSON.stringify({ path: first, caption: "a new wording" }) + "\n");
  const p3 = await loadPairs(worldDir, 16, { log: quiet, captionsFile: other });
  assert.deepEqual(p3.captions[p3.paths.indexOf(first)], ["a new wording"]);
  assert.equal(p3.fallback, 35);
  await assert.rejects(
    () => loadPairs(worldDir, 16, { log: quiet, captionsFile: `${tmp}/nope.jsonl` }),
    /captions file .*nope\.jsonl not found/,
  );
});

globalThis.addEventListener("unload", () => {
  try {
    Deno.removeSync(tmp, { recursive: true });
  } catch { /* already gone */ }
});

Deno.test("centreInit: the shifted layer-norm bias makes a tower's mean feature zero", async () => {
  const model = CLIP.random(pretrainConfig({ ...TINY, embedDim: 24 }), 3);
  const tok = await Tokenizer.load(VOCAB);
  const captions = [
    "a sketch of a star",
    "a photo of two hearts",
    "a cartoon of a ring",
    "an arrow",
  ];
  const ids = tok.tokenize(captions, model.config.contextLength);
  const feats = async () => {
    const f = T.noGrad(() => model.encodeText(ids));
    const v = await f.data() as Float32Array;
    f.dispose();
    return v;
  };
  const E = 24, before = await feats();
  const meanNorm = (v: Float32Array) => {
    let s = 0;
    for (let k = 0; k < E; k++) {
      let m = 0;
      for (let i = 0; i < captions.length; i++) m += v[i * E + k] / captions.length;
      s += m * m;
    }
    return Math.sqrt(s);
  };
  await centreBias(model, "ln_final.bias", "text_projection", (m) => m.encodeText(ids));
  const after = await feats();
  assert.ok(meanNorm(before) > 0.1, `mean feature ${meanNorm(before)} already small`);
  assert.ok(meanNorm(after) < 1e-4 * meanNorm(before), `mean feature ${meanNorm(after)} not zero`);
  // only the mean moved: differences between captions are unchanged
  for (let k = 0; k < E; k++) {
    const d0 = before[k] - before[E + k], d1 = after[k] - after[E + k];
    assert.ok(Math.abs(d0 - d1) < 1e-5, `feature ${k}: ${d0} vs ${d1}`);
  }
  model.dispose();
});

/** Mean and covariance over the rows of an [n, E] host matrix (float64, the tests' reference). */
function hostMoments(v: Float32Array, n: number, E: number) {
  const mean = new Float64Array(E), C = new Float64Array(E * E);
  for (let i = 0; i < n; i++) for (let a = 0; a < E; a++) mean[a] += v[i * E + a] / n;
  for (let i = 0; i < n; i++) {
    for (let a = 0; a < E; a++) {
      for (let b = 0; b < E; b++) {
        C[a * E + b] += ((v[i * E + a] - mean[a]) * (v[i * E + b] - mean[b])) / n;
      }
    }
  }
  return { mean, C };
}

Deno.test("symmetricEigen: A V = V diag(λ) and VᵀV = I on a random symmetric matrix", () => {
  const r = rng(11), n = 9;
  const A = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = i; j < n; j++) A[i * n + j] = A[j * n + i] = r() * 2 - 1;
  }
  const { values, vectors: V } = symmetricEigen(A, n);
  for (let i = 0; i < n; i++) {
    for (let k = 0; k < n; k++) {
      let av = 0, vv = 0;
      for (let j = 0; j < n; j++) {
        av += A[i * n + j] * V[j * n + k];
        vv += V[j * n + i] * V[j * n + k];
      }
      assert.ok(Math.abs(av - values[k] * V[i * n + k]) < 1e-10, `(AV)[${i},${k}]`);
      assert.ok(Math.abs(vv - (i === k ? 1 : 0)) < 1e-10, `(VᵀV)[${i},${k}] = ${vv}`);
    }
  }
});

Deno.test("whitenInit: after whitenProjection the features' covariance is σ̄²·I", async () => {
  const E = 8;
  const model = CLIP.random(pretrainConfig({ ...TINY, embedDim: E }), 3);
  const tok = await Tokenizer.load(VOCAB);
  const shapes = ["star", "heart", "ring", "arrow", "circle", "square", "cross"];
  const frames = ["a sketch of a %", "a photo of two %s", "% in a cartoon", "a painting of %s"];
  const captions = frames.flatMap((f) => shapes.map((s) => f.replace("%", s)));
  const ids = tok.tokenize(captions, model.config.contextLength);
  const n = captions.length;
  const cov = async () => {
    const f = T.noGrad(() => model.encodeText(ids));
    const v = await f.data() as Float32Array;
    f.dispose();
    return hostMoments(v, n, E).C;
  };
  const before = await cov();
  const trace = (C: Float64Array) => Array.from({ length: E }, (_, a) => C[a * E + a]);
  const avg = trace(before).reduce((s, x) => s + x, 0) / E;
  const { values, vectors: V } = symmetricEigen(before, E);
  // a random tower's features are far from isotropic
  const spread = Math.max(...values) / avg;
  assert.ok(spread > 2, `largest eigenvalue only ${spread.toFixed(2)}× the mean`);
  await whitenProjection(model, "text_projection", (m) => m.encodeText(ids));
  const after = await cov();
  // σ̄² in every direction, but for ε (10⁻³σ̄²): V diag(σ̄²λ/(λ+ε)) Vᵀ
  for (let a = 0; a < E; a++) {
    for (let b = 0; b < E; b++) {
      let want = 0;
      for (let k = 0; k < E; k++) {
        want += V[a * E + k] * V[b * E + k] * avg * values[k] / (values[k] + 1e-3 * avg);
      }
      assert.ok(
        Math.abs(after[a * E + b] - want) < 1e-3 * avg,
        `cov[${a},${b}] = ${after[a * E + b]}, want ${want}`,
      );
      if (a === b) assert.ok(want > 0.9 * avg, `direction ${a} barely whitened: ${want}`);
    }
  }
  model.dispose();
});

Deno.test("lockTextEpochs: a locked text tower keeps its initial weights while the image tower trains", async () => {
  const out = `${tmp}/locked.safetensors`;
  await pretrainTiny({ out, lockTextEpochs: 2 });
  const sd = await loadStateDict(out);
  const init = CLIP.random(pretrainConfig(TINY), 0);
  const start = await init.stateDict();
  let text = 0, visual = 0;
  for (const [k, t] of start) {
    if (k === "logit_scale") continue;
    const same = maxRelDiff(new Map([[k, t]]), new Map([[k, sd.get(k)!]]))[0] === 0;
    if (k.startsWith("visual.")) visual += same ? 0 : 1;
    else {
      assert.ok(same, `text weight ${k} moved while locked`);
      text++;
    }
  }
  assert.ok(text > 5 && visual > 5, `${text} text weights kept, ${visual} visual weights moved`);
  init.dispose();
  await assert.rejects(
    () => pretrain({ data: pairs, out: `${tmp}/bad.safetensors`, lockTextEpochs: 0.5, log: quiet }),
    /lockTextEpochs must be an integer/,
  );
});

Deno.test("whitenInit through pretrain: the locked text tower's caption features vary equally in every direction they span", async () => {
  const tok = await Tokenizer.load(VOCAB);
  const captions = [...new Set(pairs.captions.flat())];
  const spectrum = async (o: Partial<PretrainOptions>, name: string) => {
    const out = `${tmp}/whiten_${name}.safetensors`;
    // locked throughout, so the saved text tower is the start's
    await pretrainTiny({ out, lockTextEpochs: 2, embedInitStd: 1, ...o });
    const model = CLIP.fromStateDict(await loadStateDict(out));
    const f = T.noGrad(() => model.encodeText(tok.tokenize(captions, model.config.contextLength)));
    const v = await f.data() as Float32Array, [n, E] = f.shape;
    f.dispose();
    model.dispose();
    const { mean, C } = hostMoments(v, n, E);
    const meanNorm = Math.hypot(...mean), values = [...symmetricEigen(C, E).values];
    const top = Math.max(...values);
    // directions within 10% of the largest variance
    return { meanNorm, top, n, flat: values.filter((x) => x > 0.9 * top).length };
  };
  const centred = await spectrum({ centreInit: true }, "centred");
  const whitened = await spectrum({ whitenInit: true }, "whitened");
  // 36 captions span at most 35 directions; whitened, all but the faintest vary alike
  assert.ok(centred.flat <= 2, `centred only: ${centred.flat} directions near the top`);
  assert.ok(
    whitened.flat >= 0.7 * (whitened.n - 1),
    `whitened: ${whitened.flat} of ${whitened.n - 1}`,
  );
  // whitenInit centres too
  for (const s of [centred, whitened]) {
    assert.ok(s.meanNorm < 1e-3 * Math.sqrt(s.top), `mean feature ${s.meanNorm}`);
  }
});

/**
 * The largest change of any weight of each tower between a tiny run's start (seed 0) and the
 * checkpoint at `out`; the temperature and the token table (trained as compact rows) left out.
 */
async function towerMoves(out: string) {
  const start = CLIP.random(pretrainConfig(TINY), 0);
  const init = await start.stateDict();
  start.dispose();
  const sd = await loadStateDict(out);
  let text = 0, visual = 0;
  for (const [k, t] of init) {
    if (k === "logit_scale" || k === "token_embedding.weight") continue;
    const a = toFloat32(t), b = toFloat32(sd.get(k)!);
    let d = 0;
    for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
    if (k.startsWith("visual.")) visual = Math.max(visual, d);
    else text = Math.max(text, d);
  }
  return { text, visual };
}

Deno.test("textLrScale: the text tower moves at its own fraction of the learning rate", async () => {
  const moved = async (textLrScale: number) => {
    const out = `${tmp}/textlr_${textLrScale}.safetensors`;
    await pretrainTiny({ out, textLrScale });
    return await towerMoves(out);
  };
  const full = await moved(1), tenth = await moved(0.1);
  // Adam's steps scale with the learning rate, whatever the gradients
  const ratio = tenth.text / full.text;
  assert.ok(ratio > 0.05 && ratio < 0.2, `text moved ${tenth.text} against ${full.text}`);
  assert.ok(
    tenth.visual > 0.5 * full.visual,
    `visual moved ${tenth.visual} against ${full.visual}`,
  );
  await assert.rejects(
    () => pretrainTiny({ out: `${tmp}/bad.safetensors`, textLrScale: 0 }),
    /textLrScale must be > 0/,
  );
});

Deno.test("unlockWarmup: the text tower's rate ramps up from 0 once the lock ends", async () => {
  const textMoved = async (unlockWarmup: number) => {
    const out = `${tmp}/unlock_${unlockWarmup}.safetensors`;
    // 2 steps an epoch: locked for steps 0–1, trained for steps 2–3
    await pretrainTiny({ out, lockTextEpochs: 1, unlockWarmup });
    return (await towerMoves(out)).text;
  };
  const none = await textMoved(0), ramp = await textMoved(4), slow = await textMoved(1e6);
  // 2 trained steps at lr·1/4 and lr·2/4 instead of lr and lr: Adam's steps scale with the rate
  assert.ok(ramp > 0.2 * none && ramp < 0.6 * none, `ramp ${ramp} against ${none}`);
  assert.ok(slow < 1e-4 * none, `a ramp of 10⁶ steps moved the text tower by ${slow}`);
  await assert.rejects(
    () => pretrainTiny({ out: `${tmp}/bad.safetensors`, unlockWarmup: 1.5 }),
    /unlockWarmup must be an integer/,
  );
});

Deno.test('positives "class": pairs of a class are targets together; with one caption per class it is plain InfoNCE', async () => {
  const losses = async (data: PairData, positives: Positives, name: string) => {
    // spread logits from the start (at OpenAI's start all features are parallel, and every
    // target gives nearly ln B)
    const r = await pretrainTiny({
      data,
      out: `${tmp}/pos_${name}.safetensors`,
      positives,
      centreInit: true,
      logitScaleInit: 100,
      embedInitStd: 1,
    });
    return r.history.map((h) => h.loss);
  };
  // the world's captions vary within a class: the class target changes the training
  const cls = await losses(pairs, "class", "class"), pair = await losses(pairs, "pair", "pair");
  assert.equal(cls.length, pair.length);
  assert.ok(cls.some((l, i) => Math.abs(l - pair[i]) > 0.05 * pair[i]), `${cls} vs ${pair}`);
  // one caption per class: its features are tied, so the class target gives CLIP's loss itself
  const oneCaption = {
    ...pairs,
    captions: Array.from(pairs.labels, (l) => [`a photo of a ${pairs.classnames[l]}.`]),
  };
  const a = await losses(oneCaption, "class", "one_class"),
    b = await losses(oneCaption, "pair", "one_pair");
  assertClose(a, b, { rtol: 1e-4, msg: "tied captions" });
  await assert.rejects(
    () => pretrainTiny({ out: `${tmp}/bad.safetensors`, positives: "caption" as Positives }),
    /positives must be one of pair, class/,
  );
});

Deno.test("batchByDomain: every batch holds one domain; whole batches, no pair twice, seeded", async () => {
  const train = Array.from({ length: 70 }, (_, i) => i);
  const domains = Int32Array.from(train, (i) => (i * 7) % 3); // 24, 23 and 23 pairs
  const order = epochOrder(T.hostRng(5), train, 8, domains);
  assert.equal(order.length, 8 * (3 + 2 + 2));
  assert.equal(new Set(order).size, order.length);
  for (let b = 0; b < order.length; b += 8) {
    const ds = new Set(order.slice(b, b + 8).map((i) => domains[i]));
    assert.equal(ds.size, 1, `batch ${b / 8} mixes domains ${[...ds]}`);
  }
  // the batches of different domains are interleaved, not in domain order
  const firsts = Array.from({ length: 7 }, (_, b) => domains[order[8 * b]]);
  assert.notDeepEqual(firsts, [...firsts].sort());
  assert.deepEqual(epochOrder(T.hostRng(5), train, 8, domains), order);
  // without domains: the plain shuffle, cut to whole batches
  assert.deepEqual(
    epochOrder(T.hostRng(5), train, 8, null),
    T.hostRng(5).shuffle([...train]).slice(0, 64),
  );
  // a run with it trains, and refuses data without domains
  const out = `${tmp}/bydomain.safetensors`;
  const r = await pretrainTiny({ out, batchByDomain: true });
  assert.equal(r.steps, 4); // 2 epochs × one batch of 18 per domain
  const noDomains = { ...pairs, domains: new Int32Array(pairs.domains.length).fill(-1) };
  await assert.rejects(
    () => pretrainTiny({ data: noDomains, out: `${tmp}/bad.safetensors`, batchByDomain: true }),
    /batchByDomain needs a domain/,
  );
});
