/**
 * Seeded splits of a dataset for the evaluation protocols (/work/shared/methods/PROTOCOLS.md),
 * saved as files with a checksum so a run can be repeated exactly.
 *
 * Determinism: every draw comes from `hostRng(seed)` (Philox, engine/ops/random.ts), never from
 * Math.random, and the sampler only sees the items sorted by path in byte order and grouped by
 * label (and domain) in a fixed order, so a split depends only on the sorted item list and the
 * seed: the same on any machine and whatever the order the dataset's items came in.
 *
 * Few-shot and base-to-new pools. With an official split (manifest `split` column) the train
 * pool is the "train" items, validation is drawn from the "val" items (or, when there are none,
 * from the rest of the train pool) and the test set is the "test" items. Without one, each class
 * is first partitioned with `hostRng(partitionSeed)` (default 0, independent of `seed` and K):
 * round(testFraction·n) images (default 30%, as Zhou et al.'s 50/20/30 splits) form the test
 * set and the rest the train pool; then `hostRng(seed)` draws K + min(K, 4) distinct images per
 * class from the pool, the first K for training and the rest for validation. The test set is
 * thus the same for every seed and K, and disjoint from every draw. A class with fewer than K
 * pool images is an error; one short of validation images gives validation what is left.
 *
 * Test-split guard: a Split exposes its test items only through `takeTest(reason)`, which logs
 * the read in `testReads`; `seal()` makes `takeTest` throw until `unseal()`, and
 * `assertTestUnread(context)` throws when the test split was read. The guard lives on the
 * object: a split loaded again from its file starts with no reads.
 */
import { type HostRng, hostRng } from "../engine/ops/random.ts";
import {
  byteCompare,
  canonicalJson,
  DataError,
  type Dataset,
  datasetDigest,
  type Item,
  sha256,
} from "./data.ts";

export type Protocol = "few-shot" | "base-to-new" | "leave-one-domain-out";

/** Items of a split: a dataset item's path, its label in this split's class list, its domain. */
export interface SplitItem {
  path: string;
  label: number;
  domain?: string;
}

/** One test set, with the class list its labels index. */
export interface TestSet {
  name: string;
  classnames: string[];
  items: readonly SplitItem[];
}

/** The saved content of a split (the checksum covers exactly this). */
export interface SplitContent {
  format: typeof FORMAT;
  protocol: Protocol;
  seed: number;
  options: Record<string, string | number | boolean | null>;
  /** datasetDigest of the dataset the split was drawn from. */
  dataset: string;
  /** Class names of train and val labels. */
  classnames: string[];
  train: SplitItem[];
  val: SplitItem[];
  test: TestSet[];
}

const FORMAT = "clipkit-split/1";
const PROTOCOLS: Protocol[] = ["few-shot", "base-to-new", "leave-one-domain-out"];

export class TestSplitError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TestSplitError";
  }
}

const hidden = new WeakMap<Split, TestSet[]>();

const freezeItems = (a: SplitItem[]): readonly SplitItem[] =>
  Object.freeze(a.map((i) => Object.freeze({ ...i })));

/** A split; the test sets are reachable only through `takeTest`. */
export class Split {
  readonly protocol: Protocol;
  readonly seed: number;
  readonly options: Readonly<Record<string, string | number | boolean | null>>;
  readonly dataset: string;
  readonly classnames: readonly string[];
  readonly train: readonly SplitItem[];
  readonly val: readonly SplitItem[];
  /** Names and sizes of the test sets (not their items). */
  readonly tests: readonly { name: string; size: number }[];
  /** "sha256:<hex>" of the canonical content. */
  readonly checksum: string;
  #reads: string[] = [];
  #sealed = false;

  constructor(c: SplitContent) {
    this.protocol = c.protocol;
    this.seed = c.seed;
    this.options = Object.freeze({ ...c.options });
    this.dataset = c.dataset;
    this.classnames = Object.freeze([...c.classnames]);
    this.train = freezeItems(c.train);
    this.val = freezeItems(c.val);
    const tests = c.test.map((t) =>
      Object.freeze({
        name: t.name,
        classnames: Object.freeze([...t.classnames]) as string[],
        items: freezeItems([...t.items]),
      })
    );
    hidden.set(this, tests);
    this.tests = Object.freeze(
      tests.map((t) => Object.freeze({ name: t.name, size: t.items.length })),
    );
    this.checksum = checksumOf(contentOf(this));
  }

