import { assertClose, setup, T } from "./util.ts";
import { hostRng, randomBits, randomNormal, randomUniform } from "../engine/ops/random.ts";
import { cpuRandomBits, cpuRandomNormal, cpuRandomUniform, philox4x32 } from "../kernels/random.ts";
import assert from "node:assert/strict";

await setup();

const u32 = async (t: T.Tensor) => Uint32Array.from(await t.data(), (x) => x >>> 0);
const SEEDS = [0, 12345, 2 ** 40 + 7]; // the last one uses the key's high word

function moments(x: ArrayLike<number>) {
  let s = 0, s2 = 0;
  for (let i = 0; i < x.length; i++) s += x[i];
  const m = s / x.length;
  for (let i = 0; i < x.length; i++) s2 += (x[i] - m) ** 2;
  return { mean: m, variance: s2 / (x.length - 1) };
}

Deno.test("the CPU Philox-4x32-10 reproduces Random123's known answers", () => {
  const hex = (a: Uint32Array) => [...a].map((x) => x.toString(16).padStart(8, "0")).join(" ");
  assert.equal(hex(philox4x32([0, 0, 0, 0], [0, 0])), "6627e8d5 e169c58d bc57ac4c 9b00dbd8");
  assert.equal(
    hex(philox4x32([0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff], [0xffffffff, 0xffffffff])),
    "408f276d 41c83b0e a20bc7c6 6d5451fd",
  );
  assert.equal(
    hex(philox4x32([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0])),
    "d16cfe09 94fdcceb 5001e420 24126ea1",
  );
});

Deno.test("GPU and CPU produce the same u32 stream and the same uniforms, bitwise", async () => {
  for (const seed of SEEDS) {
    await T.scopeAsync(async () => {
      assert.deepEqual(
        await u32(randomBits([1003], seed)),
        cpuRandomBits(1003, seed),
        `bits ${seed}`,
      );
      const u = await randomUniform([37, 29], seed).data();
      assert.deepEqual(Float64Array.from(u), cpuRandomUniform(37 * 29, seed), `uniform ${seed}`);
      const v = await randomUniform([501], seed, -2, 3).data();
      assertClose(v, cpuRandomUniform(501, seed, -2, 3), {
        rtol: 1e-6,
        atol: 1e-6,
        msg: "uniform [-2, 3)",
      });
      for (const x of v) assert.ok(x >= -2 && x < 3, `${x} outside [-2, 3)`);
    });
  }
  // the GPU's first block is the known answer for counter 0, key 0
  await T.scopeAsync(async () => {
    const w = await u32(randomBits([4], 0));
    assert.deepEqual([...w], [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]);
  });
});

Deno.test("GPU normals match the CPU reference up to float rounding", async () => {
  for (const seed of SEEDS) {
    await T.scopeAsync(async () => {
      const g = await randomNormal([2049], seed, 0.5, 2).data();
      assertClose(g, cpuRandomNormal(2049, seed, 0.5, 2), {
        rtol: 1e-4,
        atol: 1e-4,
        msg: `normal ${seed}`,
      });
    });
  }
});

Deno.test("values depend only on (seed, element): any shape, length or dispatch split", async () => {
  await T.scopeAsync(async () => {
    const long = await u32(randomBits([70001], 5)); // several workgroups
    const short = await u32(randomBits([3], 5));
    assert.deepEqual(long.slice(0, 3), short);
    const grid = await randomNormal([7, 11, 3], 9).data();
    const flat = await randomNormal([231], 9).data();
    assert.deepEqual(grid, flat);
    const again = await randomNormal([7, 11, 3], 9).data();
    assert.deepEqual(grid, again, "the same seed gave different values");
  });
});

Deno.test("different seeds give different streams", async () => {
  await T.scopeAsync(async () => {
    const a = await u32(randomBits([4096], 1)), b = await u32(randomBits([4096], 2));
    let same = 0;
    for (let i = 0; i < a.length; i++) same += +(a[i] === b[i]);
    assert.ok(same <= 2, `${same} of 4096 words equal across seeds`);
    const ua = await randomUniform([1000], 3).data(), ub = await randomUniform([1000], 4).data();
    assert.notDeepEqual(ua, ub);
  });
});

