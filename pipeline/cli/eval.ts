/** `deno task eval --run runs/NAME [--data DIR]`: the final evaluation of a run (pipeline/evaluate.ts). */
import { evaluateRun } from "../evaluate.ts";
import { parseCommand, runCommand } from "./args.ts";

const USAGE = `usage: deno task eval --run runs/NAME [--data DIR|ZIP|CSV]
  the final evaluation of a trained run (the only reader of its test split): writes metrics.json
  and predictions.csv into the run folder; --data reads the images from another copy of the dataset`;

export async function main(args: string[]): Promise<number> {
  const p = parseCommand(args, USAGE, { run: { type: "string" }, data: { type: "string" } });
  if (typeof p === "number") return p;
  const { values } = p;
  if (!values.run) {
    console.error(`--run is required\n${USAGE}`);
    return 2;
  }
  if (!(await Deno.stat(`${values.run}/run.json`).catch(() => null))?.isFile) {
    console.error(
      `--run ${values.run}: no run.json there; give the folder a \`deno task train --out\` wrote`,
    );
    return 2;
  }
  const r = await evaluateRun(values.run, { data: values.data });
  for (const [name, m] of Object.entries(r.sets)) {
    console.log(
      `${name}: top-1 ${(100 * m.top1).toFixed(2)}%  macro-F1 ${
        (100 * m.macroF1).toFixed(2)
      }  ECE ${(100 * m.ece).toFixed(2)}  (${m.count} images)`,
    );
  }
  if (r.hm !== undefined) {
    console.log(
      `base ${(100 * r.base!).toFixed(2)}  new ${(100 * r.new!).toFixed(2)}  HM ${
        (100 * r.hm).toFixed(2)
      }`,
    );
  }
  console.log(`wrote ${values.run}/metrics.json and ${values.run}/predictions.csv`);
  return 0;
}

if (import.meta.main) await runCommand(main);
