/**
 * GOPro against the golden method case (../shared/golden/micro/methods.safetensors): from the
 * stored initial parameters, one forward and backward on the stored three views reproduces the
 * logits, b(x), each loss, each term's gradient alone and the total's. Also: ablation switches,
 * determinism, inference on the original view, refused options and checkpoints.
 */
import { assert, setup, T } from "./util.ts";
import { golden, tokenizer, within, withinAbs } from "./golden.ts";
import { type GoPro, gopro } from "../pipeline/methods/gopro.ts";
import { resolveOptions } from "../pipeline/method.ts";

await setup();
const tok = await tokenizer();
const g = await golden("micro", "methods.safetensors");
const CLASSES: string[] = JSON.parse(g.metadata.classes);
const INIT = new Map(
  g.names.filter((n) => n.startsWith("gopro.init.")).map((
    n,
  ) => [n.slice("gopro.init.".length), g.f(n)]),
);
/** Zero in exact arithmetic (see the golden README): compared by absolute error. */
const INERT = new Set(["image_projector.bias", "layer_mixer.bias"]);

function build(options: Record<string, unknown> = {}): GoPro {
  const m = gopro.create({
    model: g.model,
    tokenizer: tok,
    classnames: CLASSES,
    options: resolveOptions(gopro, options),
    seed: 1,
  }) as GoPro;
  m.load(INIT);
  return m;
}

interface Run {
  logits: Float32Array;
  shift: Float32Array;
  loss: number;
  terms: Record<string, number>;
  /** Gradients by parameter name; zeros where no gradient reached the parameter. */
  grads: Map<string, Float32Array>;
  /** Parameters that received a gradient. */
  reached: Set<string>;
}

const views = (names = ["orig", "moco", "augmix"]) =>
  Object.fromEntries(names.map((v) => [v, T.tensor(g.f(`view_${v}`), g.shape(`view_${v}`))]));

/** One forward and backward of a fresh instance from the golden init. */
async function run(options: Record<string, unknown> = {}, viewNames?: string[]): Promise<Run> {
  const m = build(options);
  try {
    return await T.scopeAsync(async () => {
      const out = m.forward({
        views: views(viewNames),
        labels: T.tensor(g.i("labels"), [4], "i32"),
      });
      T.backward(out.loss);
      const terms: Record<string, number> = {};
      for (const [k, v] of Object.entries(out.terms)) terms[k] = await v.item();
      const grads = new Map<string, Float32Array>(), reached = new Set<string>();
      for (const [name, p] of m.params) {
        if (p.grad) reached.add(name);
        grads.set(name, p.grad ? (await p.grad.data()) as Float32Array : new Float32Array(p.size));
      }
      return {
        logits: (await out.logits.data()) as Float32Array,
        shift: (await out.shift.data()) as Float32Array,
        loss: await out.loss.item(),
        terms,
        grads,
        reached,
      };
    });
  } finally {
    m.dispose();
  }
}

function compareGrads(r: Run, prefix: string) {
  for (const [name, grad] of r.grads) {
    const ref = g.f(`gopro.${prefix}.${name}`);
    if (INERT.has(name)) withinAbs(grad, ref, 1e-4, `${prefix}.${name}`);
    else within(grad, ref, 1e-3, `${prefix}.${name}`);
  }
}

Deno.test("GOPro reproduces the golden logits, b(x), losses and total gradient", async () => {
  const r = await run();
  within(r.logits, g.f("gopro.logits"), 1e-4, "gopro.logits");
  within(r.shift, g.f("gopro.shift"), 1e-4, "gopro.shift");
  within([r.terms.ce], g.f("gopro.loss_ce"), 1e-4, "gopro.loss_ce");
  within([r.terms.cons], g.f("gopro.loss_cons"), 1e-4, "gopro.loss_cons");
  within([r.terms.vcl], g.f("gopro.loss_vcl"), 1e-4, "gopro.loss_vcl");
  within([r.loss], g.f("gopro.loss"), 1e-4, "gopro.loss");
  assert.deepEqual([...r.grads.keys()].sort(), [...INIT.keys()].sort());
  compareGrads(r, "grad");
});

