import { initEngine } from "../engine/device.ts";
import { noGrad } from "../engine/autograd.ts";
import { memory, scope, trim } from "../engine/tensor.ts";
import { randomNormal } from "../engine/ops/random.ts";
import { CLIP } from "../model/clip.ts";
import { loadStateDict } from "../model/weights.ts";
const e = await initEngine();
const file = Deno.args[0];
const model = CLIP.fromStateDict(await loadStateDict(file), { file });
await e.sync();
const base = memory().bytesInUse;
const MiB = (b: number) => (b / 2 ** 20).toFixed(0);
console.log("weights MiB", MiB(base));
for (const B of [1, 8]) {
  e.resetPeak();
  const t = performance.now();
  const f = scope(() =>
    noGrad(() => {
      const p = randomNormal([B, 3, 224, 224], 1);
      return model.encodeImage(p).features;
    })
  );
  await f.data();
  f.dispose();
  console.log(
    `image b=${B} peak-above-weights MiB ${MiB(memory().peakBytesInUse - base)} ${
      (performance.now() - t).toFixed(0)
    } ms`,
  );
}
for (const n of [7, 100]) {
  const ctx = 77, ids = new Int32Array(n * ctx);
  for (let i = 0; i < n; i++) {
    [ids[i * ctx], ids[i * ctx + 1], ids[i * ctx + 2]] = [49406, 320 + i, 49407];
  }
  e.resetPeak();
  const t = performance.now();
  const f = scope(() => noGrad(() => model.encodeText(ids)));
  await f.data();
  f.dispose();
  console.log(
    `text n=${n} peak-above-weights MiB ${MiB(memory().peakBytesInUse - base)} ${
      (performance.now() - t).toFixed(0)
    } ms`,
  );
}
const m = memory();
console.log("allocated MiB", MiB(m.bytesAllocated), "in use", MiB(m.bytesInUse));
trim();
console.log("after trim allocated MiB", MiB(memory().bytesAllocated));
