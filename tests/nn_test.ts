import {
  assert,
  assertClose,
  download,
  gradCheck,
  type HostTensor,
  randHost,
  relErr,
  rng,
  setup,
  T,
  upload,
} from "./util.ts";
import * as N from "../engine/ops/nn.ts";
import { cpuLogSoftmax, cpuSoftmax } from "../kernels/softmax.ts";
import { cpuLayerNorm } from "../kernels/layernorm.ts";
import { cpuCrossEntropy } from "../kernels/cross_entropy.ts";
import { cpuAttention } from "../kernels/attention.ts";

await setup();

type Fn = (xs: T.Tensor[]) => T.Tensor;

/** Forward output and the gradients of sum(f(xs) · R) for the inputs in `wrt`. */
async function runWithGrads(f: Fn, inputs: HostTensor[], wrt: number[]) {
  return await T.scopeAsync(async () => {
    const xs = inputs.map((h, i) => (wrt.includes(i) ? T.param(upload(h)) : upload(h)));
    const y = f(xs);
    const R = upload(randHost(y.shape, 77));
    T.backward(T.sum(T.mul(y, R)));
    const out = await download(y);
    const grads = await Promise.all(wrt.map((i) => download(xs[i].grad!)));
    return { out, grads };
  });
}

/** The fused op and its composite twin agree, forward and gradient (normwise relative error). */
async function assertTwins(
  fused: Fn,
  composite: Fn,
  inputs: HostTensor[],
  wrt: number[],
  msg: string,
  tol = 1e-5,
) {
  const a = await runWithGrads(fused, inputs, wrt);
  const b = await runWithGrads(composite, inputs, wrt);
  assert.deepEqual(a.out.shape, b.out.shape, `${msg}: shapes`);
  const e = relErr(a.out.data, b.out.data);
  assert.ok(e < tol, `${msg}: fused vs composite forward rel. error ${e}`);
  wrt.forEach((i, k) => {
    const ge = relErr(a.grads[k].data, b.grads[k].data);
    assert.ok(ge < tol, `${msg}: fused vs composite d/dx${i} rel. error ${ge}`);
  });
}

const scaled = (h: HostTensor, s: number, shift = 0): HostTensor => ({
  shape: h.shape,
  data: h.data.map((v) => Math.fround(v * s + shift)),
});

// ---------------------------------------------------------------------------------------------
// softmax / logSoftmax

const SOFTMAX = [
  { name: "softmax", f: N.softmax, ref: cpuSoftmax },
  { name: "logSoftmax", f: N.logSoftmax, ref: cpuLogSoftmax },
];

Deno.test("softmax and logSoftmax match float64 on odd row lengths, batch axes and views", async () => {
  for (const { name, f, ref } of SOFTMAX) {
    for (const shape of [[1], [4, 1], [3, 7], [2, 257], [1000], [2, 3, 5], [1, 1, 300]]) {
      const h = scaled(randHost(shape, shape.length * 13 + shape[shape.length - 1]), 4);
      for (const fused of [true, false]) {
        await T.scopeAsync(async () => {
          assertClose(await download(f(upload(h), { fused })), ref(h), {
            rtol: 1e-5,
            atol: 1e-6,
            msg: `${name} ${shape} fused=${fused}`,
          });
        });
      }
    }
    // large logits: exp overflows unless the max is subtracted
    const big = scaled(randHost([3, 9], 5), 200);
    await T.scopeAsync(async () => {
      assertClose(await download(f(upload(big))), ref(big), { rtol: 1e-5, msg: `${name} large` });
    });
    // a transposed view and a sliced view read through strides
    const h = randHost([6, 9], 8, -3, 3);
    await T.scopeAsync(async () => {
      const xt = T.transpose(upload(h));
      const st = T.slice(upload(h), [1, 2], [4, 5]);
      for (const [v, what] of [[xt, "transposed"], [st, "sliced"]] as const) {
        const expected = ref(await download(T.contiguous(v)));
        assertClose(await download(f(v)), expected, {
          rtol: 1e-5,
          atol: 1e-6,
          msg: `${name} ${what}`,
        });
      }
    });
  }
});

