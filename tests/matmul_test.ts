import {
  assert,
  assertClose,
  download,
  gradCheck,
  type HostTensor,
  randHost,
  setup,
  T,
  upload,
} from "./util.ts";
import { cpuConv2dPatch, cpuMatmul } from "../kernels/matmul.ts";
import { broadcastShapes } from "../kernels/elementwise.ts";
import {
  type MatmulKernel,
  matmulTextureMemory,
  releaseMatmulTextures,
  setMatmulKernel,
} from "../engine/ops/matmul.ts";
import { conv2dPatch } from "../engine/ops/conv.ts";
import type { LaunchSpec } from "../engine/device.ts";

await setup();

const KERNELS = ["naive", "tiled", "texture"] as const;
const TOL = { rtol: 1e-4, atol: 1e-5 };
const prod = (s: readonly number[]) => s.reduce((x, y) => x * y, 1);

/** The matrix of host tensor t ([..., R, C]) used by batch index i of the broadcast batch bs. */
function matrixAt(t: HostTensor, bs: number[], i: number): Float64Array {
  const [R, C] = t.shape.slice(-2);
  const tb = t.shape.slice(0, -2);
  let lin = 0, rem = i, mul = 1;
  for (let d = bs.length - 1; d >= 0; d--) {
    const c = rem % bs[d];
    rem = Math.floor(rem / bs[d]);
    const td = d - (bs.length - tb.length);
    if (td >= 0) {
      if (tb[td] !== 1) lin += c * mul;
      mul *= tb[td];
    }
  }
  return t.data.slice(lin * R * C, (lin + 1) * R * C);
}

function transposeHost(m: Float64Array, R: number, C: number): Float64Array {
  const out = new Float64Array(R * C);
  for (let r = 0; r < R; r++) for (let c = 0; c < C; c++) out[c * R + r] = m[r * C + c];
  return out;
}

/** float64 op(A) · op(B) with batch broadcasting, from operands in their stored layout. */
function hostMatmul(a: HostTensor, b: HostTensor, transA = false, transB = false): HostTensor {
  const [Ra, Ca] = a.shape.slice(-2), [Rb, Cb] = b.shape.slice(-2);
  const [M, K, N] = [transA ? Ca : Ra, transA ? Ra : Ca, transB ? Rb : Cb];
  const bs = broadcastShapes(a.shape.slice(0, -2), b.shape.slice(0, -2))!;
  const batch = prod(bs);
  const out = new Float64Array(batch * M * N);
  for (let i = 0; i < batch; i++) {
    const am = matrixAt(a, bs, i), bm = matrixAt(b, bs, i);
    const A = transA ? transposeHost(am, Ra, Ca) : am;
    const B = transB ? transposeHost(bm, Rb, Cb) : bm;
    out.set(cpuMatmul(A, B, 1, M, K, N), i * M * N);
  }
  return { shape: [...bs, M, N], data: out };
}

/** Runs fn with `kind` forced, restoring the automatic choice afterwards. */
async function withKernel<R>(
  kind: MatmulKernel,
  fn: () => Promise<R>,
  limits: Parameters<typeof setMatmulKernel>[1] = {},
): Promise<R> {
  setMatmulKernel(kind, limits);
  try {
    return await fn();
  } finally {
    setMatmulKernel("auto");
  }
}

/** The kernel names launched while fn runs. */
function spyKernels<R>(fn: () => R): [R, string[]] {
  const e = T.E() as T.Engine & { launch: (s: LaunchSpec) => void };
  const names: string[] = [];
  const orig = e.launch;
  e.launch = (s: LaunchSpec) => {
    names.push(s.kernel);
    orig.call(e, s);
  };
  try {
    return [fn(), names];
  } finally {
    delete (e as { launch?: unknown }).launch;
  }
}
const products = (names: string[]) => names.filter((n) => /^matmul_(naive|tiled|texture)$/.test(n));

/** Stored shape of an operand of logical shape [..., R, C] with its last two axes swapped. */
const stored = (batch: number[], R: number, C: number, trans: boolean) =>
  trans ? [...batch, C, R] : [...batch, R, C];

const SIZES: [number, number, number][] = [[1, 1, 1], [7, 13, 5], [33, 65, 17], [70, 3, 129]];
const FLAGS: [boolean, boolean][] = [[false, false], [true, false], [false, true], [true, true]];

