// Datasets, splits and the sampler (host only: no GPU work).
import { type Zippable, zipSync } from "fflate";
import { assert, sharedDir } from "./util.ts";
import {
  byteCompare,
  crc32,
  DataError,
  type Dataset,
  datasetDigest,
  ImageCache,
  loadItemImage,
  readDataset,
  readFolder,
  readImageBytes,
  readImageBytesSync,
  readManifest,
  readZip,
} from "../pipeline/data.ts";
import {
  base2new,
  checkSplitDataset,
  fewShot,
  leaveOneDomainOut,
  loadSplit,
  saveSplit,
  type Split,
  type SplitItem,
  TestSplitError,
} from "../pipeline/splits.ts";

const PACS = sharedDir() + "data/PACS";
const pacs = readDataset(PACS);
const DOMAIN_COUNTS: Record<string, number> = {
  art_painting: 2048,
  cartoon: 2344,
  photo: 1670,
  sketch: 3929,
};
const CLASSES = ["dog", "elephant", "giraffe", "guitar", "horse", "house", "person"];

// Pinned so that any change of the sampling algorithm (or of the PACS listing) is visible.
const FEWSHOT_K4_SEED1 = "sha256:4372f67f7c5aa00227a78325c2635ed25965387b379b0007bb7656f808da1acb";

const keys = (a: readonly SplitItem[]) => a.map((i) => i.path);
const disjoint = (a: readonly SplitItem[], b: readonly SplitItem[]) => {
  const s = new Set(keys(a));
  return b.every((i) => !s.has(i.path));
};
const countBy = <T>(a: readonly T[], key: (t: T) => string) => {
  const m = new Map<string, number>();
  for (const t of a) m.set(key(t), (m.get(key(t)) ?? 0) + 1);
  return m;
};

function tmp(): string {
  return Deno.makeTempDirSync({ prefix: "clipkit_data_" });
}

const pacsBytes = (rel: string) => Deno.readFileSync(`${PACS}/${rel}`);
const pacsFiles = (rel: string, n: number) =>
  [...Deno.readDirSync(`${PACS}/${rel}`)].map((e) => e.name).sort(byteCompare).slice(0, n);

/**
 * A small class-folder dataset from PACS files: JPEGs and a grayscale PNG class, a class name with
 * an underscore, a nested folder, an upper-case extension, a comma in a name, and files to skip.
 * Returns the tree as a fflate Zippable (the same content) too.
 */
function makeToy(dir: string): Zippable {
  const tree: Record<string, Record<string, Uint8Array | Record<string, Uint8Array>>> = {
    dog: {},
    hot_dog: {},
    horse: {},
  };
  pacsFiles("photo/dog", 3).forEach((f, i) => {
    tree.dog[i === 2 ? "a,b.jpg" : f] = pacsBytes(`photo/dog/${f}`);
  });
  tree.dog.extra = {
    "deep.JPG": pacsBytes(`art_painting/dog/${pacsFiles("art_painting/dog", 1)[0]}`),
  };
  pacsFiles("cartoon/dog", 2).forEach((f) => tree.hot_dog[f] = pacsBytes(`cartoon/dog/${f}`));
  pacsFiles("sketch/horse", 2).forEach((f) => tree.horse[f] = pacsBytes(`sketch/horse/${f}`));
  const write = (base: string, t: Record<string, unknown>) => {
    Deno.mkdirSync(base, { recursive: true });
    for (const [k, v] of Object.entries(t)) {
      if (v instanceof Uint8Array) Deno.writeFileSync(`${base}/${k}`, v);
      else write(`${base}/${k}`, v as Record<string, unknown>);
    }
  };
  write(dir, tree);
  Deno.writeTextFileSync(`${dir}/dog/notes.txt`, "not an image");
  Deno.writeTextFileSync(`${dir}/.DS_Store`, "skip me");
  return tree as Zippable;
}

