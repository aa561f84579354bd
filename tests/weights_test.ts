/**
 * Checkpoint readers (host only, no GPU): the golden micro CLIP in its three formats, the
 * safetensors validator and writer, the restricted unpickler's refusals, strided storages.
 */
import assert from "node:assert/strict";
import { zipSync } from "fflate";
import { sharedDir } from "./util.ts";
import {
  f32ToBF16Bits,
  f32ToF16Bits,
  fromFloat32,
  type HostWeight,
  loadStateDict,
  parseSafetensors,
  parseStateDict,
  PickleError,
  readSafetensors,
  readTorchZip,
  saveSafetensors,
  type StateDict,
  toFloat32,
  toInt32,
  WeightsError,
} from "../model/weights.ts";

const GOLD = sharedDir() + "golden/";
const MICRO = GOLD + "micro/";

function assertSameWeight(a: HostWeight | undefined, b: HostWeight | undefined, name: string) {
  assert.ok(a && b, `${name} missing`);
  assert.equal(a.dtype, b.dtype, `${name} dtype`);
  assert.deepEqual(a.shape, b.shape, `${name} shape`);
  assert.equal(a.data.length, b.data.length, `${name} byte length`);
  const i = a.data.findIndex((v, k) => v !== b.data[k]);
  assert.equal(i, -1, `${name}: byte ${i} differs`);
}

function assertSameDict(a: StateDict, b: StateDict, what: string) {
  assert.deepEqual([...a.keys()], [...b.keys()], `${what}: names`);
  for (const [k, w] of a) assertSameWeight(w, b.get(k), `${what}: ${k}`);
}

/** Runs fn and returns the error it throws (fails if it does not throw). */
async function caught(fn: () => unknown): Promise<Error> {
  try {
    await fn();
  } catch (e) {
    return e as Error;
  }
  throw new assert.AssertionError({ message: "expected an error" });
}

// ---------------------------------------------------------------------------------------------
// golden checkpoints

Deno.test("micro CLIP: safetensors, torch.save zip and TorchScript archive hold identical tensors", async () => {
  const st = await loadStateDict(MICRO + "model.safetensors");
  const pt = await loadStateDict(MICRO + "model.pt");
  const jit = await loadStateDict(MICRO + "model.jit.pt");
  assert.equal(st.size, 62);
  assertSameDict(st, pt, "model.pt");
  assertSameDict(st, jit, "model.jit.pt");

  // spot checks against the documented layout
  const conv = st.get("visual.conv1.weight")!;
  assert.deepEqual([conv.dtype, conv.shape], ["F16", [128, 3, 8, 8]]);
  const ls = st.get("logit_scale")!;
  assert.deepEqual([ls.dtype, ls.shape], ["F32", []]);
  assert.ok(Math.abs(toFloat32(ls)[0] - Math.log(100)) < 1e-6, "logit_scale = ln 100");
  assert.deepEqual(st.get("visual.transformer.resblocks.1.attn.in_proj_weight")!.shape, [384, 128]);
  assert.equal(st.get("ln_final.weight")!.dtype, "F32");
  assert.equal(
    [...st.keys()].filter((k) => /^transformer\.resblocks\.\d+\.ln_1\.weight$/.test(k)).length,
    2,
  );
});

Deno.test("TorchScript archive: kind, and constants.pkl tensors are kept apart from the weights", async () => {
  const ck = await readTorchZip(MICRO + "model.jit.pt");
  assert.equal(ck.kind, "torchscript");
  assert.equal(ck.tensors.size, 62);
  // the traced causal mask lives in constants/, not in the module tree
  const mask = ck.constants.find((c) => c.shape.length === 2)!;
  assert.deepEqual(mask.shape, [77, 77]);
  const m = toFloat32(mask);
  assert.equal(m[0], 0);
  assert.equal(m[1], -Infinity);
  assert.equal(m[77 + 1], 0);
  const pt = await readTorchZip(MICRO + "model.pt");
  assert.equal(pt.kind, "state_dict");
  assert.equal(pt.constants.length, 0);
});