for (const kind of KERNELS) {
  Deno.test(`${kind}: odd sizes and all four transpose combinations match cpuMatmul`, async () => {
    await withKernel(kind, async () => {
      let seed = 1;
      for (const [M, K, N] of SIZES) {
        for (const [tA, tB] of FLAGS) {
          const a = randHost(stored([], M, K, tA), seed++);
          const b = randHost(stored([], K, N, tB), seed++);
          await T.scopeAsync(async () => {
            const [c, names] = spyKernels(() =>
              T.matmul(upload(a), upload(b), { transA: tA, transB: tB })
            );
            assert.deepEqual(products(names), [`matmul_${kind}`], `${kind} was not dispatched`);
            assertClose(await download(c), hostMatmul(a, b, tA, tB), {
              ...TOL,
              msg: `${kind} ${M}×${K}×${N} transA=${tA} transB=${tB}`,
            });
          });
        }
      }
    });
  });

  Deno.test(`${kind}: broadcast batches, shared weights, views and f16 operands`, async () => {
    await withKernel(kind, async () => {
      const cases: { a: number[]; b: number[]; tA?: boolean; tB?: boolean }[] = [
        { a: [2, 1, 5, 7], b: [3, 7, 9] }, // broadcast on both sides
        { a: [2, 3, 5, 7], b: [7, 9] }, // a weight shared by every batch (folds into M)
        { a: [3, 5, 7], b: [9, 7], tB: true },
        { a: [3, 7, 5], b: [7, 9], tA: true }, // shared B, A transposed: no folding
        { a: [1, 5, 7], b: [4, 7, 6] },
        { a: [4, 6, 9], b: [4, 11, 6], tA: true, tB: true },
      ];
      for (const [i, { a: sa, b: sb, tA = false, tB = false }] of cases.entries()) {
        const a = randHost(sa, 10 + i), b = randHost(sb, 20 + i);
        await T.scopeAsync(async () => {
          const c = T.matmul(upload(a), upload(b), { transA: tA, transB: tB });
          assertClose(await download(c), hostMatmul(a, b, tA, tB), {
            ...TOL,
            msg: `${kind} [${sa}]·[${sb}] transA=${tA} transB=${tB}`,
          });
        });
      }
      // sliced and permuted views: offsets, row strides ≠ K, batch strides out of order
      await T.scopeAsync(async () => {
        const big = upload(randHost([40, 50], 31));
        const A = T.slice(big, [3, 5], [33, 17]); // [33, 17], offset 155, row stride 50
        const B = T.transpose(T.slice(big, [1, 20], [21, 17])); // [17, 21]
        const ref = hostMatmul(await download(A), await download(B));
        assertClose(await download(T.matmul(A, B)), ref, { ...TOL, msg: `${kind} sliced` });
        const P = T.permute(upload(randHost([5, 3, 7], 32)), [1, 0, 2]); // [3, 5, 7]
        const W = upload(randHost([7, 4], 33));
        const refP = hostMatmul(await download(P), await download(W));
        assertClose(await download(T.matmul(P, W)), refP, { ...TOL, msg: `${kind} permuted` });
      });
      if (!T.E().f16) return;
      await T.scopeAsync(async () => {
        const a = upload(randHost([2, 9, 11], 41));
        const w16 = T.cast(upload(randHost([6, 11], 42)), "f16");
        const w = await download(w16); // the f16-rounded values
        const y = T.linear(a, w16);
        assertClose(await download(y), hostMatmul(await download(a), w, false, true), {
          ...TOL,
          msg: `${kind} f16 weight`,
        });
        const a16 = T.cast(a, "f16");
        const y2 = T.matmul(a16, w16, { transB: true });
        assertClose(await download(y2), hostMatmul(await download(a16), w, false, true), {
          ...TOL,
          msg: `${kind} f16 A and B`,
        });
      });
    });
  });

  Deno.test(`${kind}: gradients match finite differences`, async () => {
    await withKernel(kind, async () => {
      for (const [tA, tB] of FLAGS) {
        const a = randHost(stored([], 3, 4, tA), 51), b = randHost(stored([], 4, 5, tB), 52);
        await gradCheck(
          ([x, y]) => T.matmul(x, y, { transA: tA, transB: tB }),
          ([x, y]) => hostMatmul(x, y, tA, tB),
          [a, b],
          { msg: `${kind} transA=${tA} transB=${tB}` },
        );
      }
      const bcast: [number[], number[], boolean, boolean][] = [
        [[2, 1, 3, 4], [3, 4, 5], false, false],
        [[2, 3, 4], [4, 5], false, false], // shared weight: batch folded into K for dB
        [[2, 3, 4], [5, 4], false, true], // linear's layout
        [[2, 4, 3], [5, 4], true, true],
        [[3, 4], [2, 4, 5], false, false], // A broadcast over B's batch
      ];
      for (const [sa, sb, tA, tB] of bcast) {
        await gradCheck(
          ([x, y]) => T.matmul(x, y, { transA: tA, transB: tB }),
          ([x, y]) => hostMatmul(x, y, tA, tB),
          [randHost(sa, 53), randHost(sb, 54)],
          { msg: `${kind} [${sa}]·[${sb}] transA=${tA} transB=${tB}` },
        );
      }
    });
  });

  Deno.test(`${kind}: conv2dPatch forward and gradients wrt pixels and weight`, async () => {
    await withKernel(kind, async () => {
      const [B, C, H, W, O, p] = [2, 3, 8, 12, 5, 4];
      const x = randHost([B, C, H, W], 61), w = randHost([O, C, p, p], 62);
      const ref = ([hx, hw]: HostTensor[]): HostTensor => ({
        shape: [B, O, H / p, W / p],
        data: cpuConv2dPatch(hx.data, hw.data, B, C, H, W, O, p),
      });
      await T.scopeAsync(async () => {
        const y = conv2dPatch(upload(x), upload(w));
        assert.deepEqual(y.shape, [B, O, H / p, W / p]);
        // the token sequence CLIP builds from it is contiguous without a copy
        const tokens = T.permute(T.reshape(y, [B, O, -1]), [0, 2, 1]);
        assert.ok(tokens.isContiguous && tokens.storage === y.storage, "tokens view");
        assertClose(await download(y), ref([x, w]), { ...TOL, msg: `${kind} conv2dPatch` });
      });
      await gradCheck(([hx, hw]) => conv2dPatch(hx, hw), ref, [x, w], {
        msg: `${kind} conv2dPatch`,
      });
      // CLIP's case: frozen f16 weight, gradient wanted for the pixels only
      if (!T.E().f16) return;
      await T.scopeAsync(async () => {
        const w16 = T.cast(upload(w), "f16");
        const wr = await download(w16);
        await gradCheck(([hx]) => conv2dPatch(hx, w16), ([hx]) => ref([hx, wr]), [x], {
          msg: `${kind} conv2dPatch f16 weight`,
        });
      });
    });
  });
}

