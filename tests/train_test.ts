/**
 * The trainer end to end on the golden micro CLIP and a small PACS subset: every method trains
 * with its loss decreasing, eval writes its files, the test split is read only by eval, runs are
 * deterministic, a resumed run equals an uninterrupted one, and bad input stops before training.
 */
import { assert, setup, sharedDir } from "./util.ts";
import { readCheckpoint, train, type TrainConfig } from "../pipeline/train.ts";
import { evaluateRun } from "../pipeline/evaluate.ts";
import { Split } from "../pipeline/splits.ts";

await setup();
const S = sharedDir();

/** 4 domains × 7 classes × 4 images of PACS, copied to a temp folder. */
async function subset(): Promise<string> {
  const root = await Deno.makeTempDir({ prefix: "pacs-subset-" });
  for (const d of ["art_painting", "cartoon", "photo", "sketch"]) {
    for (const c of ["dog", "elephant", "giraffe", "guitar", "horse", "house", "person"]) {
      const src = `${S}data/PACS/${d}/${c}`;
      const names = [...Deno.readDirSync(src)].map((e) => e.name).sort().slice(0, 4);
      await Deno.mkdir(`${root}/${d}/${c}`, { recursive: true });
      for (const n of names) await Deno.copyFile(`${src}/${n}`, `${root}/${d}/${c}/${n}`);
    }
  }
  return root;
}
const DATA = await subset();

const base = (method: string, out: string, extra: Partial<TrainConfig> = {}): TrainConfig => ({
  method,
  model: `${S}golden/micro/model.safetensors`,
  vocab: `${S}clip/bpe_simple_vocab_16e6.txt.gz`,
  data: DATA,
  protocol: "fewshot",
  shots: 2,
  seed: 1,
  epochs: 4,
  batch: 4,
  lr: 0.02,
  out,
  quiet: true,
  ...extra,
});

const tmp = () => Deno.makeTempDir({ prefix: "run-" });

// count reads of any split's test sets, to prove training never reads them
let testReads = 0;
const takeTest = Split.prototype.takeTest;
Split.prototype.takeTest = function (this: Split, reason: string) {
  testReads++;
  return takeTest.call(this, reason);
};

const METHOD_OPTS: Record<string, Record<string, unknown>> = {
  coop: { nCtx: 4 },
  cocoop: {},
  maple: {},
  gopro: {},
  "linear-probe": {},
  "clip-adapter": {},
  "tip-adapter-f": {},
};

for (const method of ["zeroshot", "tip-adapter"]) {
  Deno.test(`${method} (training-free) builds, tunes on validation only, and evaluates`, async () => {
    const out = await tmp();
    const before = testReads;
    const info = await train(base(method, out));
    assert.equal(info.history.length, 0);
    assert.equal(testReads, before, "training read the test split");
    if (method === "tip-adapter") {
      assert.ok(
        info.methodState.alpha > 0 && info.methodState.beta > 0,
        JSON.stringify(info.methodState),
      );
    }
    const r = await evaluateRun(out);
    assert.ok(r.sets.test.count > 0 && r.sets.test.top1 >= 0);
  });
}

for (const [method, options] of Object.entries(METHOD_OPTS)) {
  Deno.test(`${method} trains on PACS with its loss decreasing; eval writes the metrics files`, async () => {
    const out = await tmp();
    const before = testReads;
    // batch 7 divides the 14 training images: every epoch's loss is over the same images
    const info = await train(base(method, out, { options, batch: 7 }));
    assert.equal(testReads, before, "training read the test split");
    const losses = info.history.map((h) => h.loss);
    assert.equal(losses.length, 4);
    assert.ok(losses.every(Number.isFinite));
    assert.ok(
      losses[3] < losses[0],
      `${method}: loss ${losses.map((l) => l.toFixed(4)).join(" → ")}`,
    );
    for (const f of ["run.json", "split.json", "checkpoint.safetensors"]) {
      await Deno.stat(`${out}/${f}`);
    }
    const r = await evaluateRun(out);
    assert.equal(testReads, before + 1, "eval reads the test split exactly once");
    const m = r.sets.test;
    assert.ok(m.top1 >= 0 && m.top1 <= 1 && m.count > 0);
    assert.equal(m.confusion.flat().reduce((a, b) => a + b, 0), m.count);
    const csv = (await Deno.readTextFile(`${out}/predictions.csv`)).trim().split("\n");
    assert.equal(csv.length, m.count + 1);
    await Deno.stat(`${out}/metrics.json`);
  });
}

