/**
 * Tensors larger than the adapter's largest binding (maxStorageBufferBindingSize: 128 MiB on
 * lavapipe, less than ViT-L/14's f32 token table or a batch of 32 of its images): the token table
 * is held as row blocks and each tower runs in batch chunks that fit, with the same results as
 * one pass. The limit is lowered here to 64 KiB so that a small model reaches every path.
 */
import { assert, assertClose, download, relErr, setup, T } from "./util.ts";
import { backward, noGrad, param } from "../engine/autograd.ts";
import { CLIP, type ClipConfig } from "../model/clip.ts";
import type { StateDict } from "../model/dtypes.ts";

const config: ClipConfig = {
  embedDim: 32,
  imageResolution: 32,
  visionLayers: 2,
  visionWidth: 64,
  visionPatchSize: 8,
  visionHeads: 1,
  contextLength: 16,
  vocabSize: 600, // 600 × 64 f32 = 150 KiB: three blocks at 64 KiB
  transformerWidth: 64,
  transformerHeads: 1,
  transformerLayers: 2,
};

async function withLimit<R>(bytes: number, fn: () => R | Promise<R>): Promise<R> {
  const limits = (await setup()).info.limits;
  const was = limits.maxStorageBufferBindingSize;
  limits.maxStorageBufferBindingSize = bytes;
  try {
    return await fn();
  } finally {
    limits.maxStorageBufferBindingSize = was;
  }
}

/** Features, hidden states and a prompt-context gradient of a model loaded from `sd`. */
async function run(sd: StateDict) {
  const m = CLIP.fromStateDict(sd);
  const pixels = T.randomNormal([5, 3, 32, 32], 5); // 60 KiB: two passes of at most 3;
  const ids = new Int32Array(10 * 16);
  for (let r = 0; r < 10; r++) {
    ids.set([598, 3 + r, 40 * r % 597, 7, 599], r * 16); // 40·r spans all three blocks
  }
  const img = T.scope(() => noGrad(() => m.encodeImage(pixels, { hidden: true })));
  const text = T.scope(() => noGrad(() => m.encodeText(ids)));
  // a gradient through the chunked text tower (CoOp's path: embeddings in, features out)
  const emb = param(T.scope(() => noGrad(() => m.embedTokens(T.tensor(ids, [10, 16], "i32")))));
  const eot = T.tensor(Int32Array.from({ length: 10 }, () => 4), [10], "i32");
  T.scope(() => backward(T.sum(T.square(m.encodeEmbeddings(emb, eot)))));
  const out = {
    image: await download(img.features),
    hidden: await Promise.all(img.hidden.map(download)),
    text: await download(text),
    grad: await download(emb.grad!),
  };
  [img.features, ...img.hidden, text, emb, eot, pixels].forEach((t) => t.dispose());
  m.dispose();
  return out;
}

Deno.test("past the largest binding: a split token table and chunked towers give one pass's results", async () => {
  await setup();
  const src = noGrad(() => CLIP.random(config, 2));
  const sd = await src.stateDict();
  src.dispose();
  const whole = await run(sd);
  const split = await withLimit(64 << 10, () => run(sd));
  assertClose(split.image, whole.image, { rtol: 1e-5, atol: 1e-6 });
  assertClose(split.text, whole.text, { rtol: 1e-5, atol: 1e-6 });
  // the chunks' matmuls may take another kernel (another summation order): compare as a whole
  const gradErr = relErr(split.grad.data, whole.grad.data);
  assert.ok(gradErr < 1e-5, `prompt-embedding gradient: relative error ${gradErr}`);
  whole.hidden.forEach((h, l) => assertClose(split.hidden[l], h, { rtol: 1e-5, atol: 1e-6 }));
});

Deno.test("past the largest binding: a weight that cannot be split, or a trainable table, is named", async () => {
  await setup();
  const src = noGrad(() => CLIP.random(config, 2));
  const sd = await src.stateDict();
  src.dispose();
  await withLimit(32 << 10, () => {
    // visual.conv1 is [64, 3, 8, 8] f32 = 48 KiB
    assert.throws(
      () => CLIP.fromStateDict(sd, { file: "m.safetensors" }),
      /m\.safetensors: visual\.conv1\.weight \[64, 3, 8, 8\] \(49152 bytes as f32\)/,
    );
  });
  await withLimit(64 << 10, () => {
    assert.throws(
      () => CLIP.fromStateDict(sd, { trainable: true }),
      /token_embedding\.weight .*only be loaded frozen/,
    );
    assert.throws(
      () => T.zeros([1 << 15]),
      /\[32768\] is 131072 bytes, more than this adapter binds/,
    );
  });
});
