/**
 * PyTorch zip checkpoints: `torch.save` state dicts and TorchScript archives (`torch.jit.save`,
 * the format of OpenAI's released CLIP `.pt` files).
 *
 * Both are zips whose entries sit under one top folder of varying name: `data.pkl` (the pickled
 * object), `data/<key>` (one raw little-endian storage per key), `version`; TorchScript adds
 * `code/` (source, ignored), `constants.pkl` + `constants/<key>` (traced constants). The pickle is
 * read by the restricted unpickler with a whitelist of the globals a checkpoint needs: tensor
 * rebuilders, storage types, `collections.OrderedDict`, and — as inert placeholders —
 * TorchScript's `__torch__.*` module classes. Anything else is refused before it could be applied.
 *
 * Tensors are materialised row-major contiguous (strided copy for views with offsets or
 * permuted/expanded strides; a zero-copy view of the storage when already contiguous).
 * A TorchScript module tree is walked by attribute path (`visual.transformer.resblocks.0.attn.
 * in_proj_weight`), which yields the names of the module's state dict.
 */
import { zipEntries, type ZipEntry, zipEntryBytes } from "./zip.ts";
import {
  DTYPE_BYTES,
  type HostWeight,
  numelOf,
  type StateDict,
  type WeightDType,
  WeightsError,
} from "./dtypes.ts";
import { inertClass, isPyTuple, PickleError, type PyGlobal, PyObject, unpickle } from "./pickle.ts";

/** torch.<X>Storage → dtype. */
const STORAGE_DTYPES: Record<string, WeightDType> = {
  DoubleStorage: "F64",
  FloatStorage: "F32",
  HalfStorage: "F16",
  BFloat16Storage: "BF16",
  LongStorage: "I64",
  IntStorage: "I32",
  ShortStorage: "I16",
  CharStorage: "I8",
  ByteStorage: "U8",
  BoolStorage: "BOOL",
  UntypedStorage: "U8",
  Float8_e4m3fnStorage: "F8_E4M3",
  Float8_e5m2Storage: "F8_E5M2",
};

interface StorageType extends PyGlobal {
  dtype: WeightDType;
}

/** A tensor decoded from a pickle (structurally a HostWeight). */
export class TorchTensor implements HostWeight {
  constructor(
    public dtype: WeightDType,
    public shape: number[],
    public data: Uint8Array,
    public requiresGrad = false,
  ) {}
}

interface StorageRef {
  dtype: WeightDType;
  key: string;
  numel: number;
  bytes: Uint8Array;
}

export interface TorchCheckpoint {
  kind: "state_dict" | "torchscript";
  /** The tensors by name (state dict keys, or attribute paths of a TorchScript module tree). */
  tensors: StateDict;
  /** TorchScript only: the tensors of constants.pkl, in order (traced constants, not weights). */
  constants: HostWeight[];
  /** The decoded top-level object (Maps, arrays, PyObjects, TorchTensors). */
  root: unknown;
}

const isZip = (b: Uint8Array) => b.length >= 4 && b[0] === 0x50 && b[1] === 0x4b;
export { isZip as looksLikeZip };

