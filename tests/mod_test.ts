/** The public API (mod.ts) loads as one module, and the README's example runs. */
import { assert } from "./util.ts";
import * as ck from "../mod.ts";

Deno.test("mod.ts exports the engine, the model and the pipeline; the README example runs", async () => {
  for (
    const name of [
      "tensor",
      "backward",
      "CLIP",
      "Tokenizer",
      "train",
      "evaluateRun",
      "METHODS",
      "defaultRun",
      "kmeans",
    ]
  ) {
    assert.ok(name in ck, `mod.ts exports ${name}`);
  }
  assert.deepEqual(
    Object.keys(ck.METHODS).sort(),
    [
      "clip-adapter",
      "cocoop",
      "coop",
      "gopro",
      "linear-probe",
      "maple",
      "tip-adapter",
      "tip-adapter-f",
      "zeroshot",
    ],
  );
  await ck.initEngine();
  const x = ck.tensor([1, 2, 3, 4, 5, 6], [2, 3]);
  const w = ck.param(ck.tensor([0.5, -1, 2], [3]));
  const loss = ck.scope(() => ck.sum(ck.exp(ck.mul(x, w))));
  ck.backward(loss);
  const xs = [1, 2, 3, 4, 5, 6];
  const ws = [0.5, -1, 2];
  const ref = xs.reduce((a, v, i) => a + Math.exp(v * ws[i % 3]), 0);
  assert.ok(Math.abs((await loss.item()) - ref) / ref < 1e-5);
  const g = await w.grad!.data();
  for (let j = 0; j < 3; j++) {
    const r = xs[j] * Math.exp(xs[j] * ws[j]) + xs[j + 3] * Math.exp(xs[j + 3] * ws[j]);
    assert.ok(Math.abs(g[j] - r) / Math.abs(r) < 1e-5);
  }
  [loss, x, w].forEach((t) => t.dispose());
});
