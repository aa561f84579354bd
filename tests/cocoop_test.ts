/**
 * CoCoOp against the golden method case (../shared/golden/micro/methods.safetensors): from the
 * stored context and meta-net, one forward and backward on the stored views reproduces the
 * reference logits, loss and every parameter's gradient.
 */
import { assert, setup, T } from "./util.ts";
import { golden, tokenizer, within } from "./golden.ts";
import { type CoCoOp, cocoop } from "../pipeline/methods/cocoop.ts";
import { resolveOptions } from "../pipeline/method.ts";

await setup();
const tok = await tokenizer();
const g = await golden("micro", "methods.safetensors");
const CLASSES: string[] = JSON.parse(g.metadata.classes);

const PARAMS = [
  "ctx",
  "meta_net.linear1.weight",
  "meta_net.linear1.bias",
  "meta_net.linear2.weight",
  "meta_net.linear2.bias",
];

const create = (options: Record<string, unknown> = {}, seed = 1) =>
  cocoop.create({
    model: g.model,
    tokenizer: tok,
    classnames: CLASSES,
    options: resolveOptions(cocoop, options),
    seed,
  }) as CoCoOp;

const batch = () => ({
  views: { orig: T.tensor(g.f("view_orig"), g.shape("view_orig")) },
  labels: T.tensor(g.i("labels"), [4], "i32"),
});

Deno.test("CoCoOp: parameters carry the paper's names and PyTorch Linear shapes", async () => {
  const m = create();
  assert.deepEqual([...m.params.keys()], PARAMS);
  for (const k of PARAMS) assert.deepEqual(m.params.get(k)!.shape, g.shape(`cocoop.init.${k}`), k);
  // the default context is "a photo of a", the golden's initial context
  within(await m.params.get("ctx")!.data(), g.f("cocoop.init.ctx"), 0, "ctx from the phrase");
  m.dispose();
});

Deno.test("CoCoOp: one step from the golden init reproduces logits, loss and gradients", async () => {
  const m = create();
  m.load(new Map(PARAMS.map((k) => [k, g.f(`cocoop.init.${k}`)])));
  await T.scopeAsync(async () => {
    const out = m.forward(batch());
    assert.deepEqual(out.logits.shape, [4, CLASSES.length]);
    T.backward(out.loss);
    within(await out.logits.data(), g.f("cocoop.logits"), 1e-4, "cocoop.logits");
    within(await out.loss.data(), g.f("cocoop.loss"), 1e-4, "cocoop.loss");
    for (const k of PARAMS) {
      within(
        await m.params.get(k)!.grad!.data(),
        g.f(`cocoop.grad.${k}`),
        1e-3,
        `cocoop.grad.${k}`,
      );
    }
    // inference on the same images (chunked through the text tower) gives the same logits
    const pred = m.predict(batch().views.orig);
    within(await pred.data(), g.f("cocoop.logits"), 1e-4, "predict, one chunk");
  });
  m.dispose();
});

Deno.test("CoCoOp: chunked inference and cached features agree with the batched forward", async () => {
  const m = create({ predictSequences: CLASSES.length }, 3); // one image per chunk
  m.load(new Map(PARAMS.map((k) => [k, g.f(`cocoop.init.${k}`)])));
  await T.scopeAsync(async () => {
    const pixels = batch().views.orig;
    const feats = T.noGrad(() => g.model.encodeImage(pixels).features);
    const pred = m.predict(pixels);
    assert.deepEqual(pred.shape, [4, CLASSES.length]);
    within(await pred.data(), g.f("cocoop.logits"), 1e-4, "predict, one image per chunk");
    within(
      await m.predict(pixels, feats).data(),
      g.f("cocoop.logits"),
      1e-4,
      "from cached features",
    );
  });
  m.dispose();
});

Deno.test("CoCoOp: a seed fixes the random initialisation and the forward", async () => {
  const run = async (seed: number, opts: Record<string, unknown>) => {
    const m = create(opts, seed);
    const out = await T.scopeAsync(async () => await m.forward(batch()).logits.data());
    m.dispose();
    return out;
  };
  const random = { initPhrase: "", nCtx: 3 };
  const a = await run(5, random), b = await run(5, random), c = await run(6, random);
  assert.deepEqual(a, b, "same seed, same logits");
  assert.ok(a.some((v, i) => v !== c[i]), "another seed, other logits");
  assert.ok(a.every(Number.isFinite));
});

Deno.test("CoCoOp: bad options and bad loads are refused", () => {
  assert.throws(() => resolveOptions(cocoop, { nctx: 4 }), /cocoop: unknown option "nctx"/);
  const m = create();
  const good = () => new Map(PARAMS.map((k) => [k, g.f(`cocoop.init.${k}`)]));
  const extra = good().set("meta_net.linear3.weight", new Float32Array(4));
  assert.throws(() => m.load(extra), /cocoop: load: unknown meta_net\.linear3\.weight/);
  const short = good();
  short.delete("ctx");
  assert.throws(() => m.load(short), /cocoop: load: missing ctx/);
  const wrong = good().set("meta_net.linear1.bias", new Float32Array(5));
  assert.throws(() => m.load(wrong), /meta_net\.linear1\.bias has 5 values, expected \[4\]/);
  m.dispose();
});

Deno.test("CoCoOp: setClasses rebuilds the prompts for a new class list", async () => {
  const m = create();
  m.setClasses(["cat", "sea turtle"]);
  await T.scopeAsync(async () => {
    const out = m.forward({
      views: batch().views,
      labels: T.tensor([0, 1, 1, 0], [4], "i32"),
    });
    assert.deepEqual(out.logits.shape, [4, 2]);
    T.backward(out.loss);
    const grad = await m.params.get("meta_net.linear2.weight")!.grad!.data();
    assert.ok(
      grad.some((v) => v !== 0) && grad.every(Number.isFinite),
      "gradient reaches the meta-net",
    );
  });
  m.dispose();
});
