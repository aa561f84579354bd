/** Engine benchmarks: elementwise bandwidth, pipeline compile time, dispatch overhead, readback. */
import * as T from "../engine/mod.ts";
import { E } from "../engine/device.ts";
import { mapWgsl } from "../kernels/elementwise.ts";
import { quick, type Row, timeGpu } from "./common.ts";

export async function benchEngine(): Promise<Row[]> {
  const rows: Row[] = [];
  const pushLayerNorm = (r: number, w: number, ms: number) =>
    rows.push({
      group: "layer norm",
      name: `layerNorm ${r}×${w} (fused)`,
      ms,
      value: (8 * r * w) / ms / 1e6,
      unit: "GB/s",
    });
  const sizes = quick() ? [1 << 16, 1 << 20] : [1 << 16, 1 << 20, 1 << 22];
  for (const n of sizes) {
    const a = T.full([n], 1.5);
    const b = T.full([n], 0.5);
    const ms = await timeGpu(`add ${n}`, () => T.add(a, b).dispose());
    rows.push({
      group: "elementwise",
      name: `add f32 n=${n}`,
      ms,
      value: (12 * n) / ms / 1e6,
      unit: "GB/s",
    });
    const bt = T.reshape(b, [n >> 8, 256]);
    const ms2 = await timeGpu(
      `add transposed ${n}`,
      () => T.add(T.transpose(bt), T.transpose(bt)).dispose(),
    );
    rows.push({
      group: "elementwise",
      name: `add of transposed views n=${n}`,
      ms: ms2,
      value: (12 * n) / ms2 / 1e6,
      unit: "GB/s",
    });
    const ms3 = await timeGpu(`sum ${n}`, () => T.sum(T.reshape(a, [n >> 10, 1024]), 1).dispose());
    rows.push({
      group: "reduce",
      name: `row sum ${n >> 10}×1024`,
      ms: ms3,
      value: (4 * n) / ms3 / 1e6,
      unit: "GB/s",
    });
    [a, b].forEach((t) => t.dispose());
  }

  // layer norm over CLIP-width rows: read x once, write y once
  for (const [r, width] of quick() ? [[197, 768]] : [[197, 768], [1576, 768]]) {
    const x = T.full([r, width], 0.5), w = T.ones([width]), b = T.zeros([width]);
    const ms = await timeGpu(`layerNorm ${r}×${width}`, () => T.layerNorm(x, w, b).dispose());
    pushLayerNorm(r, width, ms);
    [x, w, b].forEach((t) => t.dispose());
  }

  // pipeline compile: a fresh key forces a new pipeline; time it through its first dispatch
  const e = E();
  const x = T.full([256], 1), y = T.empty([256]);
  const one = (key: string) =>
    e.launch({
      kernel: "bench_compile",
      key,
      wgsl: () => mapWgsl("tanh", ["f32"], "f32", [true]) + `\n// ${key}`,
      inputs: [x.buf()],
      outputs: [y.buf()],
      uniforms: [256, 1],
      workgroups: [1],
    });
  one("warm");
  await e.sync();
  const k = quick() ? 3 : 8;
  let t0 = performance.now();
  for (let i = 0; i < k; i++) {
    one(`fresh-${crypto.randomUUID()}`);
    await e.sync();
  }
  const compileMs = (performance.now() - t0) / k;
  t0 = performance.now();
  for (let i = 0; i < k; i++) {
    one("warm");
    await e.sync();
  }
  const cachedMs = (performance.now() - t0) / k;
  rows.push({
    group: "overhead",
    name: "pipeline compile + first dispatch",
    ms: compileMs - cachedMs,
    value: compileMs - cachedMs,
    unit: "ms",
  });

  // dispatch overhead: many tiny dispatches, one wait
  const nd = 1000;
  t0 = performance.now();
  for (let i = 0; i < nd; i++) one("warm");
  await e.sync();
  const per = (performance.now() - t0) / nd;
  rows.push({
    group: "overhead",
    name: "dispatch (recorded, batched submit)",
    ms: per,
    value: per * 1000,
    unit: "µs",
  });

  // readback round trip of 4 bytes
  const z = T.full([1], 2);
  t0 = performance.now();
  for (let i = 0; i < 5; i++) await z.item();
  const rb = (performance.now() - t0) / 5;
  rows.push({ group: "overhead", name: "readback of one value", ms: rb, value: rb, unit: "ms" });
  z.dispose();
  x.dispose();
  y.dispose();
  return rows;
}
