/**
 * `deno task predict --run runs/NAME [--labels a,b,c] [--top 5] [--json] IMAGE|DIR...`
 *
 * A trained run applied to new images, and to a new label list: learned prompts (CoOp's
 * context, CoCoOp's meta-net, MaPLe's, GOPro's, an adapter) are rebuilt around the given labels,
 * the zero-shot transfer of the prompt-learning papers. Prints the top-k labels with
 * probabilities per image like `deno task zeroshot`; unreadable images are skipped, named and
 * counted. Needs only the run folder and its backbone, not the dataset it was trained on.
 *
 * Methods whose trained parameters belong to the training classes (linear probe, class-specific
 * CoOp) can only rank those classes: any other label list is refused, naming them.
 */
import { parseArgs } from "node:util";
import { noGrad } from "../engine/autograd.ts";
import { initEngine } from "../engine/device.ts";
import { scope, tensor } from "../engine/tensor.ts";
import { softmax } from "../engine/ops/nn.ts";
import { resolveModel, sha256File } from "../model/fetch.ts";
import { expandImagePaths, formatTop, loadClip, loadImages } from "../model/load.ts";
import type { CLIP } from "../model/clip.ts";
import type { Tokenizer } from "../model/tokenizer.ts";
import { type MethodInstance, resolveOptions } from "./method.ts";
import { getMethod } from "./methods/index.ts";
import type { Split } from "./splits.ts";
import { checkCompatible, type Checkpoint, readCheckpoint, type RunInfo } from "./train.ts";

/** A run ready to classify: the backbone, the method with its trained parameters, the labels. */
export interface LoadedRun {
  dir: string;
  info: RunInfo;
  checkpoint: string;
  model: CLIP;
  tokenizer: Tokenizer;
  instance: MethodInstance;
  /** The labels asked for, in the order results are reported. */
  labels: string[];
  /** Column of the method's logits for each label (a permutation for class-tied methods). */
  columns: number[];
  /** Frees the method and the backbone. */
  dispose(): void;
}

export interface LoadRunOptions {
  /** Labels to rank (default: the run's training classes). */
  labels?: string[];
  /** Backbone file or name (default: the file recorded in run.json). Its sha256 must match. */
  model?: string;
  /** BPE vocabulary (default: the one recorded in run.json, else the usual search). */
  vocab?: string;
}

export interface Prediction {
  path: string;
  /** The best `top` labels, most probable first; probabilities in [0, 1]. */
  top: { label: string; probability: number }[];
}

export interface PredictResult {
  run: string;
  method: string;
  labels: string[];
  predictions: Prediction[];
  skipped: { path: string; reason: string }[];
}

/**
 * Why a method's trained parameters cannot move to another label list, or null when they can
 * (the prompt learners and the adapters rebuild their class side from names).
 */
export function classTied(method: string, options: Record<string, unknown>): string | null {
  if (method === "linear-probe") return "its head has one trained row per training class";
  if (method === "coop" && options.classSpecific) {
    return "its class-specific context holds one learned context per training class";
  }
  return null;
}

const sameList = (a: readonly string[], b: readonly string[]) =>
  a.length === b.length && a.every((x, i) => x === b[i]);

async function isFile(p: string) {
  try {
    return (await Deno.stat(p)).isFile;
  } catch {
    return false;
  }
}

/** Parses `--labels a,b,c`: trimmed, non-empty, no duplicates. */
export function parseLabels(s: string): string[] {
  const labels = s.split(",").map((x) => x.trim()).filter(Boolean);
  const dup = labels.find((l, i) => labels.indexOf(l) !== i);
  if (dup !== undefined) throw new Error(`--labels: "${dup}" is given twice`);
  return labels;
}

/** Reads and checks a run folder's run.json (no GPU work). */
export async function readRunInfo(dir: string): Promise<RunInfo> {
  let text: string;
  try {
    text = await Deno.readTextFile(`${dir}/run.json`);
  } catch {
    throw new Error(`${dir}: no run.json (not a training run folder, or training never finished)`);
  }
  const info = JSON.parse(text) as RunInfo;
  if (info.format !== "clipkit-run/1") {
    throw new Error(`${dir}/run.json: not a clipkit run (format ${JSON.stringify(info.format)})`);
  }
  return info;
}

