/**
 * CLIP throughput on the b16lite golden model (224 px, ViT-B/16 layout at reduced width):
 * images/s at batch 1, 8 and 32, and prompts/s for the text tower.
 */
import { noGrad } from "../engine/autograd.ts";
import { scope } from "../engine/tensor.ts";
import { randomNormal } from "../engine/ops/random.ts";
import { CLIP } from "../model/clip.ts";
import { loadStateDict } from "../model/weights.ts";
import { quick, type Row, timeGpu } from "./common.ts";

const SHARED = new URL("../../shared/", import.meta.url).pathname;

export async function benchClip(): Promise<Row[]> {
  const file = `${SHARED}golden/b16lite/model.safetensors`;
  const model = CLIP.fromStateDict(await loadStateDict(file), { file });
  const R = model.config.imageResolution, rows: Row[] = [];
  for (const B of quick() ? [1, 8] : [1, 8, 32]) {
    const pixels = randomNormal([B, 3, R, R], B);
    const ms = await timeGpu(`encodeImage b=${B}`, () => {
      scope(() => noGrad(() => model.encodeImage(pixels).features));
    }, { reps: B >= 8 ? 1 : 3, iterations: 2, time: 200 });
    rows.push({
      group: "clip",
      name: `b16lite encodeImage batch ${B}`,
      ms,
      value: (1000 * B) / ms,
      unit: "images/s",
    });
    pixels.dispose();
  }
  const n = 7, ctx = model.config.contextLength;
  const ids = new Int32Array(n * ctx);
  for (let i = 0; i < n; i++) {
    [ids[i * ctx], ids[i * ctx + 1], ids[i * ctx + 2]] = [49406, 320 + i, 49407];
  }
  const ms = await timeGpu("encodeText", () => {
    scope(() => noGrad(() => model.encodeText(ids)));
  }, { reps: 2, iterations: 2, time: 200 });
  rows.push({
    group: "clip",
    name: `b16lite encodeText ${n} prompts`,
    ms,
    value: (1000 * n) / ms,
    unit: "prompts/s",
  });
  model.dispose();
  return rows;
}

if (import.meta.main) {
  const { initEngine } = await import("../engine/device.ts");
  await initEngine();
  for (const r of await benchClip()) {
    console.log(
      `${r.name.padEnd(40)} ${r.ms.toFixed(1).padStart(9)} ms ${
        r.value.toFixed(2).padStart(9)
      } ${r.unit}`,
    );
  }
}
