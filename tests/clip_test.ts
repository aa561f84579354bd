/**
 * CLIP against the goldens computed by OpenAI's own code (../shared/golden): embeddings, logits,
 * every vision block's output, the CoOp case (loss and context gradient) and the pixel gradient.
 */
import { assert, setup, sharedDir, T } from "./util.ts";
import { loadStateDict } from "../model/weights.ts";
import { CLIP, eotPositions } from "../model/clip.ts";
import { golden, within } from "./golden.ts";

await setup();

for (const name of ["micro", "b16lite"]) {
  Deno.test(`${name}: image and text features, logits and vision hidden states match OpenAI's`, async () => {
    const { model, f, i, shape } = await golden(name);
    await T.scopeAsync(async () => {
      const pixels = T.tensor(f("pixels"), shape("pixels"));
      const { features: img, hidden } = T.noGrad(() => model.encodeImage(pixels, { hidden: true }));
      const txt = T.noGrad(() => model.encodeText(i("tokens")));
      within(await img.data(), f("image_features"), 1e-4, "image_features");
      within(await txt.data(), f("text_features"), 1e-4, "text_features");
      within(await model.logits(img, txt).data(), f("logits_per_image"), 1e-4, "logits_per_image");
      const vh = f("vision_hidden");
      const per = vh.length / hidden.length;
      for (let l = 0; l < hidden.length; l++) {
        within(
          await hidden[l].data(),
          vh.subarray(l * per, (l + 1) * per),
          1e-4,
          `vision_hidden[${l}]`,
        );
      }
    });
    model.dispose();
  });

  Deno.test(`${name}: CoOp loss and context gradient match OpenAI's`, async () => {
    const { model, f, i, shape } = await golden(name);
    const W = model.config.transformerWidth;
    const ctx = T.param(T.tensor(f("coop_ctx_init"), [4, W]));
    await T.scopeAsync(async () => {
      const prompts = i("coop_prompt_tokens");
      const n = prompts.length / 77;
      const img = T.noGrad(() =>
        model.encodeImage(T.tensor(f("pixels"), shape("pixels"))).features
      );
      // the 4 "X" placeholders (positions 1–4) become the learned context
      const emb = model.embedTokens(T.tensor(prompts, [n, 77], "i32"));
      const x = T.sliceAssign(emb, ctx, [0, 1, 0]);
      const txt = model.encodeEmbeddings(x, T.tensor(eotPositions(prompts, 77), [n], "i32"));
      const logits = model.logits(img, txt);
      const loss = T.crossEntropy(logits, T.tensor(i("coop_labels"), [4], "i32"));
      T.backward(loss);
      within(await logits.data(), f("coop_logits"), 1e-4, "coop_logits");
      within(await loss.data(), f("coop_loss"), 1e-4, "coop_loss");
      within(await ctx.grad!.data(), f("coop_ctx_grad"), 1e-3, "coop_ctx_grad");
    });
    ctx.dispose();
    model.dispose();
  });

  Deno.test(`${name}: the pixel gradient matches OpenAI's`, async () => {
    const { model, f, shape } = await golden(name);
    const pixels = T.param(T.tensor(f("pixels"), shape("pixels")));
    await T.scopeAsync(async () => {
      const feats = T.normalize(model.encodeImage(pixels).features);
      const Wt = T.tensor(f("pixel_grad_weights"), shape("pixel_grad_weights"));
      T.backward(T.sum(T.mul(feats, Wt)));
      within(await pixels.grad!.data(), f("pixel_grad"), 1e-3, "pixel_grad");
    });
    pixels.dispose();
    model.dispose();
  });
}

Deno.test("a checkpoint with a misshapen or missing tensor is refused before any upload, naming it", async () => {
  const sd = await loadStateDict(`${sharedDir()}golden/micro/model.safetensors`);
  const before = T.memory().bytesInUse;
  const bad = new Map(sd);
  const w = bad.get("visual.transformer.resblocks.1.mlp.c_fc.weight")!;
  bad.set("visual.transformer.resblocks.1.mlp.c_fc.weight", {
    ...w,
    shape: [w.shape[1], w.shape[0]],
  });
  bad.delete("ln_final.bias");
  assert.throws(
    () => CLIP.fromStateDict(bad, { file: "bad.safetensors" }),
    /bad\.safetensors does not fit CLIP[\s\S]*resblocks\.1\.mlp\.c_fc\.weight is \[128, 512\], expected \[512, 128\][\s\S]*missing ln_final\.bias/,
  );
  assert.equal(T.memory().bytesInUse, before);
});

Deno.test("configuration is read off the state dict", async () => {
  const sd = await loadStateDict(`${sharedDir()}golden/b16lite/model.safetensors`);
  const { inferConfig } = await import("../model/clip.ts");
  const c = inferConfig(sd);
  assert.deepEqual(
    [
      c.imageResolution,
      c.visionPatchSize,
      c.visionWidth,
      c.visionLayers,
      c.visionHeads,
      c.transformerWidth,
      c.transformerLayers,
      c.transformerHeads,
      c.embedDim,
      c.contextLength,
      c.vocabSize,
    ],
    [224, 16, 192, 3, 3, 128, 3, 2, 128, 77, 49408],
  );
});
