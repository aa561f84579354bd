/**
 * Host-side tensors as checkpoint readers return them: raw little-endian bytes plus dtype and
 * shape, and the conversions the model loaders need (F16/BF16/F8 → f32, integers → i32, f32 →
 * F16/BF16 with round-to-nearest-even for writing).
 *
 * Kept apart from weights.ts so the format readers can import it without an import cycle;
 * weights.ts re-exports everything here.
 */

/** safetensors' dtype names; torch storages map onto the same set. */
export type WeightDType =
  | "F64"
  | "F32"
  | "F16"
  | "BF16"
  | "F8_E4M3"
  | "F8_E5M2"
  | "I64"
  | "I32"
  | "I16"
  | "I8"
  | "U64"
  | "U32"
  | "U16"
  | "U8"
  | "BOOL";

export const DTYPE_BYTES: Readonly<Record<WeightDType, number>> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  F8_E4M3: 1,
  F8_E5M2: 1,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U64: 8,
  U32: 4,
  U16: 2,
  U8: 1,
  BOOL: 1,
};

export const isWeightDType = (s: unknown): s is WeightDType =>
  typeof s === "string" && Object.hasOwn(DTYPE_BYTES, s);

/**
 * One tensor on the host. `data` holds exactly numel × element-size bytes, little-endian, row-major
 * contiguous. It may be a view into the file's buffer (shared with other tensors); treat it as
 * read-only and copy before mutating.
 */
export interface HostWeight {
  dtype: WeightDType;
  shape: number[];
  data: Uint8Array;
}

/** Tensors by name, in the file's order. */
export type StateDict = Map<string, HostWeight>;

/** A checkpoint that cannot be read; the message names the file and, where known, the tensor. */
export class WeightsError extends Error {
  constructor(public file: string, message: string, public tensor?: string) {
    super(`${file}: ${tensor !== undefined ? `tensor "${tensor}": ` : ""}${message}`);
    this.name = "WeightsError";
  }
}

export const numelOf = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

/** Checks that `w.data` has exactly the bytes its dtype and shape need. */
export function checkWeight(w: HostWeight, what = "weight"): void {
  if (!isWeightDType(w.dtype)) throw new Error(`${what}: unknown dtype ${String(w.dtype)}`);
  if (!w.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new Error(`${what}: invalid shape [${w.shape.join(", ")}]`);
  }
  const need = numelOf(w.shape) * DTYPE_BYTES[w.dtype];
  if (w.data.length !== need) {
    throw new Error(
      `${what}: ${w.data.length} bytes, but ${w.dtype} [${w.shape.join(", ")}] needs ${need}`,
    );
  }
}

// Typed-array constructors used to reinterpret the bytes (copied first, so alignment never matters).
type Ctor<T> = { new (buffer: ArrayBuffer): T; BYTES_PER_ELEMENT: number };
function reinterpret<T>(data: Uint8Array, C: Ctor<T>): T {
  const buf = new ArrayBuffer(data.length - (data.length % C.BYTES_PER_ELEMENT));
  new Uint8Array(buf).set(data.subarray(0, buf.byteLength));
  return new C(buf);
}

let f16Table: Float32Array | undefined;
/** All 65536 half-precision values, built once (256 KiB). */
function halfTable(): Float32Array {
  if (f16Table) return f16Table;
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, m = h & 0x3ff;
    t[h] = e === 0
      ? s * m * 2 ** -24
      : e === 31
      ? (m ? NaN : s * Infinity)
      : s * (1 + m / 1024) * 2 ** (e - 15);
  }
  return (f16Table = t);
}

/** E4M3FN (no infinities; S.1111.111 is NaN) and E5M2 (the top byte of an F16). */
function fp8Table(dtype: "F8_E4M3" | "F8_E5M2"): Float32Array {
  const t = new Float32Array(256);
  const half = halfTable();
  for (let b = 0; b < 256; b++) {
    if (dtype === "F8_E5M2") {
      t[b] = half[b << 8];
      continue;
    }
    const s = b & 0x80 ? -1 : 1, e = (b >> 3) & 0xf, m = b & 7;
    t[b] = e === 15 && m === 7 ? NaN : e === 0 ? s * m * 2 ** -9 : s * (1 + m / 8) * 2 ** (e - 7);
  }
  return t;
}