/** The globals a checkpoint may reference; everything else is refused. */
function torchGlobals(file: string) {
  const tensorRebuilders = new Set<PyGlobal>();
  const markers = new Map<string, PyGlobal>();
  const fns = new Map<string, PyGlobal>();
  const fn = (module: string, name: string, call: (a: readonly unknown[]) => unknown) => {
    const g: PyGlobal = { module, name, call };
    fns.set(`${module}.${name}`, g);
    return g;
  };
  const int = (x: unknown, what: string): number => {
    if (typeof x !== "number" || !Number.isSafeInteger(x) || x < 0) {
      throw new WeightsError(file, `${what} is ${String(x)}, expected a non-negative integer`);
    }
    return x;
  };
  const ints = (x: unknown, what: string): number[] => {
    if (!Array.isArray(x)) throw new WeightsError(file, `${what} is not a tuple of integers`);
    return x.map((v, i) => int(v, `${what}[${i}]`));
  };
  const rebuild = (a: readonly unknown[], name: string) => {
    if (a.length < 4) throw new WeightsError(file, `${name} called with ${a.length} arguments`);
    const st = a[0] as StorageRef;
    if (typeof st !== "object" || st === null || !(st.bytes instanceof Uint8Array)) {
      throw new WeightsError(file, `${name}: first argument is not a storage`);
    }
    const shape = ints(a[2], "tensor size"), strides = ints(a[3], "tensor stride");
    return new TorchTensor(
      st.dtype,
      shape,
      materialise(st, int(a[1], "storage offset"), shape, strides, file),
      a[4] === true,
    );
  };
  tensorRebuilders.add(
    fn("torch._utils", "_rebuild_tensor_v2", (a) => rebuild(a, "_rebuild_tensor_v2")),
  );
  tensorRebuilders.add(fn("torch._utils", "_rebuild_tensor", (a) => rebuild(a, "_rebuild_tensor")));
  const param = (a: readonly unknown[]) => {
    if (!(a[0] instanceof TorchTensor)) {
      throw new WeightsError(file, "_rebuild_parameter: first argument is not a tensor");
    }
    a[0].requiresGrad = a[1] === true;
    return a[0];
  };
  tensorRebuilders.add(fn("torch._utils", "_rebuild_parameter", param));
  tensorRebuilders.add(fn("torch._utils", "_rebuild_parameter_with_state", param));
  // tensor subclasses: _rebuild_from_type_v2(func, type, args, state), allowed for plain types
  for (
    const [m, n] of [["torch", "Tensor"], ["torch._tensor", "Tensor"], [
      "torch.nn.parameter",
      "Parameter",
    ]]
  ) {
    markers.set(`${m}.${n}`, { module: m, name: n });
  }
  fn("torch._tensor", "_rebuild_from_type_v2", (a) => {
    const f = a[0] as PyGlobal, t = a[1] as PyGlobal;
    if (!tensorRebuilders.has(f) || ![...markers.values()].includes(t) || !isPyTuple(a[2])) {
      throw new WeightsError(file, "_rebuild_from_type_v2 with an unsupported function or type");
    }
    return f.call!(a[2]);
  });
  fn("collections", "OrderedDict", (a) => {
    const m = new Map();
    if (a.length && Array.isArray(a[0])) { for (const kv of a[0]) m.set(kv[0], kv[1]); }
    return m;
  });
  // TorchScript's typed containers: the annotation does not change the value
  for (
    const n of [
      "build_intlist",
      "build_doublelist",
      "build_boollist",
      "build_tensorlist",
      "build_genericlist",
    ]
  ) {
    fn("torch.jit._pickle", n, (a) => a[0]);
  }
  fn("torch.jit._pickle", "restore_type_tag", (a) => a[0]);
  // protocol-2 pickles spell bytes as _codecs.encode(str, "latin1")
  fn("_codecs", "encode", (a) => {
    if (typeof a[0] !== "string" || (a[1] !== "latin1" && a[1] !== "latin-1")) {
      throw new WeightsError(file, "_codecs.encode is allowed only for latin1 bytes");
    }
    return Uint8Array.from(a[0], (c) => c.charCodeAt(0));
  });

  return (module: string, name: string): PyGlobal => {
    const key = `${module}.${name}`;
    const f = fns.get(key) ?? markers.get(key);
    if (f) return f;
    if (module === "torch" && Object.hasOwn(STORAGE_DTYPES, name)) {
      return { module, name, dtype: STORAGE_DTYPES[name] } as StorageType;
    }
    if (module === "__torch__" || module.startsWith("__torch__.")) return inertClass(module, name);
    throw new PickleError(
      `refusing to load global ${module}.${name} from ${file}: a checkpoint may only reference ` +
        "torch tensor rebuilders and storage types, collections.OrderedDict and TorchScript " +
        "__torch__.* classes (nothing is ever executed)",
    );
  };
}

/**
 * Copies the tensor (storage offset, shape, strides in elements) out of its storage as row-major
 * contiguous bytes; a view of the storage when it already is.
 */
