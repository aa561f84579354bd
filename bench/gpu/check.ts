/**
 * The GPU check: everything a first run on a lent GPU measures, in one command, writing one JSON
 * and one Markdown table of clipkit against PyTorch into --out.
 *
 *   deno run -A bench/gpu/check.ts --out DIR [--rehearsal | --mode full|cpu] [--python python3]
 *     [--no-peer] [--budget-s 360] [--peer-s 180] [--arch NAME | --model FILE]
 * (`--arch`/`--model`: another model than the case set's, e.g. `deno task bench --arch ViT-L/14`)
 *
 * What it times (bench/gpu/cases.json, shared with the PyTorch peer bench/peers/clip_torch.py):
 *   - matmul GFLOP/s, 256³ … 4096³ and ViT-B/16's linear shapes, with the adapter's automatic
 *     kernel and with the storage-buffer tiled kernel (the path real GPUs take);
 *   - ViT-B/16 (random weights, OpenAI's shapes and initialisation): upload, image encode at batch
 *     1, 32 and 128, text encode at 7, 100 and 1,000 prompts;
 *   - one training step of CoOp, CoCoOp, MaPLe and GOPro at 7 and 100 classes, at each method's
 *     batch, with the step's peak GPU bytes.
 * Each group runs in a process of its own with a timeout, so a case that runs out of memory or
 * loses the device is recorded as failed and the rest still run. The peer runs after, in fp32
 * with TF32 off and in fp16 autocast, when python3 can import torch.
 * `--rehearsal` runs the same on a tiny model (tests/gpu_check_test.ts does, on the software
 * adapter), so that the first run on a GPU is a measurement, not a round of debugging.
 * Nothing here needs ../shared or a network: the vocabulary is learnt from the class names.
 */
import { parseArgs } from "node:util";
import { OPENAI_ARCHS } from "../../model/archs.ts";
import type { ClipConfig } from "../../model/clip.ts";

const HERE = new URL(".", import.meta.url).pathname;
const ROOT = new URL("../../", import.meta.url).pathname;

export interface Row {
  group: string;
  name: string;
  ms?: number;
  value?: number;
  unit?: string;
  peakMiB?: number;
  error?: string;
}

interface Cases {
  arch: string | null;
  config: Record<string, number>;
  matmul: [number, number, number][];
  imageBatches: number[];
  prompts: number[];
  classes: number[];
  batch: Record<string, number>;
  caseTimeoutS: number;
  /** timed runs per case (default 3 at full size, 2 for steps, 1 in rehearsal) */
  reps?: number;
  /** a first, untimed run (compiles; default true) */
  warmup?: boolean;
  /** the text tape's budget for the steps (GiB; default the toolkit's) */
  textBudgetGiB?: number;
}

export function loadCases(mode: string, file = `${HERE}cases.json`): Cases {
  const all = JSON.parse(Deno.readTextFileSync(file));
  if (!all[mode] || mode === "about") throw new Error(`cases.json has no mode "${mode}"`);
  return all[mode];
}

/** The case set's model configuration; refused unless it is its `arch`'s exactly. */
export function checkedConfig(cases: Cases): ClipConfig {
  if (cases.arch) {
    const want = OPENAI_ARCHS[cases.arch] as unknown as Record<string, number> | undefined;
    if (!want) throw new Error(`cases.json: ${cases.arch} is not an OpenAI architecture`);
    const bad = Object.keys(want).filter((k) => want[k] !== cases.config[k]);
    if (bad.length || Object.keys(cases.config).length !== Object.keys(want).length) {
      throw new Error(`cases.json: the config is not ${cases.arch}'s (${bad.join(", ")})`);
    }
  }
  return cases.config as unknown as ClipConfig;
}

// ----- the worker: one group of cases in this process -----------------------------------------

