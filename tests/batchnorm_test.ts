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
import { batchNorm, BatchNorm1d, cpuBatchNorm } from "../engine/ops/batchnorm.ts";

await setup();

const scaled = (h: HostTensor, s: number, shift = 0): HostTensor => ({
  shape: h.shape,
  data: h.data.map((v) => Math.fround(v * s + shift)),
});

const SHAPES = [[5, 3], [2, 7], [4, 1], [3, 4, 5], [2, 1, 3], [7, 2, 1]];

Deno.test("batchNorm (training) matches float64 on [N, C] and [N, C, L], affine or not", async () => {
  for (const shape of SHAPES) {
    const C = shape[1];
    // a large channel mean checks that the variance is taken about the mean
    const x = scaled(randHost(shape, 3 + shape.length * 7 + C), 3, 20);
    const w = randHost([C], 5, 0.5, 1.5), b = randHost([C], 6);
    const rm = randHost([C], 7), rv = randHost([C], 8, 0.5, 2);
    for (const affine of [true, false]) {
      await T.scopeAsync(async () => {
        const runningMean = upload(rm), runningVar = upload(rv);
        const y = batchNorm(upload(x), affine ? upload(w) : null, affine ? upload(b) : null, {
          runningMean,
          runningVar,
        });
        const ref = cpuBatchNorm(x, affine ? w : null, affine ? b : null, {
          runningMean: rm,
          runningVar: rv,
        });
        const msg = `${JSON.stringify(shape)} affine=${affine}`;
        assertClose(await download(y), ref.y, { rtol: 1e-4, atol: 1e-5, msg });
        assertClose(await download(runningMean), ref.runningMean!, { msg: `${msg} running mean` });
        assertClose(await download(runningVar), ref.runningVar!, { msg: `${msg} running var` });
      });
    }
  }
});

Deno.test("batchNorm reads strided views and, in eval mode, the running statistics", async () => {
  const h = randHost([3, 6], 11); // channels first, viewed as [6, 3]
  const xt: HostTensor = {
    shape: [6, 3],
    data: Float64Array.from({ length: 18 }, (_, k) => h.data[(k % 3) * 6 + Math.floor(k / 3)]),
  };
  const w = randHost([3], 12), b = randHost([3], 13);
  const rm = randHost([3], 14), rv = randHost([3], 15, 0.5, 2);
  await T.scopeAsync(async () => {
    const view = T.transpose(upload(h));
    assert.ok(!view.isContiguous);
    assertClose(await download(batchNorm(view, upload(w), upload(b))), cpuBatchNorm(xt, w, b).y, {
      rtol: 1e-4,
      atol: 1e-5,
      msg: "transposed input",
    });
    const runningMean = upload(rm), runningVar = upload(rv);
    const y = batchNorm(view, upload(w), upload(b), { training: false, runningMean, runningVar });
    const ref = cpuBatchNorm(xt, w, b, { training: false, runningMean: rm, runningVar: rv });
    assertClose(await download(y), ref.y, { rtol: 1e-5, atol: 1e-6, msg: "eval" });
    assertClose(await download(runningMean), rm, { msg: "eval leaves running mean" });
    assertClose(await download(runningVar), rv, { msg: "eval leaves running var" });
  });
});

Deno.test("batchNorm gradients (x, weight, bias) match central differences", async () => {
  for (const shape of [[5, 3], [3, 4, 5], [2, 2]]) {
    const C = shape[1];
    const x = scaled(randHost(shape, 21 + shape.length), 2, 1);
    const w = randHost([C], 22, 0.5, 1.5), b = randHost([C], 23);
    await gradCheck(
      ([a, ww, bb]) => batchNorm(a, ww, bb),
      ([a, ww, bb]) => cpuBatchNorm(a, ww, bb).y,
      [x, w, b],
      { msg: `batchNorm training ${JSON.stringify(shape)}` },
    );
    const rm = randHost([C], 24), rv = randHost([C], 25, 0.5, 2);
    await gradCheck(
      ([a, ww, bb]) =>
        batchNorm(a, ww, bb, { training: false, runningMean: upload(rm), runningVar: upload(rv) }),
      ([a, ww, bb]) =>
        cpuBatchNorm(a, ww, bb, { training: false, runningMean: rm, runningVar: rv }).y,
      [x, w, b],
      { msg: `batchNorm eval ${JSON.stringify(shape)}` },
    );
  }
});

Deno.test("BatchNorm1d: PyTorch's initial state, two training steps, then eval", async () => {
  const bn = new BatchNorm1d(4);
  assert.deepEqual(Array.from(await bn.weight.data()), [1, 1, 1, 1]);
  assert.deepEqual(Array.from(await bn.bias.data()), [0, 0, 0, 0]);
  assert.ok(bn.weight.requiresGrad && bn.bias.requiresGrad && !bn.runningMean.requiresGrad);
  let rm: HostTensor = { shape: [4], data: new Float64Array(4) };
  let rv: HostTensor = { shape: [4], data: new Float64Array(4).fill(1) };
  for (const seed of [31, 32]) {
    const x = scaled(randHost([6, 4], seed), 2, 0.5);
    const ref = cpuBatchNorm(x, null, null, { runningMean: rm, runningVar: rv });
    await T.scopeAsync(async () => {
      assertClose(await download(bn.forward(upload(x))), ref.y, { rtol: 1e-4, atol: 1e-5 });
    });
    rm = ref.runningMean!;
    rv = ref.runningVar!;
  }
  assertClose(await download(bn.runningMean), rm, { msg: "running mean after 2 steps" });
  assertClose(await download(bn.runningVar), rv, { msg: "running var after 2 steps" });
  bn.training = false;
  const x = randHost([3, 4], 33);
  await T.scopeAsync(async () => {
    const ref = cpuBatchNorm(x, null, null, { training: false, runningMean: rm, runningVar: rv });
    assertClose(await download(bn.forward(upload(x))), ref.y, { msg: "eval" });
  });
  bn.dispose();
});

Deno.test("batchNorm refuses bad inputs, naming the op and shapes", () => {
  T.scope(() => {
    const x = upload(randHost([4, 3], 41));
    assert.throws(
      () => batchNorm(upload(randHost([3], 1))),
      /batchNorm.*\[N, C\] or \[N, C, L\], got \[3\]/,
    );
    assert.throws(
      () => batchNorm(x, upload(randHost([4], 1))),
      /batchNorm.*weight f32 \[4\] does not match the 3 channels of input \[4, 3\]/,
    );
    assert.throws(
      () => batchNorm(upload(randHost([1, 3], 1))),
      /batchNorm.*more than one value per channel, got input \[1, 3\]/,
    );
    assert.throws(
      () => batchNorm(x, null, null, { training: false }),
      /eval mode needs runningMean/,
    );
    assert.throws(() => batchNorm(x, null, null, { eps: 0 }), /eps must be positive/);
    assert.throws(
      () => batchNorm(x, null, null, { runningMean: upload(randHost([3], 1)) }),
      /runningMean and runningVar go together/,
    );
    assert.throws(() => new BatchNorm1d(0), /BatchNorm1d: channels must be a positive integer/);
  });
});
