/**
 * One training step per method at the paper's batch size, 7 classes, on the golden micro and
 * b16lite CLIPs: training images/s and the step's peak GPU bytes. Methods with frozen image
 * features step on cached features (as the trainer runs them); the others encode their views.
 */
import { E } from "../engine/device.ts";
import { CLIP } from "../model/clip.ts";
import { loadStateDict } from "../model/weights.ts";
import { Tokenizer } from "../model/tokenizer.ts";
import { METHODS } from "../pipeline/methods/index.ts";
import { methodStep, quick, type Row } from "./common.ts";

const SHARED = new URL("../../shared/", import.meta.url).pathname;
const CLASSES = ["dog", "elephant", "giraffe", "guitar", "horse", "house", "person"];

export async function benchMethods(): Promise<Row[]> {
  const tok = await Tokenizer.load(`${SHARED}clip/bpe_simple_vocab_16e6.txt.gz`);
  const rows: Row[] = [];
  for (const name of quick() ? ["micro"] : ["micro", "b16lite"]) {
    const file = `${SHARED}golden/${name}/model.safetensors`;
    const model = CLIP.fromStateDict(await loadStateDict(file), { file });
    for (const m of Object.values(METHODS)) {
      if (m.defaults.optimizer === "none") continue;
      // the paper's batch; capped on the big model so the software adapter finishes
      const B = name === "b16lite" ? Math.min(m.defaults.batch, 8) : m.defaults.batch;
      const { step, dispose } = methodStep(m, model, tok, CLASSES, B);
      step(); // compiles
      await E().sync();
      E().resetPeak();
      const reps = quick() ? 1 : 2;
      const t0 = performance.now();
      for (let i = 0; i < reps; i++) step();
      await E().sync();
      const ms = (performance.now() - t0) / reps;
      const peak = E().peakBytesInUse;
      rows.push({
        group: `step ${name}`,
        name: `${m.name} batch ${B}`,
        ms,
        value: (1000 * B) / ms,
        unit: "images/s",
      });
      rows.push({
        group: `step ${name}`,
        name: `${m.name} batch ${B} peak GPU`,
        ms,
        value: peak / 2 ** 20,
        unit: "MiB",
      });
      dispose();
    }
    model.dispose();
  }
  return rows;
}

if (import.meta.main) {
  const { initEngine } = await import("../engine/device.ts");
  await initEngine();
  for (const r of await benchMethods()) {
    console.log(
      `${r.group.padEnd(13)} ${r.name.padEnd(34)} ${r.ms.toFixed(1).padStart(9)} ms ${
        r.value.toFixed(2).padStart(9)
      } ${r.unit}`,
    );
  }
}
