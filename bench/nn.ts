/**
 * Fused kernels against their composite twins (the same op built from primitive ops, `fused:
 * false`): softmax, layer norm, cross-entropy and attention, forward alone and forward + backward,
 * on CLIP-sized shapes. The figure of merit is the speed-up of the fused kernel (composite time /
 * fused time); tests/ checks that both compute the same values.
 */
import * as T from "../engine/mod.ts";
import type { Tensor } from "../engine/mod.ts";
import { quick, type Row, timeGpu } from "./common.ts";

interface Case {
  group: string;
  name: string;
  /** Builds the inputs (params, so that backward reaches them). */
  inputs: () => Tensor[];
  /** The op on the inputs, fused or composite. */
  run: (xs: Tensor[], fused: boolean) => Tensor;
}

function cases(): Case[] {
  const rows = quick() ? 1024 : 8192, width = 512, heads = 8, tokens = 77, batch = quick() ? 2 : 8;
  const p = (shape: number[], seed: number) => T.param(T.randomNormal(shape, seed));
  const labels = Int32Array.from({ length: rows }, (_, i) => (i * 7) % 1000);
  return [
    {
      group: "softmax",
      name: `softmax ${rows}×${width}`,
      inputs: () => [p([rows, width], 1)],
      run: ([x], fused) => T.softmax(x, { fused }),
    },
    {
      group: "layer norm",
      name: `layerNorm ${rows}×${width} (weight, bias)`,
      inputs: () => [p([rows, width], 2), p([width], 3), p([width], 4)],
      run: ([x, w, b], fused) => T.layerNorm(x, w, b, 1e-5, { fused }),
    },
    {
      group: "cross-entropy",
      name: `crossEntropy ${rows}×1000`,
      inputs: () => [p([rows, 1000], 5)],
      run: ([x], fused) => T.crossEntropy(x, labels, { fused }),
    },
    {
      group: "attention",
      name: `attention causal ${batch}×${heads}×${tokens}×${width / heads}`,
      inputs: () => [0, 1, 2].map((i) => p([batch, heads, tokens, width / heads], 6 + i)),
      run: ([q, k, v], fused) => T.attention(q, k, v, { causal: true, fused }),
    },
  ];
}

/** The op's output reduced to a scalar whose gradient reaches every input. */
const loss = (y: Tensor) => T.sum(T.square(y));

export async function benchNN(): Promise<Row[]> {
  const out: Row[] = [];
  const opts = { reps: quick() ? 2 : 5, iterations: 2, time: quick() ? 100 : 300 };
  for (const c of cases()) {
    const xs = c.inputs();
    const ms: Record<string, number> = {};
    for (const fused of [true, false]) {
      const tag = fused ? "fused" : "composite";
      ms[`fwd ${tag}`] = await timeGpu(`${c.name} ${tag}`, () => {
        T.scope(() => T.noGrad(() => c.run(xs, fused)));
      }, opts);
      ms[`fwd+bwd ${tag}`] = await timeGpu(`${c.name} ${tag} backward`, () => {
        T.scope(() => {
          T.backward(loss(c.run(xs, fused)));
          for (const x of xs) {
            x.grad?.dispose();
            x.grad = null;
          }
        });
      }, opts);
    }
    for (const pass of ["fwd", "fwd+bwd"]) {
      const f = ms[`${pass} fused`], comp = ms[`${pass} composite`];
      out.push({
        group: c.group,
        name: `${c.name} ${pass}: fused ${f.toFixed(3)} ms, composite ${comp.toFixed(3)} ms`,
        ms: f,
        value: comp / f,
        unit: "× faster than composite",
      });
    }
    xs.forEach((x) => x.dispose());
  }
  return out;
}
