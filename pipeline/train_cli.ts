/**
 * `deno task train`: with --method, trains one method (pipeline/train.ts); without, runs the
 * offline default comparison (pipeline/default_run.ts).
 */
import { parseArgs } from "node:util";
import { train, type TrainConfig } from "./train.ts";
import { METHODS } from "./methods/index.ts";
import { defaultRun } from "./default_run.ts";
import { isCropScale } from "./augment.ts";

const USAGE =
  `usage: deno task train --method NAME --model FILE|NAME [--vocab FILE] --data DIR|ZIP|CSV
       --protocol fewshot|base2new|dg [--shots 16] [--seed 1] [--target DOMAIN] [--val-fraction F] [--epochs N]
       [--batch N] [--lr X] [--crop-scale 0.08,1] [--select last|val] [--opt key=value]... --out runs/NAME [--resume] [--dry-run]
       [--text-budget GIB]
  --text-budget: GiB of the text tower's tape one pass may hold (default 4); the prompt learners
  push their class prompts through in chunks that fit, each chunk's tape rebuilt in backward
  dg validation: min(shots, 4) images per class and source domain with --shots (CoOp's few-shot
  budget), else --val-fraction of each (default 0.1); an explicit --val-fraction always rules
methods: ${Object.keys(METHODS).join(", ")}`;

/** Parses a method option value: numbers, booleans, else the string. */
function optValue(v: string): unknown {
  if (v === "true" || v === "false") return v === "true";
  const n = Number(v);
  return v.trim() !== "" && Number.isFinite(n) ? n : v;
}

export function parseTrainArgs(args: string[]): TrainConfig {
  const { values } = parseArgs({
    args,
    options: {
      method: { type: "string" },
      model: { type: "string" },
      vocab: { type: "string" },
      data: { type: "string" },
      protocol: { type: "string", default: "fewshot" },
      shots: { type: "string" },
      "val-fraction": { type: "string" },
      seed: { type: "string", default: "1" },
      target: { type: "string" },
      epochs: { type: "string" },
      batch: { type: "string" },
      lr: { type: "string" },
      select: { type: "string", default: "last" },
      "cache-passes": { type: "string" },
      "crop-scale": { type: "string" },
      opt: { type: "string", multiple: true, default: [] },
      out: { type: "string" },
      resume: { type: "boolean", default: false },
      "dry-run": { type: "boolean", default: false },
      quiet: { type: "boolean", default: false },
      "text-budget": { type: "string" },
    },
  });
  /** A numeric flag within [min, max) (max exclusive only for fractions), checked before any work. */
  const num = (flag: string, v: string | undefined, int = true, min = 0, below = Infinity) => {
    if (v === undefined) return undefined;
    const n = Number(v);
    if (
      v.trim() === "" || !Number.isFinite(n) || (int && !Number.isInteger(n)) || n < min ||
      n >= below
    ) {
      const range = below < Infinity ? `in [${min}, ${below})` : `≥ ${min}`;
      throw new Error(`--${flag}: expected a ${int ? "whole " : ""}number ${range}, got "${v}"`);
    }
    return n;
  };
  const positive = (flag: string, v: string | undefined) => {
    const n = num(flag, v, false);
    if (n === 0) throw new Error(`--${flag}: expected a number > 0, got "${v}"`);
    return n;
  };
  for (const f of ["method", "model", "data", "out"] as const) {
    if (!values[f]) throw new Error(`--${f} is required`);
  }
  if (!(values.method! in METHODS)) {
    throw new Error(`--method: unknown method "${values.method}"`);
  }
  if (!["last", "val"].includes(values.select!)) {
    throw new Error(`--select: "last" or "val", got "${values.select}"`);
  }
  let cropScale: [number, number] | undefined;
  if (values["crop-scale"] !== undefined) {
    const c = values["crop-scale"].split(",").map(Number);
    if (!isCropScale(c)) {
      throw new Error(
        `--crop-scale: expected MIN,MAX with 0 < MIN ≤ MAX ≤ 1, got "${values["crop-scale"]}"`,
      );
    }
    cropScale = [c[0], c[1]];
  }
  const options: Record<string, unknown> = {};
  for (const kv of values.opt as string[]) {
    const i = kv.indexOf("=");
    if (i < 1) throw new Error(`--opt: expected key=value, got "${kv}"`);
    options[kv.slice(0, i)] = optValue(kv.slice(i + 1));
  }
  return {
    method: values.method!,
    options,
    model: values.model!,
    vocab: values.vocab,
    data: values.data!,
    protocol: values.protocol as TrainConfig["protocol"],
    shots: num("shots", values.shots, true, 1),
    seed: num("seed", values.seed)!,
    target: values.target,
    valFraction: num("val-fraction", values["val-fraction"], false, 0, 1),
    epochs: num("epochs", values.epochs, true, 1),
    batch: num("batch", values.batch, true, 1),
    lr: positive("lr", values.lr),
    select: values.select as "last" | "val",
    cachePasses: num("cache-passes", values["cache-passes"], true, 1),
    textBudget: positive("text-budget", values["text-budget"]),
    cropScale,
    out: values.out!,
    resume: values.resume,
    dryRun: values["dry-run"],
    quiet: values.quiet,
  };
}

const DEFAULT_USAGE =
  `without --method: deno task train [--smoke] [--dir runs/default] [--vocab FILE] [--seeds 1,2,3]
    [--data DOMAIN_FOLDERS --targets sketch,...]
  generates a synthetic world, pretrains a small CLIP (with a vocabulary learnt from its captions,
  or --vocab FILE), and compares the methods leaving one domain out; with --data, runs on that
  dataset instead, pretraining one small CLIP per held-out domain on the others`;

export async function main(args: string[]): Promise<number> {
  // no method: the offline default run (synthetic world, small CLIP, every method)
  if (!args.some((a) => a === "--method" || a.startsWith("--method="))) {
    let values;
    try {
      ({ values } = parseArgs({
        args,
        options: {
          smoke: { type: "boolean", default: false },
          dir: { type: "string" },
          vocab: { type: "string" },
          seeds: { type: "string" },
          data: { type: "string" },
          targets: { type: "string" },
          help: { type: "boolean", short: "h" },
        },
      }));
    } catch (err) {
      console.error(`${(err as Error).message}\n${USAGE}\n\n${DEFAULT_USAGE}`);
      return 2;
    }
    if (values.help) {
      console.log(`${USAGE}\n\n${DEFAULT_USAGE}`);
      return 0;
    }
    const seeds = values.seeds?.split(",").map(Number);
    if (seeds && !seeds.every((s) => Number.isInteger(s) && s >= 0)) {
      console.error(`--seeds: expected whole numbers separated by commas, got "${values.seeds}"`);
      return 2;
    }
    await defaultRun({
      smoke: values.smoke,
      dir: values.dir,
      vocab: values.vocab,
      seeds,
      data: values.data,
      targets: values.targets?.split(","),
    });
    return 0;
  }
  if (args.includes("--help") || args.includes("-h")) {
    console.log(USAGE);
    return 0;
  }
  let config: TrainConfig;
  try {
    config = parseTrainArgs(args);
  } catch (err) {
    console.error(`${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  await train(config);
  if (!config.dryRun) {
    console.log(
      `run saved in ${config.out} (run.json, checkpoint.safetensors, split.json); evaluate with: deno task eval --run ${config.out}`,
    );
  }
  return 0;
}
