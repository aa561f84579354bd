/** The model commands (embed, zeroshot), run in-process on the golden micro CLIP. */
import { assert, capture, setup, sharedDir } from "./util.ts";
import { golden, within } from "./golden.ts";
import { main as embed } from "../model/embed.ts";
import { main as zeroshot } from "../model/zeroshot.ts";

await setup();
const S = sharedDir();
const MODEL = `${S}golden/micro/model.safetensors`;
const VOCAB = `${S}clip/bpe_simple_vocab_16e6.txt.gz`;

Deno.test("embed writes normalised embeddings and 100·cos logits that match the golden features", async () => {
  const g = await golden("micro");
  const prompts: string[] = JSON.parse(g.metadata.prompts);
  const images: string[] = JSON.parse(g.metadata.images).map((p: string) => `${S}data/PACS/${p}`);
  const outFile = await Deno.makeTempFile({ suffix: ".json" });
  const args = ["--model", MODEL, "--vocab", VOCAB, "--out", outFile];
  for (const p of prompts) args.push("--text", p);
  for (const p of images) args.push("--image", p);
  const r = await capture(() => embed(args));
  assert.equal(r.code, 0, r.err);
  const j = JSON.parse(await Deno.readTextFile(outFile));
  assert.equal(j.config.embedDim, 64);
  assert.equal(j.text_embeds.length, 10);
  assert.equal(j.image_embeds.length, 4);
  // text goes through our tokenizer: it must reproduce the golden text features exactly
  const tf = g.f("text_features");
  const ref: number[] = [];
  for (let i = 0; i < 10; i++) {
    const row = tf.subarray(i * 64, (i + 1) * 64);
    const n = Math.hypot(...row);
    ref.push(...Array.from(row, (v) => v / n));
  }
  within(j.text_embeds.flat(), ref, 1e-5, "embed text_embeds (normalised golden text_features)");
  for (const e of j.image_embeds) assert.ok(Math.abs(Math.hypot(...e) - 1) < 1e-5);
  // images go through our decoder and resampler: close to the golden features, not identical
  within(
    j.logits_per_image.flat(),
    g.f("logits_per_image"),
    1e-3,
    "embed logits from the image files",
  );
  g.model.dispose();
});

Deno.test("embed refuses an empty text and a missing model, naming the flag", async () => {
  let r = await capture(() =>
    embed(["--model", MODEL, "--vocab", VOCAB, "--text", "a dog", "--text", " "])
  );
  assert.equal(r.code, 2);
  assert.match(r.err, /--text #2 is empty/);
  r = await capture(() => embed(["--text", "a dog"]));
  assert.equal(r.code, 2);
  assert.match(r.err, /--model is required/);
});

Deno.test("zeroshot prints top labels, skips an unreadable image naming it, and counts it", async () => {
  const bad = await Deno.makeTempFile({ suffix: ".jpg" });
  await Deno.writeTextFile(bad, "not an image");
  const r = await capture(() =>
    zeroshot([
      "--model",
      `${S}golden/micro/model.pt`,
      "--vocab",
      VOCAB,
      "--labels",
      "dog,horse,house",
      `${S}data/PACS/photo/dog/056_0001.jpg`,
      bad,
    ])
  );
  assert.equal(r.code, 0, r.err);
  assert.match(r.err, new RegExp(`skipping ${bad}`));
  assert.match(r.out, /056_0001\.jpg\n\s+\d+\.\d\d%\s+(dog|horse|house)/);
  assert.match(r.out, /1 image\(s\) classified, 1 skipped \(unreadable\)/);
  const sum = [...r.out.matchAll(/(\d+\.\d\d)%/g)].reduce((a, m) => a + Number(m[1]), 0);
  assert.ok(Math.abs(sum - 100) < 0.05, `probabilities sum to ${sum}`);
  const r2 = await capture(() => zeroshot(["--model", MODEL, "--labels", "dog", "x.jpg"]));
  assert.equal(r2.code, 2);
  assert.match(r2.err, /--labels needs at least two/);
});