export function materialise(
  st: StorageRef,
  offset: number,
  shape: number[],
  strides: number[],
  file = "<torch>",
): Uint8Array {
  const es = DTYPE_BYTES[st.dtype];
  if (shape.length !== strides.length) {
    throw new WeightsError(file, `tensor size [${shape}] and stride [${strides}] differ in rank`);
  }
  const n = numelOf(shape);
  if (n === 0) return new Uint8Array(0);
  let last = offset;
  for (let d = 0; d < shape.length; d++) last += (shape[d] - 1) * strides[d];
  const avail = Math.min(st.numel, Math.floor(st.bytes.length / es));
  if (last >= avail) {
    throw new WeightsError(
      file,
      `tensor of size [${shape}], stride [${strides}], offset ${offset} reaches element ${last} ` +
        `of storage "${st.key}", which holds ${avail} ${st.dtype} elements`,
    );
  }
  let contiguous = true;
  for (let d = shape.length - 1, expect = 1; d >= 0; d--) {
    if (shape[d] !== 1 && strides[d] !== expect) contiguous = false;
    expect *= shape[d];
  }
  if (contiguous) return st.bytes.subarray(offset * es, (offset + n) * es);

  // Strided gather in words of up to 4 bytes (an 8-byte element is two words).
  const w = st.bytes.byteOffset % Math.min(es, 4) === 0 ? Math.min(es, 4) : 1;
  const k = es / w;
  const C = w === 4 ? Uint32Array : w === 2 ? Uint16Array : Uint8Array;
  const src = new C(st.bytes.buffer as ArrayBuffer, st.bytes.byteOffset, st.bytes.length / w);
  const out = new Uint8Array(n * es);
  const dst = new C(out.buffer);
  const rank = shape.length, inner = shape[rank - 1], is = strides[rank - 1] * k;
  const idx = new Array(rank).fill(0);
  let base = offset * k, o = 0;
  for (;;) {
    for (let j = 0, s = base; j < inner; j++, s += is) {
      for (let q = 0; q < k; q++) dst[o++] = src[s + q];
    }
    // advance the outer index (odometer over dims 0..rank-2)
    let d = rank - 2;
    for (; d >= 0; d--) {
      idx[d]++;
      base += strides[d] * k;
      if (idx[d] < shape[d]) break;
      base -= shape[d] * strides[d] * k;
      idx[d] = 0;
    }
    if (d < 0) break;
  }
  return out;
}

type Entries = Record<string, Uint8Array>;

function decodePickle(
  entries: Entries,
  prefix: string,
  pkl: "data" | "constants",
  file: string,
): unknown {
  const findGlobal = torchGlobals(file);
  const storages = new Map<string, Uint8Array>();
  const persistentLoad = (pid: unknown): StorageRef => {
    if (!isPyTuple(pid) || pid.length < 5 || pid[0] !== "storage") {
      throw new WeightsError(
        file,
        `${pkl}.pkl: unsupported persistent id (expected ('storage', type, key, location, numel))`,
      );
    }
    const [, type, key, , numel] = pid;
    const dtype = (type as StorageType)?.dtype;
    if (!dtype) throw new WeightsError(file, `${pkl}.pkl: persistent id with a non-storage type`);
    if (
      typeof key !== "string" || typeof numel !== "number" || !Number.isSafeInteger(numel) ||
      numel < 0
    ) {
      throw new WeightsError(file, `${pkl}.pkl: malformed storage id for key ${String(key)}`);
    }
    const entry = `${prefix}${pkl}/${key}`;
    let bytes = storages.get(key);
    if (!bytes) {
      bytes = entries[entry];
      if (!bytes) throw new WeightsError(file, `storage ${pkl}/${key} is missing from the archive`);
      storages.set(key, bytes);
    }
    if (bytes.length < numel * DTYPE_BYTES[dtype]) {
      throw new WeightsError(
        file,
        `storage ${pkl}/${key} holds ${bytes.length} bytes, but the pickle declares ${numel} ` +
          `${dtype} elements (${numel * DTYPE_BYTES[dtype]} bytes): the archive is truncated`,
      );
    }
    return { dtype, key, numel, bytes };
  };
  return unpickle(entries[`${prefix}${pkl}.pkl`], {
    findGlobal,
    persistentLoad,
    // an OrderedDict's own attributes (state_dict()._metadata) carry no tensors
    build: (obj, state) => {
      if (!(obj instanceof Map)) {
        throw new WeightsError(file, `${pkl}.pkl: BUILD on an unsupported object`);
      }
      void state;
    },
    source: `${file} (${prefix}${pkl}.pkl)`,
  });
}

