/**
 * How the default run's learning rates were chosen (pipeline/default_run.ts, PLAN): each prompt
 * learner trained at its paper's rate, 50× and 2,500× it (the small CLIP's token rows have std 1,
 * OpenAI's 0.02), on the task world, leave-one-domain-out for every target, seed 1, and scored on the source domains' validation split only (the held-out style is never
 * read: this calls `train`, which seals the test split, and never `evaluateRun`).
 *
 *   deno run -A docs/lr_sweep.ts [runs/default] [method,...] > sweep.json
 *
 * It reads the world and the small CLIP a finished `deno task train` left in the folder, and trains
 * with the default run's training crop (the full area, `WORLD_CROP` in pipeline/default_run.ts).
 */
import { train } from "../pipeline/train.ts";

const dir = Deno.args[0] ?? "runs/default";
const only = Deno.args[1]?.split(",");
/** method → its default-run plan without the rate, and the rates tried */
const GRID: Record<
  string,
  { epochs: number; batch?: number; options?: Record<string, unknown>; lrs: number[] }
> = {
  // the paper's rate, ×50 (the token rows' std ratio, 1 / 0.02) and ×2,500 (its square)
  coop: { epochs: 15, options: { initPhrase: "a photo of a" }, lrs: [0.002, 0.1, 5] },
  cocoop: { epochs: 1, batch: 4, lrs: [0.002, 0.1, 5] },
  maple: { epochs: 1, lrs: [0.0035, 0.175, 8.75] },
  gopro: { epochs: 1, batch: 12, lrs: [0.002, 0.1, 5] },
  "clip-adapter": { epochs: 10, lrs: [0.002, 0.1, 5] },
};
const targets = ["cartoon", "painting", "photo", "sketch"];
const out: Record<string, Record<string, number[]>> = {};
const tmp = await Deno.makeTempDir({ prefix: "lr-sweep-" });
for (const [method, g] of Object.entries(GRID)) {
  if (only && !only.includes(method)) continue;
  for (const lr of g.lrs) {
    const accs: number[] = [];
    for (const target of targets) {
      const info = await train({
        method,
        options: g.options,
        model: `${dir}/clip-small.safetensors`,
        data: `${dir}/world-task`,
        protocol: "dg",
        target,
        seed: 1,
        shots: 4,
        epochs: g.epochs,
        batch: g.batch,
        lr,
        valFraction: 0.25,
        cropScale: [1, 1],
        out: `${tmp}/${method}-${lr}-${target}`,
        quiet: true,
      });
      accs.push(info.valAccuracy!);
    }
    (out[method] ??= {})[String(lr)] = accs;
    const mean = accs.reduce((a, b) => a + b, 0) / accs.length;
    console.error(
      `${method} lr ${lr}: source validation ${(100 * mean).toFixed(1)}% (${
        accs.map((a) => (100 * a).toFixed(1)).join(" / ")
      })`,
    );
  }
}
console.log(JSON.stringify(out, null, 2));
await Deno.remove(tmp, { recursive: true });
