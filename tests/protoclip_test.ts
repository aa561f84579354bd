/**
 * ProtoCLIP's building blocks against their float64 references (pipeline/protoclip.ts): InfoNCE
 * and L_proto forward and gradients (features and both temperatures), the logit-scale cap and
 * clamp, the teacher's soft targets, Prototypical Back Translation, a whole episode (clusters,
 * prototypes, tables, batch targets), the external teacher, the first-epoch schedule, the heads.
 */
import {
  assert,
  assertClose,
  download,
  gradCheck,
  type HostTensor,
  randHost,
  rng,
  setup,
  T,
  upload,
} from "./util.ts";
import { cpuKmeans } from "../kernels/kmeans.ts";
import {
  backTranslate,
  buildEpisode,
  clampLogitScale,
  cpuBackTranslate,
  cpuInfoNCE,
  cpuProtoLoss,
  cpuTeacherTargets,
  episodeTargets,
  externalLoss,
  externalPrototypes,
  groupTargets,
  infoNCE,
  logitScaleValue,
  ProjectionHead,
  PROTOCLIP,
  protoclipExtension,
  protoclipLoss,
  protoclipWeights,
  ProtoHeads,
  protoLoss,
  softTargets,
  teacherTargets,
} from "../pipeline/protoclip.ts";

await setup();

const scalarHost = (v: number): HostTensor => ({ shape: [], data: Float64Array.from([v]) });
const lossHost = (v: number): HostTensor => scalarHost(v);

/** Random soft targets [n, k] (rows sum to 1). */
function softHost(n: number, k: number, seed: number): HostTensor {
  const h = randHost([n, k], seed, 0.05, 1);
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let c = 0; c < k; c++) s += h.data[i * k + c];
    for (let c = 0; c < k; c++) h.data[i * k + c] /= s;
  }
  return h;
}

function normaliseHost(h: HostTensor): HostTensor {
  const [n, d] = h.shape;
  const out = Float64Array.from(h.data);
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let c = 0; c < d; c++) s += out[i * d + c] ** 2;
    for (let c = 0; c < d; c++) out[i * d + c] /= Math.sqrt(s);
  }
  return { shape: [n, d], data: out };
}

Deno.test("infoNCE matches the reference, forward and gradients", async () => {
  for (const [B, D] of [[5, 4], [1, 3], [7, 6]]) {
    const img = randHost([B, D], B * 10 + 1), txt = randHost([B, D], B * 10 + 2);
    for (const s of [PROTOCLIP.logitScaleInit, 1.3]) {
      await T.scopeAsync(async () => {
        const got = await infoNCE(upload(img), upload(txt), upload(scalarHost(s))).item();
        assertClose([got], [cpuInfoNCE(img, txt, s)], { rtol: 1e-5, msg: `B ${B} s ${s}` });
      });
    }
    // already normalised inputs: normalize false gives the same loss
    await T.scopeAsync(async () => {
      const a = normaliseHost(img), b = normaliseHost(txt);
      const got = await infoNCE(upload(a), upload(b), upload(scalarHost(2)), { normalize: false })
        .item();
      assertClose([got], [cpuInfoNCE(img, txt, 2)], { rtol: 1e-5, msg: "pre-normalised" });
    });
  }
  const img = randHost([4, 3], 5), txt = randHost([4, 3], 6);
  await gradCheck(
    ([a, b, s]) => infoNCE(a, b, s),
    ([a, b, s]) => lossHost(cpuInfoNCE(a, b, s.data[0])),
    [img, txt, scalarHost(1.1)],
    { msg: "infoNCE" },
  );
});

