/**
 * The report over fake run folders with known numbers (means, sample stds, the Markdown table,
 * the JSON, a well-formed SVG with one bar per method and domain, runs not evaluated), and
 * predict on tiny runs trained on the golden micro CLIP (new labels, output format, skipped
 * files, class-tied methods refusing other labels, another backbone refused).
 */
import { assert, capture, setup, sharedDir } from "./util.ts";
import { train, type TrainConfig } from "../pipeline/train.ts";
import {
  aggregate,
  datasetName,
  fmtCell,
  main as report,
  renderSvg,
  type Report,
  stat,
  xmlEscape,
} from "../pipeline/report.ts";
import { classTied, main as predict, parseLabels } from "../pipeline/predict.ts";

await setup();
const S = sharedDir();

// ----- fake runs ---------------------------------------------------------------------------------

interface Fake {
  method: string;
  protocol: "fewshot" | "base2new" | "dg";
  target?: string;
  seed: number;
  options?: Record<string, unknown>;
  /** One test set's top-1, macro-F1, ECE; or base/new top-1 for base-to-new; none: not evaluated. */
  m?: { top1: number; f1: number; ece: number } | { base: number; new: number };
}

async function fakeRun(root: string, name: string, f: Fake) {
  const dir = `${root}/${name}`;
  await Deno.mkdir(dir, { recursive: true });
  const config = {
    method: f.method,
    options: f.options ?? {},
    model: "/nowhere/model.safetensors",
    data: "/data/PACS",
    protocol: f.protocol,
    seed: f.seed,
    target: f.target,
    shots: f.protocol === "dg" ? undefined : 16,
    epochs: 10,
    out: dir,
  };
  const info = {
    format: "clipkit-run/1",
    config,
    method: f.method,
    options: f.options ?? {},
    classnames: ["dog", "horse"],
    backbone: { file: "/nowhere/model.safetensors", sha256: "0".repeat(64) },
    split: { file: `${dir}/split.json`, checksum: "sha256:0" },
    epochs: 10,
    history: [],
    selectedEpoch: 9,
    methodState: {},
    device: "fake",
  };
  await Deno.writeTextFile(`${dir}/run.json`, JSON.stringify(info));
  if (!f.m) return;
  const set = (top1: number, f1 = top1 - 0.1, ece = 0.05) => ({
    top1,
    macroF1: f1,
    perClassAccuracy: {},
    ece,
    confusion: [],
    count: 10,
  });
  const sets: Record<string, unknown> = {};
  let extra = {};
  if ("base" in f.m) {
    sets.base = set(f.m.base);
    sets.new = set(f.m.new);
    extra = {
      base: f.m.base,
      new: f.m.new,
      hm: (2 * f.m.base * f.m.new) / (f.m.base + f.m.new),
    };
  } else sets[f.target ?? "test"] = set(f.m.top1, f.m.f1, f.m.ece);
  await Deno.writeTextFile(
    `${dir}/metrics.json`,
    JSON.stringify({
      run: dir,
      method: f.method,
      protocol: f.protocol,
      seed: f.seed,
      target: f.target,
      sets,
      ...extra,
    }),
  );
}

/** 2 methods × 2 target domains × 3 seeds, known top-1 / macro-F1 / ECE. */
const DG: Record<string, Record<string, number[]>> = {
  coop: { photo: [0.9, 0.92, 0.97], sketch: [0.6, 0.62, 0.64] },
  "linear-probe": { photo: [0.85, 0.88, 0.91], sketch: [0.5, 0.55, 0.45] },
};
const ECE = [0.05, 0.06, 0.07];