Deno.test("texture path: chunks over batch layers, rows, columns and K agree with cpuMatmul", async () => {
  // tiny limits force every chunk loop: 2 layers, 16-texel textures (K in 16s, accumulated)
  await withKernel("texture", async () => {
    for (const [sa, sb] of [[[5, 37, 41], [5, 41, 72]], [[5, 37, 41], [41, 70]]]) {
      const a = randHost(sa, 71), b = randHost(sb, 72);
      await T.scopeAsync(async () => {
        const [c, names] = spyKernels(() => T.matmul(upload(a), upload(b)));
        assert.ok(products(names).length > 10, `expected many chunks, got ${names.length}`);
        assertClose(await download(c), hostMatmul(a, b), {
          ...TOL,
          msg: `chunked [${sa}]·[${sb}]`,
        });
      });
    }
  }, { maxTextureDim: 16, maxLayers: 2 });
});

Deno.test("texture path: textures are pooled, reused and released", async () => {
  await withKernel("texture", async () => {
    releaseMatmulTextures();
    assert.equal(matmulTextureMemory().textures, 0);
    const run = (M: number, K: number, N: number) =>
      T.scope(() => void T.matmul(T.ones([M, K]), T.ones([K, N])));
    run(40, 48, 56);
    const first = matmulTextureMemory();
    assert.equal(first.textures, 2);
    for (let i = 0; i < 3; i++) run(40, 48, 56);
    run(38, 47, 53); // same size buckets
    assert.deepEqual(matmulTextureMemory(), first);
    const c = await T.scopeAsync(async () => await T.matmul(T.ones([3, 5]), T.ones([5, 4])).data());
    assert.deepEqual([...c], new Array(12).fill(5));
    releaseMatmulTextures();
    assert.deepEqual(matmulTextureMemory(), { textures: 0, bytes: 0 });
  });
});

Deno.test("batches beyond 65,535 workgroups split into several dispatches", async () => {
  const Bn = 65537;
  const a = randHost([Bn, 1, 2], 91), b = randHost([Bn, 2, 1], 92);
  const ref = hostMatmul(a, b);
  // the texture path chunks batches by layers instead (tested above)
  for (const kind of ["naive", "tiled"] as const) {
    await withKernel(kind, async () => {
      await T.scopeAsync(async () => {
        const [c, names] = spyKernels(() => T.matmul(upload(a), upload(b)));
        assert.ok(products(names).length >= 2, `${kind}: ${products(names).length} dispatches`);
        assertClose(await download(c), ref, { ...TOL, msg: `${kind} batch ${Bn}` });
      });
    });
  }
});