Deno.test("infoNCE with positives: pairs of one group are each other's targets", async () => {
  const img = randHost([6, 4], 31), txt = randHost([6, 4], 32);
  const groups = [0, 3, 0, 1, 3, 0];
  assert.equal(groupTargets([4, 1, 2]), null); // all distinct: the diagonal
  await T.scopeAsync(async () => {
    const t = await download(groupTargets(groups)!);
    assertClose(Array.from(t.data.slice(0, 6)), [1 / 3, 0, 1 / 3, 0, 0, 1 / 3], { rtol: 1e-6 });
    assertClose(Array.from(t.data.slice(6, 12)), [0, 0.5, 0, 0, 0.5, 0], { rtol: 1e-6 });
    const s = upload(scalarHost(1.7));
    const got = await infoNCE(upload(img), upload(txt), s, { positives: groups }).item();
    assertClose([got], [cpuInfoNCE(img, txt, 1.7, true, groups)], { rtol: 1e-5, msg: "groups" });
    // distinct ids are plain InfoNCE; shared ones change the loss
    const plain = await infoNCE(upload(img), upload(txt), s).item();
    const distinct = await infoNCE(upload(img), upload(txt), s, { positives: [5, 4, 3, 2, 1, 0] })
      .item();
    assertClose([distinct], [plain], { rtol: 1e-6, msg: "distinct ids" });
    assert.ok(Math.abs(got - plain) > 1e-3, `${got} vs ${plain}`);
    assert.throws(() => infoNCE(upload(img), upload(txt), s, { positives: [0, 1] }), /2 group ids/);
  });
  await gradCheck(
    ([a, b, s]) => infoNCE(a, b, s, { positives: groups }),
    ([a, b, s]) => lossHost(cpuInfoNCE(a, b, s.data[0], true, groups)),
    [img, txt, scalarHost(1.1)],
    { msg: "infoNCE positives" },
  );
});

Deno.test("the logit scale is capped at 100 and clamped to [0, ln 100]", async () => {
  await T.scopeAsync(async () => {
    // the forward cap: exp(5) would be 148; the gradient is zero beyond the cap
    const s = T.param(T.tensor([5], []));
    const v = logitScaleValue(s);
    assertClose([await v.item()], [100], { rtol: 1e-6, msg: "capped" });
    T.backward(v);
    assert.equal(await s.grad!.item(), 0);
    const s2 = T.param(T.tensor([2], []));
    T.backward(logitScaleValue(s2));
    assertClose([await s2.grad!.item()], [Math.exp(2)], { rtol: 1e-6, msg: "below the cap" });
    // the loss uses the capped value
    const img = randHost([3, 4], 1), txt = randHost([3, 4], 2);
    const got = await infoNCE(upload(img), upload(txt), T.tensor([7], [])).item();
    assertClose([got], [cpuInfoNCE(img, txt, Math.log(100))], { rtol: 1e-5, msg: "loss cap" });
    // the in-place clamp after a step
    for (const [x, want] of [[5, Math.log(100)], [-0.5, 0], [2, 2]]) {
      const p = T.param(T.tensor([x], []));
      clampLogitScale(p);
      assertClose([await p.item()], [want], { rtol: 1e-7, msg: `clamp ${x}` });
    }
  });
  const heads = new ProtoHeads(6, { outDim: 4, seed: 1 });
  assertClose([await heads.logitScaleProto.item()], [Math.log(1 / 0.07)], { rtol: 1e-7 });
  T.writeTensor(heads.logitScaleProto, Float32Array.from([9]));
  heads.clamp();
  assertClose([await heads.logitScaleProto.item()], [Math.log(100)], { rtol: 1e-7 });
  heads.dispose();
});

Deno.test("teacher soft targets sum to 1 and match the reference", async () => {
  const k = 5, D = 4;
  // centroids of normalised features: norms below 1, as K-means means are
  const c = randHost([k, D], 3, -0.5, 0.5);
  for (const tau of [PROTOCLIP.teacherTemperature, 0.5]) {
    await T.scopeAsync(async () => {
      const table = await download(teacherTargets(upload(c), tau));
      const ref = cpuTeacherTargets(c, tau);
      assertClose(table, ref, { rtol: 1e-4, atol: 1e-6, msg: `table τ ${tau}` });
      for (let i = 0; i < k; i++) {
        let s = 0;
        for (let j = 0; j < k; j++) s += table.data[i * k + j];
        assertClose([s], [1], { rtol: 1e-6, atol: 1e-6, msg: `row ${i} sums to 1` });
      }
      // a sample's target is its cluster's row
      const labels = [4, 0, 0, 2, 3, 1, 4];
      const got = await download(softTargets(upload(c), T.tensor(labels, [7], "i32"), tau));
      const want = labels.flatMap((l) => Array.from(ref.data.subarray(l * k, l * k + k)));
      assertClose(got, { shape: [7, k], data: Float64Array.from(want) }, {
        rtol: 1e-4,
        atol: 1e-6,
        msg: "per sample",
      });
    });
  }
  // τ = 0.01 makes the target peaked on the sample's own cluster when centroids are apart
  await T.scopeAsync(async () => {
    const apart = normaliseHost(randHost([3, 6], 8));
    const t = await download(teacherTargets(upload(apart)));
    for (let i = 0; i < 3; i++) assert.ok(t.data[i * 3 + i] > 0.9, `row ${i} peaked on itself`);
  });
});

