/**
 * The prompt learners' chunked text tower: with the text tape's budget lowered so that every
 * pass holds one class (and the prompt table split across bindings), a training step of CoOp,
 * CoCoOp, MaPLe and GOPro gives the unchunked step's loss and gradients. Runs on a small random
 * CLIP with a vocabulary learnt from the class names: nothing from ../shared.
 */
import { assert, relErr, setup, T } from "./util.ts";
import { backward, noGrad } from "../engine/autograd.ts";
import { CLIP, type ClipConfig } from "../model/clip.ts";
import { learnBpe } from "../model/bpe_learn.ts";
import { Tokenizer } from "../model/tokenizer.ts";
import { METHODS } from "../pipeline/methods/index.ts";
import { resolveOptions } from "../pipeline/method.ts";
import { classesPerPass, textTape } from "../pipeline/prompts.ts";

const config: ClipConfig = {
  embedDim: 32,
  imageResolution: 32,
  visionLayers: 2,
  visionWidth: 64,
  visionPatchSize: 8,
  visionHeads: 1,
  contextLength: 20,
  vocabSize: 600,
  transformerWidth: 64,
  transformerHeads: 1,
  transformerLayers: 3,
};
const CLASSES = ["dog", "elephant", "giraffe", "guitar", "horse"];

async function step(method: string, model: CLIP, tok: Tokenizer) {
  const m = METHODS[method];
  const inst = m.create({
    model,
    tokenizer: tok,
    classnames: CLASSES,
    options: resolveOptions(m, {}),
    seed: 3,
  });
  const B = 2;
  const px = T.randomNormal([B, 3, 32, 32], 4);
  const feats = m.frozenImageFeatures
    ? T.scope(() => noGrad(() => model.encodeImage(px).features))
    : undefined;
  const loss = T.scope(() => {
    const labels = T.tensor(Int32Array.of(1, 3), [B], "i32");
    const views = Object.fromEntries(m.views.map((v) => [v, px]));
    const out = inst.forward({ views, labels, features: feats });
    backward(out.loss);
    return out.loss;
  });
  const grads = new Map<string, Float32Array>();
  for (const [k, p] of inst.params) {
    if (p.requiresGrad && p.grad) grads.set(k, (await p.grad.data()) as Float32Array);
  }
  const value = await loss.item();
  [loss, px, feats].forEach((t) => t?.dispose());
  inst.dispose();
  return { value, grads };
}

Deno.test("prompt learners: a step in one-class chunks equals the unchunked step", async () => {
  const e = await setup();
  const src = noGrad(() => CLIP.random(config, 7));
  const sd = await src.stateDict();
  src.dispose();
  const model = CLIP.fromStateDict(sd);
  const tok = new Tokenizer(learnBpe([...CLASSES, "a photo of a", "X"], 40).text);
  const budget = textTape.budgetBytes, limits = e.info.limits;
  const binding = limits.maxStorageBufferBindingSize;
  try {
    for (const method of ["coop", "cocoop", "maple", "gopro"]) {
      textTape.budgetBytes = budget;
      assert.ok(classesPerPass(model, 2) >= CLASSES.length, "the default budget holds all");
      const whole = await step(method, model, tok);
      // a 24 KiB binding: the prompt table in blocks of four classes (20 × 64 f32 a class),
      // the towers one image or sequence per pass; alone, then with one class per text pass
      limits.maxStorageBufferBindingSize = 24 << 10;
      const blocks = await step(method, model, tok);
      textTape.budgetBytes = 1;
      const chunked = await step(method, model, tok);
      limits.maxStorageBufferBindingSize = binding;
      assert.ok(whole.grads.size > 0, method);
      for (
        const [what, got] of [["prompt blocks", blocks], ["one-class passes", chunked]] as const
      ) {
        const lossErr = Math.abs(got.value - whole.value) / Math.abs(whole.value);
        assert.ok(lossErr < 1e-6, `${method}, ${what}: loss ${got.value} vs ${whole.value}`);
        assert.deepEqual([...got.grads.keys()], [...whole.grads.keys()], method);
        // within 1e-5 of the gradient, plus 1e-6 of the step's largest: a gradient that is 0 in
        // exact arithmetic (GOPro's layer-mixer bias: every path to it ends in a layer norm,
        // whose input gradient sums to 0 over the width) is float32 noise in both runs
        const norm = (a: ArrayLike<number>) =>
          Math.sqrt(Array.from(a).reduce((x, y) => x + y * y, 0));
        const big = Math.max(...[...whole.grads.values()].map(norm));
        for (const [k, g] of whole.grads) {
          const diff = relErr(got.grads.get(k)!, g) * norm(g);
          assert.ok(
            diff <= 1e-5 * norm(g) + 1e-6 * big,
            `${method}, ${what}, ${k}: gradient differs by ${diff} (norm ${
              norm(g)
            }, largest ${big})`,
          );
        }
      }
    }
  } finally {
    textTape.budgetBytes = budget;
    limits.maxStorageBufferBindingSize = binding;
    model.dispose();
  }
});

Deno.test("train --text-budget GIB reaches the run's config (recorded in run.json)", async () => {
  const { parseTrainArgs } = await import("../pipeline/train_cli.ts");
  const base = ["--method", "coop", "--model", "m", "--data", "d", "--out", "o"];
  assert.equal(parseTrainArgs([...base, "--text-budget", "0.5"]).textBudget, 0.5);
  assert.equal(parseTrainArgs(base).textBudget, undefined);
  assert.throws(() => parseTrainArgs([...base, "--text-budget", "-1"]), /--text-budget/);
});