async function worker(
  group: string,
  cases: Cases,
  modelFile: string,
  emit: (r: Row) => void,
) {
  const T = await import("../../engine/mod.ts");
  const { noGrad } = await import("../../engine/autograd.ts");
  const e = await T.initEngine();
  const reps = cases.reps ?? (cases.arch ? (group.startsWith("step") ? 2 : 3) : 1);
  const time = async (fn: () => void, n = reps) => {
    if (cases.warmup ?? true) fn(); // compiles
    await e.sync();
    e.resetPeak();
    const t0 = performance.now();
    for (let i = 0; i < n; i++) fn();
    await e.sync();
    return { ms: (performance.now() - t0) / n, peakMiB: e.peakBytesInUse / 2 ** 20 };
  };
  if (group === "matmul") {
    const { setMatmulKernel, launchMatmul, lastMatmulKernel } = await import(
      "../../engine/ops/matmul.ts"
    );
    for (const [M, K, N] of cases.matmul) {
      const a = T.randomNormal([M, K], 1), b = T.randomNormal([K, N], 2);
      for (const kernel of ["auto", "tiled"] as const) {
        setMatmulKernel(kernel);
        const r = await time(() => T.scope(() => launchMatmul(a, b).dispose()), 10);
        emit({
          group,
          name: `matmul ${M}x${K}x${N} ${kernel === "auto" ? `(${lastMatmulKernel()})` : "tiled"}`,
          ms: r.ms,
          value: (2 * M * K * N) / r.ms / 1e6,
          unit: "GFLOP/s",
        });
      }
      setMatmulKernel("auto");
      a.dispose();
      b.dispose();
    }
    return;
  }
  const { CLIP } = await import("../../model/clip.ts");
  const { loadStateDict } = await import("../../model/weights.ts");
  const t0 = performance.now();
  const sd = await loadStateDict(modelFile);
  const t1 = performance.now();
  const model = CLIP.fromStateDict(sd, { file: modelFile });
  await e.sync();
  const config = model.config;
  const R = config.imageResolution;
  if (group === "encode") {
    emit({ group, name: "load safetensors (f16): parse", ms: t1 - t0 });
    emit({ group, name: "load safetensors (f16): upload", ms: performance.now() - t1 });
    for (const B of cases.imageBatches) {
      const px = T.randomNormal([B, 3, R, R], B);
      const r = await time(() => T.scope(() => noGrad(() => model.encodeImage(px).features)));
      emit({
        group,
        name: `image encode batch ${B}`,
        ...r,
        value: (1000 * B) / r.ms,
        unit: "images/s",
      });
      px.dispose();
    }
    for (const n of cases.prompts) {
      const ids = promptIds(n, config.contextLength);
      const r = await time(() => T.scope(() => noGrad(() => model.encodeText(ids))));
      emit({
        group,
        name: `text encode ${n} prompts`,
        ...r,
        value: (1000 * n) / r.ms,
        unit: "prompts/s",
      });
    }
    return;
  }
  // step:METHOD:CLASSES
  const [, method, classesText] = group.split(":");
  const C = Number(classesText), B = cases.batch[method];
  const { METHODS } = await import("../../pipeline/methods/index.ts");
  const { methodStep } = await import("../common.ts");
  const { learnBpe } = await import("../../model/bpe_learn.ts");
  const { Tokenizer } = await import("../../model/tokenizer.ts");
  const { textTape } = await import("../../pipeline/prompts.ts");
  if (cases.textBudgetGiB) textTape.budgetBytes = cases.textBudgetGiB * 2 ** 30;
  const classnames = Array.from({ length: C }, (_, i) => `thing ${i}`);
  const tok = new Tokenizer(learnBpe([...classnames, "a photo of a", "X"], 64).text);
  const { step } = methodStep(METHODS[method], model, tok, classnames, B);
  const r = await time(step);
  emit({
    group: "step",
    name: `${method} step ${C} classes batch ${B}`,
    ...r,
    value: (1000 * B) / r.ms,
    unit: "images/s",
  });
}

/** n prompts of a few tokens each (start, words, end), zero padded. */
function promptIds(n: number, ctx: number): Int32Array {
  const ids = new Int32Array(n * ctx);
  for (let i = 0; i < n; i++) ids.set([49406, 320 + (i % 4000), 539, 49407], i * ctx);
  return ids;
}

// ----- the orchestrator -----------------------------------------------------------------------

async function runGroup(
  group: string,
  mode: string,
  casesFile: string,
  modelFile: string,
  timeoutS: number,
): Promise<Row[]> {
  const args = ["run", "-A", "--config", `${ROOT}deno.json`];
  // run.sh sets CLIPKIT_OFFLINE: a machine that reaches no registry must not try one
  if (Deno.env.get("CLIPKIT_OFFLINE")) args.push("--cached-only");
  args.push(`${HERE}check.ts`, "--worker", group, "--model", modelFile);
  args.push("--mode", mode, "--cases", casesFile);
  const child = new Deno.Command(Deno.execPath(), { args, stdout: "piped", stderr: "piped" })
    .spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), timeoutS * 1000);
  const out = await child.output();
  clearTimeout(timer);
  const dec = new TextDecoder();
  const rows = dec.decode(out.stdout).split("\n").filter((l) => l.startsWith("ROW "))
    .map((l) => JSON.parse(l.slice(4)) as Row);
  if (out.code !== 0) {
    const err = dec.decode(out.stderr).trim().split("\n").filter((l) => l && !/^\s+at /.test(l));
    rows.push({
      group,
      name: `${group} (failed)`,
      error: out.signal === "SIGKILL" ? `timed out after ${timeoutS} s` : err.slice(-3).join(" | "),
    });
  }
  return rows;
}