async function fakeRuns(): Promise<string> {
  const root = await Deno.makeTempDir({ prefix: "report-runs-" });
  for (const [method, byTarget] of Object.entries(DG)) {
    for (const [target, accs] of Object.entries(byTarget)) {
      for (const [i, top1] of accs.entries()) {
        await fakeRun(root, `${method}-${target}-s${i + 1}`, {
          method,
          protocol: "dg",
          target,
          seed: i + 1,
          m: { top1, f1: top1 - 0.05, ece: ECE[i] },
        });
      }
    }
  }
  // trained, never evaluated: listed, not counted
  await fakeRun(root, "coop-photo-s4", {
    method: "coop",
    protocol: "dg",
    target: "photo",
    seed: 4,
  });
  // base-to-new, two seeds
  await fakeRun(root, "coop-b2n-s1", {
    method: "coop",
    protocol: "base2new",
    seed: 1,
    m: { base: 0.9, new: 0.6 },
  });
  await fakeRun(root, "coop-b2n-s2", {
    method: "coop",
    protocol: "base2new",
    seed: 2,
    m: { base: 0.8, new: 0.7 },
  });
  // a folder that is no run
  await Deno.mkdir(`${root}/notes`);
  return root;
}

/** Mean and sample std computed the long way, for the checks. */
function meanStd(xs: number[]) {
  const m = xs.reduce((a, b) => a + b, 0) / xs.length;
  let ss = 0;
  for (const x of xs) ss += (x - m) * (x - m);
  return { m, s: Math.sqrt(ss / (xs.length - 1)) };
}

const near = (a: number | null | undefined, b: number, what: string) =>
  assert.ok(a !== null && a !== undefined && Math.abs(a - b) < 1e-12, `${what}: ${a} vs ${b}`);

