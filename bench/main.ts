/**
 * `deno task bench [--quick] [--only engine,matmul,...] [--json FILE]`: kernel benchmarks on the
 * current adapter, printed as a table and written as JSON naming the adapter.
 * Figures are reported, never asserted.
 */
import { initEngine } from "../engine/device.ts";
import type { Row } from "./common.ts";
import { benchEngine } from "./engine.ts";
import { parseCommand, runCommand } from "../pipeline/cli/args.ts";

const SUITES: Record<string, () => Promise<Row[]>> = {
  engine: benchEngine,
};

/** Optional suites live in their own files; a missing one is skipped, not fatal. */
async function optional(name: string, file: string, fn: string) {
  try {
    const mod = await import(file);
    if (typeof mod[fn] === "function") SUITES[name] = mod[fn];
  } catch (err) {
    if (!(err instanceof TypeError) || !String(err).includes("Module not found")) throw err;
  }
}

const USAGE =
  `usage: deno task bench [--quick] [--only engine,matmul,nn,clip,methods,block] [--json FILE]
       deno task bench --model FILE | --arch ViT-B/16 [--out DIR] [--python python3]
  kernel and model benchmarks on the current adapter, printed as a table; --json also writes them
  (naming the adapter); --quick runs fewer iterations. With --model or --arch: one full-size
  model's scaling table (load, image and text encoding, the prompt learners' steps) beside
  PyTorch, written to DIR (default bench-out/) as results.json and results.md (bench/gpu/check.ts)`;

export async function main(args: string[]): Promise<number> {
  const p = parseCommand(args, USAGE, {
    quick: { type: "boolean", default: false },
    only: { type: "string" },
    json: { type: "string" },
    model: { type: "string" },
    arch: { type: "string" },
    out: { type: "string" },
    python: { type: "string" },
  });
  if (typeof p === "number") return p;
  const { values } = p;
  if (values.quick) Deno.env.set("BENCH_QUICK", "1");
  if (values.model || values.arch) {
    // the scaling table of one full-size model (bench/gpu/check.ts, with the PyTorch peer): the
    // 'cpu' case set on a software adapter, the 'full' one elsewhere
    const { initEngine } = await import("../engine/device.ts");
    const soft = (await initEngine()).info.isFallbackAdapter;
    const { checkMain } = await import("./gpu/check.ts");
    const args = ["--mode", soft ? "cpu" : "full", "--out", values.out ?? "bench-out"];
    if (values.model) args.push("--model", values.model);
    if (values.arch) args.push("--arch", values.arch);
    if (values.python) args.push("--python", values.python);
    return await checkMain(args);
  }
  await optional("matmul", "./matmul.ts", "benchMatmul");
  if (SUITES.matmul) {
    const raw = SUITES.matmul as unknown as () => Promise<
      {
        name: string;
        shape: string;
        gflops: number;
        ms: number;
        kernel: string;
        pctPeak: number | null;
      }[]
    >;
    SUITES.matmul = async () =>
      (await raw()).map((r) => ({
        group: "matmul",
        name: `${r.name} ${r.shape} (${r.kernel})${
          r.pctPeak == null ? "" : ` ${r.pctPeak.toFixed(1)}% of peak`
        }`,
        ms: r.ms,
        value: r.gflops,
        unit: "GFLOP/s",
      }));
  }
  await optional("nn", "./nn.ts", "benchNN");
  await optional("clip", "./clip.ts", "benchClip");
  await optional("methods", "./methods.ts", "benchMethods");
  await optional("block", "./block.ts", "benchBlock");
  const engine = await initEngine();
  const only = values.only?.split(",");
  for (const name of only ?? []) {
    if (!SUITES[name]) {
      console.error(`--only: unknown suite "${name}" (known: ${Object.keys(SUITES).join(", ")})`);
      return 2;
    }
  }
  const rows: Row[] = [];
  console.log(
    `adapter: ${engine.info.adapter} (${engine.info.backend}${
      engine.info.isFallbackAdapter ? ", software" : ""
    })`,
  );
  for (const [name, fn] of Object.entries(SUITES)) {
    if (only && !only.includes(name)) continue;
    const got = await fn();
    rows.push(...got);
    for (const r of got) {
      console.log(
        `${r.group.padEnd(12)} ${r.name.padEnd(44)} ${r.ms.toFixed(3).padStart(10)} ms ${
          r.value.toFixed(2).padStart(10)
        } ${r.unit}`,
      );
    }
  }
  const out = {
    adapter: engine.info.adapter,
    backend: engine.info.backend,
    fallback: engine.info.isFallbackAdapter,
    date: new Date().toISOString(),
    rows,
  };
  if (values.json) {
    await Deno.writeTextFile(values.json, JSON.stringify(out, null, 2));
    console.log(`wrote ${values.json}`);
  }
  return 0;
}

if (import.meta.main) await runCommand(main);