  /** The reasons given by each read of the test split, in order. */
  get testReads(): readonly string[] {
    return [...this.#reads];
  }

  get sealed(): boolean {
    return this.#sealed;
  }

  /** Makes `takeTest` throw until `unseal()` (for the whole of training and model selection). */
  seal(): this {
    this.#sealed = true;
    return this;
  }

  unseal(): this {
    this.#sealed = false;
    return this;
  }

  /** The test sets; records the read with its reason. Throws while sealed. */
  takeTest(reason: string): TestSet[] {
    if (typeof reason !== "string" || !reason.trim()) {
      throw new TestSplitError('takeTest needs a reason (e.g. "final evaluation")');
    }
    if (this.#sealed) {
      throw new TestSplitError(
        `test split of ${this.protocol} split ${this.checksum} read while sealed (${reason})`,
      );
    }
    this.#reads.push(reason);
    return [...hidden.get(this)!];
  }

  /** Throws when the test split has been read (e.g. before the final evaluation). */
  assertTestUnread(context = "before the final evaluation"): void {
    if (this.#reads.length) {
      throw new TestSplitError(
        `test split was read ${this.#reads.length} time(s) ${context}: ${this.#reads.join("; ")}`,
      );
    }
  }
}

function contentOf(s: Split): SplitContent {
  const strip = (a: readonly SplitItem[]) =>
    a.map(({ path, label, domain }) => ({ path, label, domain }));
  return {
    format: FORMAT,
    protocol: s.protocol,
    seed: s.seed,
    options: { ...s.options },
    dataset: s.dataset,
    classnames: [...s.classnames],
    train: strip(s.train),
    val: strip(s.val),
    test: hidden.get(s)!.map((t) => ({
      name: t.name,
      classnames: [...t.classnames],
      items: strip(t.items),
    })),
  };
}

const checksumOf = (c: unknown) => "sha256:" + sha256(canonicalJson(c));

// ------------------------------------------------------------------------------------------------
// Sampling
// ------------------------------------------------------------------------------------------------

function checkInt(what: string, v: unknown, min: number): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < min) {
    throw new DataError("", `${what} must be an integer ≥ ${min}, got ${v}`);
  }
  return v;
}

function checkFraction(what: string, v: number): number {
  if (!(typeof v === "number" && v >= 0 && v < 1)) {
    throw new DataError("", `${what} must be in [0, 1), got ${v}`);
  }
  return v;
}

const byPath = (a: { path: string }, b: { path: string }) => byteCompare(a.path, b.path);
const toSplitItem = (i: Item, label = i.label): SplitItem =>
  i.domain === undefined ? { path: i.path, label } : { path: i.path, label, domain: i.domain };

/** Items per label, each group sorted by path. */
function groupByLabel(ds: Dataset, items: readonly Item[]): Item[][] {
  const g: Item[][] = ds.classnames.map(() => []);
  for (const it of items) {
    if (!(Number.isInteger(it.label) && it.label >= 0 && it.label < g.length)) {
      throw new DataError(
        it.path,
        `item ${it.path} has label ${it.label} outside the ${g.length} classes`,
      );
    }
    g[it.label].push(it);
  }
  for (const a of g) a.sort(byPath);
  return g;
}

/** k distinct items of `a` (in draw order). */
const draw = (rng: HostRng, a: Item[], k: number) => rng.sample(a.length, k).map((i) => a[i]);

interface PoolOptions {
  shots: number;
  seed: number;
  /** Validation images per class (default min(shots, 4)). */
  valShots?: number;
  /** Test fraction per class when the dataset has no official split (default 0.3). */
  testFraction?: number;
  /** Seed of that train/test partition (default 0). */
  partitionSeed?: number;
}