Deno.test("softmax and logSoftmax: gradCheck, and fused vs composite gradients", async () => {
  for (const { name, f, ref } of SOFTMAX) {
    for (const fused of [true, false]) {
      await gradCheck(([x]) => f(x, { fused }), ([x]) => ref(x), [randHost([3, 5], 3, -2, 2)], {
        msg: `${name} fused=${fused}`,
      });
    }
    await gradCheck(([x]) => f(T.transpose(x)), ([x]) => ref(transposeHost(x)), [
      randHost([4, 3], 4, -2, 2),
    ], { msg: `${name} of a transposed view` });
    for (const shape of [[2, 1], [3, 257], [2, 2, 33]]) {
      const h = scaled(randHost(shape, 9), 3);
      await assertTwins(
        ([x]) => f(x),
        ([x]) => f(x, { fused: false }),
        [h],
        [0],
        `${name} ${shape}`,
      );
    }
  }
});

function transposeHost(h: HostTensor): HostTensor {
  const [r, c] = h.shape;
  const data = new Float64Array(r * c);
  for (let i = 0; i < r; i++) for (let j = 0; j < c; j++) data[j * r + i] = h.data[i * c + j];
  return { shape: [c, r], data };
}

// ---------------------------------------------------------------------------------------------
// layerNorm

Deno.test("layerNorm matches float64 (odd widths, large mean, views, with/without affine)", async () => {
  for (const shape of [[4, 7], [5, 1], [2, 3, 257], [1000], [2, 300]]) {
    const L = shape[shape.length - 1];
    const x = scaled(randHost(shape, L), 2, 50); // a mean of 50 tests the centred variance
    const w = randHost([L], 2, 0.5, 1.5), b = randHost([L], 3);
    for (const fused of [true, false]) {
      await T.scopeAsync(async () => {
        const o = { fused };
        const msg = `layerNorm ${shape} fused=${fused}`;
        const got = await download(N.layerNorm(upload(x), upload(w), upload(b), 1e-5, o));
        assertClose(got, cpuLayerNorm(x, w, b), { rtol: 1e-4, atol: 2e-5, msg });
        const plain = await download(N.layerNorm(upload(x), null, null, 1e-3, o));
        assertClose(plain, cpuLayerNorm(x, null, null, 1e-3), { rtol: 1e-4, atol: 2e-5, msg });
      });
    }
  }
  const h = randHost([6, 9], 4);
  await T.scopeAsync(async () => {
    const v = T.slice(T.transpose(upload(h)), [1, 0], [7, 5]);
    const ref = cpuLayerNorm(await download(T.contiguous(v)));
    assertClose(await download(N.layerNorm(v)), ref, { rtol: 1e-4, atol: 2e-5, msg: "view" });
  });
});

Deno.test("layerNorm gradients: gradCheck and fused vs composite (multi-chunk weight grad)", async () => {
  const ln = (fused: boolean): Fn => ([x, w, b]) => N.layerNorm(x, w, b, 1e-5, { fused });
  const ref = ([x, w, b]: HostTensor[]) => cpuLayerNorm(x, w, b);
  const ins = [randHost([3, 6], 1, -2, 2), randHost([6], 2, 0.5, 1.5), randHost([6], 3)];
  for (const fused of [true, false]) {
    await gradCheck(ln(fused), ref, ins, { msg: `layerNorm fused=${fused}` });
  }
  await gradCheck(([x]) => N.layerNorm(x), ([x]) => cpuLayerNorm(x), [ins[0]], {
    msg: "layerNorm without affine",
  });
  await gradCheck(
    ([x, w, b]) => N.layerNorm(T.transpose(x), w, b),
    ([x, w, b]) => cpuLayerNorm(transposeHost(x), w, b),
    [randHost([5, 3], 6), randHost([5], 7), randHost([5], 8)],
    {
      msg: "layerNorm of a transposed view",
    },
  );
  // 600 rows: three 256-row chunks of weight-gradient partial sums
  for (const shape of [[600, 7], [2, 3, 300], [1, 1]]) {
    const L = shape[shape.length - 1];
    const x = randHost(shape, 11), w = randHost([L], 12, 0.5, 1.5), b = randHost([L], 13);
    await assertTwins(ln(true), ln(false), [x, w, b], [0, 1, 2], `layerNorm ${shape}`, 2e-5);
  }
});

