import { assertClose, type HostTensor, randHost, setup, T, upload } from "./util.ts";
import {
  AdamW,
  clipGradNorm,
  coopSchedule,
  cosineSchedule,
  linearWarmup,
  type OptimizerStateDict,
  SGD,
} from "../engine/optim.ts";
import { cpuAdamWStep, cpuGradNorm, cpuSgdStep } from "../kernels/optim.ts";
import assert from "node:assert/strict";

await setup();

// "Exactly, to rounding": relative 1e-6, with an absolute floor of 1e-7 of the array's scale for
// elements that cancel towards zero (a momentum of gradients of opposite signs).
function closeToRounding(actual: ArrayLike<number>, expected: ArrayLike<number>, msg: string) {
  let scale = 0;
  for (let i = 0; i < expected.length; i++) scale = Math.max(scale, Math.abs(expected[i]));
  assertClose(actual, expected, { rtol: 1e-6, atol: 1e-7 * scale, msg });
}

function setGrad(p: T.Tensor, g: HostTensor | T.Tensor) {
  p.grad?.dispose();
  p.grad = T.own(g instanceof T.Tensor ? g : upload(g));
}

const stateOf = async (opt: SGD | AdamW) => (await opt.stateDict()).state;

// Shapes: odd sizes, a single element, more than one workgroup, and a parameter that is an
// offset view of a larger buffer.
const SHAPES = [[7, 13], [1], [300], [2, 5]];

/** Trainable tensors holding `hosts`; the last one is an offset view (rows 1–2 of a [4, 5]). */
function makeParams(hosts: HostTensor[]) {
  return hosts.map((h, i) => {
    if (i < hosts.length - 1) return T.param(upload(h));
    const data = Float32Array.from(randHost([4, 5], 77).data);
    data.set(h.data, 5);
    const base = T.tensor(data, [4, 5]);
    const view = T.slice(base, [1, 0], [2, 5]);
    base.dispose();
    assert.equal(view.offset, 5);
    return T.param(view);
  });
}

Deno.test("SGD steps match the float64 reference (momentum, weight decay, nesterov, plain)", async () => {
  const configs = [
    { lr: 0.1, momentum: 0.9, weightDecay: 0.01, nesterov: false },
    { lr: 0.05, momentum: 0.8, weightDecay: 1e-3, nesterov: true },
    { lr: 0.2, momentum: 0, weightDecay: 0, nesterov: false },
    { lr: 0.03, momentum: 0, weightDecay: 0.1, nesterov: false },
  ];
  for (const [ci, h] of configs.entries()) {
    const hosts = SHAPES.map((s, i) => randHost(s, 10 * ci + i));
    const ps = makeParams(hosts);
    const opt = new SGD(ps, h);
    let ref: { p: Float64Array; buf: Float64Array }[] = hosts.map((x) => ({
      p: x.data,
      buf: new Float64Array(x.data.length),
    }));
    for (let step = 0; step < 3; step++) {
      const lr = step === 2 ? h.lr * 0.5 : h.lr;
      const compiled = T.memory().compilations;
      if (step === 2) opt.setLr(lr);
      const gs = SHAPES.map((s, i) => randHost(s, 100 * ci + 10 * step + i));
      // param 2 has no gradient at the first step: it is skipped and its state starts later
      ps.forEach((p, i) => (step === 0 && i === 2 ? null : setGrad(p, gs[i])));
      opt.step();
      if (step === 2) {
        assert.equal(T.memory().compilations, compiled, "a new lr compiled a pipeline");
      }
      ref = ref.map((
        r,
        i,
      ) => (step === 0 && i === 2 ? r : cpuSgdStep(r.p, gs[i].data, r.buf, { ...h, lr })));
      const st = await stateOf(opt);
      for (let i = 0; i < ps.length; i++) {
        const msg = `config ${ci} step ${step} param ${i}`;
        closeToRounding(await ps[i].data(), ref[i].p, msg);
        if (step === 0 && i === 2) assert.equal(st[i], null, `${msg}: a skipped param got state`);
        else if (h.momentum) {
          closeToRounding(st[i]!.tensors.momentum_buffer, ref[i].buf, `${msg} buffer`);
        } else assert.deepEqual(Object.keys(st[i]!.tensors), []);
      }
    }
    opt.zeroGrad();
    assert.ok(ps.every((p) => p.grad === null));
    opt.dispose();
    ps.forEach((p) => p.dispose());
  }
});