interface Drawn {
  train: Item[][];
  val: Item[][];
  test: Item[][];
  options: Record<string, string | number | boolean | null>;
}

/** Few-shot train/val draws for classes [0, nDraw) and the test items of every class. */
function drawFewShot(ds: Dataset, o: PoolOptions, nDraw: number): Drawn {
  const shots = checkInt("shots", o.shots, 1);
  const seed = checkInt("seed", o.seed, 0);
  const valShots = checkInt("valShots", o.valShots ?? Math.min(shots, 4), 0);
  const official = ds.items.some((i) => i.split !== undefined);
  const groups = groupByLabel(ds, ds.items);
  let pool: Item[][], valPool: Item[][] | null = null, test: Item[][];
  const options: Drawn["options"] = { shots, valShots };
  if (official) {
    const part = (s: string) => groups.map((g) => g.filter((i) => i.split === s));
    pool = part("train");
    test = part("test");
    const v = part("val");
    if (v.some((g) => g.length)) valPool = v;
    if (!test.some((g) => g.length)) {
      throw new DataError(ds.root, `dataset ${ds.root} has an official split but no test items`);
    }
    options.officialSplit = true;
  } else {
    const testFraction = checkFraction("testFraction", o.testFraction ?? 0.3);
    const partitionSeed = checkInt("partitionSeed", o.partitionSeed ?? 0, 0);
    const prng = hostRng(partitionSeed);
    pool = [];
    test = [];
    for (const g of groups) {
      const perm = prng.shuffle([...g]);
      const nTest = Math.round(g.length * testFraction);
      test.push(perm.slice(0, nTest).sort(byPath));
      pool.push(perm.slice(nTest).sort(byPath));
    }
    Object.assign(options, { officialSplit: false, testFraction, partitionSeed });
  }
  const rng = hostRng(seed);
  const train: Item[][] = [], val: Item[][] = [];
  for (let c = 0; c < nDraw; c++) {
    if (pool[c].length < shots) {
      throw new DataError(
        ds.root,
        `class ${JSON.stringify(ds.classnames[c])} has ${pool[c].length} images in the train ` +
          `pool, fewer than ${shots} shots`,
      );
    }
    // Validation takes what is left when a class is short of valShots (as CoOp does).
    if (valPool) {
      train.push(draw(rng, pool[c], shots));
      val.push(draw(rng, valPool[c], Math.min(valShots, valPool[c].length)));
    } else {
      const d = draw(rng, pool[c], Math.min(shots + valShots, pool[c].length));
      train.push(d.slice(0, shots));
      val.push(d.slice(shots));
    }
  }
  return { train, val, test, options };
}

const flat = (groups: Item[][], relabel = 0) =>
  groups.flat().map((i) => toSplitItem(i, i.label - relabel)).sort(byPath);

/**
 * K images per class for training and min(K, 4) for validation, disjoint, and the test set
 * (official, or the seeded partition described at the top of this file).
 */
export function fewShot(ds: Dataset, o: PoolOptions): Split {
  const d = drawFewShot(ds, o, ds.classnames.length);
  return new Split({
    format: FORMAT,
    protocol: "few-shot",
    seed: o.seed,
    options: d.options,
    dataset: datasetDigest(ds),
    classnames: [...ds.classnames],
    train: flat(d.train),
    val: flat(d.val),
    test: [{ name: "test", classnames: [...ds.classnames], items: flat(d.test) }],
  });
}

/**
 * Base-to-new: classes in label order, the first ceil(n/2) are base (labels kept, 0..b−1), the
 * rest new (relabelled from 0). Train and val draw K (default 16) and min(K, 4) per base class
 * (the same images the few-shot split with this seed draws for those classes); the test sets
 * "base" and "new" hold the test items of each half, with their own class lists.
 */