/** A small XML well-formedness check: balanced tags, quoted attributes, escaped text. */
function checkXml(xml: string): { tags: { name: string; attrs: Record<string, string> }[] } {
  const body = xml.replace(/^<\?xml[^?]*\?>\s*/, "");
  const tokens = body.match(/<[^>]*>|[^<]+/g) ?? [];
  assert.equal(tokens.join(""), body, "stray '<' in the SVG");
  const stack: string[] = [];
  const tags: { name: string; attrs: Record<string, string> }[] = [];
  let roots = 0;
  const entity = /&(amp|lt|gt|quot|apos|#\d+|#x[0-9a-fA-F]+);/g;
  for (const t of tokens) {
    if (!t.startsWith("<")) {
      assert.ok(!t.replace(entity, "").includes("&"), `unescaped & in text ${JSON.stringify(t)}`);
      if (!stack.length) assert.equal(t.trim(), "", `text outside the root: ${t}`);
      continue;
    }
    const close = t.match(/^<\/([A-Za-z][\w:.-]*)\s*>$/);
    if (close) {
      assert.equal(stack.pop(), close[1], `mismatched </${close[1]}>`);
      continue;
    }
    const open = t.match(/^<([A-Za-z][\w:.-]*)((?:\s+[\w:.-]+="[^"<]*")*)\s*(\/?)>$/);
    assert.ok(open, `malformed tag ${t}`);
    const attrs: Record<string, string> = {};
    for (const a of open[2].matchAll(/([\w:.-]+)="([^"<]*)"/g)) {
      assert.ok(!(a[1] in attrs), `attribute ${a[1]} twice in ${t}`);
      assert.ok(!a[2].replace(entity, "").includes("&"), `unescaped & in ${t}`);
      attrs[a[1]] = a[2];
    }
    if (!stack.length) roots++;
    tags.push({ name: open[1], attrs });
    if (!open[3]) stack.push(open[1]);
  }
  assert.equal(stack.length, 0, `unclosed ${stack.join(", ")}`);
  assert.equal(roots, 1, "one root element");
  return { tags };
}

Deno.test("report aggregates seeds exactly and writes the Markdown table, JSON and SVG", async () => {
  const root = await fakeRuns();
  const out = `${root}/report-out`;
  const names = [...Deno.readDirSync(root)].map((e) => `${root}/${e.name}`).sort();
  const r = await capture(() => report([...names, "--out", out]));
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /15 run\(s\): 14 evaluated in 5 group\(s\), 1 not evaluated, 1 skipped/);
  assert.match(r.err, /skipping .*notes: no run\.json/);

  const j = JSON.parse(await Deno.readTextFile(`${out}/report.json`)) as Report;
  assert.equal(j.format, "clipkit-report/1");
  assert.equal(j.runs.length, 15);
  assert.deepEqual(j.notEvaluated, [`${root}/coop-photo-s4`]);
  assert.deepEqual(j.skipped.map((s) => s.dir), [`${root}/notes`]);
  for (const [method, byTarget] of Object.entries(DG)) {
    for (const [target, accs] of Object.entries(byTarget)) {
      const g = j.groups.find((g) => g.method === method && g.target === target)!;
      assert.ok(g, `group ${method} ${target}`);
      assert.equal(g.protocol, "dg");
      assert.equal(g.dataset, "PACS");
      assert.equal(g.shots, null);
      assert.deepEqual(g.seeds, [1, 2, 3]);
      const { m, s } = meanStd(accs);
      near(g.metrics.top1.mean, m, `${method} ${target} top-1 mean`);
      near(g.metrics.top1.std, s, `${method} ${target} top-1 std`);
      assert.equal(g.metrics.top1.n, 3);
      const f1 = meanStd(accs.map((a) => a - 0.05));
      near(g.metrics.macroF1.mean, f1.m, "macro-F1 mean");
      near(g.metrics.macroF1.std, f1.s, "macro-F1 std");
      near(g.metrics.ece.mean, 0.06, "ECE mean");
      near(g.metrics.ece.std, 0.01, "ECE std");
    }
  }
  // the literal numbers, worked by hand
  const coopPhoto = j.groups.find((g) => g.method === "coop" && g.target === "photo")!;
  near(coopPhoto.metrics.top1.mean, 0.93, "coop photo");
  near(coopPhoto.metrics.top1.std, Math.sqrt(0.0013), "coop photo std");

  // base-to-new: per-seed stats and the papers' HM of means
  const b2n = j.groups.find((g) => g.protocol === "base2new")!;
  near(b2n.metrics.base.mean, 0.85, "base mean");
  near(b2n.metrics.base.std, Math.sqrt(0.005), "base std");
  near(b2n.metrics.new.mean, 0.65, "new mean");
  near(b2n.hmOfMeans, (2 * 0.85 * 0.65) / 1.5, "HM of means");
  const hms = [(2 * 0.9 * 0.6) / 1.5, (2 * 0.8 * 0.7) / 1.5];
  near(b2n.metrics.hm.mean, (hms[0] + hms[1]) / 2, "mean of HMs");

  // the DG table: rows = methods, columns = target domains and their average
  const dg = j.sections.find((s) => s.protocol === "dg")!;
  assert.deepEqual(dg.columns.map((c) => c.label), ["photo", "sketch", "Average"]);
  assert.deepEqual(dg.methods, ["linear-probe", "coop"]);
  const avg = meanStd([0, 1, 2].map((i) => (DG.coop.photo[i] + DG.coop.sketch[i]) / 2));
  near(dg.cells.coop.average!.mean, avg.m, "coop average mean");
  near(dg.cells.coop.average!.std, avg.s, "coop average std");

  const md = await Deno.readTextFile(`${out}/report.md`);
  const lines = md.split("\n");
  const head = lines.findIndex((l) => l.startsWith("| Method | photo | sketch | Average |"));
  assert.ok(head > 0, md);
  assert.match(lines[head + 1], /^\|:---\|---:\|---:\|---:\|$/);
  assert.equal(
    lines[head + 2],
    "| linear-probe | 88.00 ± 3.00 (3 seeds) | 50.00 ± 5.00 (3 seeds) | 69.00 ± 2.18 (3 seeds) |",
  );
  assert.equal(
    lines[head + 3],
    "| coop | **93.00 ± 3.61 (3 seeds)** | **62.00 ± 2.00 (3 seeds)** | **77.50 ± 2.78 (3 seeds)** |",
  );
  assert.match(md, /## Domain generalisation \(leave one domain out\): PACS, all training images/);
  assert.match(md, /\| PACS base \| PACS new \| PACS HM \|/);
  assert.match(
    md,
    /\| coop \| 85\.00 ± 7\.07 \(2 seeds\) \| 65\.00 ± 7\.07 \(2 seeds\) \| 73\.67 \(2 seeds\) \|/,
  );
  assert.match(
    md,
    /## Not evaluated\n\n- `[^`]*coop-photo-s4`: coop, dg PACS → photo, seed 4; no metrics\.json/,
  );
  assert.match(
    md,
    /\| coop \| dg \| PACS \| photo \| all \| 1, 2, 3 \| 93\.00 ± 3\.61 \(3 seeds\) \| 88\.00 ± 3\.61 \(3 seeds\) \| 6\.00 ± 1\.00 \(3 seeds\) \|/,
  );

  // SVG: well-formed; one bar per (method, domain) and per method's average; error bars; legend
  const svg = await Deno.readTextFile(`${out}/report.svg`);
  const { tags } = checkXml(svg);
  assert.equal(tags[0].name, "svg");
  const bars = tags.filter((t) => t.name === "rect" && t.attrs.class === "bar");
  for (const method of Object.keys(DG)) {
    for (const col of ["photo", "sketch", "average"]) {
      const mine = bars.filter((b) =>
        b.attrs["data-method"] === method && b.attrs["data-column"] === col
      );
      assert.equal(mine.length, 1, `bars for ${method} / ${col}`);
      assert.ok(Number(mine[0].attrs.height) > 0);
    }
  }
  // plus coop's base, new, HM
  assert.equal(bars.length, 2 * 3 + 3);
  // bar heights follow the means (same panel, same scale)
  const h = (m: string, c: string) =>
    Number(
      bars.find((b) => b.attrs["data-method"] === m && b.attrs["data-column"] === c)!.attrs.height,
    );
  near(h("coop", "photo") / h("linear-probe", "photo"), 93 / 88, "bar height ratio");
  assert.equal(tags.filter((t) => t.name === "path" && t.attrs.class === "errorbar").length, 8);
  assert.match(svg, /Top-1 accuracy \(%\)/);
  assert.match(svg, />Target domain</);
  assert.match(svg, /<g class="legend">[\s\S]*>linear-probe<[\s\S]*>coop<[\s\S]*<\/g>/);
});

Deno.test("report helpers: sample std, one seed, escaping, dataset names, variants", () => {
  assert.deepEqual(stat([0.5]), { mean: 0.5, std: null, n: 1 });
  near(stat([1, 2, 3, 4]).std, Math.sqrt(5 / 3), "std");
  assert.equal(fmtCell({ mean: 0.5, std: null, n: 1 }), "50.00 (1 seed)");
  assert.equal(fmtCell(null), "—");
  assert.equal(xmlEscape(`a<b & "c"`), "a&lt;b &amp; &quot;c&quot;");
  assert.equal(datasetName("data/PACS.zip"), "PACS");
  assert.equal(datasetName("data/office/manifest.csv"), "office");
  assert.equal(datasetName("/x/PACS/"), "PACS");
  const base = {
    baseMethod: "coop",
    variant: {},
    protocol: "fewshot" as const,
    dataset: "PACS",
    target: null,
    shots: 16,
    training: { epochs: 10, lr: null, batch: null, select: "last" },
    evaluated: true,
  };
  const r = aggregate([
    { ...base, dir: "a", method: "coop", seed: 1, metrics: { top1: 0.5, macroF1: 0.5, ece: 0 } },
    {
      ...base,
      dir: "b",
      method: "coop (nCtx=4)",
      seed: 1,
      metrics: { top1: 0.7, macroF1: 0.7, ece: 0 },
    },
    { ...base, dir: "c", method: "coop", seed: 1, metrics: { top1: 0.6, macroF1: 0.6, ece: 0 } },
  ]);
  // a variant is its own row; two runs of one seed are averaged as one seed, with a warning
  assert.deepEqual(r.sections[0].methods, ["coop", "coop (nCtx=4)"]);
  assert.equal(r.sections[0].title, "Few-shot classification: 16 shots");
  near(r.groups.find((g) => g.method === "coop")!.metrics.top1.mean, 0.55, "same-seed average");
  assert.match(r.warnings.join("\n"), /2 runs share seed 1/);
  // no evaluated run at all: still a well-formed SVG
  assert.equal(checkXml(renderSvg(aggregate([]))).tags[0].name, "svg");
});

// ----- predict -----------------------------------------------------------------------------------

const CLASSES = ["dog", "elephant", "guitar"];

/** 3 classes × 3 PACS photos in class folders: 1 shot, 1 validation, 1 test image each. */
async function tinyData(): Promise<string> {
  const root = await Deno.makeTempDir({ prefix: "predict-data-" });
  for (const c of CLASSES) {
    const src = `${S}data/PACS/photo/${c}`;
    const names = [...Deno.readDirSync(src)].map((e) => e.name).sort().slice(0, 3);
    await Deno.mkdir(`${root}/${c}`);
    for (const n of names) await Deno.copyFile(`${src}/${n}`, `${root}/${c}/${n}`);
  }
  return root;
}

const DATA = await tinyData();
const MODEL = `${S}golden/micro/model.safetensors`;
const cfg = (method: string, options: Record<string, unknown> = {}): Promise<TrainConfig> =>
  Deno.makeTempDir({ prefix: `predict-${method}-` }).then((out) => ({
    method,
    options,
    model: MODEL,
    vocab: `${S}clip/bpe_simple_vocab_16e6.txt.gz`,
    data: DATA,
    protocol: "fewshot",
    shots: 1,
    seed: 1,
    epochs: 1,
    batch: 4,
    out,
    quiet: true,
  }));

/** New images: other PACS classes, a folder of them, and an unreadable file. */
async function inputs() {
  const dir = await Deno.makeTempDir({ prefix: "predict-in-" });
  const pick = (c: string, k: number) => {
    const src = `${S}data/PACS/photo/${c}`;
    return `${src}/${[...Deno.readDirSync(src)].map((e) => e.name).sort()[k]}`;
  };
  await Deno.mkdir(`${dir}/folder`);
  await Deno.copyFile(pick("horse", 0), `${dir}/folder/a.jpg`);
  await Deno.copyFile(pick("house", 0), `${dir}/folder/b.jpg`);
  await Deno.writeTextFile(`${dir}/broken.jpg`, "not an image");
  return {
    files: [pick("person", 0), `${dir}/broken.jpg`, `${dir}/folder`],
    broken: `${dir}/broken.jpg`,
  };
}

const NEW = ["horse", "house", "person", "giraffe"];

Deno.test("predict applies a CoOp run's learned context to new labels", async () => {
  const c = await cfg("coop", { nCtx: 4 });
  await train(c);
  const { files, broken } = await inputs();
  const r = await capture(() =>
    predict(["--run", c.out, "--labels", NEW.join(","), "--top", "4", ...files])
  );
  assert.equal(r.code, 0, r.err);
  const lines = r.out.split("\n");
  assert.equal(lines.at(-1), "3 image(s) classified, 1 skipped (unreadable)");
  assert.match(r.err, new RegExp(`skipping ${broken.replaceAll("/", "\\/")}`));
  assert.match(r.err, /coop run .*: 4 labels, new labels/);
  // blocks of: path, then 4 lines "  xx.xx%  label"
  const body = lines.slice(0, -1);
  assert.equal(body.length, 3 * 5);
  for (let i = 0; i < 3; i++) {
    const block = body.slice(i * 5, i * 5 + 5);
    assert.ok(!block[0].startsWith(" ") && /\.jpg$/.test(block[0]), block[0]);
    let sum = 0, prev = Infinity;
    const seen: string[] = [];
    for (const l of block.slice(1)) {
      const m = l.match(/^ {2}([ \d]{2}\d\.\d{2})% {2}(\S.*)$/);
      assert.ok(m, `line ${JSON.stringify(l)}`);
      const p = Number(m[1]);
      assert.ok(p <= prev, "sorted by probability");
      prev = p;
      sum += p;
      seen.push(m[2]);
    }
    assert.deepEqual(seen.sort(), [...NEW].sort());
    assert.ok(Math.abs(sum - 100) <= 0.03, `percentages sum to ${sum}`);
  }
  assert.ok(body[5].endsWith("folder/a.jpg") && body[10].endsWith("folder/b.jpg"));

  // --json: the same predictions as data; probabilities sum to 1; --top cuts the list
  const j = await capture(() =>
    predict(["--run", c.out, "--labels", NEW.join(","), "--top", "4", "--json", ...files])
  );
  assert.equal(j.code, 0, j.err);
  const res = JSON.parse(j.out);
  assert.deepEqual(res.labels, NEW);
  assert.equal(res.method, "coop");
  assert.equal(res.predictions.length, 3);
  assert.deepEqual(res.skipped.map((s: { path: string }) => s.path), [broken]);
  for (const p of res.predictions) {
    const total = p.top.reduce((a: number, t: { probability: number }) => a + t.probability, 0);
    assert.ok(Math.abs(total - 1) < 1e-5, `sum ${total}`);
  }
  const t2 = await capture(() =>
    predict(["--run", c.out, "--labels", NEW.join(","), "--top", "2", "--json", files[0]])
  );
  assert.equal(JSON.parse(t2.out).predictions[0].top.length, 2);

  // without --labels: the training classes
  const own = await capture(() => predict(["--run", c.out, "--json", files[0]]));
  assert.deepEqual(JSON.parse(own.out).labels, CLASSES);

  // another backbone file than the one trained on is refused, naming both hashes
  const other = await Deno.makeTempFile({ suffix: ".safetensors" });
  await Deno.writeTextFile(other, "something else");
  const bad = await capture(() =>
    predict(["--run", c.out, "--labels", NEW.join(","), "--model", other, files[0]])
  );
  assert.equal(bad.code, 1);
  assert.match(bad.err, /was trained on another backbone .*not .*sha256/);

  // usage errors
  const u = await capture(() => predict(["--run", c.out, "--labels", "a,a", files[0]]));
  assert.equal(u.code, 2);
  assert.match(u.err, /"a" is given twice/);
  const noRun = await capture(() => predict(["--run", DATA, files[0]]));
  assert.equal(noRun.code, 1);
  assert.match(noRun.err, /no run\.json/);
});

Deno.test("predict: a linear probe ranks only its training classes", async () => {
  const c = await cfg("linear-probe");
  await train(c);
  const { files } = await inputs();
  const r = await capture(() => predict(["--run", c.out, "--labels", NEW.join(","), ...files]));
  assert.equal(r.code, 1);
  assert.match(
    r.err,
    /is a linear-probe run: its head has one trained row per training class, so it can only rank its 3 training classes \(dog, elephant, guitar\), not horse, house, person, giraffe/,
  );
  // the same classes in another order are fine: the columns follow the labels
  const run = (labels: string[]) =>
    capture(() => predict(["--run", c.out, "--labels", labels.join(","), "--json", files[0]]));
  const a = JSON.parse((await run(CLASSES)).out),
    b = JSON.parse((await run([...CLASSES].reverse())).out);
  const probs = (x: { predictions: { top: { label: string; probability: number }[] }[] }) =>
    Object.fromEntries(x.predictions[0].top.map((t) => [t.label, t.probability]));
  assert.deepEqual(probs(b), probs(a));
  assert.deepEqual(b.labels, [...CLASSES].reverse());

  assert.ok(classTied("coop", { classSpecific: true }));
  assert.equal(classTied("coop", { classSpecific: false }), null);
  assert.equal(classTied("cocoop", {}), null);
  assert.deepEqual(parseLabels(" a, b ,,c "), ["a", "b", "c"]);
});
