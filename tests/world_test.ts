// The synthetic world (host only: no GPU work): determinism, PNG round trips, the dataset layouts
// read back through pipeline/data.ts, captions, and cheap checks of domain shift and class signal.
import { assert } from "./util.ts";
import { decodeImage, type RGBImage } from "../model/image.ts";
import { hostRng } from "../engine/ops/random.ts";
import { readDataset, readImageBytesSync } from "../pipeline/data.ts";
import {
  BACKGROUNDS,
  COLOURS,
  COUNT_WORDS,
  dcos,
  dsin,
  encodePng,
  generateWorld,
  layout,
  main,
  pluralOf,
  POSITIONS,
  renderWorldImage,
  SIZES,
  type World,
  WORLD_CLASSES,
  WORLD_DOMAINS,
  worldDigest,
  WorldError,
  worldFiles,
  writeWorld,
  zipWorld,
} from "../pipeline/world.ts";
import { createHash } from "node:crypto";

// Pinned: any change to the renderer, the captions, the PNG/zip writers (or fflate's output)
// shows here. PIXELS covers the decoded pixels and captions only, so when WORLD changes and
// PIXELS does not, the encoder changed, not the images.
const WORLD_S0_P2 = "sha256:3904bbfef9433f5f03b61bd0e9a52c8e0b88ec037261c4c079d0d587b95b69f1";
const PIXELS_S0_P2 = "sha256:c7f83b52ab6478181cc78d6f567e5420dcb8f026a90cda387e3ffda3d5bcb99c";

const ZIP_S0_P2 = "sha256:ba814c22610b5ba819086f7bc3bb8a362385ad358a9b4660782db0b2ef67fcd6";
const small: World = generateWorld({ seed: 0, size: 32, perClassPerDomain: 2 });
const tmp = () => Deno.makeTempDirSync({ prefix: "clipkit_world_" });
const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

function pixelDigest(w: World): string {
  const h = createHash("sha256");
  for (const it of w.items) {
    h.update(it.path + "\0" + it.caption + "\0");
    h.update(decodeImage(it.png, it.path).data);
  }
  return "sha256:" + h.digest("hex");
}

Deno.test("world: a seed gives identical bytes (pinned), another seed differs", () => {
  assert.equal(small.items.length, 4 * 10 * 2);
  const again = generateWorld({ seed: 0, size: 32, perClassPerDomain: 2 });
  assert.equal(worldDigest(again), worldDigest(small));
  assert.equal(pixelDigest(small), PIXELS_S0_P2, "pixels or captions changed");
  assert.equal(worldDigest(small), WORLD_S0_P2, "file bytes changed");

  const other = generateWorld({ seed: 1, size: 32, perClassPerDomain: 2 });
  assert.notEqual(worldDigest(other), worldDigest(small));
  const same = other.items.filter((it, i) => sha(it.png) === sha(small.items[i].png)).length;
  assert.equal(same, 0, `${same} images identical across seeds`);

  // An image depends only on (seed, domain, class, index), not on what else is generated.
  const part = generateWorld({
    seed: 0,
    size: 32,
    perClassPerDomain: 2,
    classes: ["star", "heart"],
    domains: ["sketch"],
  });
  assert.deepEqual(part.classes, ["heart", "star"]);
  for (const it of part.items) {
    const full = small.items.find((x) => x.path === it.path)!;
    assert.deepEqual(it.png, full.png, it.path);
    assert.equal(it.caption, full.caption);
  }
});

