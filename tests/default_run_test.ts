/** `deno task train --smoke`: the offline default run end to end at its reduced size. */
import { assert, runTask, setup } from "./util.ts";
import { main } from "../pipeline/train_cli.ts";

await setup();

Deno.test("the default run (--smoke) on a fresh machine: empty HOME and cache, no ../shared; generates, pretrains, trains every method per held-out domain and reports", async () => {
  // as a new user runs it: `deno task train --smoke` in a process of its own, from a folder with
  // no ../shared beside it, with HOME and CLIPKIT_CACHE new and empty (the small CLIP learns its
  // own vocabulary, so nothing is downloaded or read from outside the checkout)
  const fresh = await Deno.makeTempDir({ prefix: "fresh-machine-" });
  const dir = `${fresh}/run`;
  for (const d of ["home", "cache", "cwd"]) await Deno.mkdir(`${fresh}/${d}`);
  const env: Record<string, string> = {
    PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
    HOME: `${fresh}/home`,
    CLIPKIT_CACHE: `${fresh}/cache`,
    DENO_WEBGPU_BACKEND: Deno.env.get("DENO_WEBGPU_BACKEND") ?? "vulkan",
    NO_COLOR: "1",
  };
  // Deno's own module cache is not the toolkit's: keep it so the test needs no registry
  env.DENO_DIR = Deno.env.get("DENO_DIR") ?? `${Deno.env.get("HOME")}/.cache/deno`;
  const { code, out, err } = await runTask("train", ["--smoke", "--dir", dir], {
    cwd: `${fresh}/cwd`,
    env,
    clearEnv: true,
  });
  assert.equal(code, 0, err);
  assert.doesNotMatch(err, /XDG_RUNTIME_DIR/);
  assert.deepEqual([...Deno.readDirSync(`${fresh}/cache`)], [], "nothing was put in the cache");
  for (const m of ["zeroshot", "coop", "cocoop", "maple", "gopro", "clip-adapter", "tip-adapter"]) {
    assert.match(out, new RegExp(`\\| ${m}( \\(.*\\))? \\|`), `the table has a row for ${m}`);
  }
  assert.match(out, /\| Method \| cartoon \| painting \| photo \| sketch \| Average \|/);
  for (
    const f of [
      "report/report.md",
      "report/report.svg",
      "report/report.json",
      "pretrained-eval.json",
      "clip-small.safetensors",
      "clip-small.bpe.txt.gz",
    ]
  ) {
    await Deno.stat(`${dir}/${f}`);
  }
  const report = JSON.parse(await Deno.readTextFile(`${dir}/report/report.json`));
  assert.equal(report.runs.length, 36); // 7 methods and GOPro's 2 ablation rows × 4 styles
  assert.match(out, /\| gopro \(consWeight=0, vclWeight=0\) \|/);
  assert.match(out, /## Paired against zeroshot/);
  // the world's CLIP was pretrained with the world's settings (pipeline/default_run.ts)
  const { readSafetensors } = await import("../model/safetensors.ts");
  const st = await readSafetensors(`${dir}/clip-small.safetensors`);
  const meta = JSON.parse(st.metadata["clipkit.pretrain"]);
  assert.equal(meta.config.contextLength, 12);
  assert.equal(meta.config.transformerLayers, 1);
  // its vocabulary was learnt from the pretraining world's captions and sizes the token table
  const learnt = JSON.parse(st.metadata["clipkit.vocab"]);
  assert.equal(learnt.file, "clip-small.bpe.txt.gz");
  assert.equal(meta.config.vocabSize, 512 + learnt.merges + 2);
  assert.deepEqual(
    [
      meta.hyper.batchByDomain,
      meta.hyper.centreInit,
      meta.hyper.whitenInit,
      meta.hyper.lockTextEpochs,
    ],
    [true, true, true, 2],
  );
  // a second call finds everything cached and redoes nothing
  const t0 = performance.now();
  const log = console.log;
  console.log = () => {};
  try {
    assert.equal(
      await main(["--smoke", "--dir", dir]),
      0,
    );
  } finally {
    console.log = log;
  }
  assert.ok(performance.now() - t0 < 30_000, "the cached rerun retrained something");
  // a folder made with other settings, or before recipe.json, is refused and left as it is
  const { defaultRun } = await import("../pipeline/default_run.ts");
  const recipe = JSON.parse(await Deno.readTextFile(`${dir}/recipe.json`));
  recipe.world.WORLD_PRETRAIN.options.lockTextEpochs = 1;
  await Deno.writeTextFile(`${dir}/recipe.json`, JSON.stringify(recipe));
  const model = await Deno.readFile(`${dir}/clip-small.safetensors`);
  await assert.rejects(
    () => defaultRun({ smoke: true, dir, log: () => {} }),
    /was made with other settings .*recipe\.json/,
  );
  await Deno.remove(`${dir}/recipe.json`);
  await assert.rejects(
    () => defaultRun({ smoke: true, dir, log: () => {} }),
    /made before .*recorded the settings/,
  );
  assert.deepEqual(await Deno.readFile(`${dir}/clip-small.safetensors`), model);
});

Deno.test("the default run on a domain-folder dataset pretrains without the held-out domain and reports", async () => {
  const { generateWorld, writeWorld } = await import("../pipeline/world.ts");
  const { defaultRun, domainCaption } = await import("../pipeline/default_run.ts");
  assert.equal(domainCaption("art_painting", "elephant"), "an art painting of an elephant.");
  assert.equal(domainCaption("sketch", "dog"), "a sketch of a dog.");
  const dir = await Deno.makeTempDir({ prefix: "default-data-" });
  const data = `${dir}/data`;
  writeWorld(data, generateWorld({ seed: 5, size: 32, perClassPerDomain: 6 }), { force: true });
  await assert.rejects(
    () => defaultRun({ data, dir, smoke: true, targets: ["clay"], log: () => {} }),
    /no domain "clay"/,
  );
  const lines: string[] = [];
  const r = await defaultRun({
    data,
    dir,
    smoke: true,
    targets: ["sketch"],
    methods: ["zeroshot", "tip-adapter"],
    log: (l) => lines.push(l),
  });
  // the CLIP for "sketch" was pretrained on the three other domains only, captioned by name
  const caps = (await Deno.readTextFile(`${dir}/captions-without-sketch.jsonl`)).trim().split("\n")
    .map((l) => JSON.parse(l));
  assert.equal(caps.length, 180);
  assert.ok(caps.every((c) => !c.path.startsWith("sketch/")));
  assert.ok(caps.some((c) => c.caption === "a cartoon of a star."));
  await Deno.stat(`${dir}/clip-small-without-sketch.safetensors`);
  const pre = JSON.parse(await Deno.readTextFile(`${dir}/pretrained-eval.json`));
  assert.deepEqual(Object.keys(pre), ["sketch"]);
  assert.deepEqual(Object.keys(pre.sketch.zeroShot.perDomain), ["sketch"]);
  assert.equal(r.report.runs.length, 2);
  assert.match(lines.join("\n"), /zero-shot on sketch/);
});

Deno.test("pairedGains: differences over the runs both methods have, with standard errors and signs", async () => {
  const { pairedGains } = await import("../pipeline/default_run.ts");
  const runs = (xs: [string, number, number][]) =>
    new Map(xs.map(([k, h, s]) => [k, { heldOut: h, source: s }]));
  const { rows, markdown } = pairedGains({
    zeroshot: runs([["a 1", 0.5, 0.4], ["a 2", 0.5, 0.4], ["b 1", 0.2, 0.3]]),
    coop: runs([["a 1", 0.6, 0.4], ["a 2", 0.55, 0.35], ["b 1", 0.2, 0.6]]),
    ablation: runs([["b 1", 0.1, 0.3]]), // one seed only: paired on that run alone
  }, "zeroshot");
  const coop = rows.find((r) => r.method === "coop")!;
  assert.equal(coop.runs, 3);
  assert.ok(Math.abs(coop.heldOut.mean - 5) < 1e-9); // (10 + 5 + 0) / 3 points
  assert.ok(Math.abs(coop.heldOut.se - 5 / Math.sqrt(3)) < 1e-9); // sd 5
  assert.deepEqual([coop.heldOut.higher, coop.heldOut.lower], [2, 0]);
  assert.deepEqual([coop.source.higher, coop.source.lower], [1, 1]);
  const ab = rows.find((r) => r.method === "ablation")!;
  assert.equal(ab.runs, 1);
  assert.ok(Math.abs(ab.heldOut.mean + 10) < 1e-9 && ab.heldOut.se === 0);
  assert.match(markdown, /\| coop \| \+5\.00 ± 2\.89 \(2↑ 0↓ of 3\) \|/);
});
