import {
  assertClose,
  download,
  gradCheck,
  type HostTensor,
  randHost,
  setup,
  T,
  upload,
} from "./util.ts";
import { cpuReduce } from "../kernels/reduce.ts";
import { cpuMap } from "../kernels/elementwise.ts";
import assert from "node:assert/strict";

await setup();

/** float64 permute of a contiguous host tensor. */
function cpuPermute(x: HostTensor, perm: number[]): HostTensor {
  const shape = perm.map((p) => x.shape[p]);
  const st = x.shape.map((_, d) => x.shape.slice(d + 1).reduce((a, b) => a * b, 1));
  const data = new Float64Array(x.data.length);
  const coord = new Array(shape.length).fill(0);
  for (let i = 0; i < data.length; i++) {
    let r = i;
    for (let d = shape.length - 1; d >= 0; d--) {
      coord[d] = r % shape[d];
      r = Math.floor(r / shape[d]);
    }
    let off = 0;
    perm.forEach((p, d) => (off += coord[d] * st[p]));
    data[i] = x.data[off];
  }
  return { shape, data };
}

Deno.test("views are metadata: permute, reshape of a view, slice, expand", async () => {
  const h = randHost([2, 3, 4], 1);
  await T.scopeAsync(async () => {
    const x = upload(h);
    const before = T.E().dispatches;
    const p = T.permute(x, [2, 0, 1]);
    const s = T.slice(x, [1, 0, 1], [1, 3, 2]);
    const e = T.expand(T.reshape(x, [2, 1, 12]), [2, 5, 12]);
    assert.equal(T.E().dispatches, before, "views dispatched a kernel");
    assert.equal(p.storage, x.storage);
    assertClose(await download(p), cpuPermute(h, [2, 0, 1]), { msg: "permute" });
    const sref: number[] = [];
    for (let j = 0; j < 3; j++) for (let k = 1; k < 3; k++) sref.push(h.data[12 + j * 4 + k]);
    assertClose(
      await download(s),
      sref.length ? { shape: [1, 3, 2], data: Float64Array.from(sref) } : h,
    );
    const eh = await download(e);
    assert.deepEqual(eh.shape, [2, 5, 12]);
    for (let b = 0; b < 2; b++) {
      for (let r = 0; r < 5; r++) {
        for (let c = 0; c < 12; c++) {
          assert.equal(eh.data[(b * 5 + r) * 12 + c], Math.fround(h.data[b * 12 + c]));
        }
      }
    }
    // reshape of a transposed view cannot be expressed with strides: it copies, values stay right
    const t = T.reshape(T.transpose(x, 1, 2), [2, 12]);
    assertClose(await download(t), { shape: [2, 12], data: cpuPermute(h, [0, 2, 1]).data });
    // reshape of a view that can stay a view (split the leading axis of a permuted tensor)
    const v = T.reshape(p, [2, 2, 2, 3]);
    assert.equal(v.storage, x.storage);
    assertClose(await download(v), { shape: [2, 2, 2, 3], data: cpuPermute(h, [2, 0, 1]).data });
  });
});

Deno.test("view gradients: permute, slice, expand, reshape", async () => {
  const h = randHost([3, 4], 2);
  await gradCheck(([x]) => T.permute(x, [1, 0]), ([x]) => cpuPermute(x, [1, 0]), [h], {
    msg: "permute",
  });
  await gradCheck(
    ([x]) => T.mul(T.slice(x, [1, 1], [2, 2]), 3),
    ([x]) => ({ shape: [2, 2], data: Float64Array.from([5, 6, 9, 10].map((i) => 3 * x.data[i])) }),
    [h],
    { msg: "slice" },
  );
  await gradCheck(
    ([x]) => T.expand(T.reshape(x, [1, 12]), [3, 12]),
    ([x]) => ({ shape: [3, 12], data: Float64Array.from([...x.data, ...x.data, ...x.data]) }),
    [h],
    { msg: "expand" },
  );
});