for (const term of ["ce", "cons", "vcl"] as const) {
  Deno.test(`GOPro: L_${term} alone reproduces gopro.loss_${term} and gopro.grad_${term}.*`, async () => {
    const w = { ceWeight: 0, consWeight: 0, vclWeight: 0, [`${term}Weight`]: 1 };
    const r = await run(w);
    assert.deepEqual(Object.keys(r.terms), [term], "only the enabled term is computed");
    within([r.loss], g.f(`gopro.loss_${term}`), 1e-4, `gopro.loss_${term} alone`);
    compareGrads(r, `grad_${term}`);
  });
}

Deno.test("GOPro ablations: a disabled term is absent and trains nothing", async () => {
  const noVcl = await run({ vclWeight: 0 });
  assert.deepEqual(Object.keys(noVcl.terms).sort(), ["ce", "cons"]);
  for (
    const n of [
      "image_projector.weight",
      "image_projector.bias",
      "image_projector.bn.weight",
      "image_projector.bn.bias",
    ]
  ) {
    assert.ok(noVcl.grads.get(n)!.every((v) => v === 0), `${n}: no gradient without L_vcl`);
  }
  within(
    [noVcl.loss],
    [g.f("gopro.loss_ce")[0] + g.f("gopro.loss_cons")[0]],
    1e-4,
    "L_ce + L_cons",
  );
  assert.ok(noVcl.reached.has("ctx"));

  // without L_cons the AugMix view is never read; without L_cons and L_vcl neither is MoCo
  const noCons = await run({ consWeight: 0 }, ["orig", "moco"]);
  assert.deepEqual(Object.keys(noCons.terms).sort(), ["ce", "vcl"]);
  within(
    [noCons.loss],
    [g.f("gopro.loss_ce")[0] + 0.1 * g.f("gopro.loss_vcl")[0]],
    1e-4,
    "L_ce + 0.1·L_vcl",
  );
  const ceOnly = await run({ consWeight: 0, vclWeight: 0 }, ["orig"]);
  assert.deepEqual(Object.keys(ceOnly.terms), ["ce"]);
  within(ceOnly.logits, g.f("gopro.logits"), 1e-4, "logits with L_ce only");
  assert.ok(!ceOnly.reached.has("image_projector.weight"));

  // a weight other than 1 scales its term
  const half = await run({ consWeight: 0, vclWeight: 0.5 }, ["orig", "moco"]);
  within(
    [half.loss],
    [g.f("gopro.loss_ce")[0] + 0.5 * g.f("gopro.loss_vcl")[0]],
    1e-4,
    "L_ce + 0.5·L_vcl",
  );

  // with L_cons on, the missing AugMix view is named
  const m = build();
  await T.scopeAsync(async () => {
    assert.throws(
      () =>
        m.forward({ views: views(["orig", "moco"]), labels: T.tensor(g.i("labels"), [4], "i32") }),
      /gopro: the augmix view is missing/,
    );
    await Promise.resolve();
  });
  m.dispose();
});

Deno.test("GOPro is deterministic and predicts from the original view only", async () => {
  const a = await run(), b = await run();
  assert.deepEqual(a.logits, b.logits);
  assert.equal(a.loss, b.loss);
  for (const [n, v] of a.grads) assert.deepEqual(v, b.grads.get(n), `gradient of ${n} repeats`);
  const m = build();
  await T.scopeAsync(async () => {
    const p = m.predict(T.tensor(g.f("view_orig"), g.shape("view_orig")));
    assert.ok(!p.requiresGrad, "predict records no tape");
    within(await p.data(), g.f("gopro.logits"), 1e-4, "predict(view_orig)");
  });
  m.dispose();
});

