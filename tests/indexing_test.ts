import {
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
import {
  concat,
  embedding,
  gather,
  indexAdd,
  indexAddConfig,
  indexSelect,
  scatterAdd,
  sliceAssign,
  stack,
  takeRows,
} from "../engine/ops/indexing.ts";
import {
  cpuConcat,
  cpuEmbedding,
  cpuGather,
  cpuIndexAdd,
  cpuIndexSelect,
  cpuScatterAdd,
  cpuSliceAssign,
} from "../kernels/gather.ts";
import assert from "node:assert/strict";

await setup();

/** Random integer indices in [lo, hi) as a host tensor. */
function randIdx(shape: number[], seed: number, hi: number, lo = 0): HostTensor {
  const r = rng(seed);
  const n = shape.reduce((a, b) => a * b, 1);
  return { shape, data: Float64Array.from({ length: n }, () => lo + Math.floor(r() * (hi - lo))) };
}
const upI = (h: HostTensor) => T.tensor(Int32Array.from(h.data), h.shape, "i32");
/** A host tensor's values after a round trip through f16. */
async function f16Round(h: HostTensor): Promise<HostTensor> {
  return await T.scopeAsync(async () => await download(T.cast(upload(h), "f16")));
}
/** Host permute (for references of non-contiguous views). */
function hostPermute(h: HostTensor, perm: number[]): HostTensor {
  const shape = perm.map((p) => h.shape[p]);
  const st = h.shape.map((_, d) => h.shape.slice(d + 1).reduce((a, b) => a * b, 1));
  const data = new Float64Array(h.data.length);
  for (let i = 0; i < data.length; i++) {
    let rem = i, off = 0;
    for (let d = shape.length - 1; d >= 0; d--) {
      off += (rem % shape[d]) * st[perm[d]];
      rem = Math.floor(rem / shape[d]);
    }
    data[i] = h.data[off];
  }
  return { shape, data };
}

/** Runs fn with the index-add kernel forced to the loop (0) or the sort (1) version. */
function withPath<R>(path: 0 | 1, fn: () => R): R {
  const saved = { ...indexAddConfig };
  indexAddConfig.loopList = path === 0 ? Infinity : 0;
  indexAddConfig.loopWork = path === 0 ? Infinity : 0;
  try {
    return fn();
  } finally {
    Object.assign(indexAddConfig, saved);
  }
}
async function withPathAsync<R>(path: 0 | 1, fn: () => Promise<R>): Promise<R> {
  const saved = { ...indexAddConfig };
  indexAddConfig.loopList = path === 0 ? Infinity : 0;
  indexAddConfig.loopWork = path === 0 ? Infinity : 0;
  try {
    return await fn();
  } finally {
    Object.assign(indexAddConfig, saved);
  }
}

// ----- forward -------------------------------------------------------------------------------

Deno.test("embedding: f32 and f16 tables, any ids shape, views", async () => {
  for (
    const [V, D, idShape] of [[13, 7, [3, 5]], [1, 3, [4]], [9, 1, []], [6, 5, [2, 1, 3]]] as [
      number,
      number,
      number[],
    ][]
  ) {
    const w = randHost([V, D], V * 3 + D);
    const ids = randIdx(idShape, V + 1, V);
    await T.scopeAsync(async () => {
      const ref = cpuEmbedding(w, ids);
      assertClose(await download(embedding(upload(w), upI(ids))), ref, { msg: `f32 [${V}, ${D}]` });
      if (T.E().f16) {
        const w16 = T.cast(upload(w), "f16");
        const out = embedding(w16, upI(ids));
        assert.equal(out.dtype, "f32");
        assertClose(await download(out), cpuEmbedding(await f16Round(w), ids), {
          msg: "f16 table",
        });
      }
    });
  }
  // transposed table and transposed ids read through their strides
  const wt = randHost([5, 11], 7);
  const idt = randIdx([4, 3], 8, 11);
  await T.scopeAsync(async () => {
    const w = T.transpose(upload(wt)); // [11, 5]
    const ids = T.transpose(upI(idt)); // [3, 4]
    assert.ok(!w.isContiguous && !ids.isContiguous);
    const ref = cpuEmbedding(hostPermute(wt, [1, 0]), hostPermute(idt, [1, 0]));
    assertClose(await download(embedding(w, ids)), ref, { msg: "views" });
  });
});

Deno.test("indexSelect and gather match the reference on every axis and on views", async () => {
  const xh = randHost([5, 7, 3], 11);
  for (const axis of [0, 1, 2, -1]) {
    const a = (axis + 3) % 3;
    const idx = randIdx([9], 12 + a, xh.shape[a]);
    await T.scopeAsync(async () => {
      assertClose(
        await download(indexSelect(upload(xh), axis, upI(idx))),
        cpuIndexSelect(xh, a, idx),
        {
          msg: `indexSelect axis ${axis}`,
        },
      );
      // permuted x
      const xp = T.permute(upload(xh), [2, 0, 1]);
      const hp = hostPermute(xh, [2, 0, 1]);
      const idp = randIdx([4], 13 + a, hp.shape[a]);
      assertClose(await download(indexSelect(xp, a, upI(idp))), cpuIndexSelect(hp, a, idp), {
        msg: `indexSelect view axis ${a}`,
      });
      // gather: indices no larger than x off the axis, any length along it
      const gs = xh.shape.map((s, d) => (d === a ? 6 : Math.max(1, s - d)));
      const gi = randIdx(gs, 14 + a, xh.shape[a]);
      assertClose(await download(gather(upload(xh), axis, upI(gi))), cpuGather(xh, a, gi), {
        msg: `gather axis ${axis}`,
      });
      const gp = hp.shape.map((s, d) => (d === a ? 2 : s));
      const gpi = randIdx(gp, 15 + a, hp.shape[a]);
      assertClose(await download(gather(xp, a, upI(gpi))), cpuGather(hp, a, gpi), {
        msg: `gather view axis ${a}`,
      });
    });
  }
});

Deno.test("takeRows picks one row per sequence; i32 tensors gather exactly; out-of-range reads 0", async () => {
  const x = randHost([3, 9, 5], 21);
  const pos = { shape: [3], data: Float64Array.of(8, 0, 4) };
  await T.scopeAsync(async () => {
    const out = await download(takeRows(upload(x), upI(pos)));
    const ref = new Float64Array(15);
    for (let b = 0; b < 3; b++) {
      for (let d = 0; d < 5; d++) ref[b * 5 + d] = x.data[b * 45 + pos.data[b] * 5 + d];
    }
    assertClose(out, { shape: [3, 5], data: ref }, { msg: "takeRows" });
    const big = T.tensor(Int32Array.of(2 ** 30 + 1, -7, 123456789), [3], "i32");
    const sel = indexSelect(big, 0, T.tensor([2, 0, 1, 2], [4], "i32"));
    assert.equal(sel.dtype, "i32");
    assert.deepEqual([...await sel.data()], [123456789, 2 ** 30 + 1, -7, 123456789]);
    const oob = await indexSelect(upload(x), 1, T.tensor([-1, 9, 3], [3], "i32")).data();
    for (let b = 0; b < 3; b++) {
      for (let d = 0; d < 5; d++) {
        assert.equal(oob[b * 15 + d], 0);
        assert.equal(oob[b * 15 + 5 + d], 0);
        assert.equal(oob[b * 15 + 10 + d], Math.fround(x.data[b * 45 + 15 + d]));
      }
    }
  });
});

Deno.test("scatterAdd adds duplicates; src may be larger than the indices; views", async () => {
  const base = randHost([5, 4, 3], 31);
  const idx = randIdx([5, 6, 2], 32, 4); // 6 sources onto 4 rows: duplicates certain
  const src = randHost([5, 7, 3], 33);
  await T.scopeAsync(async () => {
    const out = scatterAdd(upload(base), 1, upI(idx), upload(src));
    assertClose(await download(out), cpuScatterAdd(base, 1, idx, src), { msg: "scatterAdd" });
    const srcT = randHost([3, 7, 5], 34);
    const sv = T.permute(upload(srcT), [2, 1, 0]);
    assertClose(
      await download(scatterAdd(upload(base), -2, upI(idx), sv)),
      cpuScatterAdd(base, 1, idx, hostPermute(srcT, [2, 1, 0])),
      { msg: "scatterAdd src view" },
    );
    // axis 0 with out-of-range indices (ignored)
    const i0 = randIdx([8, 4, 3], 35, 6, -1);
    const s0 = randHost([8, 4, 3], 36);
    assertClose(
      await download(scatterAdd(upload(base), 0, upI(i0), upload(s0))),
      cpuScatterAdd(base, 0, i0, s0),
      { msg: "scatterAdd axis 0 out of range" },
    );
  });
});

Deno.test("indexAdd: loop and sort versions agree bitwise with many duplicates", async () => {
  for (
    const [shape, axis, n, seed] of [[[11, 6], 0, 300, 1], [[4, 13, 3], 1, 77, 2], [
      [3, 5],
      1,
      1,
      3,
    ]] as [
      number[],
      number,
      number,
      number,
    ][]
  ) {
    const base = randHost(shape, seed);
    const idx = randIdx([n], seed + 10, shape[axis] + 1, -1); // includes -1 and size (ignored)
    const src = randHost(shape.map((s, d) => (d === axis ? n : s)), seed + 20);
    const ref = cpuIndexAdd(base, axis, idx, src);
    const outs: Float32Array[] = [];
    for (const path of [0, 1] as const) {
      await T.scopeAsync(async () => {
        const y = withPath(path, () => indexAdd(upload(base), axis, upI(idx), upload(src)));
        const h = await download(y);
        assertClose(h, ref, { rtol: 1e-5, atol: 1e-5, msg: `indexAdd path ${path} ${shape}` });
        outs.push(Float32Array.from(h.data));
      });
    }
    assert.deepEqual(outs[0], outs[1], "loop and sort versions differ");
  }
  // a strided index view (every other element) takes both versions too
  const raw = randIdx([40, 2], 9, 7);
  const col0: HostTensor = { shape: [40], data: raw.data.filter((_, i) => i % 2 === 0) };
  const src = randHost([40, 3], 10);
  for (const path of [0, 1] as const) {
    await T.scopeAsync(async () => {
      const iv = T.narrow(upI(raw), 1, 0, 1); // [40, 1], stride 2
      const y = withPath(
        path,
        () => indexAdd(T.zeros([7, 3]), 0, T.reshape(iv, [40]), upload(src)),
      );
      assertClose(
        await download(y),
        cpuIndexAdd({ shape: [7, 3], data: new Float64Array(21) }, 0, col0, src),
        {
          rtol: 1e-5,
          atol: 1e-5,
          msg: `strided index path ${path}`,
        },
      );
    });
  }
});

Deno.test("concat and stack: any axis, views, f16 with f32", async () => {
  const a = randHost([2, 3, 4], 41), b = randHost([2, 1, 4], 42), c = randHost([4, 5, 2], 43);
  await T.scopeAsync(async () => {
    const cv = T.permute(upload(c), [2, 1, 0]); // [2, 5, 4], a view
    const out = concat([upload(a), upload(b), cv], 1);
    assertClose(await download(out), cpuConcat([a, b, hostPermute(c, [2, 1, 0])], 1), {
      msg: "concat",
    });
    const a2 = randHost([2, 3, 1], 44);
    assertClose(await download(concat([upload(a), upload(a2)], -1)), cpuConcat([a, a2], 2), {
      msg: "concat last axis",
    });
    if (T.E().f16) {
      const mixed = concat([T.cast(upload(a), "f16"), upload(b)], 1);
      assert.equal(mixed.dtype, "f32");
      assertClose(await download(mixed), cpuConcat([await f16Round(a), b], 1), {
        msg: "concat f16+f32",
      });
      assert.equal(concat([T.cast(upload(a), "f16"), T.cast(upload(a), "f16")]).dtype, "f16");
    }
    const x = randHost([3, 5], 45), y = randHost([3, 5], 46);
    for (const axis of [0, 1, 2, -1]) {
      const d = axis < 0 ? axis + 3 : axis;
      const ins = [x, y, x].map((h) => ({ shape: h.shape.toSpliced(d, 0, 1), data: h.data }));
      const yt = T.transpose(upload({ shape: [5, 3], data: hostPermute(y, [1, 0]).data }));
      assertClose(await download(stack([upload(x), yt, upload(x)], axis)), cpuConcat(ins, d), {
        msg: `stack axis ${axis}`,
      });
    }
  });
});

Deno.test("sliceAssign: explicit and default block sizes, broadcast value", async () => {
  const x = randHost([4, 6, 5], 51);
  const v = randHost([2, 1, 5], 52);
  await T.scopeAsync(async () => {
    const y = sliceAssign(upload(x), upload(v), [1, 2, 0], [2, 3, 5]);
    assertClose(await download(y), cpuSliceAssign(x, v, [1, 2, 0], [2, 3, 5]), { msg: "explicit" });
    const v2 = randHost([3, 5], 53);
    const y2 = sliceAssign(upload(x), upload(v2), [1, 2]);
    assertClose(await download(y2), cpuSliceAssign(x, v2, [1, 2, 0], [3, 3, 5]), {
      msg: "default",
    });
    // x is untouched (functional)
    const xt = upload(x);
    sliceAssign(xt, upload(v2), [0, 0]);
    assertClose(await download(xt), x, { msg: "x unchanged" });
  });
});

// ----- gradients -----------------------------------------------------------------------------

Deno.test("gradients of embedding, indexSelect, gather, takeRows (duplicate indices, both versions)", async () => {
  const w = randHost([7, 4], 61);
  const ids = { shape: [2, 5], data: Float64Array.of(3, 1, 3, 3, 0, 6, 1, 3, 0, 0) };
  for (const path of [0, 1] as const) {
    await withPathAsync(
      path,
      () =>
        gradCheck(([x]) => embedding(x, upI(ids)), ([x]) => cpuEmbedding(x, ids), [w], {
          msg: `embedding path ${path}`,
        }),
    );
    const x = randHost([4, 5, 3], 62);
    const idx = { shape: [7], data: Float64Array.of(4, 0, 4, 2, 4, 1, 0) };
    await withPathAsync(
      path,
      () =>
        gradCheck(([t]) => indexSelect(t, 1, upI(idx)), ([t]) => cpuIndexSelect(t, 1, idx), [x], {
          msg: `indexSelect path ${path}`,
        }),
    );
  }
  const x = randHost([4, 5, 3], 63);
  const gi = randIdx([3, 8, 2], 64, 5);
  await gradCheck(([t]) => gather(t, 1, upI(gi)), ([t]) => cpuGather(t, 1, gi), [x], {
    msg: "gather",
  });
  const pos = { shape: [4], data: Float64Array.of(4, 0, 4, 2) };
  const takeRef = (t: HostTensor): HostTensor => {
    const g = cpuGather(t, 1, {
      shape: [4, 1, 3],
      data: Float64Array.from({ length: 12 }, (_, i) => pos.data[Math.floor(i / 3)]),
    });
    return { shape: [4, 3], data: g.data };
  };
  await gradCheck(([t]) => takeRows(t, upI(pos)), ([t]) => takeRef(t), [x], { msg: "takeRows" });
});

Deno.test("gradients of scatterAdd and indexAdd wrt base and src", async () => {
  const base = randHost([4, 5, 3], 71);
  const idx = randIdx([4, 6, 2], 72, 5);
  const src = randHost([4, 7, 3], 73);
  await gradCheck(
    ([b, s]) => scatterAdd(b, 1, upI(idx), s),
    ([b, s]) => cpuScatterAdd(b, 1, idx, s),
    [base, src],
    { msg: "scatterAdd" },
  );
  const ii = { shape: [6], data: Float64Array.of(2, 2, 0, 4, 2, 1) };
  const s2 = randHost([6, 5, 3], 74);
  await gradCheck(
    ([b, s]) => indexAdd(b, 0, upI(ii), s),
    ([b, s]) => cpuIndexAdd(b, 0, ii, s),
    [base, s2],
    { msg: "indexAdd" },
  );
});

Deno.test("gradients of concat, stack and sliceAssign", async () => {
  const a = randHost([2, 3, 4], 81), b = randHost([2, 2, 4], 82), c = randHost([2, 3, 4], 83);
  await gradCheck((xs) => concat(xs, 1), (xs) => cpuConcat(xs, 1), [a, b, a], { msg: "concat" });
  const st = (xs: HostTensor[]) =>
    cpuConcat(xs.map((h) => ({ shape: [2, 1, 3, 4], data: h.data })), 1);
  await gradCheck((xs) => stack(xs, 1), st, [a, c], { msg: "stack" });
  const x = randHost([4, 6, 5], 84), v = randHost([2, 1, 5], 85);
  await gradCheck(
    ([p, q]) => sliceAssign(p, q, [1, 2, 0], [2, 3, 5]),
    ([p, q]) => cpuSliceAssign(p, q, [1, 2, 0], [2, 3, 5]),
    [x, v],
    { msg: "sliceAssign" },
  );
});

Deno.test("CoOp splice: trainable context vectors broadcast into every class's token rows", async () => {
  const nCls = 3, L = 77, D = 5;
  const x = randHost([nCls, L, D], 91), ctx = randHost([4, D], 92);
  const size = [nCls, 4, D];
  await T.scopeAsync(async () => {
    const y = sliceAssign(upload(x), upload(ctx), [0, 1]);
    assert.deepEqual(y.shape, [nCls, L, D]);
    assertClose(await download(y), cpuSliceAssign(x, ctx, [0, 1, 0], size), { msg: "forward" });
  });
  // gradient wrt ctx only: x is frozen
  await gradCheck(
    ([p, q]) => sliceAssign(p, q, [0, 1]),
    ([p, q]) => cpuSliceAssign(p, q, [0, 1, 0], size),
    [x, ctx],
    { wrt: [1], msg: "CoOp ctx" },
  );
  // the frozen prompt costs no gradient kernel: fewer dispatches than with a trainable x
  const count = (trainX: boolean) =>
    T.scope(() => {
      const xt = upload(x), ct = T.param(upload(ctx));
      if (trainX) T.param(xt);
      const loss = T.sum(T.mul(sliceAssign(xt, ct, [0, 1]), upload(randHost([nCls, L, D], 93))));
      const before = T.E().dispatches;
      T.backward(loss);
      const n = T.E().dispatches - before;
      assert.equal(xt.grad === null, !trainX);
      assert.deepEqual(ct.grad!.shape, [4, D]);
      xt.dispose();
      ct.dispose();
      return n;
    });
  const frozen = count(false), trained = count(true);
  assert.ok(frozen < trained, `frozen x: ${frozen} dispatches, trainable x: ${trained}`);
});

Deno.test("a frozen embedding table dispatches no gradient kernel", async () => {
  const w = randHost([50, 6], 101);
  const ids = randIdx([3, 7], 102, 50);
  const p = randHost([3, 7, 6], 103);
  const run = (mode: "frozen" | "trainable" | "constant") =>
    T.scope(() => {
      const wt = upload(w);
      if (mode === "trainable") T.param(wt);
      const pt = T.param(upload(p));
      const e = mode === "constant" ? T.zeros([3, 7, 6]) : embedding(wt, upI(ids));
      const loss = T.sum(T.mul(e, pt));
      const before = T.E().dispatches;
      T.backward(loss);
      const n = T.E().dispatches - before;
      assert.equal(wt.grad === null, mode !== "trainable");
      wt.dispose();
      pt.dispose();
      return n;
    });
  const frozen = run("frozen"), constant = run("constant"), trainable = run("trainable");
  assert.equal(frozen, constant, "a frozen embedding adds dispatches to backward");
  assert.ok(trainable > frozen, `trainable ${trainable} vs frozen ${frozen}`);
  await T.E().sync();
});

// ----- errors --------------------------------------------------------------------------------

Deno.test("errors name the op and the shapes", () => {
  T.scope(() => {
    const x = T.zeros([2, 3, 4]);
    const i = T.tensor([0, 1], [2], "i32");
    assert.throws(
      () => gather(x, 3, T.zeros([2, 3, 4])),
      /gather: indices must be i32, got f32 \[2, 3, 4\]/,
    );
    assert.throws(
      () => gather(x, 3, T.tensor([0], [1, 1, 1], "i32")),
      /gather: axis 3 out of range for \[2, 3, 4\]/,
    );
    assert.throws(() => indexSelect(x, -4, i), /indexSelect: axis -4 out of range for \[2, 3, 4\]/);
    assert.throws(
      () => embedding(T.zeros([5, 2]), T.tensor([1, 2])),
      /embedding: indices must be i32, got f32 \[2\]/,
    );
    assert.throws(
      () => indexSelect(x, 0, T.tensor([0], [1, 1], "i32")),
      /indexSelect: indices must be 1-D, got \[1, 1\]/,
    );
    assert.throws(
      () => gather(x, 0, T.tensor([0, 0], [1, 2], "i32")),
      /gather: indices \[1, 2\] must have the rank of x \[2, 3, 4\]/,
    );
    assert.throws(
      () => scatterAdd(x, 1, T.tensor([0], [1, 1, 1], "i32"), T.zeros([1, 1])),
      /scatterAdd: indices \[1, 1, 1\] must fit inside src \[1, 1\]/,
    );
    assert.throws(
      () => concat([T.zeros([2, 3]), T.zeros([3, 3])], 1),
      /concat: shapes \[2, 3\], \[3, 3\] differ off axis 1/,
    );
    assert.throws(() => concat([T.zeros([2, 3])], 2), /concat: axis 2 out of range for \[2, 3\]/);
    assert.throws(
      () => concat([T.zeros([2]), i]),
      /concat: cannot mix i32 and float tensors: f32 \[2\], i32 \[2\]/,
    );
    assert.throws(
      () => stack([T.zeros([2, 3]), T.zeros([3, 2])]),
      /stack: shapes \[2, 3\], \[3, 2\] differ/,
    );
    assert.throws(
      () => stack([T.zeros([2, 3])], 3),
      /stack: axis 3 out of range for stacking \[2, 3\]/,
    );
    assert.throws(
      () => sliceAssign(x, T.zeros([3, 4]), [0, 1]),
      /sliceAssign: block begin \[0,1,0\] size \[2,3,4\] of value \[3, 4\] does not fit x \[2, 3, 4\]/,
    );
    assert.throws(
      () => sliceAssign(x, T.zeros([2, 4]), [0, 0], [2, 3, 4]),
      /sliceAssign: value \[2, 4\] does not broadcast to the block begin \[0,0,0\] size \[2,3,4\]/,
    );
    assert.throws(
      () => takeRows(x, T.tensor([0, 0, 0], [3], "i32")),
      /takeRows: x \[2, 3, 4\] needs positions of shape \[2\], got \[3\]/,
    );
  });
});