Deno.test("a frozen LayerNorm weight computes no weight gradient", async () => {
  const x = randHost([4, 10], 21), w = randHost([10], 22), b = randHost([10], 23);
  const run = async (trainW: boolean, noWeight = false) =>
    await T.scopeAsync(async () => {
      const [xt, wt, bt] = [T.param(upload(x)), upload(w), T.param(upload(b))];
      if (trainW) T.param(wt);
      const y = N.layerNorm(xt, noWeight ? null : wt, bt);
      const loss = T.sum(T.mul(y, upload(randHost([4, 10], 24))));
      const before = T.memory().dispatches;
      T.backward(loss);
      const dispatches = T.memory().dispatches - before;
      return {
        dispatches,
        wgrad: wt.grad,
        dx: await download(xt.grad!),
        db: await download(bt.grad!),
      };
    });
  const frozen = await run(false), trained = await run(true), absent = await run(false, true);
  assert.equal(frozen.wgrad, null);
  assert.ok(trained.wgrad !== null);
  // a frozen weight costs the backward exactly what no weight costs
  assert.equal(frozen.dispatches, absent.dispatches, "dispatches: frozen weight vs no weight");
  assert.ok(
    frozen.dispatches < trained.dispatches,
    `frozen weight: ${frozen.dispatches} dispatches, trained: ${trained.dispatches}`,
  );
  assertClose(frozen.dx, trained.dx, { msg: "dx does not depend on the weight being trained" });
  assertClose(frozen.db, trained.db, { msg: "db" });
});

Deno.test("layerNorm accepts f16 weight and bias (frozen checkpoints)", async () => {
  if (!T.E().f16) return;
  const x = randHost([3, 37], 31), w = randHost([37], 32, 0.5, 1.5), b = randHost([37], 33);
  // the reference sees the weights rounded to f16, as the kernel does
  const [w16, b16] = await T.scopeAsync(async () =>
    await Promise.all([w, b].map((h) => download(T.cast(T.cast(upload(h), "f16"), "f32"))))
  );
  for (const fused of [true, false]) {
    const f: Fn = ([xt]) =>
      N.layerNorm(xt, T.cast(upload(w), "f16"), T.cast(upload(b), "f16"), 1e-5, { fused });
    const { out, grads } = await runWithGrads(f, [x], [0]);
    assertClose(out, cpuLayerNorm(x, w16, b16), {
      rtol: 1e-4,
      atol: 2e-5,
      msg: `f16 fused=${fused}`,
    });
    const ref = await runWithGrads(([xt]) => N.layerNorm(xt, upload(w16), upload(b16)), [x], [0]);
    assert.ok(relErr(grads[0].data, ref.grads[0].data) < 1e-5, `f16 weight dx fused=${fused}`);
  }
});

// ---------------------------------------------------------------------------------------------
// crossEntropy

function labelsHost(n: number, C: number, seed: number): number[] {
  const r = rng(seed);
  return Array.from({ length: n }, () => Math.floor(r() * C));
}

/** Probabilities per row; with `mass` ≠ 1 the rows sum to `mass` (unnormalised targets, as
 * torch allows), so the Σq terms of loss and gradient are exercised. */
function softTargets(n: number, C: number, seed: number, mass = 1): HostTensor {
  const h = randHost([n, C], seed, 0, 1);
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let c = 0; c < C; c++) s += h.data[i * C + c];
    for (let c = 0; c < C; c++) h.data[i * C + c] = Math.fround((h.data[i * C + c] / s) * mass);
  }
  return h;
}

const REDUCTIONS = ["mean", "sum", "none"] as const;

Deno.test("crossEntropy matches float64: i32 labels, soft targets, label smoothing", async () => {
  for (const [n, C] of [[5, 7], [3, 1], [2, 1000], [4, 300]]) {
    const x = scaled(randHost([n, C], n * C), 5);
    const labels = labelsHost(n, C, C);
    const lh: HostTensor = { shape: [n], data: Float64Array.from(labels) };
    const soft = softTargets(n, C, 7, 0.8);
    for (const reduction of REDUCTIONS) {
      for (const labelSmoothing of [0, 0.1]) {
        for (const fused of [true, false]) {
          const o = { reduction, labelSmoothing, fused };
          const msg = `crossEntropy [${n}, ${C}] ${reduction} ε=${labelSmoothing} fused=${fused}`;
          await T.scopeAsync(async () => {
            const li = T.tensor(Int32Array.from(labels), [n], "i32");
            assertClose(
              await download(N.crossEntropy(upload(x), li, o)),
              cpuCrossEntropy(x, lh, false, o),
              {
                rtol: 1e-5,
                atol: 1e-5,
                msg: `${msg} i32`,
              },
            );
            assertClose(
              await download(N.crossEntropy(upload(x), labels, o)),
              cpuCrossEntropy(x, lh, false, o),
              {
                rtol: 1e-5,
                atol: 1e-5,
                msg: `${msg} host labels`,
              },
            );
            assertClose(
              await download(N.crossEntropy(upload(x), upload(soft), o)),
              cpuCrossEntropy(x, soft, true, o),
              { rtol: 1e-5, atol: 1e-5, msg: `${msg} soft` },
            );
          });
        }
      }
    }
  }
  // logits as a transposed view
  const h = randHost([6, 4], 3, -3, 3);
  const lh: HostTensor = { shape: [4], data: Float64Array.from([0, 5, 2, 3]) };
  await T.scopeAsync(async () => {
    const v = T.transpose(upload(h));
    const ref = cpuCrossEntropy(await download(T.contiguous(v)), lh, false, { reduction: "none" });
    assertClose(await download(N.crossEntropy(v, [0, 5, 2, 3], { reduction: "none" })), ref, {
      msg: "crossEntropy of a view",
    });
  });
});

