/**
 * A restricted unpickler: it decodes the data structures of a pickle (protocols 0–5, the opcodes
 * torch.save and torch.jit.save emit) and never executes anything. Every GLOBAL / STACK_GLOBAL is
 * passed to the caller's `findGlobal`, which either returns an inert stand-in (a JS function over
 * already-decoded values, or a placeholder class) or throws; REDUCE / NEWOBJ / BUILD only ever
 * apply those stand-ins.
 *
 * Python values map to: None → null, bool → boolean, int → number (bigint beyond 2^53), float →
 * number, str → string, bytes → Uint8Array, list → array, tuple → frozen array, dict → Map,
 * set → Set, instances of placeholder classes → PyObject.
 */

export class PickleError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "PickleError";
  }
}

/** What a GLOBAL resolves to. Without `call`/`construct`, REDUCE/NEWOBJ on it are refused. */
export interface PyGlobal {
  readonly module: string;
  readonly name: string;
  /** REDUCE: callable(*args) */
  call?(args: readonly unknown[]): unknown;
  /** NEWOBJ / NEWOBJ_EX: cls.__new__(cls, *args) */
  construct?(args: readonly unknown[]): unknown;
}

/** An instance of a placeholder class; BUILD stores its state (usually a Map of attributes). */
export class PyObject {
  state: unknown = undefined;
  constructor(public readonly cls: PyGlobal, public readonly args: readonly unknown[]) {}
  get qualname() {
    return `${this.cls.module}.${this.cls.name}`;
  }
}

/** A placeholder class: instances record their arguments and state, nothing else. */
export function inertClass(module: string, name: string): PyGlobal {
  const cls: PyGlobal = {
    module,
    name,
    call: (args) => new PyObject(cls, args),
    construct: (args) => new PyObject(cls, args),
  };
  return cls;
}

export interface UnpickleOptions {
  /** Resolves a global; throw to refuse it. */
  findGlobal(module: string, name: string): PyGlobal;
  /** BINPERSID / PERSID; absent → refused. */
  persistentLoad?(pid: unknown): unknown;
  /** Called for BUILD on values that are not PyObjects (e.g. an OrderedDict's attributes). */
  build?(obj: unknown, state: unknown): void;
  /** Names the source in errors. */
  source?: string;
}

const isTuple = (x: unknown): x is readonly unknown[] => Array.isArray(x) && Object.isFrozen(x);
const tuple = (items: unknown[]): readonly unknown[] => Object.freeze(items);

export const isPyTuple = isTuple;

function describe(x: unknown): string {
  if (x === null) return "None";
  if (x instanceof PyObject) return `${x.qualname} object`;
  if (isTuple(x)) return "tuple";
  if (Array.isArray(x)) return "list";
  if (x instanceof Map) return "dict";
  if (x instanceof Uint8Array) return "bytes";
  if (typeof x === "object" && "module" in x && "name" in x) {
    const g = x as PyGlobal;
    return `${g.module}.${g.name}`;
  }
  return typeof x;
}

const OPNAMES: Record<number, string> = {
  0x28: "MARK",
  0x2e: "STOP",
  0x30: "POP",
  0x31: "POP_MARK",
  0x32: "DUP",
  0x46: "FLOAT",
  0x49: "INT",
  0x4a: "BININT",
  0x4b: "BININT1",
  0x4c: "LONG",
  0x4d: "BININT2",
  0x4e: "NONE",
  0x50: "PERSID",
  0x51: "BINPERSID",
  0x52: "REDUCE",
  0x53: "STRING",
  0x54: "BINSTRING",
  0x55: "SHORT_BINSTRING",
  0x56: "UNICODE",
  0x58: "BINUNICODE",
  0x61: "APPEND",
  0x62: "BUILD",
  0x63: "GLOBAL",
  0x64: "DICT",
  0x7d: "EMPTY_DICT",
  0x65: "APPENDS",
  0x67: "GET",
  0x68: "BINGET",
  0x69: "INST",
  0x6a: "LONG_BINGET",
  0x6c: "LIST",
  0x5d: "EMPTY_LIST",
  0x6f: "OBJ",
  0x70: "PUT",
  0x71: "BINPUT",
  0x72: "LONG_BINPUT",
  0x73: "SETITEM",
  0x74: "TUPLE",
  0x29: "EMPTY_TUPLE",
  0x75: "SETITEMS",
  0x47: "BINFLOAT",
  0x80: "PROTO",
  0x81: "NEWOBJ",
  0x82: "EXT1",
  0x83: "EXT2",
  0x84: "EXT4",
  0x85: "TUPLE1",
  0x86: "TUPLE2",
  0x87: "TUPLE3",
  0x88: "NEWTRUE",
  0x89: "NEWFALSE",
  0x8a: "LONG1",
  0x8b: "LONG4",
  0x42: "BINBYTES",
  0x43: "SHORT_BINBYTES",
  0x8c: "SHORT_BINUNICODE",
  0x8d: "BINUNICODE8",
  0x8e: "BINBYTES8",
  0x8f: "EMPTY_SET",
  0x90: "ADDITEMS",
  0x91: "FROZENSET",
  0x92: "NEWOBJ_EX",
  0x93: "STACK_GLOBAL",
  0x94: "MEMOIZE",
  0x95: "FRAME",
  0x96: "BYTEARRAY8",
  0x97: "NEXT_BUFFER",
  0x98: "READONLY_BUFFER",
};