Deno.test("reductions over any axes, keepdim, views", async () => {
  const cases: [number[], number[]][] = [
    [[7], [0]],
    [[3, 5], [1]],
    [[3, 5], [0]],
    [[2, 3, 4], [0, 2]],
    [[2, 1, 300], [2]],
    [[4, 3, 2], [0, 1, 2]],
  ];
  for (const [shape, axes] of cases) {
    const h = randHost(shape, shape.length + axes.length);
    await T.scopeAsync(async () => {
      const x = upload(h);
      for (const op of ["sum", "max", "min"] as const) {
        const ref = cpuReduce(op, h, axes);
        assertClose(await download(T[op](x, axes, true)), ref, {
          rtol: 1e-5,
          atol: 1e-5,
          msg: `${op} ${shape}/${axes}`,
        });
        const flat = await download(T[op](x, axes));
        assert.deepEqual(flat.shape, shape.filter((_, d) => !axes.includes(d)));
      }
      const n = axes.reduce((a, d) => a * shape[d], 1);
      const m = cpuReduce("sum", h, axes);
      assertClose(await download(T.mean(x, axes, true)), {
        shape: m.shape,
        data: m.data.map((v) => v / n),
      }, {
        rtol: 1e-5,
        atol: 1e-6,
        msg: "mean",
      });
    });
  }
  // a reduction of a transposed view reads through strides
  const h = randHost([4, 6], 9);
  await T.scopeAsync(async () => {
    const r = await download(T.sum(T.transpose(upload(h)), 1));
    assertClose(r, { shape: [6], data: cpuReduce("sum", h, [0]).data }, { rtol: 1e-5, atol: 1e-6 });
  });
});

function cpuVar(x: HostTensor, axis: number, correction: number): HostTensor {
  const s = cpuReduce("sum", x, [axis]);
  const n = x.shape[axis];
  const mean = { shape: s.shape, data: s.data.map((v) => v / n) };
  const d = cpuMap("sub", [x, mean]);
  const ss = cpuReduce("sum", cpuMap("mul", [d, d]), [axis]);
  return {
    shape: ss.shape.filter((_, i) => i !== axis),
    data: ss.data.map((v) => v / (n - correction)),
  };
}

Deno.test("reduction gradients (sum, mean, max, variance)", async () => {
  const h = randHost([3, 5], 4);
  await gradCheck(
    ([x]) => T.sum(x, 1),
    ([x]) => {
      const r = cpuReduce("sum", x, [1]);
      return { shape: [3], data: r.data };
    },
    [h],
    { msg: "sum" },
  );
  await gradCheck(
    ([x]) => T.mean(x, 0),
    ([x]) => {
      const r = cpuReduce("sum", x, [0]);
      return { shape: [5], data: r.data.map((v) => v / 3) };
    },
    [h],
    { msg: "mean" },
  );
  await gradCheck(
    ([x]) => T.max(x, 1),
    ([x]) => ({ shape: [3], data: cpuReduce("max", x, [1]).data }),
    [h],
    {
      msg: "max",
    },
  );
  await gradCheck(([x]) => T.variance(x, 1, false, 1), ([x]) => cpuVar(x, 1, 1), [h], {
    msg: "var",
  });
});

Deno.test("scope frees intermediates and keeps the result; memory returns to its level", async () => {
  const x = T.tensor([1, 2, 3, 4], [2, 2]);
  const base = T.memory().bytesInUse;
  const y = T.scope(() => T.sum(T.mul(T.exp(x), T.add(x, 1))));
  const one = T.memory().bytesInUse;
  assert.ok(one > base);
  assert.ok(one - base <= 512, `only the result should survive, ${one - base} bytes did`);
  assert.ok(
    Math.abs(
      (await y.item()) - (2 * Math.E + 3 * Math.E ** 2 + 4 * Math.E ** 3 + 5 * Math.E ** 4),
    ) < 1e-2,
  );
  y.dispose();
  assert.equal(T.memory().bytesInUse, base);
  // a throwing scope still frees what it made
  assert.throws(() =>
    T.scope(() => {
      T.exp(x);
      throw new Error("boom");
    }), /boom/);
  assert.equal(T.memory().bytesInUse, base);
  x.dispose();
});

