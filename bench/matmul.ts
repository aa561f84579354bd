/**
 * Matmul throughput (GFLOP/s) on square sizes, CLIP ViT-B/16's linear layers (1600 tokens:
 * 8 images × 197, padded) and its batched attention products (24 = 2 images × 12 heads).
 *
 * GPU work is asynchronous, so one sample submits `reps` products and awaits E().sync(); the
 * fixed cost of a sync (≥ 11 ms on Deno, mostly a poll sleep) is measured once and subtracted,
 * and `reps` is chosen so the products dominate the sample anyway.
 *
 * Environment: BENCH_QUICK=1 (or argument `quick`) keeps a run to about a minute;
 * BENCH_KERNELS=naive,tiled,texture,auto picks kernels (default auto);
 * BENCH_PEAK_GFLOPS=157 gives the device's f32 peak for the "% of peak" column.
 * Run alone: `deno run -A bench/matmul.ts [quick] [--json]`.
 */
import { Bench, type FnReturnedObject } from "tinybench";
import { E, initEngine, scope, type Tensor, tensor } from "../engine/mod.ts";
import {
  lastMatmulKernel,
  launchMatmul,
  type MatmulKernel,
  matmulKernel,
  setMatmulKernel,
} from "../engine/ops/matmul.ts";

export interface Row {
  name: string;
  /** batch × M×K×N (op(A) is M×K) */
  shape: string;
  gflops: number;
  /** median milliseconds per product */
  ms: number;
  /** the kernel that ran */
  kernel: string;
  /** percent of BENCH_PEAK_GFLOPS, null when the peak is unknown */
  pctPeak: number | null;
}

interface Case {
  name: string;
  batch: number;
  M: number;
  K: number;
  N: number;
  transB?: boolean;
  quick: boolean;
  /** too slow for the naive kernel on a software adapter */
  big?: boolean;
}

const CASES: Case[] = [
  { name: "square 256", batch: 1, M: 256, K: 256, N: 256, quick: true },
  { name: "square 512", batch: 1, M: 512, K: 512, N: 512, quick: true },
  { name: "square 1024", batch: 1, M: 1024, K: 1024, N: 1024, quick: true },
  // x [1600, in] · Wᵀ with W [out, in] as stored by PyTorch (linear)
  {
    name: "clip qkv/out proj",
    batch: 1,
    M: 1600,
    K: 768,
    N: 768,
    transB: true,
    quick: true,
    big: true,
  },
  {
    name: "clip mlp fc",
    batch: 1,
    M: 1600,
    K: 768,
    N: 3072,
    transB: true,
    quick: false,
    big: true,
  },
  {
    name: "clip mlp proj",
    batch: 1,
    M: 1600,
    K: 3072,
    N: 768,
    transB: true,
    quick: false,
    big: true,
  },
  // Q·Kᵀ with K stored [24, 197, 64], then P·V
  { name: "attn scores", batch: 24, M: 197, K: 64, N: 197, transB: true, quick: true },
  { name: "attn values", batch: 24, M: 197, K: 197, N: 64, quick: true },
];

function env(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined;
  }
}

function random(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 2 ** 32 - 0.5;
  }
  return out;
}

/** The fixed cost of E().sync() with nothing to wait for, in ms (minimum of a few). */
async function syncOverhead(): Promise<number> {
  let best = Infinity;
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    await E().sync();
    best = Math.min(best, performance.now() - t0);
  }
  return best;
}

export async function benchMatmul(
  opts: { quick?: boolean; kernels?: MatmulKernel[]; peak?: number } = {},
): Promise<Row[]> {
  await initEngine();
  const quick = opts.quick ?? (env("BENCH_QUICK") === "1" || Deno.args.includes("quick"));
  const kernels = opts.kernels ??
    ((env("BENCH_KERNELS")?.split(",").filter(Boolean) ?? ["auto"]) as MatmulKernel[]);
  const peak = opts.peak ?? (Number(env("BENCH_PEAK_GFLOPS")) || null);
  const slow = E().info.isFallbackAdapter;
  const before = matmulKernel();
  const overhead = await syncOverhead();
  const rows: Row[] = [];
  try {
    for (const c of CASES.filter((c) => c.quick || !quick)) {
      const flops = 2 * c.batch * c.M * c.K * c.N;
      const lead = c.batch > 1 ? [c.batch] : [];
      const a = tensor(random(c.batch * c.M * c.K, 1), [...lead, c.M, c.K]);
      const b = tensor(random(c.batch * c.K * c.N, 2), [
        ...lead,
        ...(c.transB ? [c.N, c.K] : [c.K, c.N]),
      ]);
      try {
        for (const kernel of kernels) {
          if (kernel === "naive" && slow && c.big) continue; // minutes per sample
          setMatmulKernel(kernel);
          rows.push(await measure(c, kernel, a, b, flops, overhead, quick, peak));
        }
      } finally {
        a.dispose();
        b.dispose();
      }
    }
  } finally {
    setMatmulKernel(before);
  }
  return rows;
}

async function measure(
  c: Case,
  kernel: MatmulKernel,
  a: Tensor,
  b: Tensor,
  flops: number,
  overhead: number,
  quick: boolean,
  peak: number | null,
): Promise<Row> {
  const run = async (reps: number) => {
    const t0 = performance.now();
    for (let i = 0; i < reps; i++) scope(() => void launchMatmul(a, b, false, !!c.transB));
    await E().sync();
    return Math.max(performance.now() - t0 - overhead, 1e-3);
  };
  await run(1); // compiles the pipelines, fills the texture pool
  const once = await run(1);
  // enough products per sample that the sync's jitter is small beside them
  const reps = Math.max(1, Math.min(64, Math.round((quick ? 150 : 300) / once)));
  const bench = new Bench({
    name: c.name,
    iterations: quick ? 5 : 10,
    time: quick ? 0 : 1000,
    warmup: false,
    throws: true,
  });
  bench.add(c.name, async (): Promise<FnReturnedObject> => {
    const ms = await run(reps);
    return { overriddenDuration: ms / reps, overriddenIterationCost: ms };
  });
  await bench.run();
  const r = bench.tasks[0].result;
  if (r.state !== "completed" && r.state !== "aborted-with-statistics") {
    throw new Error(`bench ${c.name}: ${r.state}`);
  }
  const ms = r.latency.p50;
  const gflops = flops / (ms * 1e6);
  return {
    name: c.name,
    shape: `${c.batch}×${c.M}×${c.K}×${c.N}${c.transB ? " (Bᵀ)" : ""}`,
    gflops: Math.round(gflops * 100) / 100,
    ms: Math.round(ms * 1000) / 1000,
    kernel: kernel === "auto" ? `auto→${lastMatmulKernel()}` : kernel,
    pctPeak: peak ? Math.round((gflops / peak) * 1000) / 10 : null,
  };
}

if (import.meta.main) {
  const rows = await benchMatmul();
  if (Deno.args.includes("--json")) console.log(JSON.stringify(rows, null, 2));
  else {
    const i = E().info;
    console.log(`${i.adapter} (${i.backend}${i.isFallbackAdapter ? ", fallback adapter" : ""})`);
    console.table(rows.map((r) => ({ ...r, pctPeak: r.pctPeak ?? "unknown" })));
  }
}
