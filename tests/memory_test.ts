/**
 * Memory discipline: a forward holds about one block of activations whatever the model's depth
 * (each block's intermediates and the previous block's output are freed as it goes), and the
 * buffer pool gives back what lies above its budget when an outermost scope closes.
 */
import { assert, setup, T } from "./util.ts";
import { noGrad } from "../engine/autograd.ts";
import { CLIP, type ClipConfig } from "../model/clip.ts";

const config = (layers: number): ClipConfig => ({
  embedDim: 64,
  imageResolution: 64,
  visionLayers: layers,
  visionWidth: 128,
  visionPatchSize: 8,
  visionHeads: 2,
  contextLength: 77,
  vocabSize: 600,
  transformerWidth: 128,
  transformerHeads: 2,
  transformerLayers: layers,
});

/** Bytes above the weights at the peak of `fn` (no tape). */
async function peakOf(fn: () => T.Tensor): Promise<number> {
  const e = await setup();
  await e.sync();
  const before = e.bytesInUse;
  e.resetPeak();
  const out = T.scope(() => noGrad(fn));
  await out.data();
  out.dispose();
  return e.peakBytesInUse - before;
}

Deno.test("a forward's peak memory does not grow with depth, and its outputs are kept", async () => {
  await setup();
  const peaks: number[][] = [];
  for (const layers of [1, 6]) {
    const m = noGrad(() => CLIP.random(config(layers), 1));
    const pixels = T.randomNormal([6, 3, 64, 64], 2);
    const ids = new Int32Array(20 * 77);
    for (let r = 0; r < 20; r++) [ids[r * 77], ids[r * 77 + 1], ids[r * 77 + 2]] = [598, r, 599];
    const image = await peakOf(() => m.encodeImage(pixels).features);
    const text = await peakOf(() => m.encodeText(ids));
    // hidden: every block's output is returned, and still readable after the scope
    const hidden = T.scope(() => noGrad(() => m.encodeImage(pixels, { hidden: true }).hidden));
    assert.equal(hidden.length, layers);
    for (const h of hidden) assert.ok((await h.data()).every(Number.isFinite));
    hidden.forEach((h) => h.dispose());
    peaks.push([image, text]);
    pixels.dispose();
    m.dispose();
  }
  const [[i1, t1], [i6, t6]] = peaks;
  assert.ok(i6 <= i1 * 1.1, `image tower: ${i1} bytes at 1 layer, ${i6} at 6`);
  assert.ok(t6 <= t1 * 1.1, `text tower: ${t1} bytes at 1 layer, ${t6} at 6`);
});

Deno.test("the pool keeps at most its budget of unused buffers once an outermost scope closes", async () => {
  const e = await setup();
  const budget = e.poolBudget;
  try {
    e.poolBudget = 1 << 20;
    T.scope(() => {
      for (const n of [1 << 18, 1 << 19, 3 << 18, 1 << 20]) T.add(T.zeros([n]), 1);
    });
    assert.ok(e.bytesPooled <= 1 << 20, `${e.bytesPooled} bytes pooled`);
    e.poolBudget = 0;
    T.scope(() => T.add(T.zeros([1 << 18]), 1).dispose());
    assert.equal(e.bytesAllocated, e.bytesInUse);
    // and the pool still serves: a new tensor after trimming is usable
    const x = T.add(T.zeros([5]), 2);
    assert.deepEqual(Array.from(await x.data()), [2, 2, 2, 2, 2]);
    x.dispose();
  } finally {
    e.poolBudget = budget;
  }
});