Deno.test("backward frees the tape and accumulates leaf gradients", async () => {
  const w = T.param(T.tensor([0.5, -0.25, 2], [3]));
  for (let i = 0; i < 2; i++) {
    T.scope(() => {
      const loss = T.sum(T.mul(T.mul(w, w), 0.5));
      T.backward(loss);
    });
  }
  assertClose(await download(w.grad!), [1, -0.5, 4], { msg: "two backward passes accumulate" });
  // a loss returned from a scope still reaches the leaves (its intermediates were disposed)
  w.grad!.dispose();
  w.grad = null;
  const loss = T.scope(() => T.sum(T.exp(T.mul(w, 2))));
  T.backward(loss);
  assertClose(await download(w.grad!), [0.5, -0.25, 2].map((v) => 2 * Math.exp(2 * v)), {
    rtol: 1e-6,
    msg: "grad through a closed scope",
  });
  assert.throws(() => T.backward(loss), /already released/);
  loss.dispose();
  w.dispose();
});

Deno.test("noGrad records nothing", () => {
  const w = T.param(T.tensor([1, 2]));
  const y = T.noGrad(() => T.mul(w, 2));
  assert.equal(y.requiresGrad, false);
  assert.equal(y.node, null);
  assert.throws(
    () => T.backward(T.sum(y)),
    /backward: tensor \[\] is not the result of ops on tensors that require grad/,
  );
  y.dispose();
  w.dispose();
});

Deno.test("a second identical step compiles nothing", () => {
  const x = T.tensor([1, 2, 3, 4, 5, 6], [2, 3]);
  const step = (k: number) => T.scope(() => T.sum(T.mul(T.add(T.transpose(x), k), 2), 0));
  step(1).dispose();
  const c = T.memory().compilations;
  step(2).dispose();
  // a new shape of the same ops compiles nothing either: shapes travel in uniforms
  T.scope(() => T.sum(T.mul(T.add(T.transpose(T.zeros([5, 7])), 3), 2), 0)).dispose();
  assert.equal(T.memory().compilations, c);
  x.dispose();
});

Deno.test("device errors surface with the failing kernel's name, and the engine goes on", async () => {
  const e = T.E();
  e.launch({
    kernel: "broken_kernel",
    key: "x",
    wgsl: () => "this is not wgsl",
    inputs: [],
    outputs: [],
    workgroups: [1],
  });
  await assert.rejects(async () => {
    await e.sync();
    await new Promise((r) => setTimeout(r, 50));
    e.check();
  }, /broken_kernel/);
  e.check();
  const y = T.add(T.tensor([1]), 1);
  assert.equal(await y.item(), 2);
  y.dispose();
});

Deno.test("shape errors name op and shapes", () => {
  T.scope(() => {
    assert.throws(
      () => T.reshape(T.zeros([2, 3]), [4, 2]),
      /reshape: cannot reshape \[2, 3\] \(6\) to \[4, 2\]/,
    );
    assert.throws(
      () => T.matmul(T.zeros([2, 3]), T.zeros([4, 2])),
      /matmul: inner sizes differ: \[2, 3\] · \[4, 2\]/,
    );
    assert.throws(() => T.sum(T.zeros([2, 3]), 2), /sum: axis 2 out of range for rank 2/);
    assert.throws(
      () => T.expand(T.zeros([2, 3]), [4, 3]),
      /expand: cannot expand \[2, 3\] to \[4, 3\]/,
    );
    assert.throws(() => T.tensor([1, 2, 3], [2, 2]), /tensor: 3 values do not fill shape \[2, 2\]/);
  });
});

Deno.test("a gradient shared by two inputs (f(x) + g(x), residuals) is not freed early", async () => {
  const x = T.param(T.tensor([1, 2, 3]));
  T.scope(() => T.backward(T.sum(T.add(T.exp(x), T.log(x)))));
  assertClose(await download(x.grad!), [1, 2, 3].map((v) => Math.exp(v) + 1 / v), { rtol: 1e-6 });
  // backward(loss, grad) leaves the caller's grad alone
  const g = T.tensor([2]);
  T.scope(() => T.backward(T.sum(T.mul(x, x)), T.reshape(g, [])));
  assert.equal(g.disposed, false);
  assertClose(await download(x.grad!), [1, 2, 3].map((v) => Math.exp(v) + 1 / v + 4 * v), {
    rtol: 1e-6,
  });
  g.dispose();
  x.dispose();
});