Deno.test("data: PACS is read as 4 domains × 7 classes with the README's counts", () => {
  assert.equal(pacs.source, "folder");
  assert.deepEqual(pacs.domains, ["art_painting", "cartoon", "photo", "sketch"]);
  assert.deepEqual(pacs.classnames, CLASSES);
  assert.equal(pacs.items.length, 9991);
  assert.deepEqual(Object.fromEntries(countBy(pacs.items, (i) => i.domain!)), DOMAIN_COUNTS);
  for (const it of pacs.items) {
    const [d, c] = it.path.split("/");
    assert.equal(d, it.domain);
    assert.equal(CLASSES[it.label], c);
  }
  for (let i = 1; i < pacs.items.length; i++) {
    assert.ok(byteCompare(pacs.items[i - 1].path, pacs.items[i].path) < 0, "items sorted");
  }
  assert.equal(countBy(pacs.items, (i) => i.path.slice(-4)).get(".png"), 3929);
  // Forcing class folders reads each domain as one class (images found recursively).
  const forced = readFolder(PACS + "/", { layout: "classes" });
  assert.deepEqual(forced.classnames, ["art painting", "cartoon", "photo", "sketch"]);
  assert.equal(forced.items.length, 9991);
  assert.equal(forced.domains, undefined);
  // Reading a subset of domains.
  const two = readFolder(PACS, { domains: ["sketch", "photo"] });
  assert.deepEqual(two.domains, ["photo", "sketch"]);
  assert.equal(two.items.length, 1670 + 3929);
  assert.deepEqual(two.classnames, CLASSES);
});

Deno.test("data: byte order, not UTF-16 or locale order", () => {
  const names = ["b", "B", "a", "é", "Z", "_", "a b", "a/b", "\u{1F600}", "\uFFFD", "\uE000", "ab"];
  const enc = new TextEncoder();
  const bytes = (a: string, b: string) => {
    const x = enc.encode(a), y = enc.encode(b);
    for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i] - y[i];
    return x.length - y.length;
  };
  assert.deepEqual([...names].sort(byteCompare), [...names].sort(bytes));
  assert.ok(byteCompare("\u{1F600}", "\uFFFD") > 0, "astral after U+FFFD (UTF-16 says before)");
});

Deno.test("splits: few-shot K=4 seed 1 is deterministic, pinned, and disjoint", () => {
  const a = fewShot(pacs, { shots: 4, seed: 1 });
  const b = fewShot(pacs, { shots: 4, seed: 1 });
  assert.equal(a.checksum, b.checksum);
  assert.deepEqual(a.train, b.train);
  assert.deepEqual(a.val, b.val);
  assert.equal(a.checksum, FEWSHOT_K4_SEED1);
  assert.equal(a.protocol, "few-shot");
  assert.deepEqual(a.classnames, CLASSES);
  assert.deepEqual([...countBy(a.train, (i) => String(i.label)).values()], CLASSES.map(() => 4));
  assert.deepEqual([...countBy(a.val, (i) => String(i.label)).values()], CLASSES.map(() => 4));
  const [test] = a.takeTest("test of the test split");
  assert.ok(disjoint(a.train, a.val), "val disjoint from train");
  assert.ok(disjoint(a.train, test.items) && disjoint(a.val, test.items), "test disjoint");
  // The test set is the 30% partition (per class, rounded), the same for every seed and K.
  const perClass = countBy(pacs.items, (i) => String(i.label));
  let want = 0;
  for (const n of perClass.values()) want += Math.round(0.3 * n);
  assert.equal(test.items.length, want);
  const c = fewShot(pacs, { shots: 4, seed: 2 });
  assert.notEqual(c.checksum, a.checksum);
  assert.notDeepEqual(keys(c.train), keys(a.train));
  assert.deepEqual(keys(c.takeTest("compare")[0].items), keys(test.items));
  const k1 = fewShot(pacs, { shots: 1, seed: 1 });
  assert.equal(k1.train.length, 7);
  assert.equal(k1.val.length, 7, "min(K, 4) validation per class");
  const k16 = fewShot(pacs, { shots: 16, seed: 3 });
  assert.equal(k16.train.length, 16 * 7);
  assert.equal(k16.val.length, 4 * 7);
  // Labels and paths agree with the dataset.
  const byPath = new Map(pacs.items.map((i) => [i.path, i]));
  for (const it of [...a.train, ...a.val, ...test.items]) {
    assert.equal(byPath.get(it.path)?.label, it.label);
    assert.equal(byPath.get(it.path)?.domain, it.domain);
  }
  checkSplitDataset(a, pacs);
});

Deno.test("splits: depend only on the sorted items and the seed, never on Math.random", () => {
  const shuffled: Dataset = { ...pacs, items: [...pacs.items].reverse() };
  const random = Math.random;
  Math.random = () => {
    throw new Error("Math.random used");
  };
  try {
    assert.equal(fewShot(shuffled, { shots: 4, seed: 1 }).checksum, FEWSHOT_K4_SEED1);
    const l1 = leaveOneDomainOut(pacs, { target: "photo", seed: 5 });
    const l2 = leaveOneDomainOut(shuffled, { target: "photo", seed: 5 });
    assert.equal(l1.checksum, l2.checksum);
    base2new(pacs, { seed: 1 });
  } finally {
    Math.random = random;
  }
});

