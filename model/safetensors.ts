/**
 * safetensors reader and writer.
 *
 * Layout: u64 little-endian header length N, N bytes of UTF-8 JSON
 * `{"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}`
 * (space-padded), then the byte buffer the offsets index. The reader validates everything the
 * format promises (offsets inside the buffer, sizes equal to dtype × shape, no overlaps, no
 * holes, no trailing bytes) and names the file and tensor in every error. Tensors come back as
 * views into the file's bytes.
 *
 * The writer orders tensors by element size, largest first, after an 8-byte-padded header, so
 * every tensor starts aligned to its element size.
 */
import {
  checkWeight,
  DTYPE_BYTES,
  type HostWeight,
  isWeightDType,
  numelOf,
  type StateDict,
  WeightsError,
} from "./dtypes.ts";

/** The reference implementation refuses larger headers; so do we (a guard against garbage). */
const MAX_HEADER = 100_000_000;

export interface Safetensors {
  tensors: StateDict;
  metadata: Record<string, string>;
}

/** True when the bytes start like a safetensors file (a plausible length, then `{`). */
export function looksLikeSafetensors(bytes: Uint8Array): boolean {
  if (bytes.length < 10) return false;
  const n = new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
  return n >= 2n && n <= BigInt(MAX_HEADER) && bytes[8] === 0x7b;
}

export function parseSafetensors(bytes: Uint8Array, file = "<safetensors>"): Safetensors {
  const fail = (msg: string, tensor?: string): never => {
    throw new WeightsError(file, msg, tensor);
  };
  if (bytes.length < 8) fail(`${bytes.length} bytes is too short for a safetensors file`);
  const n64 = new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
  if (n64 > BigInt(bytes.length - 8)) {
    fail(
      `safetensors header length ${n64} runs past the end of the file ` +
        `(${bytes.length} bytes; truncated, or not a safetensors file)`,
    );
  }
  if (n64 > BigInt(MAX_HEADER)) fail(`safetensors header of ${n64} bytes exceeds ${MAX_HEADER}`);
  const n = Number(n64);
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(8, 8 + n));
  } catch {
    return fail("safetensors header is not valid UTF-8");
  }
  if (!text.startsWith("{")) fail("safetensors header does not start with '{'");
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (e) {
    return fail(`safetensors header is not valid JSON (${(e as Error).message})`);
  }
  if (typeof header !== "object" || header === null || Array.isArray(header)) {
    fail("safetensors header is not a JSON object");
  }

  const dataStart = 8 + n, dataLen = bytes.length - dataStart;
  const metadata: Record<string, string> = {};
  const entries: { name: string; w: HostWeight; begin: number; end: number }[] = [];
  for (const [name, info] of Object.entries(header as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (typeof info !== "object" || info === null || Array.isArray(info)) {
        fail("__metadata__ is not an object of strings");
      }
      for (const [k, v] of Object.entries(info as Record<string, unknown>)) {
        if (typeof v !== "string") fail(`__metadata__["${k}"] is not a string`);
        metadata[k] = v as string;
      }
      continue;
    }
    if (typeof info !== "object" || info === null || Array.isArray(info)) {
      fail("header entry is not an object", name);
    }
    const { dtype, shape, data_offsets: offs } = info as Record<string, unknown>;
    if (!isWeightDType(dtype)) {
      fail(
        `unknown dtype ${JSON.stringify(dtype)} (known: ${Object.keys(DTYPE_BYTES).join(", ")})`,
        name,
      );
    }
    const dt = dtype as keyof typeof DTYPE_BYTES;
    const isIndex = (d: unknown) => typeof d === "number" && Number.isSafeInteger(d) && d >= 0;
    if (!Array.isArray(shape) || !shape.every(isIndex)) {
      fail(`shape ${JSON.stringify(shape)} is not a list of non-negative integers`, name);
    }
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every(isIndex)) {
      fail(`data_offsets ${JSON.stringify(offs)} is not a pair of non-negative integers`, name);
    }
    const [begin, end] = offs as number[];
    const sh = shape as number[];
    if (begin > end) fail(`data_offsets [${begin}, ${end}] end before they begin`, name);
    if (end > dataLen) {
      fail(
        `data_offsets [${begin}, ${end}] run past the end of the data (${dataLen} bytes after ` +
          `the header)`,
        name,
      );
    }
    const need = numelOf(sh) * DTYPE_BYTES[dt];
    if (end - begin !== need) {
      fail(
        `data_offsets [${begin}, ${end}] hold ${end - begin} bytes, but ${dt} ` +
          `[${sh.join(", ")}] needs ${need}`,
        name,
      );
    }
    const data = bytes.subarray(dataStart + begin, dataStart + end);
    entries.push({ name, w: { dtype: dt, shape: [...sh], data }, begin, end });
  }

  // The buffer must be exactly covered: sorted by offset, each tensor starts where the last ended.
  const sorted = [...entries].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let at = 0, prev = "";
  for (const e of sorted) {
    if (e.begin < at) {
      fail(
        `data_offsets [${e.begin}, ${e.end}] overlap tensor "${prev}" (which ends at ${at})`,
        e.name,
      );
    }
    if (e.begin > at) {
      fail(
        `data_offsets [${e.begin}, ${e.end}] leave a hole of ${e.begin - at} bytes after ` +
          (prev ? `tensor "${prev}"` : "the header"),
        e.name,
      );
    }
    at = e.end;
    prev = e.name;
  }
  if (at !== dataLen) {
    fail(`${dataLen - at} bytes after the last tensor are not indexed by the header`);
  }
  return { tensors: new Map(entries.map((e) => [e.name, e.w])), metadata };
}