Deno.test("GOPro: paper defaults, parameter names and shapes of a fresh instance", async () => {
  assert.deepEqual(gopro.views, ["orig", "moco", "augmix"]);
  assert.equal(gopro.frozenImageFeatures, false);
  assert.deepEqual(
    [
      gopro.defaults.optimizer,
      gopro.defaults.lr,
      gopro.defaults.momentum,
      gopro.defaults.weightDecay,
    ],
    ["sgd", 0.002, 0.9, 5e-4],
  );
  assert.deepEqual(
    [
      gopro.defaults.batch,
      gopro.defaults.epochs,
      gopro.defaults.warmupEpochs,
      gopro.defaults.warmupLr,
    ],
    [4, 50, 1, 1e-5],
  );
  const o = resolveOptions(gopro, {});
  assert.deepEqual([o.ceWeight, o.consWeight, o.vclWeight, o.tau, o.initPhrase], [
    1,
    1,
    0.1,
    0.1,
    "a photo of a",
  ]);
  const m = gopro.create({
    model: g.model,
    tokenizer: tok,
    classnames: CLASSES,
    options: o,
    seed: 3,
  });
  assert.deepEqual([...m.params.keys()], [...INIT.keys()], "names and order as the golden");
  for (const [n, p] of m.params) assert.deepEqual(p.shape, g.shape(`gopro.init.${n}`), n);
  // the context starts from "a photo of a", BatchNorm from weight 1, bias 0
  const cocoopCtx = g.f("cocoop.init.ctx");
  within(await m.params.get("ctx")!.data(), cocoopCtx, 0, "ctx from the phrase");
  assert.ok((await m.params.get("image_projector.bn.weight")!.data()).every((v) => v === 1));
  assert.ok((await m.params.get("image_projector.bn.bias")!.data()).every((v) => v === 0));
  const stages = gopro.graph(o).map((s) => s.stage);
  assert.deepEqual(stages, ["load", "views", "encode", "prompt", "loss", "step"]);
  // new classes rebuild the prompts; the trained parts stay
  m.setClasses(["cat", "dog"]);
  await T.scopeAsync(async () => {
    const p = m.predict(T.tensor(g.f("view_orig"), g.shape("view_orig")));
    assert.deepEqual(p.shape, [4, 2]);
    assert.ok((await p.data()).every(Number.isFinite));
  });
  m.dispose();
});

Deno.test("GOPro refuses bad options, views and checkpoints", () => {
  const make = (opts: Record<string, unknown>) =>
    gopro.create({
      model: g.model,
      tokenizer: tok,
      classnames: CLASSES,
      options: resolveOptions(gopro, opts),
      seed: 1,
    });
  assert.throws(() => resolveOptions(gopro, { vclweight: 1 }), /gopro: unknown option "vclweight"/);
  assert.throws(
    () => make({ consWeight: -1 }),
    /gopro: option consWeight must be a finite number ≥ 0/,
  );
  assert.throws(
    () => make({ vclWeight: "0.1" }),
    /gopro: option vclWeight must be a finite number/,
  );
  assert.throws(() => make({ tau: 0 }), /gopro: option tau must be > 0/);
  assert.throws(() => make({ ceWeight: 0, consWeight: 0, vclWeight: 0 }), /every loss weight is 0/);
  assert.throws(() => make({ initPhrase: "", nCtx: 0 }), /option nCtx must be a positive integer/);
  assert.throws(() => gopro.graph(resolveOptions(gopro, { tau: -1 })), /tau/);

  const m = build();
  const bad = new Map(INIT);
  bad.set("meta_net.linear1.weight", new Float32Array(4));
  assert.throws(() => m.load(bad), /gopro.load: unknown parameter meta_net.linear1.weight/);
  const short = new Map(INIT);
  short.set("layer_mixer.weight", new Float32Array(3));
  assert.throws(() => m.load(short), /layer_mixer.weight has 3 values, expected \[1, 2\]/);
  const missing = new Map(INIT);
  missing.delete("ctx");
  assert.throws(() => m.load(missing), /missing ctx \[4, 64\]/);

  T.scope(() => {
    const labels = T.tensor(g.i("labels"), [4], "i32");
    assert.throws(() => m.forward({ views: {}, labels }), /gopro: the orig view is missing/);
    assert.throws(
      () => m.forward({ views: views(), labels: T.tensor([0, 1], [2], "i32") }),
      /labels \[2\] do not fit 4 images/,
    );
    const one = T.tensor(g.f("view_orig").slice(0, 3 * 32 * 32), [1, 3, 32, 32]);
    const m1 = build({ consWeight: 0 });
    try {
      assert.throws(
        () => m1.forward({ views: { orig: one, moco: one }, labels: T.tensor([0], [1], "i32") }),
        /L_vcl needs at least 2 images/,
      );
    } finally {
      m1.dispose();
    }
  });
  m.dispose();
});