Deno.test("Prototypical Back Translation: segment means of the student features", async () => {
  const N = 17, D = 5, k = 4;
  const f = randHost([N, D], 12);
  const labels = Array.from({ length: N }, (_, i) => (i * 5) % 3); // cluster 3 empty
  await T.scopeAsync(async () => {
    const got = await download(backTranslate(upload(f), T.tensor(labels, [N], "i32"), k));
    assertClose(got, cpuBackTranslate(f, labels, k), { msg: "PBT" });
    assert.ok(got.data.slice(3 * D).every((v) => v === 0), "empty cluster: zeros");
  });
});

Deno.test("L_proto matches the reference, forward and gradients", async () => {
  const B = 6, D = 4, kT = 3, kI = 5;
  const img = randHost([B, D], 21), txt = randHost([B, D], 22);
  const pImg = randHost([kT, D], 23, -0.6, 0.6), pTxt = randHost([kI, D], 24, -0.6, 0.6);
  const tImg = softHost(B, kT, 25), tTxt = softHost(B, kI, 26);
  const s = PROTOCLIP.logitScaleInit;
  await T.scopeAsync(async () => {
    const got = await protoLoss(
      upload(img),
      upload(txt),
      { img: upload(pImg), txt: upload(pTxt) },
      { img: upload(tImg), txt: upload(tTxt) },
      upload(scalarHost(s)),
    ).item();
    const want = cpuProtoLoss(img, txt, { img: pImg, txt: pTxt }, { img: tImg, txt: tTxt }, s);
    assertClose([got], [want], { rtol: 1e-5, msg: "soft targets" });
    // hard labels (the external teacher's form)
    const li = [0, 2, 1, 1, 0, 2], lt = [4, 0, 3, 1, 2, 2];
    const hard = await protoLoss(
      upload(img),
      upload(txt),
      { img: upload(pImg), txt: upload(pTxt) },
      { img: T.tensor(li, [B], "i32"), txt: T.tensor(lt, [B], "i32") },
      upload(scalarHost(s)),
    ).item();
    assertClose(
      [hard],
      [cpuProtoLoss(img, txt, { img: pImg, txt: pTxt }, { img: li, txt: lt }, s)],
      {
        rtol: 1e-5,
        msg: "hard labels",
      },
    );
  });
  // gradients wrt the features and logit_scale_proto (prototypes and targets are constants)
  await gradCheck(
    ([a, b, pi, pt, ti, tt, sc]) => protoLoss(a, b, { img: pi, txt: pt }, { img: ti, txt: tt }, sc),
    ([a, b, pi, pt, ti, tt, sc]) =>
      lossHost(cpuProtoLoss(a, b, { img: pi, txt: pt }, { img: ti, txt: tt }, sc.data[0])),
    [img, txt, pImg, pTxt, tImg, tTxt, scalarHost(1.7)],
    { wrt: [0, 1, 6], msg: "L_proto" },
  );
  // beyond the cap the scale gets no gradient, the features still do
  await gradCheck(
    ([a, b, pi, pt, ti, tt, sc]) => protoLoss(a, b, { img: pi, txt: pt }, { img: ti, txt: tt }, sc),
    ([a, b, pi, pt, ti, tt, sc]) =>
      lossHost(cpuProtoLoss(a, b, { img: pi, txt: pt }, { img: ti, txt: tt }, sc.data[0])),
    [img, txt, pImg, pTxt, tImg, tTxt, scalarHost(4.9)],
    { wrt: [0, 1, 6], msg: "L_proto capped" },
  );
});

/** Paired features of an episode: images grouped by `gi`, texts by `gt` (different groupings),
 * around random unit directions. */
function pairedEpisode(N: number, D: number, groups: number, seed: number) {
  const r = rng(seed);
  const dirs = (n: number) =>
    Array.from({ length: n }, () => Array.from({ length: D }, () => r() * 2 - 1));
  const ci = dirs(groups), ct = dirs(groups);
  const gi = Array.from({ length: N }, () => Math.floor(r() * groups));
  const gt = gi.map((g, i) => (i % 4 === 0 ? (g + 1) % groups : g)); // texts regroup a quarter
  const make = (c: number[][], g: number[]) => ({
    shape: [N, D],
    data: Float64Array.from(g.flatMap((k) => c[k].map((v) => Math.fround(v + 0.08 * (r() - 0.5))))),
  });
  return { img: make(ci, gi), txt: make(ct, gt) };
}