Deno.test("crossEntropy gradients: gradCheck, and fused vs composite", async () => {
  const [n, C] = [4, 6];
  const x = randHost([n, C], 41, -2, 2);
  const labels = labelsHost(n, C, 42);
  const lh: HostTensor = { shape: [n], data: Float64Array.from(labels) };
  const soft = softTargets(n, C, 43, 1.3);
  for (const reduction of REDUCTIONS) {
    for (const labelSmoothing of [0, 0.2]) {
      const base = { reduction, labelSmoothing };
      for (const fused of [true, false]) {
        const o = { ...base, fused };
        const msg = `crossEntropy ${reduction} ε=${labelSmoothing} fused=${fused}`;
        await gradCheck(
          ([xt]) => N.crossEntropy(xt, T.tensor(Int32Array.from(labels), [n], "i32"), o),
          ([xh]) => cpuCrossEntropy(xh, lh, false, o),
          [x],
          { msg: `${msg} labels` },
        );
        await gradCheck(
          ([xt, tt]) => N.crossEntropy(xt, tt, o),
          ([xh, th]) => cpuCrossEntropy(xh, th, true, o),
          [x, soft],
          { msg: `${msg} soft` },
        );
      }
      const big = scaled(randHost([37, 257], 44), 4);
      const bl = labelsHost(37, 257, 45);
      await assertTwins(
        ([xt]) => N.crossEntropy(xt, bl, base),
        ([xt]) => N.crossEntropy(xt, bl, { ...base, fused: false }),
        [big],
        [0],
        `crossEntropy labels ${reduction} ε=${labelSmoothing}`,
      );
      await assertTwins(
        ([xt, tt]) => N.crossEntropy(xt, tt, base),
        ([xt, tt]) => N.crossEntropy(xt, tt, { ...base, fused: false }),
        [big, softTargets(37, 257, 46, 0.9)],
        [0, 1],
        `crossEntropy soft ${reduction} ε=${labelSmoothing}`,
      );
    }
  }
});

Deno.test("crossEntropy: out-of-range labels raise on the host and give NaN on the device", async () => {
  await T.scopeAsync(async () => {
    const x = upload(randHost([3, 4], 51));
    assert.throws(
      () => N.crossEntropy(x, [0, 4, 1]),
      /crossEntropy: label 4 at index 1 is not a class index in \[0, 4\) for logits \[3, 4\]/,
    );
    assert.throws(() => N.crossEntropy(x, [0, 1]), /crossEntropy: 2 labels for logits \[3, 4\]/);
    const bad = T.tensor(Int32Array.from([0, 7, -1]), [3], "i32");
    const rows = await N.crossEntropy(x, bad, { reduction: "none" }).data();
    assert.ok(!Number.isNaN(rows[0]) && Number.isNaN(rows[1]) && Number.isNaN(rows[2]), `${rows}`);
  });
});

// ---------------------------------------------------------------------------------------------
// mse, normalize

function cpuMse(a: HostTensor, b: HostTensor): HostTensor {
  let s = 0;
  for (let i = 0; i < a.data.length; i++) s += (a.data[i] - b.data[i]) ** 2;
  return { shape: [], data: new Float64Array([s / a.data.length]) };
}

