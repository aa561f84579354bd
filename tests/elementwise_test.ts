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
import { cpuMap } from "../kernels/elementwise.ts";
import assert from "node:assert/strict";

await setup();

// shape pairs: equal, odd sizes, size-1 axes, broadcast of lower rank, scalar
const PAIRS: [number[], number[]][] = [
  [[7], [7]],
  [[3, 5], [3, 5]],
  [[2, 1, 5], [4, 1]],
  [[1, 9], [13, 1]],
  [[2, 3, 4], []],
  [[1], [2, 3]],
];

const range = (op: string): [number, number] =>
  ["log", "sqrt", "rsqrt"].includes(op) ? [0.2, 3] : op === "pow" ? [0.3, 2] : [-3, 3];

const UNARY: Record<string, (x: T.Tensor) => T.Tensor> = {
  neg: T.neg,
  exp: T.exp,
  log: T.log,
  sqrt: T.sqrt,
  rsqrt: T.rsqrt,
  abs: T.abs,
  tanh: T.tanh,
  sigmoid: T.sigmoid,
  relu: T.relu,
  gelu: T.gelu,
  quick_gelu: T.quickGelu,
  square: T.square,
};
const BINARY: Record<string, (a: T.Tensor, b: T.Tensor) => T.Tensor> = {
  add: T.add,
  sub: T.sub,
  mul: T.mul,
  div: T.div,
  pow: T.pow,
  maximum: T.maximum,
  minimum: T.minimum,
};

Deno.test("unary ops match the float64 reference, on contiguous and transposed inputs", async () => {
  for (const [op, f] of Object.entries(UNARY)) {
    const [lo, hi] = range(op);
    for (const shape of [[1], [5, 7], [3, 1, 4]]) {
      const h = randHost(shape, shape.length * 7 + op.length, lo, hi);
      await T.scopeAsync(async () => {
        assertClose(await download(f(upload(h))), cpuMap(op, [h]), {
          rtol: 2e-6,
          atol: 1e-6,
          msg: op,
        });
      });
    }
    // a transposed view goes through the strided path
    const h = randHost([4, 6], 3, lo, hi);
    await T.scopeAsync(async () => {
      const x = T.transpose(upload(h));
      const ref = cpuMap(op, [await download(T.contiguous(x))]);
      assertClose(await download(f(x)), ref, { rtol: 2e-6, atol: 1e-6, msg: `${op} on a view` });
    });
  }
});

Deno.test("binary ops broadcast like the reference", async () => {
  for (const [op, f] of Object.entries(BINARY)) {
    const [lo, hi] = range(op);
    for (const [sa, sb] of PAIRS) {
      const a = randHost(sa, 1, lo, hi), b = randHost(sb, 2, op === "div" ? 0.5 : lo, hi);
      await T.scopeAsync(async () => {
        assertClose(await download(f(upload(a), upload(b))), cpuMap(op, [a, b]), {
          rtol: 2e-6,
          atol: 1e-6,
          msg: `${op} ${sa}×${sb}`,
        });
      });
    }
  }
});

Deno.test("comparisons, where and clamp", async () => {
  const a = randHost([3, 4], 5, -2, 2), b = randHost([4], 6, -2, 2);
  await T.scopeAsync(async () => {
    for (const op of ["eq", "ne", "lt", "le", "gt", "ge"] as const) {
      assertClose(await download(T[op](upload(a), upload(b))), cpuMap(op, [a, b]), { msg: op });
    }
    const c = T.gt(upload(a), 0);
    const ref = cpuMap("where", [
      cpuMap("gt", [a, { shape: [], data: new Float64Array([0]) }]),
      a,
      b,
    ]);
    assertClose(await download(T.where(c, upload(a), upload(b))), ref, { msg: "where" });
    assertClose(await download(T.clamp(upload(a), -0.5, 0.7)), cpuMap("clamp", [a], [-0.5, 0.7]), {
      msg: "clamp",
    });
  });
});

Deno.test("unary gradients match central finite differences", async () => {
  for (const [op, f] of Object.entries(UNARY)) {
    const [lo, hi] = range(op);
    let h = randHost([3, 5], 11, lo, hi);
    if (op === "abs" || op === "relu") {
      h = { shape: h.shape, data: h.data.map((v) => (Math.abs(v) < 0.05 ? 0.3 : v)) };
    }
    await gradCheck(([x]) => f(x), ([x]) => cpuMap(op, [x]), [h], { msg: op });
  }
});

Deno.test("binary gradients reduce over broadcast axes", async () => {
  for (const [op, f] of Object.entries(BINARY)) {
    const [lo, hi] = range(op);
    for (
      const [sa, sb] of [[[2, 3], [3]], [[4, 1], [1, 5]], [[3], [2, 3]]] as [number[], number[]][]
    ) {
      const a = randHost(sa, 21, lo, hi);
      // keep max/min away from ties
      const b = randHost(sb, 22, op === "div" ? 0.5 : lo, hi);
      await gradCheck(([x, y]) => f(x, y), ([x, y]) => cpuMap(op, [x, y]), [a, b], {
        msg: `${op} ${sa}×${sb}`,
      });
    }
  }
});

Deno.test("where and clamp gradients", async () => {
  const a = randHost([3, 4], 31), b = randHost([4], 32);
  const c: HostTensor = { shape: [3, 4], data: a.data.map((v) => +(v > 0)) };
  await gradCheck(([x, y]) => T.where(upload(c), x, y), ([x, y]) => cpuMap("where", [c, x, y]), [
    a,
    b,
  ], {
    msg: "where",
  });
  await gradCheck(([x]) => T.clamp(x, -0.5, 0.5), ([x]) => cpuMap("clamp", [x], [-0.5, 0.5]), [a], {
    msg: "clamp",
  });
});

Deno.test("dtype misuse and shape mismatch name the op and shapes", () => {
  T.scope(() => {
    const i = T.tensor([1, 2, 3], [3], "i32");
    assert.throws(() => T.exp(i), /exp: expects float tensors, got i32 \[3\]/);
    assert.throws(
      () => T.add(T.zeros([2, 3]), T.zeros([4])),
      /add: shapes \[2, 3\] and \[4\] do not broadcast/,
    );
  });
});

Deno.test("a disposed tensor cannot be used", () => {
  const x = T.tensor([1, 2]);
  x.dispose();
  assert.throws(() => T.exp(x), /exp: tensor #\d+ \[2\] was disposed/);
});

Deno.test("f16 storage is upcast in kernels", async () => {
  if (!T.E().f16) return;
  const h = randHost([5, 3], 41);
  await T.scopeAsync(async () => {
    const x16 = T.cast(upload(h), "f16");
    assert.equal(x16.dtype, "f16");
    const back = await download(T.mul(x16, 2));
    assertClose(back, cpuMap("mul", [h, { shape: [], data: new Float64Array([2]) }]), {
      rtol: 1e-3,
      atol: 1e-3,
    });
  });
});