Deno.test("world: PNG encoder round-trips through decodeImage", () => {
  const rng = hostRng(5);
  for (const [w, h] of [[1, 1], [7, 5], [33, 2], [16, 16]]) {
    const img: RGBImage = { width: w, height: h, data: new Uint8Array(w * h * 3) };
    // half smooth (filters pay off), half random (they do not)
    for (let i = 0; i < img.data.length; i++) {
      img.data[i] = i % 2 ? rng.int(256) : (i * 7) & 255;
    }
    const png = encodePng(img);
    const back = decodeImage(png, `${w}x${h}`);
    assert.equal(back.width, w);
    assert.equal(back.height, h);
    assert.deepEqual(back.data, img.data);
    assert.deepEqual(encodePng(img), png, "encoding is deterministic");
  }
  // every world image decodes at its size, to the rendered pixels
  for (const it of small.items) {
    const im = decodeImage(it.png, it.path);
    assert.equal(im.width, 32);
    assert.equal(im.height, 32);
  }
  const r = renderWorldImage({ seed: 0, size: 32 }, "photo", "star", 1);
  const it = small.items.find((x) => x.path === "photo/star/0001.png")!;
  assert.deepEqual(decodeImage(it.png).data, r.image.data);
  assert.equal(it.caption, r.caption);
  assert.deepEqual(it.attributes, r.attributes);

  const big = generateWorld({ seed: 2, size: 64, perClassPerDomain: 1, classes: ["ring"] });
  assert.equal(big.items.length, 4);
  for (const b of big.items) assert.equal(decodeImage(b.png, b.path).width, 64);
  // a corrupted byte fails the CRC check
  const bad = it.png.slice();
  bad[40] ^= 1;
  assert.throws(() => decodeImage(bad, "bad.png"), /bad\.png/);
});

