/** `deno task train --smoke`: the offline default run end to end at its reduced size. */
import { assert, setup, sharedDir } from "./util.ts";
import { main } from "../pipeline/train_cli.ts";

await setup();

Deno.test("the default run (--smoke) generates, pretrains, trains every method per held-out domain and reports", async () => {
  const dir = await Deno.makeTempDir({ prefix: "default-smoke-" });
  const lines: string[] = [];
  const log = console.log;
  console.log = (...a: unknown[]) => lines.push(a.join(" "));
  let code: number;
  try {
    code = await main([
      "--smoke",
      "--dir",
      dir,
      "--vocab",
      `${sharedDir()}clip/bpe_simple_vocab_16e6.txt.gz`,
    ]);
  } finally {
    console.log = log;
  }
  assert.equal(code, 0);
  const out = lines.join("\n");
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
    ]
  ) {
    await Deno.stat(`${dir}/${f}`);
  }
  const report = JSON.parse(await Deno.readTextFile(`${dir}/report/report.json`));
  assert.equal(report.runs.length, 28);
  // the world's CLIP was pretrained with the world's settings (pipeline/default_run.ts)
  const { readSafetensors } = await import("../model/safetensors.ts");
  const st = await readSafetensors(`${dir}/clip-small.safetensors`);
  const meta = JSON.parse(st.metadata["clipkit.pretrain"]);
  assert.equal(meta.config.contextLength, 12);
  assert.equal(meta.config.transformerLayers, 1);
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
  console.log = () => {};
  try {
    assert.equal(
      await main([
        "--smoke",
        "--dir",
        dir,
        "--vocab",
        `${sharedDir()}clip/bpe_simple_vocab_16e6.txt.gz`,
      ]),
      0,
    );
  } finally {
    console.log = log;
  }
  assert.ok(performance.now() - t0 < 30_000, "the cached rerun retrained something");
  // a folder made with other settings, or before recipe.json, is refused and left as it is
  const { defaultRun } = await import("../pipeline/default_run.ts");
  const vocab = `${sharedDir()}clip/bpe_simple_vocab_16e6.txt.gz`;
  const recipe = JSON.parse(await Deno.readTextFile(`${dir}/recipe.json`));
  recipe.world.WORLD_PRETRAIN.options.lockTextEpochs = 1;
  await Deno.writeTextFile(`${dir}/recipe.json`, JSON.stringify(recipe));
  const model = await Deno.readFile(`${dir}/clip-small.safetensors`);
  await assert.rejects(
    () => defaultRun({ smoke: true, dir, vocab, log: () => {} }),
    /was made with other settings .*recipe\.json/,
  );
  await Deno.remove(`${dir}/recipe.json`);
  await assert.rejects(
    () => defaultRun({ smoke: true, dir, vocab, log: () => {} }),
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
  const vocab = `${sharedDir()}clip/bpe_simple_vocab_16e6.txt.gz`;
  await assert.rejects(
    () => defaultRun({ data, dir, vocab, smoke: true, targets: ["clay"], log: () => {} }),
    /no domain "clay"/,
  );
  const lines: string[] = [];
  const r = await defaultRun({
    data,
    dir,
    vocab,
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