Deno.test("AdamW steps match the float64 reference (per-parameter step counts)", async () => {
  const configs = [
    { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 1e-2 },
    { lr: 3e-3, beta1: 0.8, beta2: 0.95, eps: 1e-6, weightDecay: 0 },
    { lr: 0.1, beta1: 0, beta2: 0.5, eps: 1e-3, weightDecay: 0.5 },
  ];
  for (const [ci, h] of configs.entries()) {
    const ps = makeParams(SHAPES.map((s, i) => randHost(s, 20 * ci + i)));
    const opt = new AdamW(ps, {
      lr: h.lr,
      betas: [h.beta1, h.beta2],
      eps: h.eps,
      weightDecay: h.weightDecay,
    });
    let ref: { p: Float64Array; m: Float64Array; v: Float64Array; t: number }[] = await Promise.all(
      ps.map(async (p) => {
        const d = Float64Array.from(await p.data());
        return { p: d, m: new Float64Array(d.length), v: new Float64Array(d.length), t: 0 };
      }),
    );
    for (let step = 0; step < 3; step++) {
      const gs = SHAPES.map((s, i) => randHost(s, 200 * ci + 10 * step + i, -2, 2));
      ps.forEach((p, i) => (step === 0 && i === 2 ? null : setGrad(p, gs[i])));
      opt.step();
      ref = ref.map((r, i) => {
        if (step === 0 && i === 2) return r;
        return { ...cpuAdamWStep(r.p, gs[i].data, r.m, r.v, h, r.t + 1), t: r.t + 1 };
      });
      const st = await stateOf(opt);
      for (let i = 0; i < ps.length; i++) {
        const msg = `config ${ci} step ${step} param ${i}`;
        closeToRounding(await ps[i].data(), ref[i].p, msg);
        if (!ref[i].t) {
          assert.equal(st[i], null, msg);
          continue;
        }
        assert.equal(st[i]!.step, ref[i].t, `${msg} step count`);
        closeToRounding(st[i]!.tensors.exp_avg, ref[i].m, `${msg} exp_avg`);
        closeToRounding(st[i]!.tensors.exp_avg_sq, ref[i].v, `${msg} exp_avg_sq`);
      }
    }
    assert.equal(opt.steps, 3);
    opt.zeroGrad();
    opt.dispose();
    ps.forEach((p) => p.dispose());
  }
});

Deno.test("optimiser state is owned: scopes keep it, dispose() frees it", async () => {
  const p = T.param(upload(randHost([33, 17], 1)));
  setGrad(p, randHost([33, 17], 2));
  const opt = new AdamW([p], { lr: 1e-3 });
  const before = T.memory().bytesInUse;
  T.scope(() => opt.step());
  const grown = T.memory().bytesInUse - before;
  assert.ok(grown >= 2 * 33 * 17 * 4, `state not alive after the scope (${grown} bytes)`);
  assert.equal((await opt.stateDict()).state[0]!.tensors.exp_avg.length, 33 * 17);
  const withGrad = T.memory().bytesInUse;
  opt.zeroGrad();
  assert.equal(p.grad, null);
  assert.ok(T.memory().bytesInUse < withGrad, "zeroGrad freed nothing");
  const noGradBytes = T.memory().bytesInUse;
  opt.dispose();
  assert.equal(T.memory().bytesInUse, noGradBytes - grown);
  assert.throws(() => opt.step(), /AdamW\.step: the AdamW optimiser was disposed/);
  p.dispose();
});

Deno.test("clipGradNorm matches the float64 norm, scales in place on the GPU, forces no readback", async () => {
  const shapes = [[70001], [3, 5], [1], [1000]];
  // clipping, no clipping, and a tiny norm where the 1e-6 in the scale matters
  for (const [maxNorm, mag] of [[1.5, 1], [1e6, 1], [1e-3, 1e-4]]) {
    const gs = shapes.map((s, i) => randHost(s, 300 + i, -mag, mag));
    const ps = shapes.map((s) => T.param(T.zeros(s)));
    ps.forEach((p, i) => setGrad(p, gs[i]));
    const frozenGrad = randHost([4], 9);
    const extra = T.param(T.zeros([4])); // not in the list: its gradient is left alone
    setGrad(extra, frozenGrad);
    const noGrad = T.param(T.zeros([2])); // in the list without a gradient: ignored
    T.E().flush();
    const submits = T.E().submits;
    const norm = clipGradNorm([...ps, noGrad], maxNorm);
    assert.equal(T.E().submits, submits, "clipGradNorm submitted work (a readback?)");
    assert.deepEqual(norm.shape, []);
    const ref = cpuGradNorm(gs.map((g) => g.data), maxNorm);
    assertClose([await norm.item()], [ref.norm], { rtol: 2e-6, msg: "norm" });
    if (maxNorm < ref.norm) assert.ok(ref.scale < 0.1, "the test should clip");
    for (let i = 0; i < ps.length; i++) {
      const want = gs[i].data.map((x) => x * ref.scale);
      assertClose(await ps[i].grad!.data(), want, { rtol: 2e-6, atol: 0, msg: `grad ${i}` });
    }
    assert.deepEqual(await extra.grad!.data(), Float32Array.from(frozenGrad.data));
    if (ref.scale === 1) assert.deepEqual(await ps[0].grad!.data(), Float32Array.from(gs[0].data));
    norm.dispose();
    [...ps, extra, noGrad].forEach((p) => p.dispose());
  }
  // no gradients at all: norm 0
  const p = T.param(T.zeros([3]));
  const n = clipGradNorm([p], 1);
  assert.equal(await n.item(), 0);
  n.dispose();
  p.dispose();
});