Deno.test("splits: base-to-new halves the classes and relabels the new ones", () => {
  const s = base2new(pacs, { seed: 1 });
  assert.equal(s.protocol, "base-to-new");
  assert.equal(s.options.shots, 16);
  assert.deepEqual(s.classnames, ["dog", "elephant", "giraffe", "guitar"]);
  assert.equal(s.train.length, 4 * 16);
  assert.equal(s.val.length, 4 * 4);
  assert.ok(s.train.every((i) => i.label < 4) && s.val.every((i) => i.label < 4));
  assert.ok(disjoint(s.train, s.val));
  const [base, neu] = s.takeTest("check");
  assert.equal(base.name, "base");
  assert.equal(neu.name, "new");
  assert.deepEqual(base.classnames, ["dog", "elephant", "giraffe", "guitar"]);
  assert.deepEqual(neu.classnames, ["horse", "house", "person"]);
  assert.deepEqual(new Set(base.items.map((i) => i.label)), new Set([0, 1, 2, 3]));
  assert.deepEqual(new Set(neu.items.map((i) => i.label)), new Set([0, 1, 2]));
  for (const it of neu.items) assert.equal(neu.classnames[it.label], it.path.split("/")[1]);
  for (const it of base.items) assert.equal(base.classnames[it.label], it.path.split("/")[1]);
  // The base draws are the few-shot draws of those classes with the same seed and K.
  const f = fewShot(pacs, { shots: 16, seed: 1 });
  assert.deepEqual(keys(s.train), keys(f.train.filter((i) => i.label < 4)));
  const [ft] = f.takeTest("compare");
  assert.equal(base.items.length + neu.items.length, ft.items.length);
});

Deno.test("splits: leave-one-domain-out for each target, stratified 10% validation", () => {
  const groups = countBy(pacs.items, (i) => `${i.domain}/${i.label}`);
  const valOf: Record<string, string[][]> = {};
  for (const target of pacs.domains!) {
    const s = leaveOneDomainOut(pacs, { target, seed: 1 });
    assert.equal(s.protocol, "leave-one-domain-out");
    assert.ok(s.train.every((i) => i.domain !== target), `train never holds ${target}`);
    assert.ok(s.val.every((i) => i.domain !== target));
    assert.ok(disjoint(s.train, s.val));
    const vc = countBy(s.val, (i) => `${i.domain}/${i.label}`);
    const tc = countBy(s.train, (i) => `${i.domain}/${i.label}`);
    for (const [g, n] of groups) {
      if (g.startsWith(target + "/")) continue;
      assert.equal(vc.get(g), Math.round(0.1 * n), `val of ${g}`);
      assert.equal((vc.get(g) ?? 0) + (tc.get(g) ?? 0), n, `train+val of ${g}`);
    }
    const [test] = s.takeTest("check");
    assert.equal(test.name, target);
    assert.equal(test.items.length, DOMAIN_COUNTS[target]);
    assert.ok(test.items.every((i) => i.domain === target));
    for (const d of pacs.domains!) {
      if (d !== target) (valOf[d] ??= []).push(keys(s.val.filter((i) => i.domain === d)));
    }
    // shots with an explicit fraction: at most K per class per source domain; the validation
    // hold-out is the fraction's
    const k = leaveOneDomainOut(pacs, { target, seed: 1, shots: 4, valFraction: 0.1 });
    assert.equal(k.train.length, 3 * 7 * 4);
    assert.deepEqual(
      [...countBy(k.train, (i) => `${i.domain}/${i.label}`).values()],
      Array(21).fill(4),
    );
    assert.deepEqual(keys(k.val), keys(s.val));
    assert.ok(k.train.every((i) => s.train.some((j) => j.path === i.path)));
    // shots alone: CoOp's few-shot validation, min(K, 4) per class and source domain
    for (const K of [1, 16]) {
      const f = leaveOneDomainOut(pacs, { target, seed: 1, shots: K });
      const per = [...countBy(f.val, (i) => `${i.domain}/${i.label}`).values()];
      assert.deepEqual(per, Array(21).fill(Math.min(K, 4)), `val at ${K} shots`);
      assert.deepEqual(f.options, { target, shots: K, valShots: Math.min(K, 4) });
      assert.ok(disjoint(f.train, f.val));
    }
  }
  // A source domain's hold-out does not depend on the target.
  for (const [d, vals] of Object.entries(valOf)) {
    assert.equal(vals.length, 3);
    for (const v of vals) assert.deepEqual(v, vals[0], `hold-out of ${d}`);
  }
  const a = leaveOneDomainOut(pacs, { target: "sketch", seed: 1 });
  const b = leaveOneDomainOut(pacs, { target: "sketch", seed: 2 });
  assert.notDeepEqual(keys(a.val), keys(b.val));
  assert.throws(
    () => leaveOneDomainOut(pacs, { target: "clipart", seed: 1 }),
    (e: Error) =>
      e instanceof DataError && /clipart/.test(e.message) &&
      /art_painting, cartoon, photo, sketch/.test(e.message),
  );
});