Deno.test("b16lite safetensors loads with its documented shapes", async () => {
  const sd = await loadStateDict(GOLD + "b16lite/model.safetensors");
  assert.equal(sd.size, 86);
  assert.deepEqual(sd.get("visual.conv1.weight")!.shape, [192, 3, 16, 16]);
  assert.deepEqual(sd.get("visual.positional_embedding")!.shape, [197, 192]);
  assert.deepEqual(sd.get("token_embedding.weight")!.shape, [49408, 128]);
  assert.equal(sd.get("token_embedding.weight")!.dtype, "F16");
  const { metadata, tensors } = await readSafetensors(GOLD + "b16lite/cases.safetensors");
  assert.ok(Object.keys(metadata).length > 0, "cases metadata");
  const tok = toInt32(tensors.get("tokens")!);
  assert.equal(tok.length, 10 * 77);
  assert.equal(tok[0], 49406);
});

// ---------------------------------------------------------------------------------------------
// dtype conversions

Deno.test("F16 / BF16 conversions: decoding table, rounding to nearest even, golden round trip", async () => {
  const all = new Uint16Array(65536).map((_, i) => i);
  const dec = toFloat32({ dtype: "F16", shape: [65536], data: new Uint8Array(all.buffer) });
  const F16 =
    (globalThis as unknown as { Float16Array?: new (b: ArrayBuffer) => ArrayLike<number> })
      .Float16Array;
  const ref = F16 ? new F16(all.buffer) : undefined;
  for (let h = 0; h < 65536; h++) {
    const x = dec[h];
    if (ref) {
      assert.ok(
        Object.is(x, ref[h]) || (Number.isNaN(x) && Number.isNaN(ref[h])),
        `half 0x${h.toString(16)}`,
      );
    }
    if (!Number.isNaN(x)) assert.equal(f32ToF16Bits(x), h, `f16 bits of ${x}`);
  }
  assert.equal(dec[0x3c00], 1);
  assert.equal(dec[0x0001], 2 ** -24);
  assert.equal(dec[0x7bff], 65504);
  // rounding: halfway cases go to even, overflow to inf, tiny values to zero
  assert.equal(f32ToF16Bits(1 + 2 ** -11), 0x3c00);
  assert.equal(f32ToF16Bits(1 + 3 * 2 ** -11), 0x3c02);
  assert.equal(f32ToF16Bits(65520), 0x7c00);
  assert.equal(f32ToF16Bits(-65519), 0xfbff);
  assert.equal(f32ToF16Bits(2 ** -25), 0);
  assert.equal(f32ToF16Bits(1.5 * 2 ** -25), 1);
  assert.equal(f32ToF16Bits(1 / 3), 0x3555);
  assert.ok((f32ToF16Bits(NaN) & 0x7fff) > 0x7c00);
  assert.equal(f32ToBF16Bits(1), 0x3f80);
  assert.equal(f32ToBF16Bits(1 + 2 ** -8), 0x3f80); // tie → even
  assert.equal(f32ToBF16Bits(1 + 3 * 2 ** -8), 0x3f82);
  assert.ok((f32ToBF16Bits(NaN) & 0x7fff) > 0x7f80);
  const bf = fromFloat32([1.5, -2, 3.140625], [3], "BF16");
  assert.deepEqual(Array.from(toFloat32(bf)), [1.5, -2, 3.140625]);
  // every F16 tensor of the golden model survives f16 → f32 → f16 unchanged
  const sd = await loadStateDict(MICRO + "model.safetensors");
  for (const [name, w] of sd) {
    if (w.dtype !== "F16") continue;
    assertSameWeight(fromFloat32(toFloat32(w), w.shape, "F16"), w, name);
  }
  // integers
  const i64 = new BigInt64Array([5n, -7n, 1n << 40n]);
  const w64: HostWeight = { dtype: "I64", shape: [3], data: new Uint8Array(i64.buffer) };
  assert.deepEqual(Array.from(toFloat32(w64)), [5, -7, 2 ** 40]);
  assert.throws(() => toInt32(w64), /element 2 .* does not fit in i32/);
  assert.throws(() => toInt32(bf), /BF16 is not an integer dtype/);
});

// ---------------------------------------------------------------------------------------------
// safetensors validation

/** A safetensors file from a header object and a data section of `dataLen` bytes. */
function rawSafetensors(header: unknown, dataLen: number, rawJson?: string): Uint8Array {
  const json = new TextEncoder().encode(rawJson ?? JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + dataLen);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  return out;
}

