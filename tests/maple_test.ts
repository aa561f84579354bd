/**
 * MaPLe against the golden method case (../shared/golden/micro/methods.safetensors, depth J = 2):
 * from the stored prompts and couplings, one forward and backward on the stored views reproduces
 * the reference logits, loss and every parameter's gradient.
 */
import { assert, setup, T } from "./util.ts";
import { golden, goldenStateDict, tokenizer, within } from "./golden.ts";
import { CLIP } from "../model/clip.ts";
import { type MaPLe, maple } from "../pipeline/methods/maple.ts";
import { resolveOptions } from "../pipeline/method.ts";

await setup();
const tok = await tokenizer();
const g = await golden("micro", "methods.safetensors");
const CLASSES: string[] = JSON.parse(g.metadata.classes);
const DEPTH = Number(g.metadata.maple_depth);

const PARAMS = [
  "ctx",
  "proj.weight",
  "proj.bias",
  "deep_text.1",
  "deep_proj.1.weight",
  "deep_proj.1.bias",
];

const create = (options: Record<string, unknown> = {}, seed = 1) =>
  maple.create({
    model: g.model,
    tokenizer: tok,
    classnames: CLASSES,
    options: resolveOptions(maple, { depth: DEPTH, ...options }),
    seed,
  }) as MaPLe;

const batch = () => ({
  views: { orig: T.tensor(g.f("view_orig"), g.shape("view_orig")) },
  labels: T.tensor(g.i("labels"), [4], "i32"),
});

const goldenInit = () => new Map(PARAMS.map((k) => [k, g.f(`maple.init.${k}`)]));

Deno.test("MaPLe: prompts, parameter names and shapes follow the golden", async () => {
  const m = create();
  assert.deepEqual([...m.params.keys()], PARAMS);
  for (const k of PARAMS) assert.deepEqual(m.params.get(k)!.shape, g.shape(`maple.init.${k}`), k);
  // "a photo of a {class}." with the first two words learned, initialised from their embeddings
  assert.deepEqual(m.promptIds, g.i("maple.prompt_tokens"), "maple.prompt_tokens");
  within(await m.params.get("ctx")!.data(), g.f("maple.init.ctx"), 0, "ctx from the phrase");
  m.dispose();
});

Deno.test("MaPLe: deeper prompts on a 3-block CLIP; couplings start as copies of one Linear", async () => {
  const model = CLIP.fromStateDict(await goldenStateDict("b16lite"), { file: "b16lite" });
  const m = maple.create({
    model,
    tokenizer: tok,
    classnames: CLASSES,
    options: resolveOptions(maple, { depth: 3 }),
    seed: 4,
  });
  assert.deepEqual([...m.params.keys()], [
    ...PARAMS,
    "deep_text.2",
    "deep_proj.2.weight",
    "deep_proj.2.bias",
  ]);
  // the authors' initialisation clones one Linear for every deep coupling
  for (const part of ["weight", "bias"]) {
    assert.deepEqual(
      await m.params.get(`deep_proj.1.${part}`)!.data(),
      await m.params.get(`deep_proj.2.${part}`)!.data(),
    );
  }
  const t1 = await m.params.get("deep_text.1")!.data(),
    t2 = await m.params.get("deep_text.2")!.data();
  assert.ok(t1.some((v, i) => v !== t2[i]), "each block draws its own text prompts");
  await T.scopeAsync(async () => {
    const pixels = T.randomNormal([2, 3, 224, 224], 9);
    const out = m.forward({ views: { orig: pixels }, labels: T.tensor([1, 3], [2], "i32") });
    T.backward(out.loss);
    for (const k of m.params.keys()) {
      const grad = await m.params.get(k)!.grad!.data();
      assert.ok(grad.some((v) => v !== 0) && grad.every(Number.isFinite), `gradient reaches ${k}`);
    }
  });
  m.dispose();
  model.dispose();
});

Deno.test("MaPLe: one step from the golden init reproduces logits, loss and gradients", async () => {
  const m = create();
  m.load(goldenInit());
  await T.scopeAsync(async () => {
    const out = m.forward(batch());
    assert.deepEqual(out.logits.shape, [4, CLASSES.length]);
    T.backward(out.loss);
    within(await out.logits.data(), g.f("maple.logits"), 1e-4, "maple.logits");
    within(await out.loss.data(), g.f("maple.loss"), 1e-4, "maple.loss");
    for (const k of PARAMS) {
      within(await m.params.get(k)!.grad!.data(), g.f(`maple.grad.${k}`), 1e-3, `maple.grad.${k}`);
    }
    within(await m.predict(batch().views.orig).data(), g.f("maple.logits"), 1e-4, "predict");
  });
  m.dispose();
});

Deno.test("MaPLe: the deep prompts matter (depth 1 gives other logits)", async () => {
  const m = create({ depth: 1 });
  const init = goldenInit();
  for (const k of PARAMS) if (k.startsWith("deep_")) init.delete(k);
  m.load(init);
  await T.scopeAsync(async () => {
    const ours = await m.forward(batch()).logits.data();
    const ref = g.f("maple.logits");
    assert.ok(ours.some((v, i) => Math.abs(v - ref[i]) > 1e-3), "depth 1 ignores deep prompts");
  });
  m.dispose();
});

Deno.test("MaPLe: a seed fixes the random initialisation and the forward", async () => {
  const run = async (seed: number) => {
    const m = create({}, seed);
    const out = await T.scopeAsync(async () => await m.forward(batch()).logits.data());
    m.dispose();
    return out;
  };
  const a = await run(5), b = await run(5), c = await run(6);
  assert.deepEqual(a, b, "same seed, same logits");
  assert.ok(a.some((v, i) => v !== c[i]), "another seed, other logits");
  assert.ok(a.every(Number.isFinite));
});

Deno.test("MaPLe: bad options and bad loads are refused", () => {
  assert.throws(() => resolveOptions(maple, { Depth: 3 }), /maple: unknown option "Depth"/);
  assert.throws(
    () => create({ depth: 0 }),
    /maple: depth must be in 1 … 2/,
  );
  // the paper's J = 9 on a 2-block CLIP: prompts in every block it has
  const capped = create({ depth: 9 });
  assert.ok(capped.params.has("deep_text.1") && !capped.params.has("deep_text.2"));
  capped.dispose();
  assert.throws(
    () => create({ nCtx: 5 }),
    /prompts: init phrase "a photo of a" has 4 tokens, fewer than nCtx 5/,
  );
  const m = create();
  const short = goldenInit();
  short.delete("deep_text.1");
  assert.throws(() => m.load(short), /maple: load: missing deep_text\.1/);
  const wrong = goldenInit().set("proj.bias", new Float32Array(64));
  assert.throws(() => m.load(wrong), /proj\.bias has 64 values, expected \[128\]/);
  m.dispose();
});

Deno.test("MaPLe: random prompts and a new class list build valid prompts", async () => {
  const m = create({ initPhrase: "", nCtx: 3 }, 2);
  m.setClasses(["cat", "sea turtle", "bicycle"]);
  await T.scopeAsync(async () => {
    const out = m.forward({ views: batch().views, labels: T.tensor([0, 1, 2, 0], [4], "i32") });
    assert.deepEqual(out.logits.shape, [4, 3]);
    T.backward(out.loss);
    for (const k of m.params.keys()) {
      const grad = await m.params.get(k)!.grad!.data();
      assert.ok(grad.some((v) => v !== 0) && grad.every(Number.isFinite), `gradient reaches ${k}`);
    }
  });
  m.dispose();
});