Deno.test("world: written to a folder and a zip, it reads back through readDataset", () => {
  const dir = tmp();
  try {
    const root = `${dir}/world`;
    const zip = `${dir}/world.zip`;
    writeWorld(root, small);
    writeWorld(zip, small);
    for (const path of [root, zip]) {
      const ds = readDataset(path);
      assert.deepEqual(ds.domains, ["cartoon", "painting", "photo", "sketch"]);
      assert.deepEqual(ds.classnames, [...WORLD_CLASSES]);
      assert.equal(ds.items.length, 80);
      const counts = new Map<string, number>();
      for (const item of ds.items) {
        const k = `${item.domain}/${ds.classnames[item.label]}`;
        counts.set(k, (counts.get(k) ?? 0) + 1);
      }
      assert.equal(counts.size, 40);
      for (const n of counts.values()) assert.equal(n, 2);
      assert.deepEqual(ds.items.map((i) => i.path), small.items.map((i) => i.path));
      for (const item of ds.items.slice(0, 5)) {
        assert.deepEqual(
          readImageBytesSync(ds, item),
          small.items.find((x) => x.path === item.path)!.png,
        );
      }
    }
    // classes.txt is a names file for readDataset
    assert.deepEqual(
      readDataset(root, { names: `${root}/classes.txt` }).classnames,
      [...WORLD_CLASSES],
    );
    const lines = Deno.readTextFileSync(`${root}/captions.jsonl`).trim().split("\n");
    assert.equal(lines.length, 80);
    const first = JSON.parse(lines[0]);
    assert.equal(first.path, small.items[0].path);
    assert.equal(first.caption, small.items[0].caption);
    assert.deepEqual(first.attributes, small.items[0].attributes);
    // the zip holds the same files, and its bytes are deterministic
    assert.deepEqual(Deno.readFileSync(zip), zipWorld(small));
    assert.equal("sha256:" + sha(Deno.readFileSync(zip)), ZIP_S0_P2, "zip bytes changed");
    const files = worldFiles(small);
    assert.deepEqual(Deno.readFileSync(`${root}/world.json`), files.get("world.json"));
    // a one-domain world reads back with the layout named
    const one = generateWorld({
      perClassPerDomain: 1,
      domains: ["cartoon"],
      classes: ["star", "ring"],
    });
    writeWorld(`${dir}/one`, one);
    writeWorld(`${dir}/sub/one.zip`, one);
    for (
      const ds of [
        readDataset(`${dir}/one`, { layout: "domains" }),
        readDataset(`${dir}/sub/one.zip`, { layout: "domains", prefix: "" }),
      ]
    ) {
      assert.deepEqual(ds.domains, ["cartoon"]);
      assert.deepEqual(ds.classnames, ["ring", "star"]);
      assert.equal(ds.items.length, 2);
    }
    // refuses to overwrite unless forced
    assert.throws(() => writeWorld(root, small), WorldError);
    assert.throws(() => writeWorld(zip, small), WorldError);
    writeWorld(root, small, { force: true });
    assert.equal(readDataset(root).items.length, 80);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("world: captions name the class and the count, with varied wording", () => {
  const words = (s: string) => s.toLowerCase().split(/[^a-z-]+/).filter((w) => w);
  const frames = new Set<string>();
  let domainWords = 0;
  for (const it of small.items) {
    const a = it.attributes;
    const w = words(it.caption);
    const noun = a.count === 1 ? it.className : pluralOf(it.className);
    assert.ok(w.includes(noun), `"${it.caption}" lacks "${noun}"`);
    const c = ` ${it.caption} `;
    assert.ok(COUNT_WORDS[a.count].some((p) => c.includes(` ${p} `)), `"${it.caption}" count`);
    if (a.count > 1) assert.ok(!w.includes(it.className), `"${it.caption}" singular`);
    for (const other of COLOURS) {
      if (other !== a.colour) assert.ok(!w.includes(other), `"${it.caption}" says ${other}`);
    }
    if (/(photo|sketch|drawing|cartoon|clip art|painting|painted)/.test(it.caption)) domainWords++;
    frames.add(it.caption.replace(/ .*/, ""));
    assert.ok(SIZES.includes(a.size) && POSITIONS.includes(a.position));
    assert.ok(BACKGROUNDS.includes(a.background) && COLOURS.includes(a.colour));
  }
  // some captions name the domain, some do not; they do not all start alike
  assert.ok(domainWords > 30 && domainWords < 80, `${domainWords} captions name a domain`);
  assert.ok(frames.size >= 4, `caption openings: ${[...frames]}`);
  assert.equal(new Set(small.items.map((i) => i.caption)).size, small.items.length);
  // every attribute value occurs in a small world
  for (const [k, all] of [["colour", COLOURS], ["position", POSITIONS], ["size", SIZES]] as const) {
    const seen = new Set(small.items.map((i) => i.attributes[k] as string));
    assert.equal(seen.size, all.length, `${k}: ${[...seen]}`);
  }
});

/** Per-image statistics: brightness, saturation, share of near-white pixels, distinct colours. */
function stats(im: RGBImage) {
  const D = im.data, n = im.width * im.height;
  let bright = 0, sat = 0, white = 0;
  const distinct = new Set<number>();
  for (let p = 0; p < n; p++) {
    const r = D[3 * p], g = D[3 * p + 1], b = D[3 * p + 2];
    const mx = Math.max(r, g, b), mn = Math.min(r, g, b);
    bright += (r + g + b) / 3 / n;
    sat += (mx ? (mx - mn) / mx : 0) / n;
    white += +(mn > 225) / n;
    distinct.add((r << 16) | (g << 8) | b);
  }
  return { bright, sat, white, distinct: distinct.size };
}

Deno.test("world: domains differ in their image statistics", () => {
  const mean: Record<string, ReturnType<typeof stats>> = {};
  for (const d of WORLD_DOMAINS) {
    const ims = small.items.filter((i) => i.domain === d).map((i) => stats(decodeImage(i.png)));
    mean[d] = { bright: 0, sat: 0, white: 0, distinct: 0 };
    for (const s of ims) {
      for (const k of ["bright", "sat", "white", "distinct"] as const) {
        mean[d][k] += s[k] / ims.length;
      }
    }
  }
  const { photo, sketch, cartoon, painting } = mean;
  const msg = JSON.stringify(mean);
  // sketches: white paper, gray strokes
  for (const o of [photo, cartoon, painting]) {
    assert.ok(sketch.bright > o.bright + 25, msg);
    assert.ok(sketch.sat < o.sat - 0.1, msg);
    assert.ok(sketch.white > o.white + 0.3, msg);
  }
  // cartoons: few flat colours; photos: noisy; paintings: saturated and darker than photos
  for (const o of [photo, sketch, painting]) assert.ok(cartoon.distinct * 2 < o.distinct, msg);
  assert.ok(photo.distinct > 600 && painting.distinct > 400, msg);
  assert.ok(painting.sat > photo.sat + 0.1, msg);
});

/** 16×16 gray gradient magnitudes, standardised: a cheap feature that ignores colour and sign. */
function edgeFeature(im: RGBImage): Float64Array {
  const S = im.width, k = S / 16, g = new Float64Array(256), f = new Float64Array(256);
  for (let y = 0; y < S; y++) {
    for (let x = 0; x < S; x++) {
      const o = (y * S + x) * 3;
      g[Math.floor(y / k) * 16 + Math.floor(x / k)] += im.data[o] + im.data[o + 1] + im.data[o + 2];
    }
  }
  for (let y = 0; y < 16; y++) {
    for (let x = 0; x < 16; x++) {
      const gx = g[y * 16 + Math.min(15, x + 1)] - g[y * 16 + Math.max(0, x - 1)];
      const gy = g[Math.min(15, y + 1) * 16 + x] - g[Math.max(0, y - 1) * 16 + x];
      f[y * 16 + x] = Math.sqrt(gx * gx + gy * gy);
    }
  }
  let m = 0, s = 0;
  for (const v of f) m += v / 256;
  for (const v of f) s += (v - m) ** 2;
  s = Math.sqrt(s / 256) + 1e-9;
  return f.map((v) => (v - m) / s);
}

Deno.test("world: classes are separable within a domain, less so across domains", () => {
  // one centred large object per image; colour, background and style still vary
  const fixed = { count: 1, position: "centre", size: "large" } as const;
  const TRAIN = 10, TEST = 6;
  const feats = (d: string, from: number, n: number) =>
    WORLD_CLASSES.map((c) =>
      Array.from(
        { length: n },
        (_, i) =>
          edgeFeature(renderWorldImage({ seed: 11, size: 32 }, d, c, from + i, fixed).image),
      )
    );
  const centroids = feats("cartoon", 0, TRAIN).map((list) => {
    const c = new Float64Array(256);
    for (const f of list) f.forEach((v, i) => c[i] += v / list.length);
    return c;
  });
  const accuracy = (test: Float64Array[][]) => {
    let ok = 0, n = 0;
    test.forEach((list, label) => {
      for (const f of list) {
        let best = -1, bd = Infinity;
        centroids.forEach((c, k) => {
          let d = 0;
          for (let i = 0; i < 256; i++) d += (f[i] - c[i]) ** 2;
          if (d < bd) [bd, best] = [d, k];
        });
        ok += +(best === label);
        n++;
      }
    });
    return ok / n;
  };
  const within = accuracy(feats("cartoon", TRAIN, TEST));
  const across = accuracy(feats("photo", TRAIN, TEST));
  assert.ok(within >= 0.45, `nearest centroid within cartoon: ${within} (chance 0.1)`);
  assert.ok(across < within, `cartoon → photo ${across} vs within ${within}`);
});

Deno.test("world: options are checked; sin/cos are accurate; the CLI writes and reports", () => {
  assert.throws(() => generateWorld({ classes: ["dog"] }), /unknown class "dog"/);
  assert.throws(() => generateWorld({ domains: ["x"] }), /unknown domain "x"/);
  assert.throws(() => generateWorld({ size: 8 }), /size/);
  assert.throws(() => generateWorld({ seed: -1 }), /seed/);
  assert.throws(() => generateWorld({ perClassPerDomain: 0 }), /perClassPerDomain/);
  for (let x = -20; x <= 20; x += 0.37) {
    assert.ok(Math.abs(dsin(x) - Math.sin(x)) < 1e-8 && Math.abs(dcos(x) - Math.cos(x)) < 1e-8);
  }
  const dir = tmp();
  const log: string[] = [];
  const orig = console.log;
  console.log = (...a: unknown[]) => log.push(a.join(" "));
  let rc: number;
  try {
    rc = main([
      "--out",
      `${dir}/w.zip`,
      "--seed",
      "4",
      "--per",
      "1",
      "--classes",
      "star,ring",
      "--sheet",
      `${dir}/sheet.png`,
    ]);
  } finally {
    console.log = orig;
  }
  try {
    assert.equal(rc, 0, log.join("\n"));
    const w = generateWorld({ seed: 4, perClassPerDomain: 1, classes: ["star", "ring"] });
    assert.ok(log.some((l) => l.includes(worldDigest(w))), log.join("\n"));
    assert.ok(log[0].startsWith("8 images"), log[0]);
    assert.deepEqual(Deno.readFileSync(`${dir}/w.zip`), zipWorld(w));
    const sheet = decodeImage(Deno.readFileSync(`${dir}/sheet.png`));
    assert.equal(sheet.width, 2 * 33 + 1);
    assert.equal(sheet.height, 4 * 33 + 1);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("world: snap, upright and terse change only what they name; defaults keep the bytes", () => {
  const o = { seed: 0, size: 32, perClassPerDomain: 2 };
  const plain = generateWorld({ ...o, snap: 0, upright: false, terse: 0 });
  assert.equal(worldDigest(plain), WORLD_S0_P2, "explicit defaults changed the bytes");
  assert.ok(!new TextDecoder().decode(worldFiles(plain).get("world.json")).includes("snap"));

  // snap: centres on the lattice, drawn from the same stream as without it
  const a = {
    count: 3 as const,
    size: "small" as const,
    colour: "red" as const,
    position: "left" as const,
    background: "plain" as const,
  };
  for (let s = 0; s < 20; s++) {
    const free = layout(hostRng(s), a), snapped = layout(hostRng(s), a, 8);
    assert.equal(snapped.length, 3);
    for (const c of snapped) {
      assert.equal(c.cx * 8, Math.round(c.cx * 8), `cx ${c.cx} off the lattice`);
      assert.equal(c.cy * 8, Math.round(c.cy * 8), `cy ${c.cy} off the lattice`);
    }
    assert.ok(free.some((c) => c.cx * 8 !== Math.round(c.cx * 8)));
  }

  // the styled world: images change, attributes do not; world.json records the options
  const styled = generateWorld({ ...o, snap: 8, upright: true });
  assert.equal(styled.items.length, plain.items.length);
  let changed = 0;
  styled.items.forEach((it, i) => {
    assert.deepEqual(it.attributes, plain.items[i].attributes);
    assert.equal(it.caption, plain.items[i].caption);
    if (sha(it.png) !== sha(plain.items[i].png)) changed++;
  });
  assert.ok(changed > plain.items.length * 0.9, `only ${changed} images changed`);
  const meta = JSON.parse(new TextDecoder().decode(worldFiles(styled).get("world.json")));
  assert.equal(meta.snap, 8);
  assert.equal(meta.upright, true);

  // terse: those captions name count, shape and style and no colour; the others keep their words
  const half = generateWorld({ ...o, terse: 0.5 });
  let terse = 0;
  half.items.forEach((it, i) => {
    if (it.caption === plain.items[i].caption) return;
    terse++;
    const noun = it.attributes.count === 1 ? it.className : pluralOf(it.className);
    assert.ok(it.caption.includes(noun), it.caption);
    assert.ok(!it.caption.includes(it.attributes.colour), it.caption);
  });
  assert.ok(terse > 0.3 * half.items.length && terse < 0.7 * half.items.length, `${terse} terse`);
  assert.equal(JSON.parse(new TextDecoder().decode(worldFiles(half).get("world.json"))).terse, 0.5);
  assert.deepEqual(half.items.map((it) => sha(it.png)), plain.items.map((it) => sha(it.png)));

  assert.throws(() => generateWorld({ ...o, snap: 2.5 }), WorldError);
  assert.throws(() => generateWorld({ ...o, snap: 64 }), /snap must be an integer in 0\.\.32/);
  assert.throws(() => generateWorld({ ...o, terse: 1.5 }), /terse must be in 0\.\.1/);
});

Deno.test("train: --val-fraction reaches the leave-one-domain-out split", async () => {
  const { parseTrainArgs } = await import("../pipeline/train_cli.ts");
  const { loadData } = await import("../pipeline/stages.ts");
  const dir = tmp();
  writeWorld(
    dir,
    generateWorld({ seed: 4, size: 16, perClassPerDomain: 8, classes: ["ring", "star"] }),
  );
  const args = (extra: string[]) =>
    parseTrainArgs([
      ...["--method", "zeroshot", "--model", "m.pt", "--data", dir, "--out", "o"],
      ...["--protocol", "dg", "--target", "sketch", "--seed", "1", "--shots", "2", ...extra],
    ]);
  const half = args(["--val-fraction", "0.5"]);
  assert.equal(half.valFraction, 0.5);
  // 3 source domains × 2 classes × 8 images: 4 of each 8 for validation, 2 shots from the rest
  const s = loadData(half).split;
  assert.equal(s.val.length, 3 * 2 * 4);
  assert.equal(s.train.length, 3 * 2 * 2);
  // without --val-fraction a few-shot run validates on min(shots, 4) = 2 per class and domain
  assert.equal(loadData(args([])).split.val.length, 3 * 2 * 2);
  assert.throws(() => args(["--val-fraction", "x"]), /--val-fraction: expected a number/);
});