Deno.test("a run is deterministic under its seed, and a resumed run equals an uninterrupted one", async () => {
  const [a, b, c] = [await tmp(), await tmp(), await tmp()];
  const cfg = (out: string, epochs: number, resume = false) =>
    base("coop", out, { options: { nCtx: 4 }, epochs, resume });
  const full = await train(cfg(a, 4));
  const again = await train(cfg(b, 4));
  assert.deepEqual(again.history.map((h) => h.loss), full.history.map((h) => h.loss));
  // stop after 2 epochs, resume to 4 (the schedule is the 4-epoch one throughout)
  const first = await train({ ...cfg(c, 4), stopAfter: 2 });
  assert.equal(first.history.length, 2);
  const resumed = await train(cfg(c, 4, true));
  assert.deepEqual(resumed.history.map((h) => h.loss), full.history.map((h) => h.loss));
  const [ck, ck2] = await Promise.all(
    [a, c].map((d) => readCheckpoint(`${d}/checkpoint.safetensors`)),
  );
  assert.deepEqual(
    ck2.params.get("ctx"),
    ck.params.get("ctx"),
    "resumed parameters equal the uninterrupted ones",
  );
});

Deno.test("bad input stops before any training, with an error naming the flag or value", async () => {
  const out = await tmp();
  await assert.rejects(
    () => train(base("coopp", out)),
    /--method: unknown method "coopp" \(known: .*coop/,
  );
  await assert.rejects(
    () => train(base("coop", out, { protocol: "zeroshot" as never })),
    /--protocol: unknown protocol "zeroshot"/,
  );
  await assert.rejects(
    () => train(base("coop", out, { protocol: "dg", target: "clipart" })),
    /--target: no domain "clipart" .*\(domains: art_painting, cartoon, photo, sketch\)/,
  );
  const empty = await subset();
  await Deno.remove(`${empty}/photo/dog`, { recursive: true });
  await Deno.mkdir(`${empty}/photo/dog`);
  await assert.rejects(() => train(base("coop", out, { data: empty })), /dog/);
  // a checkpoint made on another backbone is refused before anything runs
  const run = await tmp();
  await train(base("coop", run, { options: { nCtx: 4 }, epochs: 1 }));
  const info = JSON.parse(await Deno.readTextFile(`${run}/run.json`));
  info.config.model = `${S}golden/micro/model.pt`; // same weights, another file: another sha256
  await Deno.writeTextFile(`${run}/run.json`, JSON.stringify(info));
  const reads = testReads;
  await assert.rejects(() => evaluateRun(run), /was trained on another backbone/);
  assert.equal(testReads, reads, "the refused evaluation read no test data");
});

Deno.test("1 shot: every method trains and evaluates, the last incomplete batch dropped as Dassl does", async () => {
  const { METHODS } = await import("../pipeline/methods/index.ts");
  for (const method of Object.keys(METHODS)) {
    const out = await tmp();
    // dg with 1 shot: 7 classes × 3 source domains = 21 images, batch 4 → 5 full batches
    const info = await train(
      base(method, out, { protocol: "dg", target: "sketch", shots: 1, epochs: 1, batch: 4 }),
    );
    const r = await evaluateRun(out);
    assert.ok(r.sets.sketch.count > 0, method);
    if (!info.history.length) continue; // training-free
    assert.ok(Number.isFinite(info.history[0].loss), `${method}: loss ${info.history[0].loss}`);
    assert.equal(info.history[0].imagesPerSecond > 0, true);
  }
  // a set smaller than one batch is one batch
  const out = await tmp();
  const info = await train(
    base("gopro", out, { protocol: "dg", target: "sketch", shots: 1, epochs: 1, batch: 64 }),
  );
  assert.ok(Number.isFinite(info.history[0].loss));
});

Deno.test("--crop-scale reaches the training views of cached and per-step methods alike", async () => {
  for (const method of ["coop", "maple"]) {
    const losses: number[] = [];
    for (const cropScale of [undefined, [1, 1]] as ([number, number] | undefined)[]) {
      const info = await train(base(method, await tmp(), { epochs: 1, cropScale }));
      losses.push(info.history[0].loss);
    }
    assert.notEqual(losses[0], losses[1], `${method}: the crop changed nothing`);
  }
});

Deno.test("predictions.csv fields are quoted per RFC 4180: commas, quotes and line breaks survive", async () => {
  const { csvField } = await import("../pipeline/evaluate.ts");
  /** A strict RFC 4180 reader of one record. */
  const parse = (line: string) => {
    const out: string[] = [];
    for (let i = 0; i <= line.length;) {
      if (line[i] === '"') {
        let v = "";
        for (i++; i < line.length; i++) {
          if (line[i] === '"' && line[i + 1] === '"') (v += '"'), i++;
          else if (line[i] === '"') break;
          else v += line[i];
        }
        out.push(v);
        i += 2; // the closing quote and the comma
      } else {
        const e = line.indexOf(",", i);
        out.push(line.slice(i, e < 0 ? line.length : e));
        i = e < 0 ? line.length + 1 : e + 1;
      }
    }
    return out;
  };
  const fields = ["test", "a/b, c.jpg", 'the "big" dog', "plain", "new\nline", "0.50000"];
  assert.deepEqual(parse(fields.map(csvField).join(",")), fields);
  assert.equal(csvField("dog"), "dog");
  assert.equal(csvField('say "hi", twice'), '"say ""hi"", twice"');
});