/**
 * Loads a run for prediction without its dataset: run.json, the selected checkpoint (refused
 * when its backbone's sha256 differs from the backbone file found now, or when it belongs to
 * another run), the CLIP backbone, and the method rebuilt for the labels.
 */
export async function loadRun(dir: string, opts: LoadRunOptions = {}): Promise<LoadedRun> {
  dir = dir.replace(/\/+$/, "") || "/";
  const info = await readRunInfo(dir);
  const method = getMethod(info.method);
  const options = resolveOptions(method, info.options ?? {});
  const trained = [...info.classnames];
  const labels = opts.labels ?? trained;
  if (labels.length < 1) throw new Error("--labels: give at least one label");
  // class-tied parameters: only the training classes, in any order
  let columns = labels.map((_, i) => i);
  const tie = classTied(method.name, options);
  if (tie && !sameList(labels, trained)) {
    const set = new Set(trained);
    if (labels.length !== trained.length || !labels.every((l) => set.has(l))) {
      throw new Error(
        `${dir} is a ${method.name}${
          options.classSpecific ? " (classSpecific)" : ""
        } run: ${tie}, so it can only rank its ${trained.length} training classes ` +
          `(${trained.join(", ")}), not ${labels.join(", ")}; ` +
          `use a prompt-learning run (coop, cocoop, maple, gopro) for new labels`,
      );
    }
    columns = labels.map((l) => trained.indexOf(l));
  }

  const ckFile = `${dir}/${info.config.select === "val" ? "best" : "checkpoint"}.safetensors`;
  if (!(await isFile(ckFile))) {
    throw new Error(`${dir}: no ${ckFile.slice(dir.length + 1)} (the run has no saved epoch)`);
  }
  const ck: Checkpoint = await readCheckpoint(ckFile);
  // the backbone: the file recorded at training time, else the name given to train
  const spec = opts.model ??
    ((await isFile(info.backbone.file)) ? info.backbone.file : info.config.model);
  const file = await resolveModel(spec);
  const backbone = { file, sha256: await sha256File(file) };
  // only the split's checksum is compared: run.json and the checkpoint must belong together
  checkCompatible(
    ck,
    { backbone, method, split: { checksum: info.split.checksum } as Split },
    ckFile,
  );
  if (!sameList(ck.meta.classnames, trained)) {
    throw new Error(`${ckFile} was trained on other classes than ${dir}/run.json lists`);
  }
  const vocab = opts.vocab ??
    (info.config.vocab && (await isFile(info.config.vocab)) ? info.config.vocab : undefined);
  const { model, tokenizer } = await loadClip(file, vocab);
  let instance: MethodInstance | null = null;
  try {
    instance = method.create({
      model,
      tokenizer,
      classnames: trained,
      options,
      seed: info.config.seed,
    });
    instance.load(ck.params);
    instance.restore?.(ck.meta.methodState);
    if (!tie && !sameList(labels, trained)) instance.setClasses([...labels]);
  } catch (err) {
    instance?.dispose();
    model.dispose();
    throw err;
  }
  const inst = instance;
  return {
    dir,
    info,
    checkpoint: ckFile,
    model,
    tokenizer,
    instance: inst,
    labels: [...labels],
    columns,
    dispose() {
      inst.dispose();
      model.dispose();
    },
  };
}

/**
 * Classifies images (files, or folders searched for JPEG/PNG) with a loaded run; `onImage` sees
 * each prediction as soon as its batch is done. Unreadable images are skipped and listed.
 */
