/**
 * A no-grad forward's memory at full size: `deno run -A bench/memory.ts MODEL.safetensors`
 * (e.g. from `deno task init-model --arch ViT-B/16`). For image batches of 1 and 8 and 7 and 100
 * prompts it prints the engine's peak bytes above the weights beside the target, 1.5 × the
 * largest block's working set (the MLP half: its input, the residual sum, the 4×-wide hidden
 * layer and its activation), then the pool's bytes allocated against in use.
 */
import { initEngine } from "../engine/device.ts";
import { noGrad } from "../engine/autograd.ts";
import { memory, scope } from "../engine/tensor.ts";
import { randomNormal } from "../engine/ops/random.ts";
import { CLIP } from "../model/clip.ts";
import { loadStateDict } from "../model/weights.ts";

const file = Deno.args[0];
if (!file) {
  console.error("usage: deno run -A bench/memory.ts MODEL.safetensors");
  Deno.exit(2);
}
const e = await initEngine();
const model = CLIP.fromStateDict(await loadStateDict(file), { file });
await e.sync();
const c = model.config, base = memory().bytesInUse;
const MiB = (b: number) => (b / 2 ** 20).toFixed(0).padStart(6);
console.log(`${file}: weights ${MiB(base)} MiB on ${e.info.adapter}`);
console.log("case                 peak above weights   target (1.5 × block)   ms");
const row = async (name: string, rows: number, T: number, W: number, fn: () => unknown) => {
  e.resetPeak();
  const t0 = performance.now();
  const out = scope(() => noGrad(fn)) as { data(): Promise<unknown>; dispose(): void };
  await out.data();
  out.dispose();
  const ws = 4 * rows * T * W * (1 + 1 + 4 + 4);
  console.log(
    `${name.padEnd(20)} ${MiB(memory().peakBytesInUse - base)} MiB ${" ".repeat(12)}${
      MiB(1.5 * ws)
    } MiB ${" ".repeat(10)}${(performance.now() - t0).toFixed(0).padStart(7)}`,
  );
};
const R = c.imageResolution, T = (R / c.visionPatchSize) ** 2 + 1;
for (const B of [1, 8]) {
  await row(
    `image batch ${B}`,
    B,
    T,
    c.visionWidth,
    () => model.encodeImage(randomNormal([B, 3, R, R], 1)).features,
  );
}
for (const n of [7, 100]) {
  const L = c.contextLength, ids = new Int32Array(n * L);
  for (let i = 0; i < n; i++) ids.set([49406, 320 + i, 49407], i * L);
  await row(`text ${n} prompts`, n, L, c.transformerWidth, () => model.encodeText(ids));
}
const m = memory();
console.log(`pool: ${MiB(m.bytesAllocated)} MiB allocated, ${MiB(m.bytesInUse)} MiB in use`);
