/**
 * Test helpers: seeded host data, float64 comparison, central finite differences, and the one
 * place that locates ../shared (failing loudly when it is missing).
 */
import assert from "node:assert/strict";
import * as T from "../engine/mod.ts";
import type { HostTensor } from "../kernels/elementwise.ts";

export { T };
export type { HostTensor };

/** The tiny CLIP the pretraining tests train: 16 px, patch 8, widths 64, one layer per tower. */
export const TINY_CLIP = {
  imageResolution: 16,
  visionPatchSize: 8,
  visionWidth: 64,
  visionLayers: 1,
  transformerWidth: 64,
  transformerLayers: 1,
  contextLength: 16,
  embedDim: 64,
} as const;

/**
 * Runs `deno task NAME ARGS...` as deno.json defines it (`deno run -A FILE`), in a process of its
 * own, with the project's config and `cwd` (default a new temporary folder, which has no
 * ../shared beside it); `env` is added to this process's environment, or replaces it with
 * `clearEnv`.
 */
export async function runTask(
  name: string,
  args: string[],
  opts: { cwd?: string; env?: Record<string, string>; clearEnv?: boolean } = {},
): Promise<{ code: number; out: string; err: string }> {
  const root = new URL("..", import.meta.url).pathname;
  const tasks = JSON.parse(Deno.readTextFileSync(`${root}deno.json`)).tasks as Record<
    string,
    string
  >;
  const [, , ...script] = tasks[name].split(" "); // "deno run -A FILE"
  const out = await new Deno.Command(Deno.execPath(), {
    args: [...script.slice(0, -1), "--config", `${root}deno.json`, `${root}${script.at(-1)}`]
      .concat(args),
    cwd: opts.cwd ?? await Deno.makeTempDir({ prefix: "task-cwd-" }),
    env: opts.env,
    clearEnv: opts.clearEnv,
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, out: dec.decode(out.stdout), err: dec.decode(out.stderr) };
}

export async function setup() {
  return await T.initEngine();
}

/** mulberry32: a tiny seeded generator for test data. */
export function rng(seed: number) {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Host tensor of uniform values in [lo, hi), rounded to f32. */
export function randHost(shape: number[], seed: number, lo = -1, hi = 1): HostTensor {
  const r = rng(seed);
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float64Array(n);
  for (let i = 0; i < n; i++) data[i] = Math.fround(lo + (hi - lo) * r());
  return { shape, data };
}

export const upload = (h: HostTensor) => T.tensor(Float32Array.from(h.data), h.shape);

export async function download(t: T.Tensor): Promise<HostTensor> {
  return { shape: [...t.shape], data: Float64Array.from(await t.data()) };
}

/** max |a − b| / (atol + rtol·|b|) ≤ 1 elementwise, with a message naming the worst element. */
export function assertClose(
  actual: HostTensor | ArrayLike<number>,
  expected: HostTensor | ArrayLike<number>,
  { rtol = 1e-5, atol = 1e-6, msg = "" } = {},
) {
  const a = "data" in actual ? actual : { shape: [actual.length], data: Float64Array.from(actual) };
  const e = "data" in expected
    ? expected
    : { shape: [expected.length], data: Float64Array.from(expected) };
  assert.deepEqual(a.shape, e.shape, `${msg} shape`);
  let worst = 0, wi = -1;
  for (let i = 0; i < e.data.length; i++) {
    const x = a.data[i], y = e.data[i];
    if (Number.isNaN(y) && Number.isNaN(x)) continue;
    if (y === x) continue;
    const r = Math.abs(x - y) / (atol + rtol * Math.abs(y));
    if (!(r <= worst)) {
      worst = Number.isNaN(r) ? Infinity : r;
      wi = i;
    }
  }
  assert.ok(
    worst <= 1,
    `${msg}: element ${wi} is ${a.data[wi]}, expected ${e.data[wi]} (rtol ${rtol}, atol ${atol})`,
  );
}

/** ‖a − b‖ / ‖b‖ */
export function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0, den = 0;
  for (let i = 0; i < b.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return Math.sqrt(num / Math.max(den, 1e-300));
}

/**
 * Checks the engine's gradient of `f` against central finite differences of `ref`, the op's
 * float64 CPU reference (eps 1e-6, so the check is not limited by f32 rounding). The scalar
 * checked is sum(f(x) · R) for a fixed random R, so every output element contributes.
 */
export async function gradCheck(
  f: (xs: T.Tensor[]) => T.Tensor,
  ref: (xs: HostTensor[]) => HostTensor,
  inputs: HostTensor[],
  { rtol = 2e-3, atol = 1e-4, eps = 1e-6, msg = "", wrt }: {
    rtol?: number;
    atol?: number;
    eps?: number;
    msg?: string;
    wrt?: number[];
  } = {},
) {
  const which = wrt ?? inputs.map((_, i) => i);
  const out0 = ref(inputs);
  const R = randHost(out0.shape, 99);
  const scalarRef = (xs: HostTensor[]) => {
    const o = ref(xs);
    let s = 0;
    for (let i = 0; i < o.data.length; i++) s += o.data[i] * R.data[i];
    return s;
  };
  const xs = inputs.map((h, i) => {
    const t = upload(h);
    if (which.includes(i)) T.param(t);
    return t;
  });
  const grads = await T.scopeAsync(async () => {
    const y = f(xs);
    const loss = T.sum(T.mul(y, upload(R)));
    T.backward(loss);
    return await Promise.all(which.map((i) => download(xs[i].grad!)));
  });
  which.forEach((i, k) => {
    const h = inputs[i];
    const num = new Float64Array(h.data.length);
    for (let j = 0; j < h.data.length; j++) {
      const plus = inputs.map((x) => ({ shape: x.shape, data: Float64Array.from(x.data) }));
      const minus = inputs.map((x) => ({ shape: x.shape, data: Float64Array.from(x.data) }));
      plus[i].data[j] += eps;
      minus[i].data[j] -= eps;
      num[j] = (scalarRef(plus) - scalarRef(minus)) / (2 * eps);
    }
    assertClose(grads[k], { shape: h.shape, data: num }, { rtol, atol, msg: `${msg} d/dx${i}` });
  });
  xs.forEach((t) => t.dispose());
}

/** The project's shared data folder (../shared beside the checkout); throws when missing. */
export function sharedDir(): string {
  const dir = new URL("../../shared/", import.meta.url).pathname;
  try {
    Deno.statSync(dir + "golden");
  } catch {
    throw new Error(
      `shared data not found at ${dir}: the tests need ../shared (golden/, data/PACS/, clip/) beside the checkout`,
    );
  }
  return dir;
}

/** Runs a command's main() with console.log/error captured. */
export async function capture(fn: () => Promise<number>) {
  const out: string[] = [], err: string[] = [];
  const [log, error] = [console.log, console.error];
  console.log = (...a: unknown[]) => out.push(a.join(" "));
  console.error = (...a: unknown[]) => err.push(a.join(" "));
  try {
    return { code: await fn(), out: out.join("\n"), err: err.join("\n") };
  } finally {
    [console.log, console.error] = [log, error];
  }
}

export { assert };
