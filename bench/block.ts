/**
 * Where a ViT-B/16 block's time goes: each op of one pre-norm residual block (width 768, 12
 * heads, 197 tokens, batch 8 by default) timed alone at its real shape, as a share of the block.
 * `deno task bench --only block`, or alone: `deno run -A bench/block.ts [batch]`.
 */
import { noGrad } from "../engine/autograd.ts";
import { scope, type Tensor } from "../engine/tensor.ts";
import { randomNormal } from "../engine/ops/random.ts";
import { add, quickGelu } from "../engine/ops/elementwise.ts";
import { linear } from "../engine/ops/matmul.ts";
import { attention, layerNorm } from "../engine/ops/nn.ts";
import { narrow, permute, reshape, squeeze } from "../engine/ops/views.ts";
import { quick, type Row, timeGpu } from "./common.ts";

export async function benchBlock(batch = quick() ? 2 : 8): Promise<Row[]> {
  const W = 768, H = 12, T = 197, D = W / H, N = batch * T;
  const r = (shape: number[], seed: number, std = 0.02) => randomNormal(shape, seed, 0, std);
  const x = r([batch, T, W], 1, 1), ln = [r([W], 2, 1), r([W], 3)];
  const inW = r([3 * W, W], 4), inB = r([3 * W], 5), outW = r([W, W], 6), outB = r([W], 7);
  const fcW = r([4 * W, W], 8), fcB = r([4 * W], 9), pjW = r([W, 4 * W], 10), pjB = r([W], 11);
  const h = r([batch, T, W], 12, 1), fc = r([batch, T, 4 * W], 13, 1);
  const qkv = permute(reshape(r([batch, T, 3 * W], 14, 1), [batch, T, 3, H, D]), [2, 0, 3, 1, 4]);
  const pick = (i: number) => squeeze(narrow(qkv, 0, i, 1), 0);
  const ops: [string, number, () => Tensor][] = [
    ["layer norm ×2", 2, () => layerNorm(x, ln[0], ln[1], 1e-5)],
    ["qkv projection", 1, () => linear(h, inW, inB)],
    ["attention", 1, () => attention(pick(0), pick(1), pick(2))],
    ["merge heads (copy)", 1, () => reshape(permute(pick(0), [0, 2, 1, 3]), [batch, T, W])],
    ["out projection", 1, () => linear(h, outW, outB)],
    ["residual add ×2", 2, () => add(x, h)],
    ["mlp fc", 1, () => linear(h, fcW, fcB)],
    ["quick gelu", 1, () => quickGelu(fc)],
    ["mlp proj", 1, () => linear(fc, pjW, pjB)],
  ];
  const times: [string, number][] = [];
  for (const [name, count, fn] of ops) {
    const ms = await timeGpu(name, () => scope(() => noGrad(() => fn().dispose())), {
      reps: 2,
      iterations: 2,
      time: 100,
    });
    times.push([name, ms * count]);
  }
  const total = times.reduce((a, [, ms]) => a + ms, 0);
  const rows: Row[] = times.map(([name, ms]) => ({
    group: `block b=${batch} (${N} tokens)`,
    name,
    ms,
    value: (100 * ms) / total,
    unit: "% of block",
  }));
  rows.push({
    group: `block b=${batch} (${N} tokens)`,
    name: "block total",
    ms: total,
    value: 100,
    unit: "%",
  });
  return rows;
}

if (import.meta.main) {
  const { initEngine } = await import("../engine/device.ts");
  await initEngine();
  const rows = await benchBlock(Number(Deno.args[0] ?? 8));
  for (const r of rows) {
    console.log(
      `${r.name.padEnd(22)} ${r.ms.toFixed(1).padStart(9)} ms ${
        r.value.toFixed(1).padStart(6)
      } ${r.unit}`,
    );
  }
}