Deno.test("schedules: values at key steps", () => {
  const near = (a: number, b: number, msg: string) =>
    assert.ok(Math.abs(a - b) <= 1e-12 * Math.max(1, Math.abs(b)), `${msg}: ${a} vs ${b}`);
  // linear warm-up from 0, cosine over the remaining 100 steps
  const s = cosineSchedule({ baseLr: 0.1, totalSteps: 110, warmupSteps: 10 });
  near(s(0), 0, "step 0");
  near(s(5), 0.05, "mid warm-up");
  near(s(10), 0.1, "end of warm-up");
  near(s(35), 0.05 * (1 + Math.cos(Math.PI / 4)), "quarter");
  near(s(60), 0.05, "half");
  near(s(110), 0, "end");
  near(s(500), 0, "past the end");
  // constant warm-up and a floor
  const c = cosineSchedule({
    baseLr: 0.002,
    totalSteps: 50,
    warmupSteps: 2,
    warmupLr: 1e-5,
    minLr: 1e-4,
  });
  near(c(0), 1e-5, "constant warm-up 0");
  near(c(1), 1e-5, "constant warm-up 1");
  near(c(2), 0.002, "cosine start");
  near(c(26), 1e-4 + 0.0019 * 0.5, "cosine half");
  near(c(50), 1e-4, "floor");
  // CoOp / Dassl: epoch 0 at 1e-5, epoch 1 at baseLr, epoch e at cos((e − 1)/epochs)
  const coop = coopSchedule({ baseLr: 0.002, epochs: 50 });
  near(coop(0), 1e-5, "coop epoch 0");
  near(coop(1), 0.002, "coop epoch 1");
  near(coop(2), 0.001 * (1 + Math.cos(Math.PI / 50)), "coop epoch 2");
  near(coop(49), 0.001 * (1 + Math.cos((48 * Math.PI) / 50)), "coop last epoch");
  const w = linearWarmup({ baseLr: 1, warmupSteps: 4, warmupLr: 0.2 });
  near(w(0), 0.2, "linear 0");
  near(w(2), 0.6, "linear 2");
  near(w(4), 1, "linear end");
  near(w(1000), 1, "linear after");
  assert.throws(
    () => cosineSchedule({ baseLr: 0.1, totalSteps: 5, warmupSteps: 5 }),
    /cosineSchedule: totalSteps 5 must exceed warmupSteps 5/,
  );
  assert.throws(
    () => linearWarmup({ baseLr: -1, warmupSteps: 2 }),
    /linearWarmup: baseLr must be a finite number ≥ 0/,
  );
});

async function roundTrip(make: (ps: T.Tensor[]) => SGD | AdamW, name: string) {
  const shapes = [[5, 3], [4]];
  const grads = [0, 1, 2].map((k) => shapes.map((s, i) => randHost(s, 500 + 10 * k + i)));
  const a = shapes.map((s, i) => T.param(upload(randHost(s, 400 + i))));
  const optA = make(a);
  for (const k of [0, 1]) {
    a.forEach((p, i) => setGrad(p, grads[k][i]));
    optA.step();
  }
  const sd = await optA.stateDict();
  const mid = await Promise.all(a.map((p) => p.data()));
  a.forEach((p, i) => setGrad(p, grads[2][i]));
  optA.step(); // the uninterrupted run
  // a fresh optimiser, built with other hyperparameters, restored from the snapshot
  const b = shapes.map((s, i) => T.param(T.tensor(mid[i], s)));
  const optB = make(b);
  optB.setLr(123);
  optB.loadStateDict(sd);
  assert.equal(optB.lr, optA.lr, `${name}: lr not restored`);
  b.forEach((p, i) => setGrad(p, grads[2][i]));
  optB.step();
  for (let i = 0; i < 2; i++) {
    assert.deepEqual(await b[i].data(), await a[i].data(), `${name}: param ${i} differs`);
  }
  const [sa, sb] = [await optA.stateDict(), await optB.stateDict()];
  assert.deepEqual(sb, sa, `${name}: state differs after the restored step`);
  assert.equal(sb.steps, 3);
  for (const x of [optA, optB]) x.dispose();
  for (const p of [...a, ...b]) p.dispose();
}