function cpuNormalize(x: HostTensor, eps = 1e-12): HostTensor {
  const L = x.shape[x.shape.length - 1];
  const out = new Float64Array(x.data.length);
  for (let r = 0; r < x.data.length / L; r++) {
    let s = 0;
    for (let j = 0; j < L; j++) s += x.data[r * L + j] ** 2;
    const d = Math.max(Math.sqrt(s), eps);
    for (let j = 0; j < L; j++) out[r * L + j] = x.data[r * L + j] / d;
  }
  return { shape: [...x.shape], data: out };
}

Deno.test("mse and normalize match float64, with gradients", async () => {
  const a = randHost([3, 5], 61), b = randHost([3, 5], 62);
  await T.scopeAsync(async () => {
    assertClose(await download(N.mse(upload(a), upload(b))), cpuMse(a, b), { msg: "mse" });
    const x = randHost([4, 257], 63);
    assertClose(await download(N.normalize(upload(x))), cpuNormalize(x), { msg: "normalize" });
    // an all-zero row stays zero, with a finite gradient
    const z = T.param(T.zeros([2, 3]));
    T.backward(T.sum(N.normalize(z)));
    assert.deepEqual(
      Array.from(await z.grad!.data()).map((v) => Number.isFinite(v)),
      Array(6).fill(true),
    );
  });
  await gradCheck(([x, y]) => N.mse(x, y), ([x, y]) => cpuMse(x, y), [a, b], { msg: "mse" });
  await gradCheck(([x]) => N.normalize(x), ([x]) => cpuNormalize(x), [a], { msg: "normalize" });
  await gradCheck(
    ([x]) => N.normalize(x, 0),
    ([x]) => transposeHost(cpuNormalize(transposeHost(x))),
    [a],
    { msg: "normalize axis 0" },
  );
});

// ---------------------------------------------------------------------------------------------
// attention

const attnRef = (causal: boolean, scale?: number) => ([q, k, v]: HostTensor[]) =>
  cpuAttention(q, k, v, { causal, scale });

Deno.test("attention matches float64: causal, Tq != Tk, head sizes up to 128 and beyond", async () => {
  const cases: [number, number, number, number, number, number, boolean][] = [
    // B, H, Tq, Tk, D, Dv, causal
    [1, 1, 1, 1, 4, 4, false],
    [2, 3, 5, 9, 8, 8, false],
    [1, 2, 17, 17, 16, 16, true],
    [1, 2, 37, 21, 33, 20, false],
    [2, 1, 19, 19, 64, 64, true],
    [1, 1, 20, 35, 128, 96, false],
    [1, 1, 18, 18, 128, 128, true],
    [1, 1, 3, 5, 130, 7, false], // beyond the fused kernel: composite fallback
  ];
  for (const [B, H, Tq, Tk, D, Dv, causal] of cases) {
    const q = randHost([B, H, Tq, D], Tq + D, -2, 2);
    const k = randHost([B, H, Tk, D], Tk + D + 1, -2, 2);
    const v = randHost([B, H, Tk, Dv], Tk + Dv + 2);
    const ref = attnRef(causal)([q, k, v]);
    for (const fused of [true, false]) {
      await T.scopeAsync(async () => {
        const y = N.attention(upload(q), upload(k), upload(v), { causal, fused });
        assertClose(await download(y), ref, {
          rtol: 1e-4,
          atol: 1e-5,
          msg: `attention ${[B, H, Tq, Tk, D, Dv]} causal=${causal} fused=${fused}`,
        });
      });
    }
  }
  // q, k, v as permuted [B, T, H, D] views, and a custom scale
  const [B, T_, H, D] = [2, 11, 3, 8];
  const h = [0, 1, 2].map((i) => randHost([B, T_, H, D], 70 + i, -2, 2));
  await T.scopeAsync(async () => {
    const views = h.map((x) => T.permute(upload(x), [0, 2, 1, 3]));
    const dense = await Promise.all(views.map((x) => download(T.contiguous(x))));
    for (const causal of [false, true]) {
      const y = N.attention(views[0], views[1], views[2], { causal, scale: 0.2 });
      assertClose(await download(y), attnRef(causal, 0.2)(dense), {
        rtol: 1e-4,
        atol: 1e-5,
        msg: `attention on permuted views causal=${causal}`,
      });
    }
  });
});

