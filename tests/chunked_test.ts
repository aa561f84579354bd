/**
 * engine/chunked.ts: a map over chunks whose tape is rebuilt in backward gives the unchunked
 * computation's values and gradients, for leaves and for taped inputs, along any axis.
 */
import { assert, assertClose, download, setup, T } from "./util.ts";

/** loss(chunked features) and every gradient, for chunk size `size` (n: no chunking). */
async function run(size: number, axis: number) {
  const w = T.param(T.randomNormal([6, 5], 1, 0, 0.5)); // a leaf the chunks read
  const a = T.param(T.randomNormal([4, 6], 2)); // a leaf behind a taped input
  const out = T.scope(() => {
    const h = T.tanh(T.mul(a, 1.5)); // taped: its gradient must reach a through the chunks
    const rows = T.randomNormal([7, 4], 3);
    const fn = ([hh, ww]: T.Tensor[], s: number, c: number) => {
      const x = T.matmul(T.narrow(rows, 0, s, c), hh); // [c, 6]
      const y = T.sigmoid(T.matmul(x, ww)); // [c, 5]
      return axis === 0 ? y : T.transpose(y, 0, 1);
    };
    const f = T.chunked([h, w], 7, size, fn, axis);
    const loss = T.sum(T.square(T.sub(f, 0.3)));
    T.backward(loss);
    return { f, loss };
  });
  const r = {
    f: await download(out.f),
    loss: await out.loss.item(),
    gw: await download(w.grad!),
    ga: await download(a.grad!),
  };
  [out.f, out.loss, w, a].forEach((t) => t.dispose());
  return r;
}

Deno.test("chunked: values and gradients equal the unchunked computation's", async () => {
  await setup();
  for (const axis of [0, 1]) {
    const whole = await run(7, axis);
    for (const size of [1, 3, 6]) {
      const c = await run(size, axis);
      const msg = `axis ${axis}, chunks of ${size}`;
      assertClose(c.f, whole.f, { rtol: 1e-6, atol: 1e-7, msg });
      assert.ok(Math.abs(c.loss - whole.loss) <= 1e-6 * Math.abs(whole.loss), msg);
      assertClose(c.gw, whole.gw, { rtol: 1e-5, atol: 1e-6, msg: `${msg}: dW` });
      assertClose(c.ga, whole.ga, { rtol: 1e-5, atol: 1e-6, msg: `${msg}: dA` });
    }
  }
});

Deno.test("chunked: a chunk's tape is freed before the next chunk runs", async () => {
  const e = await setup();
  const w = T.param(T.randomNormal([64, 64], 4, 0, 0.1));
  const peakOf = async (size: number) => {
    await e.sync();
    const before = e.bytesInUse;
    e.resetPeak();
    T.scope(() => {
      const x = T.randomNormal([512, 64], 5);
      const f = T.chunked([w], 512, size, ([ww], s, c) => {
        let y = T.narrow(x, 0, s, c);
        for (let i = 0; i < 6; i++) y = T.tanh(T.matmul(y, ww)); // six saved activations
        return y;
      });
      T.backward(T.sum(f));
    });
    await e.sync();
    w.grad?.dispose();
    w.grad = null;
    return e.peakBytesInUse - before;
  };
  const whole = await peakOf(512), eighths = await peakOf(64);
  assert.ok(eighths < whole / 2, `peak ${eighths} bytes in chunks of 64, ${whole} in one`);
  w.dispose();
});