async function peer(
  python: string,
  mode: string,
  casesFile: string,
  outDir: string,
  timeoutS: number,
) {
  const args = [`${ROOT}bench/peers/clip_torch.py`, "--cases", casesFile, "--mode"];
  args.push(mode, "--out", `${outDir}/torch.json`);
  try {
    const child = new Deno.Command(python, { args, stdout: "inherit", stderr: "piped" }).spawn();
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutS * 1000);
    const out = await child.output();
    clearTimeout(timer);
    if (out.code !== 0) {
      const msg = new TextDecoder().decode(out.stderr).trim().split("\n").slice(-2).join(" | ");
      return { rows: [] as Row[], note: `peer failed: ${msg}` };
    }
    const got = JSON.parse(await Deno.readTextFile(`${outDir}/torch.json`));
    return { rows: got.rows as (Row & { mode: string })[], note: got.device as string };
  } catch (err) {
    return { rows: [] as Row[], note: `peer not run: ${(err as Error).message}` };
  }
}

const fmt = (x: number | undefined, d = 1) => (x === undefined ? "—" : x.toFixed(d));

/** The Markdown table: clipkit, PyTorch fp32 (TF32 off), fp16 autocast, and the ratios. */
export function table(
  adapter: string,
  rows: Row[],
  torch: (Row & { mode?: string })[],
  note: string,
): string {
  const by = (mode: string) =>
    new Map(torch.filter((r) => r.mode === mode).map((r) => [r.name, r]));
  const f32 = by("fp32"), f16 = by("fp16");
  const lines = [
    `clipkit on **${adapter}**; PyTorch: ${note}`,
    "",
    "| case | clipkit ms | peak MiB | value | torch fp32 ms | clipkit / fp32 speed | torch fp16 ms | clipkit / fp16 speed |",
    "|---|---:|---:|---:|---:|---:|---:|---:|",
  ];
  for (const r of rows) {
    if (r.error) {
      lines.push(
        `| ${r.name} | failed: ${r.error.replaceAll("|", "/").slice(0, 160)} | | | | | | |`,
      );
      continue;
    }
    const key = r.name.replace(/ \((auto|[a-z]+)\)$| tiled$/, "");
    const a = f32.get(key), h = f16.get(key);
    const ratio = (p?: Row) => (p?.ms && r.ms ? `${(p.ms / r.ms).toFixed(3)}×` : "—");
    lines.push(
      `| ${r.name} | ${fmt(r.ms)} | ${fmt(r.peakMiB, 0)} | ${
        r.value === undefined ? "" : `${fmt(r.value, 1)} ${r.unit}`
      } | ${fmt(a?.ms)} | ${ratio(a)} | ${fmt(h?.ms)} | ${ratio(h)} |`,
    );
  }
  return lines.join("\n") + "\n";
}