Deno.test("an episode: clusters, back-translated prototypes, teacher tables, batch targets", async () => {
  const N = 60, D = 6, k = 4, seed = 5;
  const { img, txt } = pairedEpisode(N, D, k, 3);
  const ni = normaliseHost(img), nt = normaliseHost(txt);
  for (const pbt of [true, false]) {
    const ep = await buildEpisode(upload(img), upload(txt), k, seed, { pbt });
    try {
      const il = Array.from(await ep.clusters.img.labels.data());
      const tl = Array.from(await ep.clusters.txt.labels.data());
      // K-means of each modality on its normalised features: image seed, text seed + 1
      const ri = cpuKmeans(ni, k, { seed, restarts: 3 }),
        rt = cpuKmeans(nt, k, { seed: seed + 1, restarts: 3 });
      assert.deepEqual(il, Array.from(ri.labels), "image clusters");
      assert.deepEqual(tl, Array.from(rt.labels), "text clusters");
      assert.notDeepEqual(il, tl, "the modalities group differently here");
      const ci = await download(ep.clusters.img.centroids),
        ct = await download(ep.clusters.txt.centroids);
      assertClose(ci, ri.centroids, { rtol: 1e-5, atol: 1e-5, msg: "image centroids" });
      // PBT: image-space prototypes of the text clusters, and vice versa
      const pi = await download(ep.imgPrototypes), pt = await download(ep.txtPrototypes);
      assertClose(pi, pbt ? cpuBackTranslate(ni, tl, k) : ct, {
        atol: 1e-6,
        msg: `img protos ${pbt}`,
      });
      assertClose(pt, pbt ? cpuBackTranslate(nt, il, k) : ci, {
        atol: 1e-6,
        msg: `txt protos ${pbt}`,
      });
      // teacher tables from the other modality's centroids
      assertClose(await download(ep.imgTargetTable), cpuTeacherTargets(ct), {
        rtol: 1e-4,
        atol: 1e-6,
      });
      assertClose(await download(ep.txtTargetTable), cpuTeacherTargets(ci), {
        rtol: 1e-4,
        atol: 1e-6,
      });
      // a batch's targets: rows of the tables by each sample's cluster
      const index = [3, 17, 0, 59, 21];
      await T.scopeAsync(async () => {
        const t = episodeTargets(ep, T.tensor(index, [5], "i32"));
        const ti = await download(t.img), tt = await download(t.txt);
        const table = cpuTeacherTargets(ct), table2 = cpuTeacherTargets(ci);
        const rowsOf = (tab: HostTensor, ls: number[]) =>
          Float64Array.from(
            index.flatMap((i) => Array.from(tab.data.subarray(ls[i] * k, ls[i] * k + k))),
          );
        assertClose(ti, { shape: [5, k], data: rowsOf(table, tl) }, { rtol: 1e-4, atol: 1e-6 });
        assertClose(tt, { shape: [5, k], data: rowsOf(table2, il) }, { rtol: 1e-4, atol: 1e-6 });
      });
    } finally {
      ep.dispose();
    }
  }
});

Deno.test("an episode frees everything on dispose", async () => {
  const { img, txt } = pairedEpisode(30, 5, 3, 6);
  const [a, b, t] = [upload(img), upload(txt), upload(normaliseHost(txt))];
  const before = T.memory().bytesInUse;
  const ep = await buildEpisode(a, b, 3, 1, { restarts: 2 });
  const ext = await externalPrototypes(a, b, t, 3, 4);
  assert.ok(T.memory().bytesInUse > before);
  ep.dispose();
  ext.dispose();
  assert.equal(T.memory().bytesInUse, before);
  for (const x of [a, b, t]) x.dispose();
});

