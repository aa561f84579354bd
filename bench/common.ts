/** Benchmark plumbing: tinybench around GPU work, which is timed up to its completion. */
import { Bench } from "tinybench";
import { E } from "../engine/device.ts";
import { backward, noGrad } from "../engine/autograd.ts";
import { own, scope, tensor } from "../engine/tensor.ts";
import { randomNormal } from "../engine/ops/random.ts";
import { SGD } from "../engine/optim.ts";
import type { CLIP } from "../model/clip.ts";
import type { Tokenizer } from "../model/tokenizer.ts";
import { type Method, resolveOptions } from "../pipeline/method.ts";

export interface Row {
  group: string;
  name: string;
  /** mean milliseconds per call */
  ms: number;
  /** the figure of merit and its unit, e.g. 123.4 "GFLOP/s" */
  value: number;
  unit: string;
}

/**
 * Mean milliseconds per call of `fn`, which records GPU work; each sample records `reps` calls
 * and waits for the GPU, so the queue's round trip is amortised.
 */
export async function timeGpu(
  name: string,
  fn: () => void,
  { reps = 10, time = 500, iterations = 3 } = {},
): Promise<number> {
  fn(); // warm-up: compiles
  await E().sync();
  const bench = new Bench({ time, iterations, warmupIterations: 1 });
  bench.add(name, async () => {
    for (let i = 0; i < reps; i++) fn();
    await E().sync();
  });
  await bench.run();
  const r = bench.tasks[0].result as { latency?: { mean: number } };
  if (!r.latency) throw new Error(`benchmark ${name} failed: ${JSON.stringify(r)}`);
  return r.latency.mean / reps;
}

export const quick = () => Deno.env.get("BENCH_QUICK") === "1" || Deno.args.includes("--quick");

/**
 * One training step of a method on random pixels (batch B, labels i % classes), the way the
 * trainer runs it: cached frozen features where the method has them, an SGD step after the
 * backward. Shared by bench/methods.ts and the GPU check's workers.
 */
export function methodStep(
  method: Method,
  model: CLIP,
  tokenizer: Tokenizer,
  classnames: string[],
  B: number,
): { step: () => void; dispose: () => void } {
  const C = classnames.length, R = model.config.imageResolution;
  const inst = method.create({
    model,
    tokenizer,
    classnames,
    options: resolveOptions(method, {}),
    seed: 1,
  });
  const hostLabels = Int32Array.from({ length: B }, (_, i) => i % C);
  const pix = own(randomNormal([B, 3, R, R], 3));
  const features = method.frozenImageFeatures
    ? own(scope(() => noGrad(() => model.encodeImage(pix).features)))
    : undefined;
  if (inst.fit && features) {
    const labels = tensor(hostLabels, [B], "i32");
    inst.fit({ features, labels, hostLabels, classes: C });
    labels.dispose();
  }
  const params = [...inst.params.values()].filter((p) => p.requiresGrad);
  const opt = new SGD(params, { lr: 1e-3, momentum: 0.9 });
  const step = () =>
    scope(() => {
      const labels = tensor(hostLabels, [B], "i32");
      const views = Object.fromEntries(method.views.map((v) => [v, pix]));
      backward(inst.forward({ views, labels, features }).loss);
      opt.step();
      opt.zeroGrad();
    });
  const dispose = () => {
    opt.dispose();
    inst.dispose();
    pix.dispose();
    features?.dispose();
  };
  return { step, dispose };
}