/** The command (bench/main.ts calls it for `deno task bench --model FILE | --arch NAME`). */
export async function checkMain(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      out: { type: "string" },
      rehearsal: { type: "boolean", default: false },
      mode: { type: "string" },
      worker: { type: "string" },
      python: { type: "string", default: "python3" },
      "no-peer": { type: "boolean", default: false },
      "peer-only": { type: "boolean", default: false },
      model: { type: "string" },
      arch: { type: "string" },
      cases: { type: "string" },
      "budget-s": { type: "string", default: "360" },
      "peer-s": { type: "string", default: "180" },
    },
  });
  const mode = values.mode ?? (values.rehearsal ? "rehearsal" : "full");
  const cases = loadCases(mode, values.cases);
  if (values.worker) {
    const emit = (r: Row) => console.log(`ROW ${JSON.stringify(r)}`);
    await worker(values.worker, cases, values.model!, emit);
    return 0;
  }
  if (!values.out) {
    console.error(
      "usage: deno run -A bench/gpu/check.ts --out DIR [--rehearsal | --mode full|cpu] [--no-peer]",
    );
    return 2;
  }
  const outDir = values.out;
  await Deno.mkdir(outDir, { recursive: true });
  if (values["peer-only"]) {
    // the peer again beside an earlier run's clipkit rows (another PyTorch, another BLAS)
    const prev = JSON.parse(await Deno.readTextFile(`${outDir}/results.json`));
    const p = await peer(values.python, prev.mode, `${outDir}/cases.json`, outDir, 1800);
    const result = { ...prev, torch: p.rows, torchNote: p.note };
    await Deno.writeTextFile(`${outDir}/results.json`, JSON.stringify(result, null, 2));
    const md = table(prev.adapter, prev.rows, p.rows, p.note);
    await Deno.writeTextFile(`${outDir}/results.md`, md);
    console.log(`\n${md}`);
    return 0;
  }
  const { initEngine } = await import("../../engine/device.ts");
  const info = (await initEngine()).info;
  // another model than the case set's: an OpenAI architecture (random weights) or a checkpoint
  const { loadStateDict } = await import("../../model/weights.ts");
  const { inferConfig } = await import("../../model/clip.ts");
  const given = values.model;
  if (values.arch) {
    if (!OPENAI_ARCHS[values.arch]) {
      throw new Error(`--arch ${values.arch}: one of ${Object.keys(OPENAI_ARCHS).join(", ")}`);
    }
    cases.arch = values.arch;
    cases.config = { ...OPENAI_ARCHS[values.arch] } as unknown as Record<string, number>;
  } else if (given) {
    cases.arch = null;
    cases.config = { ...inferConfig(await loadStateDict(given), given) } as unknown as Record<
      string,
      number
    >;
  }
  // the resolved cases travel with the results, and the workers and the peer read them
  const casesFile = `${outDir}/cases.json`;
  await Deno.writeTextFile(casesFile, JSON.stringify({ [mode]: cases }, null, 2));
  const groups = [
    "matmul",
    "encode",
    ...["coop", "cocoop", "maple", "gopro"].flatMap((m) =>
      cases.classes.map((c) => `step:${m}:${c}`)
    ),
  ];
  // one random-weight checkpoint (OpenAI's shapes, f16 as released) that every group loads
  const { initStateDict } = await import("../../model/archs.ts");
  const { saveSafetensors } = await import("../../model/safetensors.ts");
  const config = checkedConfig(cases);
  const tmp = await Deno.makeTempDir({ prefix: "clipkit-gpu-" });
  const modelFile = given ?? `${tmp}/model.safetensors`;
  if (!given) await saveSafetensors(modelFile, initStateDict(config, 0));
  // the whole clipkit part stays within --budget-s: each group gets what is left, at most its own
  const budget = Number(values["budget-s"]);
  const rows: Row[] = [];
  const t0 = performance.now();
  for (const g of groups) {
    const left = budget - (performance.now() - t0) / 1000;
    if (left < 5) {
      rows.push({ group: g, name: `${g} (skipped)`, error: `the ${budget} s budget was spent` });
      continue;
    }
    const got = await runGroup(g, mode, casesFile, modelFile, Math.min(cases.caseTimeoutS, left));
    for (const r of got) {
      console.log(
        `${r.name.padEnd(44)} ${
          r.error
            ? `FAILED ${r.error}`
            : `${fmt(r.ms).padStart(10)} ms  ${
              r.value === undefined ? "" : `${fmt(r.value, 1)} ${r.unit}`
            }${r.peakMiB === undefined ? "" : `  peak ${fmt(r.peakMiB, 0)} MiB`}`
        }`,
      );
    }
    rows.push(...got);
  }
  const clipkitS = (performance.now() - t0) / 1000;
  await Deno.remove(tmp, { recursive: true });
  const write = async (p: { rows: (Row & { mode?: string })[]; note: string }) => {
    const result = {
      adapter: info.adapter,
      backend: info.backend,
      software: info.isFallbackAdapter,
      features: info.features,
      limits: info.limits,
      rehearsal: mode === "rehearsal",
      mode,
      clipkitSeconds: clipkitS,
      rows,
      torch: p.rows,
      torchNote: p.note,
    };
    await Deno.writeTextFile(`${outDir}/results.json`, JSON.stringify(result, null, 2));
    const md = table(info.adapter, rows, p.rows, p.note);
    await Deno.writeTextFile(`${outDir}/results.md`, md);
    return md;
  };
  // clipkit's rows are on disk before the peer starts: a call cut off at its limit keeps them
  let md = await write({ rows: [], note: "not run yet" });
  if (!values["no-peer"]) {
    md = await write(await peer(values.python, mode, casesFile, outDir, Number(values["peer-s"])));
  } else md = await write({ rows: [], note: "not run (--no-peer)" });
  console.log(`\n${md}`);
  return 0;
}

if (import.meta.main) Deno.exit(await checkMain(Deno.args));