Deno.test("the external teacher: clustered, back-translated, hard labels", async () => {
  const N = 40, D = 5, k = 3;
  const { img, txt } = pairedEpisode(N, D, k, 9);
  const teacher = pairedEpisode(N, 7, k, 10).txt;
  const ext = await externalPrototypes(upload(img), upload(txt), upload(teacher), k, 2);
  try {
    const labels = Array.from(await ext.clusters.labels.data());
    const ref = cpuKmeans(normaliseHost(teacher), k, { seed: 2, restarts: 3 });
    assert.deepEqual(labels, Array.from(ref.labels));
    const ei = cpuBackTranslate(normaliseHost(img), labels, k);
    const et = cpuBackTranslate(normaliseHost(txt), labels, k);
    assertClose(await download(ext.img), ei, { atol: 1e-6, msg: "image space" });
    assertClose(await download(ext.txt), et, { atol: 1e-6, msg: "text space" });
    const bi = randHost([4, D], 1), bt = randHost([4, D], 2), bl = [2, 0, 1, 1];
    await T.scopeAsync(async () => {
      const got = await externalLoss(
        upload(bi),
        upload(bt),
        ext,
        T.tensor(bl, [4], "i32"),
        T.tensor([2], []),
      )
        .item();
      assertClose([got], [cpuProtoLoss(bi, bt, { img: ei, txt: et }, { img: bl, txt: bl }, 2)], {
        rtol: 1e-5,
      });
    });
  } finally {
    ext.dispose();
  }
});

Deno.test("first epoch InfoNCE only; then InfoNCE + L_proto, trained end to end", async () => {
  assert.deepEqual(protoclipWeights(0), { infoNCE: 1, proto: 0, external: 0 });
  assert.deepEqual(protoclipWeights(1), { infoNCE: 1, proto: 1, external: 1 });
  assert.deepEqual(protoclipWeights(1, { warmupEpochs: 2 }).proto, 0);
  assert.throws(() => protoclipWeights(-1), /protoclipWeights: epoch/);
  const N = 24, E = 6, k = 3, B = 5;
  const { img, txt } = pairedEpisode(N, E, k, 4);
  const heads = new ProtoHeads(E, { outDim: 4, seed: 3 });
  const logitScale = T.param(T.tensor([PROTOCLIP.logitScaleInit], []));
  // step 1: project the whole episode without gradients, cluster it
  const feats = T.noGrad(() => heads.project(upload(img), upload(txt)));
  const ep = await buildEpisode(feats.img, feats.txt, k, 1);
  feats.img.dispose();
  feats.txt.dispose();
  const index = [1, 5, 9, 13, 22];
  const bi: HostTensor = {
    shape: [B, E],
    data: Float64Array.from(index.flatMap((i) => Array.from(img.data.subarray(i * E, i * E + E)))),
  };
  const bt: HostTensor = {
    shape: [B, E],
    data: Float64Array.from(index.flatMap((i) => Array.from(txt.data.subarray(i * E, i * E + E)))),
  };
  try {
    await T.scopeAsync(async () => {
      const idx = T.tensor(index, [B], "i32");
      const batch = () => {
        const p = heads.project(upload(bi), upload(bt));
        return {
          img: upload(bi),
          txt: upload(bt),
          logitScale,
          imgProj: p.img,
          txtProj: p.txt,
          logitScaleProto: heads.logitScaleProto,
          episode: ep,
          index: idx,
        };
      };
      const warm = protoclipLoss(batch(), protoclipWeights(0));
      assert.deepEqual(Object.keys(warm.terms), ["infoNCE"], "no prototype term in epoch 0");
      const nce = cpuInfoNCE(bi, bt, PROTOCLIP.logitScaleInit);
      assertClose([await warm.loss.item()], [nce], { rtol: 1e-5 });
      const b = batch();
      const full = protoclipLoss(b, protoclipWeights(1));
      const t = episodeTargets(ep, idx);
      const proto = cpuProtoLoss(
        await download(b.imgProj),
        await download(b.txtProj),
        { img: await download(ep.imgPrototypes), txt: await download(ep.txtPrototypes) },
        { img: await download(t.img), txt: await download(t.txt) },
        PROTOCLIP.logitScaleInit,
      );
      assertClose([await full.terms.proto.item()], [proto], { rtol: 1e-5, msg: "L_proto term" });
      assertClose([await full.loss.item()], [nce + proto], { rtol: 1e-5, msg: "total" });
      T.backward(full.loss);
      for (const [name, p] of heads.params()) {
        assert.ok(p.grad, `${name} receives a gradient`);
        const g = await p.grad.data();
        assert.ok(g.some((v) => v !== 0), `${name} gradient is not zero`);
      }
      assert.ok(logitScale.grad, "CLIP's logit scale receives a gradient");
      assert.ok(!ep.imgPrototypes.grad && !ep.imgTargetTable.grad, "episode tensors are constants");
      // an epoch with L_proto needs the episode
      assert.throws(
        () => protoclipLoss({ img: upload(bi), txt: upload(bt), logitScale }, protoclipWeights(1)),
        /protoclipLoss: L_proto needs imgProj, txtProj, logitScaleProto, index, episode/,
      );
    });
  } finally {
    ep.dispose();
    heads.dispose();
    logitScale.dispose();
  }
});