export function base2new(ds: Dataset, o: Omit<PoolOptions, "shots"> & { shots?: number }): Split {
  const n = ds.classnames.length;
  if (n < 2) {
    throw new DataError(ds.root, `base-to-new needs two classes or more, ${ds.root} has ${n}`);
  }
  const b = Math.ceil(n / 2);
  const d = drawFewShot(ds, { ...o, shots: o.shots ?? 16 }, b);
  const baseNames = ds.classnames.slice(0, b), newNames = ds.classnames.slice(b);
  return new Split({
    format: FORMAT,
    protocol: "base-to-new",
    seed: o.seed,
    options: { ...d.options, baseClasses: b },
    dataset: datasetDigest(ds),
    classnames: baseNames,
    train: flat(d.train),
    val: flat(d.val),
    test: [
      { name: "base", classnames: baseNames, items: flat(d.test.slice(0, b)) },
      { name: "new", classnames: newNames, items: flat(d.test.slice(b), b) },
    ],
  });
}

/**
 * Leave one domain out: the test set is every image of `target`; each (source domain, class)
 * group is shuffled with the seed and held out for validation: with `shots`, min(shots, 4)
 * images (CoOp's few-shot validation budget; never the whole group), otherwise
 * round(valFraction·n) (default 10%); an explicit `valFraction` always rules. The rest train
 * (at most `shots` per class per source domain when given). Groups
 * are shuffled in (domain, class) order for every domain, the target's included, so a source
 * domain's hold-out does not depend on which domain is the target.
 */
export function leaveOneDomainOut(
  ds: Dataset,
  o: { target: string; seed: number; shots?: number; valFraction?: number },
): Split {
  const seed = checkInt("seed", o.seed, 0);
  const shots = o.shots === undefined ? null : checkInt("shots", o.shots, 1);
  const valFraction = checkFraction("valFraction", o.valFraction ?? 0.1);
  // a few-shot run validates on a few-shot budget, as CoOp's does, unless a fraction is asked for
  const valShots = shots !== null && o.valFraction === undefined ? Math.min(shots, 4) : null;
  const domains = ds.domains;
  if (!domains?.length) throw new DataError(ds.root, `dataset ${ds.root} has no domains`);
  if (!domains.includes(o.target)) {
    throw new DataError(
      ds.root,
      `unknown target domain ${JSON.stringify(o.target)} in ${ds.root} (known: ${
        domains.join(", ")
      })`,
    );
  }
  if (domains.length < 2) {
    throw new DataError(ds.root, `leave-one-domain-out needs two domains or more`);
  }
  const byDomain = new Map(domains.map((d) => [d, [] as Item[]]));
  for (const it of ds.items) {
    const g = it.domain === undefined ? undefined : byDomain.get(it.domain);
    if (!g) throw new DataError(it.path, `item ${it.path} has no known domain (${it.domain})`);
    g.push(it);
  }
  const rng = hostRng(seed);
  const train: Item[] = [], val: Item[] = [], test: Item[] = [];
  for (const d of [...domains].sort(byteCompare)) {
    for (const g of groupByLabel(ds, byDomain.get(d)!)) {
      const perm = rng.shuffle([...g]);
      if (d === o.target) {
        test.push(...g);
        continue;
      }
      const nVal = valShots === null
        ? Math.round(g.length * valFraction)
        : Math.min(valShots, g.length - 1);
      val.push(...perm.slice(0, nVal));
      const rest = perm.slice(nVal);
      train.push(...(shots === null ? rest : rest.slice(0, shots)));
    }
  }
  return new Split({
    format: FORMAT,
    protocol: "leave-one-domain-out",
    seed,
    options: valShots === null
      ? { target: o.target, shots, valFraction }
      : { target: o.target, shots, valShots },
    dataset: datasetDigest(ds),
    classnames: [...ds.classnames],
    train: flat([train]),
    val: flat([val]),
    test: [{ name: o.target, classnames: [...ds.classnames], items: flat([test]) }],
  });
}

/** Throws unless `split` was drawn from this dataset listing. */
export function checkSplitDataset(split: Split, ds: Dataset): void {
  const d = datasetDigest(ds);
  if (d !== split.dataset) {
    throw new DataError(
      ds.root,
      `split ${split.checksum} was drawn from dataset ${split.dataset}, not ${ds.root} (${d})`,
    );
  }
}

