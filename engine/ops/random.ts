/**
 * Seeded random tensors generated on the GPU (Philox-4x32-10, see kernels/random.ts), and
 * hostRng, the same stream on the host for data sampling. Element i of a seed's stream is the
 * same everywhere: on any adapter, for any shape, in randomBits, randomUniform, randomNormal and
 * the i-th draw of hostRng.
 */
import { E, f32Bits, grid1d } from "../device.ts";
import { EngineError, fmtShape } from "../errors.ts";
import {
  blockNormal,
  type RandomMode,
  randomWgsl,
  seedKey,
  streamBlock,
  wordToUnit,
} from "../../kernels/random.ts";
import { empty, type Tensor } from "../tensor.ts";

function checkSeed(op: string, seed: number) {
  if (!Number.isSafeInteger(seed) || seed < 0) {
    throw new EngineError(op, `seed must be a non-negative safe integer, got ${seed}`);
  }
}

function launchRandom(
  op: string,
  mode: RandomMode,
  shape: number[],
  seed: number,
  a: number,
  b: number,
) {
  checkSeed(op, seed);
  const out = empty(shape, mode === "bits" ? "i32" : "f32");
  const n = out.size;
  if (n >= 2 ** 34) {
    throw new EngineError(op, `${fmtShape(shape)} exceeds the 2^34 elements of a stream`);
  }
  if (n === 0) return out;
  const [lo, hi] = seedKey(seed);
  E().launch({
    kernel: "random",
    key: mode,
    wgsl: () => randomWgsl(mode),
    inputs: [],
    outputs: [out.buf()],
    uniforms: [n, lo, hi, f32Bits(a), f32Bits(b)],
    workgroups: grid1d(Math.ceil(n / 4)),
  });
  return out;
}

/** The raw u32 stream words, stored with the same bits in an i32 tensor. */
export function randomBits(shape: number[], seed: number): Tensor {
  return launchRandom("randomBits", "bits", shape, seed, 0, 0);
}

/** Uniform f32 values in [lo, hi) (24 random bits each). */
export function randomUniform(shape: number[], seed: number, lo = 0, hi = 1): Tensor {
  if (!(hi >= lo)) throw new EngineError("randomUniform", `needs lo ≤ hi, got [${lo}, ${hi})`);
  return launchRandom("randomUniform", "uniform", shape, seed, lo, hi - lo);
}

/** Normal f32 values (Box–Muller). */
export function randomNormal(shape: number[], seed: number, mean = 0, std = 1): Tensor {
  if (!(std >= 0)) throw new EngineError("randomNormal", `needs std ≥ 0, got ${std}`);
  return launchRandom("randomNormal", "normal", shape, seed, mean, std);
}

/** A host generator over a seed's stream: draw k (of any kind) reads stream element k. */
export class HostRng {
  private block = -1;
  private words: Uint32Array = new Uint32Array(4);
  /** The index of the next stream element. */
  position = 0;

  constructor(readonly seed: number) {
    checkSeed("hostRng", seed);
  }

  private word(): [Uint32Array, number] {
    const b = Math.floor(this.position / 4);
    if (b !== this.block) {
      this.words = streamBlock(this.seed, b);
      this.block = b;
    }
    return [this.words, this.position++ % 4];
  }

  /** The next stream word (a u32). */
  u32(): number {
    const [w, l] = this.word();
    return w[l];
  }

  /** Uniform in [lo, hi); for [0, 1) exactly randomUniform's value at the same element. */
  uniform(lo = 0, hi = 1): number {
    const u = wordToUnit(this.u32());
    return lo === 0 && hi === 1 ? u : lo + (hi - lo) * u;
  }

  /** Normal (float64 Box–Muller over the element's word pair, as randomNormal does in f32). */
  normal(mean = 0, std = 1): number {
    const [w, l] = this.word();
    return mean + std * blockNormal(w, l);
  }

  /** A uniform integer in [0, n), n ≤ 2^32, without modulo bias. */
  int(n: number): number {
    if (!Number.isInteger(n) || n < 1 || n > 2 ** 32) {
      throw new EngineError("hostRng", `int(n) needs an integer 1 ≤ n ≤ 2^32, got ${n}`);
    }
    const limit = Math.floor(2 ** 32 / n) * n;
    for (;;) {
      const w = this.u32();
      if (w < limit) return w % n;
    }
  }

  /** Shuffles `a` in place (Fisher–Yates) and returns it. */
  shuffle<T>(a: T[]): T[] {
    for (let i = a.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      [a[i], a[j]] = [a[j], a[i]];
    }
    return a;
  }

  /** k distinct indices of [0, n), in random order. */
  sample(n: number, k: number): number[] {
    if (k > n) throw new EngineError("hostRng", `cannot sample ${k} distinct of ${n}`);
    const idx = Array.from({ length: n }, (_, i) => i);
    for (let i = 0; i < k; i++) {
      const j = i + this.int(n - i);
      [idx[i], idx[j]] = [idx[j], idx[i]];
    }
    return idx.slice(0, k);
  }
}

/** A seeded host generator sharing the GPU's stream (see HostRng). */
export const hostRng = (seed: number) => new HostRng(seed);