Deno.test("the pretraining extension: warm-up epoch, episode, L_proto, clamp, dispose", async () => {
  const N = 20, E = 6, k = 3, B = 4;
  const { img, txt } = pairedEpisode(N, E, k, 12);
  const pairs = Int32Array.from({ length: N }, (_, i) => 100 + ((i * 7) % N)); // pair ids
  const rowOf = new Map(Array.from({ length: N }, (_, i) => [100 + i, i]));
  const pick = (h: HostTensor, ids: ArrayLike<number>): HostTensor => ({
    shape: [ids.length, E],
    data: Float64Array.from(
      Array.from(ids).flatMap((id) => {
        const r = rowOf.get(id)!;
        return Array.from(h.data.subarray(r * E, r * E + E));
      }),
    ),
  });
  let encoded = 0;
  const ctx = (epoch: number) => ({
    epoch,
    episode: 0,
    indices: pairs,
    encode: (ids: Int32Array) => {
      encoded++;
      return { image: upload(pick(img, ids)), text: upload(pick(txt, ids)) };
    },
  });
  const before = T.memory().bytesInUse;
  const ext = protoclipExtension({ embedDim: E }, { seed: 2, k, projectionDim: 4, restarts: 1 });
  for (const [name, t] of ext.params) {
    assert.ok(t.requiresGrad && !t.node, `${name} is a trainable leaf`);
  }
  const batchIds = Int32Array.from([pairs[3], pairs[0], pairs[11], pairs[19]]);
  // epoch 0: InfoNCE only, nothing is clustered
  await ext.episode(ctx(0));
  assert.equal(encoded, 0, "no episode features in the warm-up epoch");
  T.scope(() => {
    const terms = ext.loss({
      image: upload(pick(img, batchIds)),
      text: upload(pick(txt, batchIds)),
      indices: batchIds,
      epoch: 0,
    });
    assert.deepEqual(Object.keys(terms), []);
  });
  // epoch 1: the episode is clustered and each batch adds L_proto
  await ext.episode(ctx(1));
  assert.equal(encoded, 1);
  await T.scopeAsync(async () => {
    const bi = upload(pick(img, batchIds)), bt = upload(pick(txt, batchIds));
    const { proto } = ext.loss({ image: bi, text: bt, indices: batchIds, epoch: 1 });
    assert.deepEqual(proto.shape, []);
    // the same value from the building blocks
    const heads = new ProtoHeads(E, { seed: 2, outDim: 4 });
    const all = heads.project(upload(img), upload(txt));
    const order = T.tensor(Array.from(pairs, (id) => rowOf.get(id)!), [N], "i32");
    const ep = await buildEpisode(
      T.indexSelect(all.img, 0, order),
      T.indexSelect(all.txt, 0, order),
      k,
      (2 * 4096 + 1) * 4096,
      { restarts: 1 },
    );
    const at = Array.from(batchIds, (id) => Array.from(pairs).indexOf(id));
    const p = heads.project(bi, bt);
    const want = protoLoss(
      p.img,
      p.txt,
      { img: ep.imgPrototypes, txt: ep.txtPrototypes },
      episodeTargets(ep, T.tensor(at, [B], "i32")),
      heads.logitScaleProto,
    );
    assertClose([await proto.item()], [await want.item()], {
      rtol: 1e-5,
      msg: "extension L_proto",
    });
    ep.dispose();
    heads.dispose();
    T.backward(proto);
    for (const [name, t] of ext.params) assert.ok(t.grad, `${name} receives a gradient`);
    for (const t of ext.params.values()) {
      t.grad?.dispose();
      t.grad = null;
    }
    // a pair outside the episode is an error
    assert.throws(
      () => ext.loss({ image: bi, text: bt, indices: Int32Array.from([1, 2, 3, 4]), epoch: 1 }),
      /protoclip: pair 1 of the batch is not in the episode/,
    );
  });
  T.writeTensor(ext.params.get("logit_scale_proto")!, Float32Array.from([6]));
  ext.afterStep();
  assertClose([await ext.params.get("logit_scale_proto")!.item()], [Math.log(100)], { rtol: 1e-7 });
  assert.equal(ext.describe().k, k);
  ext.dispose();
  assert.equal(T.memory().bytesInUse, before, "dispose frees the heads and the episode");
});