export async function readSafetensors(path: string): Promise<Safetensors> {
  return parseSafetensors(await Deno.readFile(path), path);
}

/** The complete file as bytes. */
export function serializeSafetensors(
  dict: StateDict,
  metadata?: Record<string, string>,
): Uint8Array {
  const items = [...dict].map(([name, w], i) => {
    if (name === "__metadata__" || name === "") {
      throw new Error(`serializeSafetensors: invalid tensor name "${name}"`);
    }
    checkWeight(w, `serializeSafetensors: tensor "${name}"`);
    return { name, w, i };
  });
  items.sort((a, b) => DTYPE_BYTES[b.w.dtype] - DTYPE_BYTES[a.w.dtype] || a.i - b.i);
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== "string") {
        throw new Error(`serializeSafetensors: metadata "${k}" is not a string`);
      }
    }
    header.__metadata__ = metadata;
  }
  let off = 0;
  const placed = items.map(({ name, w }) => {
    const begin = off;
    off += w.data.length;
    return { name, w, begin };
  });
  // header keys in the dict's order, so a reader that keeps JSON order sees the caller's order
  const byName = new Map(placed.map((p) => [p.name, p]));
  for (const [name] of dict) {
    const p = byName.get(name)!;
    header[name] = {
      dtype: p.w.dtype,
      shape: p.w.shape,
      data_offsets: [p.begin, p.begin + p.w.data.length],
    };
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(json.length / 8) * 8;
  const out = new Uint8Array(8 + padded + off);
  new DataView(out.buffer).setBigUint64(0, BigInt(padded), true);
  out.set(json, 8);
  out.fill(0x20, 8 + json.length, 8 + padded);
  for (const p of placed) out.set(p.w.data, 8 + padded + p.begin);
  return out;
}

/** Writes atomically (a temporary file beside the target, then a rename). */
export async function saveSafetensors(
  path: string,
  dict: StateDict,
  metadata?: Record<string, string>,
): Promise<void> {
  const bytes = serializeSafetensors(dict, metadata);
  const tmp = `${path}.tmp-${Deno.pid}-${Date.now()}`;
  try {
    await Deno.writeFile(tmp, bytes);
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
}