/** Little-endian two's complement integer of any length; a number when it is exactly one. */
function decodeLong(b: Uint8Array): number | bigint {
  if (b.length === 0) return 0;
  let v = 0n;
  for (let i = b.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]);
  if (b[b.length - 1] & 0x80) v -= 1n << BigInt(8 * b.length);
  return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER)
    ? Number(v)
    : v;
}

export function unpickle(data: Uint8Array, opts: UnpickleOptions): unknown {
  const src = opts.source ?? "<pickle>";
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const utf8 = new TextDecoder("utf-8", { fatal: true });
  let pos = 0;
  let op = 0, opPos = 0;
  let stack: unknown[] = [];
  const marks: unknown[][] = [];
  const memo = new Map<number, unknown>();

  const fail = (msg: string): never => {
    const name = OPNAMES[op] ?? `0x${op.toString(16).padStart(2, "0")}`;
    throw new PickleError(`${src}: pickle opcode ${name} at byte ${opPos}: ${msg}`);
  };
  const need = (n: number) => {
    if (n < 0 || pos + n > data.length) fail(`needs ${n} bytes, ${data.length - pos} remain`);
  };
  const take = (n: number) => {
    need(n);
    const s = data.subarray(pos, pos + n);
    pos += n;
    return s;
  };
  const u8 = () => (need(1), data[pos++]);
  const u16 = () => (need(2), (pos += 2), view.getUint16(pos - 2, true));
  const u32 = () => (need(4), (pos += 4), view.getUint32(pos - 4, true));
  const i32 = () => (need(4), (pos += 4), view.getInt32(pos - 4, true));
  const u64 = () => {
    need(8);
    const v = view.getBigUint64(pos, true);
    pos += 8;
    if (v > BigInt(data.length)) fail(`length ${v} exceeds the pickle's size`);
    return Number(v);
  };
  const line = () => {
    const end = data.indexOf(0x0a, pos);
    if (end < 0) fail("unterminated text argument");
    const s = new TextDecoder("latin1").decode(data.subarray(pos, end));
    pos = end + 1;
    return s;
  };
  const str = (n: number) => {
    try {
      return utf8.decode(take(n));
    } catch (e) {
      if (e instanceof PickleError) throw e;
      return fail("string is not valid UTF-8");
    }
  };
  // `stack` is rebound by MARK / popMark, so never write `stack.push(f())` where f pops a mark
  const push = (v: unknown) => void stack.push(v);
  const pop = () => {
    if (stack.length === 0) fail("stack underflow");
    return stack.pop();
  };
  const top = () => {
    if (stack.length === 0) fail("stack underflow");
    return stack[stack.length - 1];
  };
  const popMark = () => {
    const items = stack;
    const prev = marks.pop();
    if (!prev) fail("no MARK on the stack");
    stack = prev!;
    return items;
  };
  const get = (i: number) => {
    if (!memo.has(i)) fail(`memo slot ${i} is empty`);
    return memo.get(i);
  };
  const list = (x: unknown): unknown[] => {
    if (!Array.isArray(x) || isTuple(x)) fail(`expected a list, got ${describe(x)}`);
    return x as unknown[];
  };
  const dict = (x: unknown): Map<unknown, unknown> => {
    if (!(x instanceof Map)) fail(`expected a dict, got ${describe(x)}`);
    return x as Map<unknown, unknown>;
  };
  const args = (x: unknown): readonly unknown[] => {
    if (!isTuple(x)) fail(`expected an argument tuple, got ${describe(x)}`);
    return x as readonly unknown[];
  };
  const callable = (x: unknown, how: "call" | "construct"): PyGlobal => {
    const g = x as PyGlobal;
    if (typeof x !== "object" || x === null || typeof g[how] !== "function") {
      fail(`${describe(x)} cannot be ${how === "call" ? "called" : "instantiated"} here`);
    }
    return g;
  };
  const global = (module: string, name: string) => opts.findGlobal(module, name);

  for (;;) {
    opPos = pos;
    if (pos >= data.length) {
      op = 0;
      fail("pickle ends without STOP");
    }
    op = data[pos++];
    switch (op) {
      case 0x80: // PROTO
        if (u8() > 5) fail("unsupported pickle protocol");
        break;
      case 0x95: // FRAME: framing is only a read-ahead hint
        u64();
        break;
      case 0x2e: // STOP
        if (marks.length) fail("MARK left open at STOP");
        if (stack.length !== 1) fail(`${stack.length} values on the stack at STOP, expected 1`);
        return stack[0];
      case 0x28: // MARK
        marks.push(stack);
        stack = [];
        break;
      case 0x30: // POP
        pop();
        break;
      case 0x31: // POP_MARK
        popMark();
        break;
      case 0x32: // DUP
        stack.push(top());
        break;

      case 0x4e: // NONE
        stack.push(null);
        break;
      case 0x88: // NEWTRUE
        stack.push(true);
        break;
      case 0x89: // NEWFALSE
        stack.push(false);
        break;
      case 0x4a: // BININT
        stack.push(i32());
        break;
      case 0x4b: // BININT1
        stack.push(u8());
        break;
      case 0x4d: // BININT2
        stack.push(u16());
        break;
      case 0x8a: // LONG1
        stack.push(decodeLong(take(u8())));
        break;
      case 0x8b: { // LONG4
        const n = i32();
        if (n < 0) fail("negative length");
        stack.push(decodeLong(take(n)));
        break;
      }
      case 0x49: { // INT (text); I00 / I01 are False / True
        const s = line().trim();
        if (s === "00" || s === "01") stack.push(s === "01");
        else if (/^[-+]?\d+$/.test(s)) {
          const v = BigInt(s);
          stack.push(
            v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER)
              ? Number(v)
              : v,
          );
        } else fail(`invalid integer ${JSON.stringify(s)}`);
        break;
      }
      case 0x4c: { // LONG (text)
        const s = line().trim().replace(/L$/, "");
        if (!/^[-+]?\d+$/.test(s)) fail(`invalid integer ${JSON.stringify(s)}`);
        const v = BigInt(s);
        stack.push(
          v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER)
            ? Number(v)
            : v,
        );
        break;
      }
      case 0x47: // BINFLOAT (big-endian)
        need(8);
        stack.push(view.getFloat64(pos, false));
        pos += 8;
        break;
      case 0x46: { // FLOAT (text)
        const s = line().trim();
        const v = Number(s);
        if (Number.isNaN(v) && !/^[-+]?nan$/i.test(s)) fail(`invalid float ${JSON.stringify(s)}`);
        stack.push(v);
        break;
      }

      case 0x58: // BINUNICODE
        stack.push(str(u32()));
        break;
      case 0x8c: // SHORT_BINUNICODE
        stack.push(str(u8()));
        break;
      case 0x8d: // BINUNICODE8
        stack.push(str(u64()));
        break;
      case 0x54: { // BINSTRING: a Python 2 str, read as latin-1
        const n = i32();
        if (n < 0) fail("negative length");
        stack.push(new TextDecoder("latin1").decode(take(n)));
        break;
      }
      case 0x55: // SHORT_BINSTRING
        stack.push(new TextDecoder("latin1").decode(take(u8())));
        break;
      case 0x42: // BINBYTES
        stack.push(take(u32()).slice());
        break;
      case 0x43: // SHORT_BINBYTES
        stack.push(take(u8()).slice());
        break;
      case 0x8e: // BINBYTES8
      case 0x96: // BYTEARRAY8
        stack.push(take(u64()).slice());
        break;

      case 0x29: // EMPTY_TUPLE
        stack.push(tuple([]));
        break;
      case 0x85: // TUPLE1
        stack.push(tuple([pop()]));
        break;
      case 0x86: { // TUPLE2
        const b = pop(), a = pop();
        stack.push(tuple([a, b]));
        break;
      }
      case 0x87: { // TUPLE3
        const c = pop(), b = pop(), a = pop();
        stack.push(tuple([a, b, c]));
        break;
      }
      case 0x74: // TUPLE
        push(tuple(popMark()));
        break;
      case 0x5d: // EMPTY_LIST
        stack.push([]);
        break;
      case 0x6c: // LIST
        push(popMark());
        break;
      case 0x61: { // APPEND
        const v = pop();
        list(top()).push(v);
        break;
      }
      case 0x65: { // APPENDS
        const items = popMark();
        list(top()).push(...items);
        break;
      }
      case 0x7d: // EMPTY_DICT
        stack.push(new Map());
        break;
      case 0x64: { // DICT
        const items = popMark();
        if (items.length % 2) fail("odd number of items");
        const m = new Map();
        for (let i = 0; i < items.length; i += 2) m.set(items[i], items[i + 1]);
        stack.push(m);
        break;
      }
      case 0x73: { // SETITEM
        const v = pop(), k = pop();
        dict(top()).set(k, v);
        break;
      }
      case 0x75: { // SETITEMS
        const items = popMark();
        if (items.length % 2) fail("odd number of items");
        const m = dict(top());
        for (let i = 0; i < items.length; i += 2) m.set(items[i], items[i + 1]);
        break;
      }
      case 0x8f: // EMPTY_SET
        stack.push(new Set());
        break;
      case 0x90: { // ADDITEMS
        const items = popMark();
        const s = top();
        if (!(s instanceof Set)) fail(`expected a set, got ${describe(s)}`);
        for (const v of items) (s as Set<unknown>).add(v);
        break;
      }
      case 0x91: // FROZENSET
        push(new Set(popMark()));
        break;

      case 0x71: // BINPUT
        memo.set(u8(), top());
        break;
      case 0x72: // LONG_BINPUT
        memo.set(u32(), top());
        break;
      case 0x70: { // PUT (text)
        const s = line();
        if (!/^\d+$/.test(s)) fail("invalid memo index");
        memo.set(Number(s), top());
        break;
      }
      case 0x94: // MEMOIZE
        memo.set(memo.size, top());
        break;
      case 0x68: // BINGET
        stack.push(get(u8()));
        break;
      case 0x6a: // LONG_BINGET
        stack.push(get(u32()));
        break;
      case 0x67: { // GET (text)
        const s = line();
        if (!/^\d+$/.test(s)) fail("invalid memo index");
        stack.push(get(Number(s)));
        break;
      }

      case 0x63: { // GLOBAL "module\nname\n"
        const module = line(), name = line();
        stack.push(global(module, name));
        break;
      }
      case 0x93: { // STACK_GLOBAL
        const name = pop(), module = pop();
        if (typeof module !== "string" || typeof name !== "string") {
          fail("module and name must be strings");
        }
        stack.push(global(module as string, name as string));
        break;
      }
      case 0x52: { // REDUCE
        const a = args(pop()), f = callable(pop(), "call");
        stack.push(f.call!(a));
        break;
      }
      case 0x81: { // NEWOBJ
        const a = args(pop()), cls = callable(pop(), "construct");
        stack.push(cls.construct!(a));
        break;
      }
      case 0x92: { // NEWOBJ_EX
        const kw = pop(), a = args(pop()), cls = callable(pop(), "construct");
        if (!(kw instanceof Map) || kw.size) fail("keyword arguments are not supported");
        stack.push(cls.construct!(a));
        break;
      }
      case 0x62: { // BUILD
        const state = pop(), obj = top();
        if (obj instanceof PyObject) obj.state = state;
        else if (opts.build) opts.build(obj, state);
        else fail(`cannot set the state of a ${describe(obj)}`);
        break;
      }
      case 0x51: { // BINPERSID
        if (!opts.persistentLoad) fail("persistent ids are not allowed here");
        stack.push(opts.persistentLoad!(pop()));
        break;
      }
      case 0x50: { // PERSID (text)
        if (!opts.persistentLoad) fail("persistent ids are not allowed here");
        stack.push(opts.persistentLoad!(line()));
        break;
      }

      default:
        // INST, OBJ, EXT*, STRING, UNICODE, NEXT_BUFFER, READONLY_BUFFER and unknown bytes
        fail("not supported by this restricted unpickler");
    }
  }
}