Deno.test("mean and variance of 100k samples lie within statistical bounds", async () => {
  const n = 100_000;
  await T.scopeAsync(async () => {
    // standard errors: mean σ/√n, variance ≈ σ²·√(κ−1)/√n (κ: 1.8 uniform, 3 normal); 6 SE bounds
    const u = moments(await randomUniform([n], 21).data());
    assert.ok(Math.abs(u.mean - 0.5) < 6 * Math.sqrt(1 / 12 / n), `uniform mean ${u.mean}`);
    assert.ok(
      Math.abs(u.variance - 1 / 12) < 6 * (1 / 12) * Math.sqrt(0.8 / n),
      `uniform variance ${u.variance}`,
    );
    const s = moments(await randomUniform([n], 22, -3, 5).data());
    assert.ok(Math.abs(s.mean - 1) < 6 * Math.sqrt(64 / 12 / n), `scaled uniform mean ${s.mean}`);
    assert.ok(
      Math.abs(s.variance - 64 / 12) < 6 * (64 / 12) * Math.sqrt(0.8 / n),
      `scaled uniform variance ${s.variance}`,
    );
    const zs = await randomNormal([n], 23).data();
    const z = moments(zs);
    assert.ok(Math.abs(z.mean) < 6 / Math.sqrt(n), `normal mean ${z.mean}`);
    assert.ok(Math.abs(z.variance - 1) < 6 * Math.sqrt(2 / n), `normal variance ${z.variance}`);
    // the shape, not only two moments: P(|z| < 1) = 0.6827, P(|z| < 2) = 0.9545
    for (const [k, p] of [[1, 0.682689], [2, 0.954500]]) {
      const f = zs.filter((x) => Math.abs(x) < k).length / n;
      assert.ok(Math.abs(f - p) < 6 * Math.sqrt(p * (1 - p) / n), `P(|z| < ${k}) = ${f}`);
    }
    const w = moments(await randomNormal([n], 24, -1.5, 0.25).data());
    assert.ok(Math.abs(w.mean + 1.5) < 6 * 0.25 / Math.sqrt(n), `scaled normal mean ${w.mean}`);
    assert.ok(
      Math.abs(w.variance - 0.0625) < 6 * 0.0625 * Math.sqrt(2 / n),
      `scaled normal variance ${w.variance}`,
    );
  });
});

Deno.test("hostRng draws the same stream as the GPU", async () => {
  const r = hostRng(12345);
  const words = Array.from({ length: 10 }, () => r.u32());
  assert.deepEqual(Uint32Array.from(words), cpuRandomBits(10, 12345));
  assert.equal(r.position, 10);
  await T.scopeAsync(async () => {
    const gu = await randomUniform([101], 77).data();
    const hu = hostRng(77);
    assert.deepEqual(gu, Float32Array.from({ length: 101 }, () => hu.uniform()));
    const gn = await randomNormal([101], 78).data();
    const hn = hostRng(78);
    assertClose(gn, Array.from({ length: 101 }, () => hn.normal()), {
      rtol: 1e-4,
      atol: 1e-4,
      msg: "host normals",
    });
  });
});

Deno.test("hostRng integers, shuffles and samples are uniform, valid and reproducible", () => {
  const r = hostRng(3);
  const counts = new Array(7).fill(0);
  const n = 70_000;
  for (let i = 0; i < n; i++) counts[r.int(7)]++;
  for (const c of counts) {
    assert.ok(Math.abs(c - n / 7) < 6 * Math.sqrt((n / 7) * (6 / 7)), `counts ${counts}`);
  }
  const a = hostRng(4).shuffle([...Array(50).keys()]);
  assert.deepEqual([...a].sort((x, y) => x - y), [...Array(50).keys()]);
  assert.deepEqual(a, hostRng(4).shuffle([...Array(50).keys()]));
  assert.notDeepEqual(a, hostRng(5).shuffle([...Array(50).keys()]));
  const s = hostRng(6).sample(1000, 30);
  assert.equal(new Set(s).size, 30);
  assert.ok(s.every((x) => Number.isInteger(x) && x >= 0 && x < 1000));
  assert.equal(hostRng(8).int(1), 0);
  assert.ok(hostRng(9).int(2 ** 32) < 2 ** 32);
});

Deno.test("bad seeds and ranges name the op", () => {
  assert.throws(
    () => randomUniform([2], -1),
    /randomUniform: seed must be a non-negative safe integer, got -1/,
  );
  assert.throws(
    () => randomNormal([2], 1.5),
    /randomNormal: seed must be a non-negative safe integer, got 1.5/,
  );
  assert.throws(() => randomUniform([2], 0, 1, 0), /randomUniform: needs lo ≤ hi, got \[1, 0\)/);
  assert.throws(() => randomNormal([2], 0, 0, -1), /randomNormal: needs std ≥ 0, got -1/);
  assert.throws(() => hostRng(2 ** 60), /hostRng: seed must be a non-negative safe integer/);
  assert.throws(() => hostRng(1).int(0), /hostRng: int\(n\) needs an integer 1 ≤ n ≤ 2\^32, got 0/);
});