Deno.test("data: a zip of a class-folder dataset reads as the folder", () => {
  const dir = tmp();
  try {
    const tree = makeToy(`${dir}/toy`);
    const folder = readDataset(`${dir}/toy`);
    assert.deepEqual(folder.classnames, ["dog", "horse", "hot dog"]);
    assert.deepEqual(
      folder.items.map((i) => i.path),
      [
        "dog/a,b.jpg",
        ...pacsFiles("photo/dog", 2).map((f) => `dog/${f}`),
        "dog/extra/deep.JPG",
        ...pacsFiles("sketch/horse", 2).map((f) => `horse/${f}`),
        ...pacsFiles("cartoon/dog", 2).map((f) => `hot_dog/${f}`),
      ].sort(byteCompare),
    );
    // Mixed stored and deflated entries, a wrapping folder, macOS junk.
    const zipped = zipSync({ "__MACOSX": { "._x.jpg": new Uint8Array(3) }, toy: tree }, {
      level: 6,
    });
    Deno.writeFileSync(`${dir}/toy.zip`, zipped);
    const z = readDataset(`${dir}/toy.zip`);
    assert.equal(z.source, "zip");
    assert.equal(z.prefix, "toy/");
    assert.deepEqual(z.classnames, folder.classnames);
    assert.deepEqual(z.items, folder.items);
    assert.equal(datasetDigest(z), datasetDigest(folder));
    for (const it of folder.items) {
      assert.deepEqual(readImageBytesSync(z, it), readImageBytesSync(folder, it), it.path);
    }
    const stored = zipSync({ toy: tree }, { level: 0 });
    Deno.writeFileSync(`${dir}/stored.zip`, stored);
    const zs = readZip(`${dir}/stored.zip`, { prefix: "toy" });
    assert.deepEqual(zs.items, folder.items);
    assert.deepEqual(readImageBytesSync(zs, zs.items[4]), readImageBytesSync(folder, zs.items[4]));
    // Decoded pixels match, gray PNGs become RGB.
    const horse = folder.items.find((i) => i.path.startsWith("horse/"))!;
    const img = loadItemImage(z, horse);
    assert.equal(img.data.length, img.width * img.height * 3);
    assert.deepEqual(img.data, loadItemImage(folder, horse).data);
    // A corrupt entry is named.
    // A flipped byte inside the last entry's data (just before the central directory).
    const bad = Uint8Array.from(zipped);
    bad[new DataView(bad.buffer).getUint32(bad.length - 22 + 16, true) - 50] ^= 0xff;
    Deno.writeFileSync(`${dir}/bad.zip`, bad);
    const zb = readZip(`${dir}/bad.zip`);
    assert.throws(() => {
      for (const it of zb.items) readImageBytesSync(zb, it);
    }, (e: Error) => e instanceof DataError && e.message.includes(`${dir}/bad.zip!/toy/`));
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

/** A zip64 archive of stored entries, every size and offset in the zip64 extra fields. */
function zip64(files: [string, Uint8Array][]): Uint8Array {
  const enc = new TextEncoder();
  const parts: Uint8Array[] = [], central: Uint8Array[] = [];
  let pos = 0;
  const u8 = (n: number, f: (v: DataView) => void) => {
    const b = new Uint8Array(n);
    f(new DataView(b.buffer));
    return b;
  };
  for (const [name, data] of files) {
    const nm = enc.encode(name), crc = crc32(data);
    parts.push(
      u8(30, (v) => {
        v.setUint32(0, 0x04034b50, true);
        v.setUint16(4, 45, true);
        v.setUint32(14, crc, true);
        v.setUint32(18, data.length, true);
        v.setUint32(22, data.length, true);
        v.setUint16(26, nm.length, true);
      }),
      nm,
      data,
    );
    central.push(
      u8(46, (v) => {
        v.setUint32(0, 0x02014b50, true);
        v.setUint16(6, 45, true);
        v.setUint16(8, 0x800, true);
        v.setUint32(16, crc, true);
        v.setUint32(20, 0xffffffff, true);
        v.setUint32(24, 0xffffffff, true);
        v.setUint16(28, nm.length, true);
        v.setUint16(30, 28, true);
        v.setUint32(42, 0xffffffff, true);
      }),
      nm,
      u8(28, (v) => {
        v.setUint16(0, 1, true);
        v.setUint16(2, 24, true);
        v.setBigUint64(4, BigInt(data.length), true);
        v.setBigUint64(12, BigInt(data.length), true);
        v.setBigUint64(20, BigInt(pos), true);
      }),
    );
    pos += 30 + nm.length + data.length;
  }
  const cdSize = central.reduce((a, b) => a + b.length, 0), n = files.length;
  const end = [
    u8(56, (v) => {
      v.setUint32(0, 0x06064b50, true);
      v.setBigUint64(4, 44n, true);
      v.setBigUint64(24, BigInt(n), true);
      v.setBigUint64(32, BigInt(n), true);
      v.setBigUint64(40, BigInt(cdSize), true);
      v.setBigUint64(48, BigInt(pos), true);
    }),
    u8(20, (v) => {
      v.setUint32(0, 0x07064b50, true);
      v.setBigUint64(8, BigInt(pos + cdSize), true);
      v.setUint32(16, 1, true);
    }),
    u8(22, (v) => {
      v.setUint32(0, 0x06054b50, true);
      v.setUint16(8, 0xffff, true);
      v.setUint16(10, 0xffff, true);
      v.setUint32(12, 0xffffffff, true);
      v.setUint32(16, 0xffffffff, true);
    }),
  ];
  const all = [...parts, ...central, ...end];
  const out = new Uint8Array(all.reduce((a, b) => a + b.length, 0));
  let o = 0;
  for (const b of all) out.set(b, o), o += b.length;
  return out;
}

Deno.test("data: zip64 archives (as DomainNet-sized zips need) are read", () => {
  const dir = tmp();
  try {
    const files: [string, Uint8Array][] = [];
    for (const c of ["elephant", "guitar"]) {
      for (const f of pacsFiles(`art_painting/${c}`, 2)) {
        files.push([`data/art/${c}/${f}`, pacsBytes(`art_painting/${c}/${f}`)]);
      }
    }
    Deno.writeFileSync(`${dir}/z64.zip`, zip64(files));
    const ds = readZip(`${dir}/z64.zip`);
    assert.equal(ds.prefix, "data/art/");
    assert.deepEqual(ds.classnames, ["elephant", "guitar"]);
    assert.deepEqual(ds.items.map((i) => i.path), files.map(([p]) => p.slice(9)));
    ds.items.forEach((it, i) => assert.deepEqual(readImageBytesSync(ds, it), files[i][1]));
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("data: a zip of a domain-layout dataset reads as the folder", () => {
  const dir = tmp();
  try {
    const tree: Record<string, Record<string, Record<string, Uint8Array>>> = {};
    for (const d of ["photo", "sketch"]) {
      for (const c of ["giraffe", "guitar"]) {
        for (const f of pacsFiles(`${d}/${c}`, 2)) {
          const bytes = pacsBytes(`${d}/${c}/${f}`);
          ((tree[d] ??= {})[c] ??= {})[f] = bytes;
          Deno.mkdirSync(`${dir}/dg/${d}/${c}`, { recursive: true });
          Deno.writeFileSync(`${dir}/dg/${d}/${c}/${f}`, bytes);
        }
      }
    }
    Deno.writeFileSync(`${dir}/dg.zip`, zipSync(tree as Zippable));
    const folder = readDataset(`${dir}/dg`);
    const z = readDataset(`${dir}/dg.zip`);
    assert.deepEqual(folder.domains, ["photo", "sketch"]);
    assert.deepEqual(folder.classnames, ["giraffe", "guitar"]);
    assert.equal(folder.items.length, 8);
    assert.equal(z.prefix, "");
    assert.deepEqual(z.domains, folder.domains);
    assert.deepEqual(z.items, folder.items);
    const s = leaveOneDomainOut(z, { target: "photo", seed: 3 });
    assert.deepEqual(
      keys(s.train),
      keys(leaveOneDomainOut(folder, { target: "photo", seed: 3 }).train),
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("data: CSV and JSON manifests, class names from names files", async () => {
  const dir = tmp();
  try {
    makeToy(`${dir}/toy`);
    const folder = readFolder(`${dir}/toy`);
    const names = folder.classnames;
    const q = (s: string) => s.includes(",") ? `"${s.replace(/"/g, '""')}"` : s;
    const csv = ["Path,Label", ...folder.items.map((i) => `${q(i.path)},${names[i.label]}`)];
    Deno.writeTextFileSync(`${dir}/toy/m.csv`, csv.join("\r\n") + "\r\n");
    const m = readManifest(`${dir}/toy/m.csv`);
    assert.deepEqual(m.classnames, names);
    assert.deepEqual(m.items, folder.items);
    assert.equal(m.root, `${dir}/toy`);
    assert.deepEqual(await readImageBytes(m, m.items[0]), await readImageBytes(folder, m.items[0]));
    // Indices with a names file; a manifest one folder up (paths relative to it).
    Deno.writeTextFileSync(`${dir}/names.txt`, names.join("\n") + "\n");
    Deno.writeTextFileSync(
      `${dir}/idx.csv`,
      ["file,class", ...folder.items.map((i) => `${q("toy/./" + i.path)},${i.label}`)].join("\n"),
    );
    const mi = readDataset(`${dir}/idx.csv`, { names: `${dir}/names.txt` });
    assert.deepEqual(mi.classnames, names);
    assert.deepEqual(
      mi.items.map((i) => [i.path.slice(4), i.label]),
      folder.items.map((i) => [i.path, i.label]),
    );
    assert.throws(() => readManifest(`${dir}/idx.csv`), /indices: pass classnames/);
    // JSON: a list of objects, pairs, and {classnames, items}.
    Deno.writeTextFileSync(
      `${dir}/toy/m.json`,
      JSON.stringify(folder.items.map((i) => ({ path: i.path, label: names[i.label] }))),
    );
    assert.deepEqual(readDataset(`${dir}/toy/m.json`).items, folder.items);
    Deno.writeTextFileSync(
      `${dir}/toy/p.json`,
      JSON.stringify({ classnames: names, items: folder.items.map((i) => [i.path, i.label]) }),
    );
    const pj = readDataset(`${dir}/toy/p.json`);
    assert.deepEqual(pj.items, folder.items);
    assert.deepEqual(pj.classnames, names);
    // Folder class names from a names file, positional or "<folder> <name>".
    assert.deepEqual(
      readFolder(`${dir}/toy`, { names: ["Dog", "Horse", "Sausage dog"] }).classnames,
      ["Dog", "Horse", "Sausage dog"],
    );
    Deno.writeTextFileSync(`${dir}/map.txt`, "hot_dog frankfurter\ndog a dog\nhorse pony\n");
    assert.deepEqual(readFolder(`${dir}/toy`, { names: `${dir}/map.txt` }).classnames, [
      "a dog",
      "pony",
      "frankfurter",
    ]);
    assert.throws(
      () => readFolder(`${dir}/toy`, { names: ["x", "y"] }),
      /2 class names for 3 classes/,
    );
    // Official split column: few-shot uses it.
    const nth = new Map<number, number>();
    const rows = folder.items.map((i) => {
      const k = nth.get(i.label) ?? 0;
      nth.set(i.label, k + 1);
      return `${q(i.path)},${names[i.label]},${["train", "test", "val", "train"][k]}`;
    });
    Deno.writeTextFileSync(`${dir}/toy/s.csv`, ["path,label,split", ...rows].join("\n"));
    const off = readManifest(`${dir}/toy/s.csv`);
    const fs = fewShot(off, { shots: 1, seed: 0 });
    assert.equal(fs.val.length, 1, "val drawn from the official val items (only dog has one)");
    assert.equal(fs.options.officialSplit, true);
    const [t] = fs.takeTest("check");
    assert.deepEqual(keys(t.items), off.items.filter((i) => i.split === "test").map((i) => i.path));
    assert.ok(fs.train.every((i) => off.items.find((j) => j.path === i.path)!.split === "train"));
    // Errors name the file and line.
    Deno.writeTextFileSync(`${dir}/toy/bad.csv`, "path,label\ndog/nope.jpg,dog\n");
    assert.throws(
      () => readManifest(`${dir}/toy/bad.csv`),
      (e: Error) => e.message.includes(`${dir}/toy/dog/nope.jpg`),
    );
    Deno.writeTextFileSync(`${dir}/toy/bad2.csv`, "image_path,y\nx.jpg,dog\n");
    assert.throws(() => readManifest(`${dir}/toy/bad2.csv`), /bad2\.csv: the header row/);
    Deno.writeTextFileSync(`${dir}/toy/bad3.csv`, "path,label\ndog/a,b.jpg,dog\n");
    assert.throws(() => readManifest(`${dir}/toy/bad3.csv`), /bad3\.csv line 2: 3 fields/);
    Deno.writeTextFileSync(`${dir}/toy/bad4.csv`, `path,label\n${q(folder.items[0].path)},cat\n`);
    assert.throws(
      () => readManifest(`${dir}/toy/bad4.csv`, { classnames: names }),
      /bad4\.csv line 2: unknown label "cat"/,
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("data: errors name the path (missing root, empty class, unknown domain, no images)", () => {
  const dir = tmp();
  try {
    assert.throws(
      () => readDataset(`${dir}/nowhere`),
      (e: Error) =>
        e instanceof DataError && e.message === `dataset root not found: ${dir}/nowhere`,
    );
    assert.throws(() => readFolder(`${dir}/nowhere`), /dataset root not found: .*nowhere/);
    Deno.mkdirSync(`${dir}/empty`);
    assert.throws(
      () => readFolder(`${dir}/empty`),
      (e: Error) => e.message === `no images found under ${dir}/empty`,
    );
    const tree = makeToy(`${dir}/toy`);
    Deno.mkdirSync(`${dir}/toy/cat`);
    Deno.writeTextFileSync(`${dir}/toy/cat/readme.txt`, "no pictures");
    assert.throws(
      () => readFolder(`${dir}/toy`),
      (e: Error) =>
        e instanceof DataError && e.message === `class folder has no images: ${dir}/toy/cat`,
    );
    Deno.removeSync(`${dir}/toy/cat`, { recursive: true });
    Deno.writeFileSync(
      `${dir}/cat.zip`,
      zipSync({ ...tree, cat: { "readme.txt": new Uint8Array(2) }, "mouse/": new Uint8Array(0) }),
    );
    assert.throws(
      () => readZip(`${dir}/cat.zip`),
      (e: Error) => e.message === `class folder has no images: ${dir}/cat.zip!/cat`,
    );
    Deno.writeFileSync(`${dir}/none.zip`, zipSync({ a: { "b.txt": new Uint8Array(1) } }));
    assert.throws(() => readZip(`${dir}/none.zip`), /class folder has no images: .*none\.zip!\/a$/);
    Deno.writeFileSync(`${dir}/void.zip`, zipSync({}));
    assert.throws(() => readZip(`${dir}/void.zip`), /no images found under .*void\.zip!\/$/);
    Deno.writeFileSync(`${dir}/toy/stray.png`, new Uint8Array(4));
    assert.throws(() => readFolder(`${dir}/toy`), /belong to no class folder/);
    assert.throws(
      () => readFolder(PACS, { domains: ["photo", "clipart"] }),
      (e: Error) =>
        e instanceof DataError && e.message.includes(`"clipart" in ${PACS}`) &&
        e.message.includes("known: art_painting, cartoon, photo, sketch"),
    );
    assert.throws(() => readDataset(`${dir}/names.txt`), /not found/);
    Deno.writeTextFileSync(`${dir}/x.zip`, "not a zip at all");
    assert.throws(() => readDataset(`${dir}/x.zip`), /not a readable zip archive .*x\.zip/);
    const pacsDog = fewShot(pacs, { shots: 4, seed: 1 });
    assert.throws(
      () => checkSplitDataset(pacsDog, readFolder(PACS, { domains: ["photo"] })),
      /was drawn from dataset/,
    );
    assert.throws(() => fewShot(pacs, { shots: 0, seed: 1 }), /shots must be an integer ≥ 1/);
    assert.throws(
      () => fewShot(pacs, { shots: 2000, seed: 1 }),
      /class "dog" has \d+ images in the train pool, fewer than 2000 shots/,
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("splits: files round-trip, and a tampered file is refused by name", async () => {
  const dir = tmp();
  try {
    const check = async (s: Split) => {
      const path = `${dir}/${s.protocol}.json`;
      await saveSplit(path, s);
      assert.deepEqual(s.testReads, [], "saving is not a read");
      const l = await loadSplit(path);
      assert.equal(l.checksum, s.checksum);
      assert.deepEqual(l.train, s.train);
      assert.deepEqual(l.val, s.val);
      assert.deepEqual(l.classnames, s.classnames);
      assert.deepEqual(l.options, s.options);
      assert.deepEqual(l.tests, s.tests);
      assert.deepEqual(l.takeTest("round trip"), s.takeTest("round trip"));
      return path;
    };
    const path = await check(fewShot(pacs, { shots: 4, seed: 1 }));
    await check(base2new(pacs, { seed: 2, shots: 2 }));
    await check(leaveOneDomainOut(pacs, { target: "cartoon", seed: 1, shots: 8 }));
    const text = Deno.readTextFileSync(path);
    assert.ok(text.includes(FEWSHOT_K4_SEED1));
    const m = /"label":(\d)/.exec(text)!;
    const tampered = text.replace(m[0], `"label":${(Number(m[1]) + 1) % 7}`);
    Deno.writeTextFileSync(`${dir}/t.json`, tampered);
    await assert.rejects(
      () => loadSplit(`${dir}/t.json`),
      (e: Error) =>
        e instanceof DataError &&
        e.message.startsWith(`split file ${dir}/t.json: checksum mismatch`),
    );
    // Whitespace is free (the checksum covers the canonical content).
    Deno.writeTextFileSync(`${dir}/c.json`, JSON.stringify(JSON.parse(text)));
    assert.equal((await loadSplit(`${dir}/c.json`)).checksum, FEWSHOT_K4_SEED1);
    Deno.writeTextFileSync(`${dir}/n.json`, text.replace(`"seed": 1`, `"seed": 2`));
    await assert.rejects(() => loadSplit(`${dir}/n.json`), /n\.json: checksum mismatch/);
    await assert.rejects(
      () => loadSplit(`${dir}/missing.json`),
      /cannot read split file .*missing\.json/,
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("splits: the test split is read only through takeTest, which is logged and sealable", () => {
  const s = fewShot(pacs, { shots: 2, seed: 7 });
  assert.deepEqual(s.testReads, []);
  s.assertTestUnread("before training");
  const json = JSON.stringify(s);
  assert.ok(!("test" in s), "no test field");
  assert.deepEqual(s.tests, [{ name: "test", size: 2998 }]);
  const inSplit = new Set([...keys(s.train), ...keys(s.val)]);
  const leaked = pacs.items.filter((i) => !inSplit.has(i.path) && json.includes(`"${i.path}"`));
  assert.equal(leaked.length, 0);
  s.seal();
  assert.ok(s.sealed);
  assert.throws(
    () => s.takeTest("peek during training"),
    (e: Error) =>
      e instanceof TestSplitError && /read while sealed \(peek during training\)/.test(e.message),
  );
  assert.deepEqual(s.testReads, [], "a refused read is not a read");
  s.assertTestUnread();
  s.unseal();
  assert.throws(() => s.takeTest(""), /needs a reason/);
  const [t] = s.takeTest("final evaluation");
  assert.equal(t.items.length, 2998);
  assert.deepEqual(s.testReads, ["final evaluation"]);
  assert.throws(
    () => s.assertTestUnread("before model selection"),
    /read 1 time\(s\) before model selection: final evaluation/,
  );
  assert.throws(() => (t.items as SplitItem[]).push({ path: "x", label: 0 }), TypeError);
  assert.throws(() => (s.train as SplitItem[]).pop(), TypeError);
});

Deno.test("data: decoded-image cache keeps uint8 RGB within its byte budget", async () => {
  const dir = tmp();
  try {
    makeToy(`${dir}/toy`);
    const ds = readFolder(`${dir}/toy`);
    const one = 227 * 227 * 3;
    const cache = new ImageCache(ds, { budgetBytes: 2 * one + 10 });
    const [a, b, c] = ds.items;
    const ia = cache.get(a);
    assert.ok(ia.data instanceof Uint8Array && ia.data.length === one);
    assert.equal(cache.get(a), ia, "a hit returns the same image");
    cache.get(b);
    cache.get(a); // a is now the most recently used
    cache.get(c); // evicts b
    assert.ok(cache.has(a) && cache.has(c) && !cache.has(b));
    assert.equal(cache.bytes, 2 * one);
    assert.equal(cache.hits, 2);
    assert.equal(cache.misses, 3);
    cache.clear();
    assert.equal(await cache.warm(ds.items), 2, "warm stops at the budget");
    assert.ok(cache.has(ds.items[0]) && cache.has(ds.items[1]));
    const big = new ImageCache(ds);
    assert.equal(await big.warm(ds.items), ds.items.length);
    assert.deepEqual(big.get(ds.items[3]).data, loadItemImage(ds, ds.items[3]).data);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