/** Collects the tensors below `root` by dotted path (dict keys, object attributes, list indices). */
export function collectTensors(root: unknown, file = "<torch>"): StateDict {
  const out: StateDict = new Map();
  const path: unknown[] = [];
  const walk = (v: unknown, name: string) => {
    if (v instanceof TorchTensor) {
      if (out.has(name)) throw new WeightsError(file, "appears twice", name);
      out.set(name, { dtype: v.dtype, shape: v.shape, data: v.data });
      return;
    }
    if (typeof v !== "object" || v === null) return;
    if (path.includes(v)) throw new WeightsError(file, "the object graph has a cycle", name);
    path.push(v);
    const join = (k: string) => (name ? `${name}.${k}` : k);
    if (v instanceof Map) {
      for (const [k, x] of v) {
        if (typeof k === "string" || typeof k === "number") walk(x, join(String(k)));
      }
    } else if (v instanceof PyObject) {
      walk(v.state, name);
    } else if (Array.isArray(v)) {
      v.forEach((x, i) => walk(x, join(String(i))));
    }
    path.pop();
  };
  walk(root, "");
  return out;
}

const hasTensor = (m: Map<unknown, unknown>) =>
  [...m.values()].some((v) => v instanceof TorchTensor);

/** Reads a torch.save / torch.jit.save zip archive from its bytes. */
export function parseTorchZip(bytes: Uint8Array, file = "<torch>"): TorchCheckpoint {
  // entries in place: a stored entry (PyTorch writes them stored, 64-byte aligned) is a view of
  // `bytes`, so a checkpoint is not held twice; TorchScript source and debug info are never read
  const readAt = (pos: number, len: number) => bytes.subarray(pos, pos + len);
  let all: Map<string, ZipEntry>;
  try {
    all = zipEntries(bytes.length, readAt);
  } catch (e) {
    throw new WeightsError(file, `not a readable zip archive (${(e as Error).message})`);
  }
  const names = [...all.keys()];
  const entries: Entries = {};
  for (const [name, e] of all) {
    if (/(^|\/)code\//.test(name) || name.endsWith(".debug_pkl") || name.endsWith("/")) continue;
    let b: Uint8Array;
    try {
      b = zipEntryBytes(e, readAt, bytes.length, false);
    } catch (err) {
      throw new WeightsError(file, `zip archive: ${(err as Error).message}`);
    }
    // typed views of a tensor need its alignment: copy an entry that lies at an odd offset
    entries[name] = b.byteOffset % 8 ? b.slice() : b;
  }
  const pkls = names.filter((n) => /^([^/]+\/)?data\.pkl$/.test(n));
  if (pkls.length !== 1) {
    const shown = names.slice(0, 8).join(", ") + (names.length > 8 ? ", ..." : "");
    throw new WeightsError(
      file,
      pkls.length
        ? `zip archive holds ${pkls.length} data.pkl files (${pkls.join(", ")})`
        : `zip archive without data.pkl: not a PyTorch checkpoint (entries: ${shown || "none"})`,
    );
  }
  const prefix = pkls[0].slice(0, -"data.pkl".length);
  const order = entries[`${prefix}byteorder`];
  if (order && new TextDecoder().decode(order).trim() !== "little") {
    throw new WeightsError(file, "big-endian checkpoints are not supported");
  }
  const torchscript = names.some((n) => n.startsWith(`${prefix}code/`)) ||
    `${prefix}constants.pkl` in entries;

  const root = decodePickle(entries, prefix, "data", file);
  const constants: HostWeight[] = [];
  if (torchscript && `${prefix}constants.pkl` in entries) {
    const c = decodePickle(entries, prefix, "constants", file);
    for (const t of collectTensors(c, file).values()) constants.push(t);
  }

  let top = root;
  // training checkpoints wrap the weights: {"epoch": ..., "state_dict": {...}, "optimizer": ...}
  if (top instanceof Map && !hasTensor(top)) {
    const sd = top.get("state_dict");
    if (sd instanceof Map && hasTensor(sd)) top = sd;
  }
  if (!torchscript && !(top instanceof Map)) {
    throw new WeightsError(file, "data.pkl does not hold a dict of tensors");
  }
  const tensors = collectTensors(top, file);
  if (tensors.size === 0) throw new WeightsError(file, "the checkpoint holds no tensors");
  return { kind: torchscript ? "torchscript" : "state_dict", tensors, constants, root };
}

export async function readTorchZip(path: string): Promise<TorchCheckpoint> {
  return parseTorchZip(await Deno.readFile(path), path);
}