export async function classify(
  run: LoadedRun,
  inputs: string[],
  opts: {
    top?: number;
    batch?: number;
    warn?: boolean;
    onImage?: (p: Prediction) => void;
  } = {},
): Promise<PredictResult> {
  await initEngine();
  const L = run.labels.length;
  const top = Math.min(L, Math.max(1, opts.top ?? 5));
  const batch = Math.max(1, opts.batch ?? 32);
  const R = run.model.config.imageResolution;
  const paths = await expandImagePaths(inputs);
  const result: PredictResult = {
    run: run.dir,
    method: run.info.method,
    labels: [...run.labels],
    predictions: [],
    skipped: [],
  };
  for (let i = 0; i < paths.length; i += batch) {
    const imgs = await loadImages(paths.slice(i, i + batch), R, opts.warn ?? true);
    result.skipped.push(...imgs.skipped);
    const n = imgs.paths.length;
    if (!n) continue;
    const probs = scope(() =>
      noGrad(() => softmax(run.instance.predict(tensor(imgs.pixels, [n, 3, R, R]))))
    );
    const C = probs.shape[1];
    const p = (await probs.data()) as Float32Array;
    probs.dispose();
    imgs.paths.forEach((path, b) => {
      const row = run.columns.map((c) => p[b * C + c]);
      const order = row.map((v, k) => [v, k]).sort((x, y) => y[0] - x[0] || x[1] - y[1]);
      const pred: Prediction = {
        path,
        top: order.slice(0, top).map(([v, k]) => ({ label: run.labels[k], probability: v })),
      };
      result.predictions.push(pred);
      opts.onImage?.(pred);
    });
  }
  return result;
}

/** The zeroshot command's layout: the path, then one `  xx.xx%  label` line per label. */
export function formatPrediction(p: Prediction): string {
  return formatTop(p.path, p.top);
}

const USAGE =
  `usage: deno task predict --run runs/NAME [--labels a,b,c] [--top 5] [--batch 32] [--json]
       [--model FILE|NAME] [--vocab FILE] IMAGE|DIR...
  --labels  labels to rank (default: the run's training classes); prompt learners rebuild their
            prompts around them, class-tied methods (linear-probe, class-specific CoOp) refuse
            any list other than their training classes
  --json    one JSON object on stdout instead of text`;

export async function main(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      options: {
        run: { type: "string" },
        labels: { type: "string" },
        top: { type: "string", default: "5" },
        batch: { type: "string", default: "32" },
        json: { type: "boolean", default: false },
        model: { type: "string" },
        vocab: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (err) {
    console.error(`${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  let labels: string[] | undefined;
  let problem: string | null = null;
  try {
    labels = values.labels === undefined ? undefined : parseLabels(values.labels);
  } catch (err) {
    problem = (err as Error).message;
  }
  const top = Number(values.top), batch = Number(values.batch);
  problem ??= !values.run
    ? "--run is required"
    : labels && labels.length < 2
    ? "--labels needs at least two comma-separated labels"
    : !Number.isInteger(top) || top < 1
    ? `--top: expected a whole number ≥ 1, got "${values.top}"`
    : !Number.isInteger(batch) || batch < 1
    ? `--batch: expected a whole number ≥ 1, got "${values.batch}"`
    : !positionals.length
    ? "give at least one IMAGE or DIR"
    : null;
  if (problem) {
    console.error(`${problem}\n${USAGE}`);
    return 2;
  }
  let run: LoadedRun;
  try {
    await initEngine();
    run = await loadRun(values.run!, { labels, model: values.model, vocab: values.vocab });
  } catch (err) {
    console.error(`error: ${(err as Error).message}`);
    return 1;
  }
  try {
    const moved = sameList(run.labels, run.info.classnames) ? "its training classes" : "new labels";
    console.error(
      `${run.info.method} run ${run.dir} (${run.checkpoint.split("/").pop()}): ` +
        `${run.labels.length} labels, ${moved}`,
    );
    const r = await classify(run, positionals, {
      top,
      batch,
      onImage: values.json ? undefined : (p) => console.log(formatPrediction(p)),
    });
    const summary = `${r.predictions.length} image(s) classified${
      r.skipped.length ? `, ${r.skipped.length} skipped (unreadable)` : ""
    }`;
    if (values.json) {
      console.log(JSON.stringify(r, null, 2));
      console.error(summary);
    } else console.log(summary);
    return r.predictions.length || !r.skipped.length ? 0 : 1;
  } catch (err) {
    console.error(`error: ${(err as Error).message}`);
    return 1;
  } finally {
    run.dispose();
  }
}