Deno.test("attention gradients: gradCheck, and fused vs composite", async () => {
  for (const [Tq, Tk, causal] of [[3, 5, false], [4, 4, true]] as [number, number, boolean][]) {
    const ins = [
      randHost([1, 2, Tq, 4], 81, -1, 1),
      randHost([1, 2, Tk, 4], 82, -1, 1),
      randHost([1, 2, Tk, 3], 83),
    ];
    await gradCheck(([q, k, v]) => N.attention(q, k, v, { causal }), attnRef(causal), ins, {
      msg: `attention Tq=${Tq} Tk=${Tk} causal=${causal}`,
    });
  }
  const cases: [number, number, number, number, number, number, boolean][] = [
    [2, 2, 7, 13, 8, 8, false],
    [1, 3, 21, 21, 16, 12, true],
    [1, 1, 33, 40, 64, 64, false],
    [1, 1, 19, 19, 128, 128, true],
  ];
  for (const [B, H, Tq, Tk, D, Dv, causal] of cases) {
    const ins = [
      randHost([B, H, Tq, D], 91, -2, 2),
      randHost([B, H, Tk, D], 92, -2, 2),
      randHost([B, H, Tk, Dv], 93),
    ];
    await assertTwins(
      ([q, k, v]) => N.attention(q, k, v, { causal }),
      ([q, k, v]) => N.attention(q, k, v, { causal, fused: false }),
      ins,
      [0, 1, 2],
      `attention ${[B, H, Tq, Tk, D, Dv]} causal=${causal}`,
    );
  }
  // only v trainable: q and k gradients are neither needed nor computed
  const ins = [randHost([1, 1, 5, 4], 94), randHost([1, 1, 5, 4], 95), randHost([1, 1, 5, 4], 96)];
  await gradCheck(([q, k, v]) => N.attention(q, k, v), attnRef(false), ins, {
    wrt: [2],
    msg: "dv only",
  });
});

// ---------------------------------------------------------------------------------------------
// bad input

Deno.test("bad shapes and dtypes raise errors naming the op and the shapes", () => {
  T.scope(() => {
    const i = T.tensor([1, 2, 3], [3], "i32");
    const x = T.zeros([4, 5]);
    assert.throws(() => N.softmax(i), /softmax: input must be a float tensor, got i32 \[3\]/);
    assert.throws(() => N.logSoftmax(T.scalar(1)), /logSoftmax: needs rank ≥ 1, got a scalar \[\]/);
    assert.throws(
      () => N.layerNorm(x, T.ones([4])),
      /layerNorm: weight \[4\] does not match the normalised axis of input \[4, 5\] \(expected \[5\]\)/,
    );
    assert.throws(
      () => N.layerNorm(x, null, i),
      /layerNorm: bias must be a float tensor, got i32 \[3\]/,
    );
    assert.throws(
      () => N.crossEntropy(T.zeros([4]), [0]),
      /crossEntropy: logits must be \[N, C\], got \[4\]/,
    );
    assert.throws(
      () => N.crossEntropy(x, T.zeros([4])),
      /crossEntropy: target f32 \[4\] does not fit logits \[4, 5\]: expected i32 class indices \[4\] or float probabilities \[4, 5\]/,
    );
    assert.throws(
      () => N.crossEntropy(x, T.tensor([0, 1, 2], [3], "i32")),
      /crossEntropy: target i32 \[3\] does not fit logits \[4, 5\]/,
    );
    assert.throws(
      () => N.crossEntropy(x, [0, 1, 2, 3], { labelSmoothing: 2 }),
      /crossEntropy: labelSmoothing 2/,
    );
    assert.throws(() => N.mse(x, T.zeros([5, 4])), /mse: shapes differ: \[4, 5\] and \[5, 4\]/);
    const q = T.zeros([1, 2, 3, 4]);
    assert.throws(
      () => N.attention(q, T.zeros([1, 2, 5, 3]), T.zeros([1, 2, 5, 4])),
      /attention: shapes do not fit: q \[1, 2, 3, 4\], k \[1, 2, 5, 3\], v \[1, 2, 5, 4\]/,
    );
    assert.throws(
      () => N.attention(q, T.zeros([1, 2, 5, 4]), T.zeros([1, 2, 5, 4]), { causal: true }),
      /attention: causal attention needs Tq == Tk, got q \[1, 2, 3, 4\], k \[1, 2, 5, 4\]/,
    );
    assert.throws(
      () => N.attention(T.zeros([2, 3, 4]), q, q),
      /attention: expects rank-4 \[B, H, T, D\] tensors, got q \[2, 3, 4\]/,
    );
  });
});
