/**
 * The prompt learners against the goldens: one forward and backward from the stored initial
 * parameters on the stored views reproduces OpenAI-code references (../shared/golden).
 */
import { assert, setup, T } from "./util.ts";
import { golden, tokenizer, within } from "./golden.ts";
import { coop } from "../pipeline/methods/coop.ts";
import { resolveOptions } from "../pipeline/method.ts";

await setup();
const tok = await tokenizer();
const CLASSES = ["dog", "elephant", "giraffe", "guitar", "horse", "house", "person"];

for (const name of ["micro", "b16lite"]) {
  Deno.test(`${name}: CoOp (init "a photo of a") reproduces coop_logits, coop_loss and coop_ctx_grad`, async () => {
    const g = await golden(name);
    const m = coop.create({
      model: g.model,
      tokenizer: tok,
      classnames: CLASSES,
      options: resolveOptions(coop, { initPhrase: "a photo of a" }),
      seed: 1,
    });
    const ctx = m.params.get("ctx")!;
    within(await ctx.data(), g.f("coop_ctx_init"), 0, "ctx initialised from the phrase");
    await T.scopeAsync(async () => {
      const out = m.forward({
        views: { orig: T.tensor(g.f("pixels"), g.shape("pixels")) },
        labels: T.tensor(g.i("coop_labels"), [4], "i32"),
      });
      T.backward(out.loss);
      within(await out.logits.data(), g.f("coop_logits"), 1e-4, "coop_logits");
      within(await out.loss.data(), g.f("coop_loss"), 1e-4, "coop_loss");
      within(await ctx.grad!.data(), g.f("coop_ctx_grad"), 1e-3, "coop_ctx_grad");
    });
    m.dispose();
    g.model.dispose();
  });
}

Deno.test("CoOp: class token front/middle and class-specific context build valid prompts", async () => {
  const g = await golden("micro");
  for (
    const opts of [{ classTokenPosition: "front", nCtx: 4 }, {
      classTokenPosition: "middle",
      nCtx: 4,
    }, { classSpecific: true, nCtx: 3 }]
  ) {
    const m = coop.create({
      model: g.model,
      tokenizer: tok,
      classnames: CLASSES,
      options: resolveOptions(coop, opts),
      seed: 2,
    });
    await T.scopeAsync(async () => {
      const out = m.forward({
        views: { orig: T.tensor(g.f("pixels"), g.shape("pixels")) },
        labels: T.tensor(g.i("coop_labels"), [4], "i32"),
      });
      assert.deepEqual(out.logits.shape, [4, 7]);
      T.backward(out.loss);
      const grad = await m.params.get("ctx")!.grad!.data();
      assert.ok(
        grad.some((v) => v !== 0) && grad.every(Number.isFinite),
        `${JSON.stringify(opts)}: gradient reaches ctx`,
      );
    });
    m.dispose();
  }
  assert.throws(() => resolveOptions(coop, { nctx: 4 }), /coop: unknown option "nctx"/);
  g.model.dispose();
});