Deno.test("texture path: a full pool evicts old textures, never the current call's", async () => {
  await withKernel("texture", async () => {
    releaseMatmulTextures();
    // every new texture overflows the pool: only the current product's two may stay
    const shapes: [number[], number[]][] = [[[9, 20], [20, 30]], [[40, 8], [8, 5]], [[5, 300], [
      300,
      7,
    ]]];
    for (let round = 0; round < 2; round++) {
      for (const [sa, sb] of shapes) {
        const a = randHost(sa, 101 + round), b = randHost(sb, 102);
        await T.scopeAsync(async () => {
          assertClose(await download(T.matmul(upload(a), upload(b))), hostMatmul(a, b), {
            ...TOL,
            msg: `evicting [${sa}]·[${sb}]`,
          });
        });
        assert.equal(matmulTextureMemory().textures, 2);
      }
    }
    releaseMatmulTextures();
  }, { maxPoolBytes: 1 });
});

Deno.test("K = 0 and empty outputs", async () => {
  for (const kind of KERNELS) {
    await withKernel(kind, async () => {
      await T.scopeAsync(async () => {
        const c = T.matmul(T.ones([3, 0]), T.ones([0, 4]));
        assert.deepEqual([...(await c.data())], new Array(12).fill(0), kind);
        assert.deepEqual(T.matmul(T.ones([0, 5]), T.ones([5, 4])).shape, [0, 4]);
      });
    });
  }
});

Deno.test("a frozen weight costs no weight-gradient matmul in backward", async () => {
  for (const frozen of [true, false]) {
    await T.scopeAsync(async () => {
      const x = T.param(upload(randHost([2, 3, 4], 81)));
      const w = upload(randHost([5, 4], 82));
      if (!frozen) T.param(w);
      const loss = T.sum(T.linear(x, w));
      const [, names] = spyKernels(() => T.backward(loss));
      assert.equal(products(names).length, frozen ? 1 : 2, `frozen=${frozen}: ${names}`);
      assert.ok(x.grad);
      assert.equal(w.grad === null, frozen);
      // d sum(x·Wᵀ) / dx = column sums of W, for every row
      const wh = await download(w);
      const colSum = [0, 1, 2, 3].map((k) =>
        [0, 1, 2, 3, 4].reduce((s, o) => s + wh.data[o * 4 + k], 0)
      );
      const g = await download(x.grad!);
      assertClose(g, {
        shape: [2, 3, 4],
        data: Float64Array.from({ length: 24 }, (_, i) => colSum[i % 4]),
      }, TOL);
      x.dispose();
      w.dispose();
    });
  }
});

Deno.test("bad inputs raise errors naming the op and shapes", () => {
  T.scope(() => {
    assert.throws(
      () => T.matmul(T.ones([3, 4]), T.ones([5, 6])),
      /matmul: inner sizes differ: \[3, 4\] · \[5, 6\] \(A·B: K 4 vs 5\)/,
    );
    assert.throws(
      () => T.matmul(T.ones([3, 4]), T.ones([5, 6]), { transA: true, transB: true }),
      /matmul: inner sizes differ: \[3, 4\] · \[5, 6\] \(Aᵀ·Bᵀ: K 3 vs 6\)/,
    );
    assert.throws(
      () => T.matmul(T.ones([2, 3, 4]), T.ones([3, 4, 5])),
      /matmul: batch axes do not broadcast: \[2, 3, 4\] · \[3, 4, 5\]/,
    );
    assert.throws(
      () => T.matmul(T.ones([4]), T.ones([4, 5])),
      /matmul: operands need rank ≥ 2, got \[4\]/,
    );
    assert.throws(
      () => T.matmul(T.tensor([1, 2], [1, 2], "i32"), T.ones([2, 1])),
      /matmul: expects float operands, got i32 \[1, 2\]/,
    );
    assert.throws(
      () => T.linear(T.ones([2, 3]), T.ones([4, 5])),
      /linear: input \[2, 3\] does not fit weight \[4, 5\]/,
    );
    assert.throws(
      () => conv2dPatch(T.ones([1, 3, 10, 8]), T.ones([2, 3, 4, 4])),
      /conv2dPatch: H and W of x \[1, 3, 10, 8\] must be divisible by the patch 4/,
    );
    assert.throws(
      () => conv2dPatch(T.ones([1, 3, 8, 8]), T.ones([2, 1, 4, 4])),
      /conv2dPatch: channels differ: x \[1, 3, 8, 8\] has 3, w \[2, 1, 4, 4\] has 1/,
    );
    assert.throws(
      () => conv2dPatch(T.ones([3, 8, 8]), T.ones([2, 3, 4, 4])),
      /conv2dPatch: expects x \[B, C, H, W\]/,
    );
    assert.throws(
      () => conv2dPatch(T.ones([1, 3, 8, 8]), T.ones([2, 3, 4, 2])),
      /conv2dPatch: the kernel must be square/,
    );
  });
});