// ------------------------------------------------------------------------------------------------
// Files
// ------------------------------------------------------------------------------------------------

/** Writes the split as JSON (one item per line) with its checksum. Does not count as a read. */
export async function saveSplit(path: string, split: Split): Promise<void> {
  const c = contentOf(split);
  const items = (a: SplitItem[], ind: string) =>
    a.length ? `[\n${a.map((i) => ind + "  " + JSON.stringify(i)).join(",\n")}\n${ind}]` : "[]";
  const lines = [
    `  "format": ${JSON.stringify(c.format)}`,
    `  "protocol": ${JSON.stringify(c.protocol)}`,
    `  "seed": ${c.seed}`,
    `  "options": ${JSON.stringify(c.options)}`,
    `  "dataset": ${JSON.stringify(c.dataset)}`,
    `  "classnames": ${JSON.stringify(c.classnames)}`,
    `  "train": ${items(c.train, "  ")}`,
    `  "val": ${items(c.val, "  ")}`,
    `  "test": [\n${
      c.test.map((t) =>
        `    {\n      "name": ${JSON.stringify(t.name)},\n      "classnames": ${
          JSON.stringify(t.classnames)
        },\n      "items": ${items(t.items as SplitItem[], "      ")}\n    }`
      ).join(",\n")
    }\n  ]`,
    `  "checksum": ${JSON.stringify(split.checksum)}`,
  ];
  await Deno.writeTextFile(path, `{\n${lines.join(",\n")}\n}\n`);
}

/** Reads a split file, verifying its checksum; a tampered file is refused, naming it. */
export async function loadSplit(path: string): Promise<Split> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new DataError(path, `cannot read split file ${path}: ${(e as Error).message}`);
  }
  const bad = (why: string): never => {
    throw new DataError(path, `split file ${path}: ${why}`);
  };
  let j: Record<string, unknown>;
  try {
    j = JSON.parse(text);
  } catch (e) {
    return bad(`not valid JSON (${(e as Error).message})`);
  }
  if (!j || typeof j !== "object" || Array.isArray(j)) return bad("not a JSON object");
  const { checksum, ...rest } = j;
  if (rest.format !== FORMAT) bad(`format ${JSON.stringify(rest.format)}, expected ${FORMAT}`);
  if (typeof checksum !== "string") bad("no checksum");
  const actual = checksumOf(rest);
  if (actual !== checksum) {
    bad(
      `checksum mismatch (stored ${checksum}, content ${actual}): the file was edited or corrupted`,
    );
  }
  const c = rest as unknown as SplitContent;
  const isNames = (a: unknown): a is string[] =>
    Array.isArray(a) && a.every((s) => typeof s === "string");
  const checkItems = (a: unknown, n: number, what: string) => {
    if (!Array.isArray(a)) bad(`${what} is not a list`);
    for (const i of a as SplitItem[]) {
      if (
        !i || typeof i.path !== "string" || !Number.isInteger(i.label) || i.label < 0 ||
        i.label >= n || (i.domain !== undefined && typeof i.domain !== "string")
      ) bad(`bad item in ${what}: ${JSON.stringify(i)}`);
    }
  };
  if (!PROTOCOLS.includes(c.protocol)) bad(`unknown protocol ${JSON.stringify(c.protocol)}`);
  if (!Number.isSafeInteger(c.seed)) bad("bad seed");
  if (!isNames(c.classnames)) bad("bad classnames");
  if (!c.options || typeof c.options !== "object") bad("bad options");
  if (typeof c.dataset !== "string") bad("bad dataset digest");
  checkItems(c.train, c.classnames.length, "train");
  checkItems(c.val, c.classnames.length, "val");
  if (!Array.isArray(c.test)) bad("test is not a list");
  for (const t of c.test) {
    if (!t || typeof t.name !== "string" || !isNames(t.classnames)) bad("bad test set");
    checkItems(t.items, t.classnames.length, `test set ${t.name}`);
  }
  const split = new Split(c);
  if (split.checksum !== checksum) bad("content does not round-trip (unexpected fields)");
  return split;
}