Deno.test("safetensors: bad files are refused with the file and tensor named", async () => {
  const bytes = await Deno.readFile(MICRO + "model.safetensors");
  const f = "cut.safetensors";
  // truncated inside the header
  let e = await caught(() => parseSafetensors(bytes.subarray(0, 1000), f));
  assert.ok(e instanceof WeightsError);
  assert.match(
    e.message,
    /^cut\.safetensors: .*header length 6312 runs past the end of the file \(1000 bytes/,
  );
  // the same through the sniffing entry point
  e = await caught(() => parseStateDict(bytes.subarray(0, 1000), f));
  assert.match(e.message, /header length 6312 runs past the end/);
  // truncated inside the data: the first tensor that no longer fits is named
  e = await caught(() => parseSafetensors(bytes.subarray(0, 8 + 6312 + 20000), f));
  assert.match(
    e.message,
    /tensor "text_projection": data_offsets \[19712, 27904\] run past the end of the data \(20000 bytes/,
  );
  assert.throws(() => parseSafetensors(bytes.subarray(0, 5), f), /too short/);

  const two = (a: number[], b: number[], dataLen: number) =>
    rawSafetensors({
      a: { dtype: "F32", shape: [2], data_offsets: a },
      b: { dtype: "F32", shape: [2], data_offsets: b },
    }, dataLen);
  assert.equal(parseSafetensors(two([0, 8], [8, 16], 16), f).tensors.size, 2);
  assert.throws(
    () => parseSafetensors(two([0, 8], [4, 12], 12), f),
    /cut\.safetensors: tensor "b": data_offsets \[4, 12\] overlap tensor "a" \(which ends at 8\)/,
  );
  assert.throws(
    () => parseSafetensors(two([0, 8], [12, 20], 20), f),
    /tensor "b": .*leave a hole of 4 bytes/,
  );
  assert.throws(
    () => parseSafetensors(two([0, 8], [8, 16], 20), f),
    /4 bytes after the last tensor/,
  );
  assert.throws(
    () => parseSafetensors(two([0, 8], [8, 12], 12), f),
    /tensor "b": .*hold 4 bytes, but F32 \[2\] needs 8/,
  );
  assert.throws(
    () => parseSafetensors(two([8, 0], [8, 16], 16), f),
    /tensor "a": .*end before they begin/,
  );
  assert.throws(
    () =>
      parseSafetensors(
        rawSafetensors({ w: { dtype: "F17", shape: [1], data_offsets: [0, 4] } }, 4),
        f,
      ),
    /cut\.safetensors: tensor "w": unknown dtype "F17"/,
  );
  assert.throws(
    () =>
      parseSafetensors(
        rawSafetensors({ w: { dtype: "F32", shape: [-1], data_offsets: [0, 4] } }, 4),
        f,
      ),
    /tensor "w": shape \[-1\] is not a list of non-negative integers/,
  );
  assert.throws(
    () => parseSafetensors(rawSafetensors(null, 0, '{"w": {"dtype": '), f),
    /header is not valid JSON/,
  );
  assert.throws(
    () => parseSafetensors(rawSafetensors({ __metadata__: { a: 1 } }, 0), f),
    /__metadata__\["a"\] is not a string/,
  );
});

Deno.test("saveSafetensors round-trips every dtype, scalars, empty tensors and metadata", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const bytes = (n: number, seed: number) =>
      Uint8Array.from({ length: n }, (_, i) => (i * 37 + seed) & 255);
    const dict: StateDict = new Map<string, HostWeight>([
      ["h", { dtype: "F16", shape: [3], data: bytes(6, 1) }],
      ["s", fromFloat32([0.25], [], "F32")],
      ["w", { dtype: "F32", shape: [2, 3], data: bytes(24, 2) }],
      ["b", { dtype: "BF16", shape: [1, 5], data: bytes(10, 3) }],
      ["i", { dtype: "I64", shape: [2], data: bytes(16, 4) }],
      ["t", { dtype: "I32", shape: [4], data: bytes(16, 5) }],
      ["u", { dtype: "U8", shape: [7], data: bytes(7, 6) }],
      ["e", { dtype: "F32", shape: [0, 4], data: new Uint8Array(0) }],
      ["d", { dtype: "F64", shape: [1], data: bytes(8, 7) }],
    ]);
    const meta = { format: "pt", config: JSON.stringify({ width: 128 }) };
    const path = `${dir}/rt.safetensors`;
    await saveSafetensors(path, dict, meta);
    const back = await readSafetensors(path);
    assertSameDict(dict, back.tensors, "round trip");
    assert.deepEqual(back.metadata, meta);
    // the writer aligns every tensor to its element size
    for (const [name, w] of back.tensors) {
      const es = w.data.length / Math.max(1, w.shape.reduce((a, b) => a * b, 1));
      if (w.data.length) assert.equal(w.data.byteOffset % es, 0, `${name} alignment`);
    }
    assert.deepEqual(await Array.fromAsync(Deno.readDir(dir), (e) => e.name), ["rt.safetensors"]);

    // the golden state dict, re-saved, loads back identically
    const sd = await loadStateDict(MICRO + "model.pt");
    await saveSafetensors(`${dir}/micro.safetensors`, sd);
    assertSameDict(sd, await loadStateDict(`${dir}/micro.safetensors`), "micro re-saved");

    // inconsistent input is refused before anything is written
    const bad = new Map([["x", { dtype: "F32" as const, shape: [3], data: new Uint8Array(8) }]]);
    await assert.rejects(
      saveSafetensors(`${dir}/bad.safetensors`, bad),
      /tensor "x": 8 bytes, but F32 \[3\] needs 12/,
    );
    await assert.rejects(Deno.stat(`${dir}/bad.safetensors`), Deno.errors.NotFound);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// ---------------------------------------------------------------------------------------------
// hand-made torch.save archives

/** Emits pickle opcodes (protocol 2), enough to write torch.save-style state dicts by hand. */
class PickleWriter {
  private b: number[] = [0x80, 2];
  raw(...xs: number[]) {
    this.b.push(...xs);
    return this;
  }
  op(c: string) {
    return this.raw(c.charCodeAt(0));
  }
  str(s: string) {
    const u = new TextEncoder().encode(s);
    return this.raw(0x58, u.length & 255, (u.length >> 8) & 255, 0, 0, ...u);
  }
  int(n: number) {
    return this.raw(0x4a, n & 255, (n >> 8) & 255, (n >> 16) & 255, (n >>> 24) & 255);
  }
  global(module: string, name: string) {
    return this.raw(0x63, ...new TextEncoder().encode(`${module}\n${name}\n`));
  }
  tuple(xs: number[]) {
    this.op("(");
    for (const x of xs) this.int(x);
    return this.op("t");
  }
  emptyOrderedDict() {
    return this.global("collections", "OrderedDict").op(")").op("R");
  }
  /** _rebuild_tensor_v2(('storage', torch.<type>, key, 'cpu', numel), offset, size, stride, False, {}) */
  tensor(
    type: string,
    key: string,
    numel: number,
    offset: number,
    size: number[],
    stride: number[],
  ) {
    this.global("torch._utils", "_rebuild_tensor_v2").op("(");
    this.op("(").str("storage").global("torch", type).str(key).str("cpu").int(numel).op("t").op(
      "Q",
    );
    this.int(offset).tuple(size).tuple(stride).raw(0x89).emptyOrderedDict();
    return this.op("t").op("R");
  }
  bytes() {
    return Uint8Array.from([...this.b, 0x2e]);
  }
}

/** Reference: element i of a strided view, as the storage index it reads. */
function stridedIndices(offset: number, size: number[], stride: number[]): number[] {
  const n = size.reduce((a, b) => a * b, 1), out: number[] = [];
  for (let i = 0; i < n; i++) {
    let r = i, s = offset;
    for (let d = size.length - 1; d >= 0; d--) {
      s += (r % size[d]) * stride[d];
      r = Math.floor(r / size[d]);
    }
    out.push(s);
  }
  return out;
}

Deno.test("torch.save zip: views with offsets, permuted and expanded strides are materialised contiguous", async () => {
  const f32 = Float32Array.from({ length: 24 }, (_, i) => i + 0.5);
  const i64 = BigInt64Array.from({ length: 6 }, (_, i) => BigInt(i) * 10_000_000_000n - 3n);
  const f16 = new Uint16Array([0x3c00, 0x4000, 0x4200, 0x4400]);
  const views: [string, string, string, number, number, number[], number[]][] = [
    // name, storage type, key, numel, offset, size, stride
    ["transposed", "FloatStorage", "0", 24, 2, [3, 4], [1, 3]],
    ["expanded", "FloatStorage", "0", 24, 5, [2, 3], [0, 1]],
    ["slice", "FloatStorage", "0", 24, 4, [2, 2], [2, 1]],
    ["permuted3d", "FloatStorage", "0", 24, 0, [2, 3, 4], [1, 8, 2]],
    ["long_t", "LongStorage", "1", 6, 0, [3, 2], [1, 3]],
    ["half_scalar", "HalfStorage", "2", 4, 3, [], []],
    ["half_step", "HalfStorage", "2", 4, 0, [2], [2]],
  ];
  const p = new PickleWriter().emptyOrderedDict().op("(");
  for (const [name, type, key, numel, off, size, stride] of views) {
    p.str(name);
    if (name === "slice") {
      // an nn.Parameter: _rebuild_parameter(tensor, requires_grad, hooks)
      p.global("torch._utils", "_rebuild_parameter").op("(");
      p.tensor(type, key, numel, off, size, stride).raw(0x88).emptyOrderedDict().op("t").op("R");
    } else p.tensor(type, key, numel, off, size, stride);
  }
  p.op("u");
  // state_dict()._metadata arrives as BUILD on the OrderedDict
  p.op("}").op("(").str("_metadata").emptyOrderedDict().op("u").op("b");
  const dir = await Deno.makeTempDir();
  try {
    const zip = zipSync({
      "some-run_42/data.pkl": p.bytes(),
      "some-run_42/data/0": new Uint8Array(f32.buffer),
      "some-run_42/data/1": new Uint8Array(i64.buffer),
      "some-run_42/data/2": new Uint8Array(f16.buffer),
      "some-run_42/version": new TextEncoder().encode("3\n"),
    }, { level: 0 });
    const path = `${dir}/views.pt`;
    await Deno.writeFile(path, zip);
    const sd = await loadStateDict(path);
    assert.deepEqual([...sd.keys()], views.map((v) => v[0]));
    for (const [name, type, , , off, size, stride] of views) {
      const w = sd.get(name)!;
      assert.deepEqual(w.shape, size, name);
      const idx = stridedIndices(off, size, stride);
      if (type === "FloatStorage") {
        assert.equal(w.dtype, "F32");
        assert.deepEqual(Array.from(toFloat32(w)), idx.map((i) => f32[i]), name);
      } else if (type === "LongStorage") {
        assert.equal(w.dtype, "I64");
        const got = new BigInt64Array(w.data.slice().buffer);
        assert.deepEqual(Array.from(got), idx.map((i) => i64[i]), name);
      } else {
        assert.equal(w.dtype, "F16");
        assert.deepEqual(
          Array.from(new Uint16Array(w.data.slice().buffer)),
          idx.map((i) => f16[i]),
          name,
        );
      }
    }

    // a training checkpoint wrapping the weights is unwrapped
    const q = new PickleWriter().op("}").op("(").str("epoch").int(3).str("state_dict").op("}").op(
      "(",
    );
    q.str("w").tensor("FloatStorage", "0", 24, 0, [4, 6], [6, 1]).op("u").op("u");
    const wrapped = zipSync({ "ck/data.pkl": q.bytes(), "ck/data/0": new Uint8Array(f32.buffer) });
    const sd2 = parseStateDict(wrapped, "wrapped.pt").tensors;
    assert.deepEqual([...sd2.keys()], ["w"]);
    assert.deepEqual(Array.from(toFloat32(sd2.get("w")!)), Array.from(f32));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("torch.save zip: views past their storage and truncated storages are refused", () => {
  const one = (offset: number, size: number[], stride: number[], numel = 24, dataBytes = 96) => {
    const p = new PickleWriter().op("}").op("(").str("w").tensor(
      "FloatStorage",
      "0",
      numel,
      offset,
      size,
      stride,
    ).op("u");
    return zipSync({ "a/data.pkl": p.bytes(), "a/data/0": new Uint8Array(dataBytes) });
  };
  assert.equal(parseStateDict(one(0, [4, 6], [1, 4]), "ok.pt").tensors.size, 1);
  assert.throws(
    () => parseStateDict(one(1, [4, 6], [6, 1]), "x.pt"),
    /x\.pt: tensor of size \[4,6\], stride \[6,1\], offset 1 reaches element 24 of storage "0", which holds 24 F32 elements/,
  );
  assert.throws(() => parseStateDict(one(0, [4, 6], [1, 5]), "x.pt"), /reaches element 28/);
  assert.throws(
    () => parseStateDict(one(0, [4, 6], [6, 1], 24, 50), "x.pt"),
    /storage data\/0 holds 50 bytes, but the pickle declares 24 F32 elements \(96 bytes\)/,
  );
  const missing = zipSync({
    "a/data.pkl": new PickleWriter().op("}").op("(").str("w").tensor(
      "FloatStorage",
      "7",
      1,
      0,
      [1],
      [1],
    ).op("u").bytes(),
  });
  assert.throws(
    () => parseStateDict(missing, "x.pt"),
    /storage data\/7 is missing from the archive/,
  );
  // a pickle cut short
  const cut = new PickleWriter().op("}").op("(").str("w").bytes().subarray(0, -3);
  assert.throws(() => parseStateDict(zipSync({ "a/data.pkl": cut }), "x.pt"), PickleError);
});

Deno.test("unpickler refuses foreign globals and executes nothing", async () => {
  const dir = await Deno.makeTempDir();
  const marker = `${dir}/pwned`;
  try {
    const attacks: [string, Uint8Array][] = [
      // os.system("touch marker") via GLOBAL + REDUCE
      [
        "os.system",
        new PickleWriter().global("os", "system").op("(").str(`touch ${marker}`).op("t").op("R")
          .bytes(),
      ],
      // the same hidden inside a state dict, after a valid entry
      [
        "posix.system",
        new PickleWriter().op("}").op("(").str("ok").tensor("FloatStorage", "0", 1, 0, [1], [1])
          .str("evil").global("posix", "system").op("(").str(`touch ${marker}`).op("t").op("R").op(
            "u",
          ).bytes(),
      ],
      // STACK_GLOBAL spelling of builtins.exec
      [
        "builtins.exec",
        new PickleWriter().str("builtins").str("exec").raw(0x93).op("(").str(
          `open("${marker}","w")`,
        ).op("t").op("R")
          .bytes(),
      ],
      // a torch-looking name that is not on the list
      [
        "torch.load",
        new PickleWriter().global("torch", "load").op("(").str(marker).op("t").op("R").bytes(),
      ],
    ];
    for (const [qual, pkl] of attacks) {
      const path = `${dir}/evil.pt`;
      await Deno.writeFile(
        path,
        zipSync({ "evil/data.pkl": pkl, "evil/data/0": new Uint8Array(4) }),
      );
      const e = await caught(() => loadStateDict(path));
      assert.ok(e instanceof PickleError, `${qual}: ${e}`);
      assert.ok(
        e.message.startsWith(`refusing to load global ${qual} from ${path}`),
        `${qual}: message was ${e.message}`,
      );
      await assert.rejects(Deno.stat(marker), Deno.errors.NotFound, `${qual} must not run`);
    }
    // opcodes that instantiate arbitrary classes are not decoded at all
    const inst = new PickleWriter().op("(").raw(0x69, ...new TextEncoder().encode("os\nsystem\n"))
      .bytes();
    await Deno.writeFile(`${dir}/inst.pt`, zipSync({ "x/data.pkl": inst }));
    await assert.rejects(loadStateDict(`${dir}/inst.pt`), /opcode INST .* not supported/);
    await assert.rejects(Deno.stat(marker), Deno.errors.NotFound);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("zips that are not checkpoints, and unknown formats, are refused by name", () => {
  const zip = zipSync({
    "docs/readme.txt": new TextEncoder().encode("hello"),
    "docs/a.bin": new Uint8Array(3),
  });
  assert.throws(
    () => parseStateDict(zip, "docs.zip"),
    /docs\.zip: zip archive without data\.pkl: not a PyTorch checkpoint \(entries: docs\/readme\.txt, docs\/a\.bin\)/,
  );
  assert.throws(
    () => parseStateDict(zip.subarray(0, 40), "cut.zip"),
    /cut\.zip: not a readable zip archive/,
  );
  assert.throws(
    () => parseStateDict(Uint8Array.from([0x80, 2, 0x7d, 0x2e]), "old.pt"),
    /legacy \(pre-1\.6\) torch\.save/,
  );
  assert.throws(
    () => parseStateDict(new Uint8Array(4), "tiny.bin"),
    /tiny\.bin: unrecognised checkpoint format/,
  );
});
