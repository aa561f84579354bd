/** Benchmark plumbing: tinybench around GPU work, which is timed up to its completion. */
import { Bench } from "tinybench";
import { E } from "../engine/device.ts";

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