Deno.test("stateDict round trip: a restored optimiser continues exactly like an uninterrupted one", async () => {
  await roundTrip(
    (ps) => new AdamW(ps, { lr: 0.01, betas: [0.85, 0.99], weightDecay: 0.1 }),
    "AdamW",
  );
  await roundTrip((ps) => new SGD(ps, { lr: 0.05, momentum: 0.9, weightDecay: 5e-4 }), "SGD");
});

Deno.test("loadStateDict refuses a wrong shape or kind, naming the param, and changes nothing", async () => {
  const mk = (shapes: number[][], names: string[]) =>
    shapes.map((s, i) => {
      const p = T.param(upload(randHost(s, 600 + i)));
      p.name = names[i];
      setGrad(p, randHost(s, 700 + i));
      return p;
    });
  const a = mk([[3, 4], [5]], ["w", "b"]);
  const optA = new AdamW(a, { lr: 0.1 });
  optA.step();
  const sd = await optA.stateDict();
  const b = mk([[3, 4], [6]], ["w", "bias"]);
  const optB = new AdamW(b, { lr: 0.2 });
  optB.step();
  optB.step();
  const before = await optB.stateDict();
  assert.throws(
    () => optB.loadStateDict(sd),
    /AdamW\.loadStateDict: param 1 \(bias\) \[6\]: saved state has shape \[5\]/,
  );
  const wrongLength: OptimizerStateDict = structuredClone(sd);
  wrongLength.state[0]!.tensors.exp_avg = new Float32Array(11);
  wrongLength.state[1] = null;
  assert.throws(
    () => optB.loadStateDict(wrongLength),
    /param 0 \(w\) \[3, 4\]: saved exp_avg has 11 values, expected 12/,
  );
  const sgd = new SGD(b, { lr: 0.1, momentum: 0.9 });
  sgd.step();
  const sgdSd = await sgd.stateDict();
  assert.throws(
    () => optB.loadStateDict(sgdSd),
    /AdamW\.loadStateDict: the state dict is for SGD, not AdamW/,
  );
  assert.throws(
    () => optA.loadStateDict({ ...sd, state: [sd.state[0]] }),
    /holds 1 parameter states; this optimiser has 2/,
  );
  assert.deepEqual(await optB.stateDict(), before, "a refused load changed the state");
  assert.equal(optB.lr, 0.2);
  for (const x of [optA, optB, sgd]) x.dispose();
  for (const p of [...a, ...b]) p.dispose();
});

Deno.test("bad parameters and gradients raise errors naming the op, the param and the shapes", () => {
  T.scope(() => {
    const p = T.param(T.zeros([2, 3]));
    p.name = "proj";
    const notLeaf = T.mul(p, 2);
    const frozen = T.zeros([4]);
    assert.throws(() => new SGD([]), /SGD: got an empty parameter list/);
    assert.throws(() => new AdamW([frozen]), /AdamW: param 0 \[4\] is not a trainable leaf/);
    assert.throws(() => new AdamW([p, notLeaf]), /AdamW: param 1 \[2, 3\] is not a trainable leaf/);
    assert.throws(() => new SGD([p, p]), /SGD: param 1 \(proj\) \[2, 3\] appears twice/);
    assert.throws(
      () => new SGD([p], { lr: 0.1, nesterov: true }),
      /SGD: nesterov needs a momentum > 0/,
    );
    assert.throws(
      () => new AdamW([p], { betas: [0.9, 1] }),
      /AdamW: beta2 must be in \[0, 1\), got 1/,
    );
    const t = T.param(T.transpose(T.zeros([3, 2])));
    assert.throws(() => new SGD([t]), /SGD: param 0 \[2, 3\] must be a contiguous f32 tensor/);
    const opt = new SGD([p], { lr: 0.1 });
    setGrad(p, randHost([3, 2], 1));
    assert.throws(
      () => opt.step(),
      /SGD\.step: param 0 \(proj\) \[2, 3\]: gradient \[3, 2\] does not match the parameter/,
    );
    assert.equal(opt.steps, 0);
    setGrad(p, T.transpose(upload(randHost([3, 2], 1))));
    assert.throws(
      () => opt.step(),
      /SGD\.step: param 0 \(proj\) \[2, 3\]: gradient must be contiguous f32/,
    );
    assert.throws(
      () => clipGradNorm([p], 1),
      /clipGradNorm: param 0 \(proj\) \[2, 3\]: gradient must be contiguous f32/,
    );
    assert.throws(() => opt.setLr(NaN), /SGD\.setLr: lr must be a finite number ≥ 0, got NaN/);
    opt.dispose();
    p.grad?.dispose();
  });
});