/** The values as a fresh Float32Array (integers and F64 are rounded to the nearest f32). */
export function toFloat32(w: HostWeight): Float32Array {
  checkWeight(w, "toFloat32");
  const d = w.data;
  switch (w.dtype) {
    case "F32":
      return reinterpret(d, Float32Array);
    case "F16": {
      const h = reinterpret(d, Uint16Array), t = halfTable();
      const out = new Float32Array(h.length);
      for (let i = 0; i < h.length; i++) out[i] = t[h[i]];
      return out;
    }
    case "BF16": {
      const h = reinterpret(d, Uint16Array);
      const bits = new Uint32Array(h.length);
      for (let i = 0; i < h.length; i++) bits[i] = h[i] << 16;
      return new Float32Array(bits.buffer);
    }
    case "F8_E4M3":
    case "F8_E5M2": {
      const t = fp8Table(w.dtype);
      const out = new Float32Array(d.length);
      for (let i = 0; i < d.length; i++) out[i] = t[d[i]];
      return out;
    }
    case "F64":
      return Float32Array.from(reinterpret(d, Float64Array));
    case "I64":
      return Float32Array.from(reinterpret(d, BigInt64Array), Number);
    case "U64":
      return Float32Array.from(reinterpret(d, BigUint64Array), Number);
    case "I32":
      return Float32Array.from(reinterpret(d, Int32Array));
    case "U32":
      return Float32Array.from(reinterpret(d, Uint32Array));
    case "I16":
      return Float32Array.from(reinterpret(d, Int16Array));
    case "U16":
      return Float32Array.from(reinterpret(d, Uint16Array));
    case "I8":
      return Float32Array.from(new Int8Array(d.buffer, d.byteOffset, d.length));
    case "U8":
    case "BOOL":
      return Float32Array.from(d);
  }
}

/** Integer tensors (and BOOL) as a fresh Int32Array; throws on floats and on values out of range. */
export function toInt32(w: HostWeight): Int32Array {
  checkWeight(w, "toInt32");
  const d = w.data;
  const fromBig = (v: BigInt64Array | BigUint64Array) =>
    Int32Array.from(v, (x, i) => {
      if (x < -0x80000000n || x > 0x7fffffffn) {
        throw new RangeError(`toInt32: element ${i} (${x}) does not fit in i32`);
      }
      return Number(x);
    });
  switch (w.dtype) {
    case "I32":
      return reinterpret(d, Int32Array);
    case "I64":
      return fromBig(reinterpret(d, BigInt64Array));
    case "U64":
      return fromBig(reinterpret(d, BigUint64Array));
    case "U32":
      return Int32Array.from(reinterpret(d, Uint32Array), (x, i) => {
        if (x > 0x7fffffff) {
          throw new RangeError(`toInt32: element ${i} (${x}) does not fit in i32`);
        }
        return x;
      });
    case "I16":
      return Int32Array.from(reinterpret(d, Int16Array));
    case "U16":
      return Int32Array.from(reinterpret(d, Uint16Array));
    case "I8":
      return Int32Array.from(new Int8Array(d.buffer, d.byteOffset, d.length));
    case "U8":
    case "BOOL":
      return Int32Array.from(d);
    default:
      throw new TypeError(`toInt32: ${w.dtype} is not an integer dtype`);
  }
}

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** f32 → IEEE half bits, round to nearest even; overflow gives ±inf, NaN stays NaN. */
export function f32ToF16Bits(x: number): number {
  f32Scratch[0] = x;
  const b = u32Scratch[0];
  const sign = (b >>> 16) & 0x8000, exp = (b >>> 23) & 0xff;
  let mant = b & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0);
  const e = exp - 112; // rebias 127 → 15
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    // subnormal half: value / 2^-24 = (1.mant) · 2^(e − 14 + 24 − 24)
    mant |= 0x800000;
    const shift = 14 - e;
    let h = mant >>> shift;
    const rem = mant & ((1 << shift) - 1), halfway = 1 << (shift - 1);
    if (rem > halfway || (rem === halfway && h & 1)) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h++; // a carry may roll into the exponent (→ inf)
  return sign | h;
}

/** f32 → bfloat16 bits (the top half, round to nearest even); NaN stays NaN. */
export function f32ToBF16Bits(x: number): number {
  f32Scratch[0] = x;
  const b = u32Scratch[0];
  if ((b & 0x7f800000) === 0x7f800000 && b & 0x7fffff) return (b >>> 16) | 0x40;
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
}

/** Packs float values into a HostWeight of dtype F32, F16 or BF16 (for writing checkpoints). */
export function fromFloat32(
  values: ArrayLike<number>,
  shape: number[],
  dtype: "F32" | "F16" | "BF16" = "F32",
): HostWeight {
  const n = numelOf(shape);
  if (values.length !== n) {
    throw new Error(`fromFloat32: ${values.length} values for shape [${shape.join(", ")}]`);
  }
  if (dtype === "F32") {
    const f = Float32Array.from(values);
    return { dtype, shape: [...shape], data: new Uint8Array(f.buffer) };
  }
  const h = new Uint16Array(n);
  const conv = dtype === "F16" ? f32ToF16Bits : f32ToBF16Bits;
  for (let i = 0; i < n; i++) h[i] = conv(values[i]);
  return { dtype, shape: [...shape], data: new Uint8Array(h.buffer) };
}

/** Packs integers into an I32 HostWeight. */
export function fromInt32(values: ArrayLike<number>, shape: number[]): HostWeight {
  const n = numelOf(shape);
  if (values.length !== n) {
    throw new Error(`fromInt32: ${values.length} values for shape [${shape.join(", ")}]`);
  }
  const a = Int32Array.from(values);
  return { dtype: "I32", shape: [...shape], data: new Uint8Array(a.buffer) };
}
