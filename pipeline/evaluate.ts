/**
 * The final evaluation of a run (`deno task eval`, pipeline/cli/eval.ts): the only reader of the
 * test split; writes metrics.json (see pipeline/metrics.ts) and predictions.csv.
 */
import { initEngine } from "../engine/device.ts";
import { harmonicMean, type Metrics, metrics, predictLogits } from "./metrics.ts";
import type { TestSet } from "./splits.ts";
import {
  checkCompatible,
  type Checkpoint,
  openSession,
  readCheckpoint,
  type RunInfo,
} from "./train.ts";
import { imageSource } from "./stages.ts";

export interface EvalResult {
  run: string;
  method: string;
  protocol: string;
  seed: number;
  target?: string;
  sets: Record<string, Metrics>;
  base?: number;
  new?: number;
  hm?: number;
}

/** The final evaluation of a run: unseals and reads the test split once, writes metrics and predictions. */
export async function evaluateRun(
  runDir: string,
  opts: { data?: string; quiet?: boolean } = {},
): Promise<EvalResult> {
  await initEngine();
  const info = JSON.parse(await Deno.readTextFile(`${runDir}/run.json`)) as RunInfo;
  const config = {
    ...info.config,
    data: opts.data ?? info.config.data,
    out: runDir,
    resume: true,
    quiet: true,
  };
  const s = await openSession(config);
  const ckFile = config.select === "val"
    ? `${runDir}/best.safetensors`
    : `${runDir}/checkpoint.safetensors`;
  const ck: Checkpoint = await readCheckpoint(ckFile);
  checkCompatible(ck, s, ckFile);
  s.instance.load(ck.params);
  s.instance.restore?.(ck.meta.methodState);
  const image = imageSource(s.dataset);
  s.split.unseal();
  const tests: TestSet[] = s.split.takeTest("final evaluation");
  const result: EvalResult = {
    run: runDir,
    method: info.method,
    protocol: s.split.protocol,
    seed: config.seed,
    target: config.target,
    sets: {},
  };
  const rows: string[] = ["set,path,label,prediction,confidence"];
  for (const t of tests) {
    // class tokens are rebuilt from the evaluated class list (new classes in base-to-new)
    s.instance.setClasses([...t.classnames]);
    const r = await predictLogits(s.instance, s.model, t.items, image);
    result.sets[t.name] = metrics(t.items.map((i) => i.label), r.predictions, r.probs, [
      ...t.classnames,
    ]);
    t.items.forEach((it, i) => {
      rows.push(
        [
          t.name,
          it.path,
          t.classnames[it.label],
          t.classnames[r.predictions[i]],
          r.probs[i * r.classes + r.predictions[i]].toFixed(5),
        ].map(csvField).join(","),
      );
    });
  }
  if (result.sets.base && result.sets.new) {
    result.base = result.sets.base.top1;
    result.new = result.sets.new.top1;
    result.hm = harmonicMean(result.base, result.new);
  }
  await Deno.writeTextFile(`${runDir}/metrics.json`, JSON.stringify(result, null, 2));
  await Deno.writeTextFile(`${runDir}/predictions.csv`, rows.join("\n") + "\n");
  s.instance.dispose();
  s.model.dispose();
  return result;
}

/**
 * One CSV field per RFC 4180: quoted when it holds a comma, a quote or a line break, with quotes
 * doubled (a class name such as `"o'neil", jr.` stays one field); rows end with LF.
 */
export function csvField(value: string): string {
  return /[",\r\n]/.test(value) ? `"${value.replaceAll('"', '""')}"` : value;
}