Deno.test("projection heads: Linear(embed → 128), an MLP option, identical starts", async () => {
  const head = new ProjectionHead(6, { seed: 2 });
  assert.equal(head.outDim, 128);
  assert.deepEqual([...head.params.keys()], ["0.weight", "0.bias"]);
  const x = randHost([3, 6], 4);
  await T.scopeAsync(async () => {
    const w = await download(head.params.get("0.weight")!),
      b = await download(head.params.get("0.bias")!);
    const want = new Float64Array(3 * 128);
    for (let i = 0; i < 3; i++) {
      for (let o = 0; o < 128; o++) {
        let s = b.data[o];
        for (let c = 0; c < 6; c++) s += x.data[i * 6 + c] * w.data[o * 6 + c];
        want[i * 128 + o] = s;
      }
    }
    assertClose(await download(head.forward(upload(x))), { shape: [3, 128], data: want }, {
      rtol: 1e-5,
    });
    const bound = 1 / Math.sqrt(6);
    assert.ok(w.data.every((v) => Math.abs(v) <= bound), "U(±1/√in) initialisation");
  });
  head.dispose();
  const mlp = new ProjectionHead(6, { seed: 2, hiddenLayers: 2, hiddenDim: 8, outDim: 4 });
  assert.deepEqual([...mlp.params.keys()], [
    "0.weight",
    "0.bias",
    "1.weight",
    "1.bias",
    "3.weight",
    "3.bias",
    "4.weight",
    "4.bias",
    "6.weight",
    "6.bias",
  ]);
  for (const training of [true, false]) {
    mlp.training = training;
    await T.scopeAsync(async () => {
      const y = await download(mlp.forward(upload(x)));
      assert.deepEqual(y.shape, [3, 4]);
      assert.ok(y.data.every(Number.isFinite), `MLP output (training ${training})`);
    });
  }
  mlp.dispose();
  const heads = new ProtoHeads(6, { seed: 7, outDim: 4 });
  const names = [...heads.params().keys()];
  assert.ok(
    names.includes("image_projection_head.0.weight") && names.includes("logit_scale_proto"),
  );
  assert.deepEqual(
    Array.from(await heads.image.params.get("0.weight")!.data()),
    Array.from(await heads.text.params.get("0.weight")!.data()),
    "the image head starts as a copy of the text head",
  );
  await T.scopeAsync(async () => {
    const p = heads.project(upload(x), upload(x));
    const n = await download(T.sum(T.square(p.img), 1));
    assertClose(n, { shape: [3], data: new Float64Array(3).fill(1) }, {
      rtol: 1e-5,
      msg: "normalised",
    });
  });
  heads.dispose();
  assert.throws(() => new ProjectionHead(0, { seed: 1 }), /ProjectionHead: inDim/);
});

Deno.test("bad input raises errors naming the op", async () => {
  await T.scopeAsync(async () => {
    const a = T.zeros([4, 3]), b = T.zeros([5, 3]), s = T.tensor([1], []);
    assert.throws(
      () => infoNCE(a, b, s),
      /infoNCE: needs as many images as texts, got \[4, 3\] and \[5, 3\]/,
    );
    assert.throws(() => infoNCE(a, T.zeros([4, 2]), s), /infoNCE: img and txt must be float/);
    assert.throws(() => infoNCE(a, a, T.zeros([2])), /infoNCE: logitScale must be one f32 value/);
    assert.throws(
      () =>
        protoLoss(a, a, { img: T.zeros([2, 5]), txt: T.zeros([2, 3]) }, {
          img: T.zeros([4, 2]),
          txt: T.zeros([4, 2]),
        }, s),
      /protoLoss: image features and image-space prototypes must be float/,
    );
    assert.throws(
      () => teacherTargets(T.zeros([3, 2]), 0),
      /teacherTargets: temperature must be > 0/,
    );
    await assert.rejects(() => buildEpisode(a, a, 9, 1), /buildEpisode: k must be in \[1, 4\]/);
  });
});
