/**
 * A learnt BPE vocabulary (model/bpe_learn.ts): the same merges as a naive learner that recounts
 * every pair at every step, round trips, determinism, the vocabulary's layout, and what pretraining
 * with `learnVocab` leaves for the other commands. Host only, but for the last test.
 */
import { assert, setup, TINY_CLIP } from "./util.ts";
import { learnBpe, writeVocab } from "../model/bpe_learn.ts";
import { byteAlphabet, cleanText, splitWords, Tokenizer } from "../model/tokenizer.ts";
import { eotPositions } from "../model/clip.ts";
import { generateWorld, writeWorld } from "../pipeline/world.ts";

/** The naive procedure: count every adjacent pair, merge the most frequent (ties by a, then b). */
function naiveBpe(texts: string[], merges: number, minFrequency = 2): [string, string][] {
  const { bytes, chars } = byteAlphabet();
  const charOf = new Map(bytes.map((b, i) => [b, chars[i]]));
  const counts = new Map<string, number>();
  for (const t of texts) {
    for (const w of splitWords(cleanText(t))) counts.set(w, (counts.get(w) ?? 0) + 1);
  }
  const words = [...counts].map(([w, c]) => {
    const s = Array.from(new TextEncoder().encode(w), (b) => charOf.get(b)!);
    s[s.length - 1] += "</w>";
    return { s, c };
  });
  const out: [string, string][] = [];
  while (out.length < merges) {
    const pc = new Map<string, number>();
    for (const { s, c } of words) {
      for (let i = 0; i + 1 < s.length; i++) {
        const k = JSON.stringify([s[i], s[i + 1]]);
        pc.set(k, (pc.get(k) ?? 0) + c);
      }
    }
    let best: [string, string] | null = null, bc = 0;
    for (const [k, c] of pc) {
      const p = JSON.parse(k) as [string, string];
      const earlier = best && (p[0] < best[0] || (p[0] === best[0] && p[1] < best[1]));
      if (c > bc || (c === bc && earlier)) [best, bc] = [p, c];
    }
    if (!best || bc < minFrequency) break;
    out.push(best);
    for (const w of words) {
      const n: string[] = [];
      for (let i = 0; i < w.s.length;) {
        if (w.s[i] === best[0] && w.s[i + 1] === best[1]) {
          n.push(best[0] + best[1]);
          i += 2;
        } else n.push(w.s[i++]);
      }
      w.s = n;
    }
  }
  return out;
}

/** A seeded corpus of made-up words over a small alphabet, with accents and a CJK word. */
function corpus(seed: number, n: number): string[] {
  let s = seed;
  const r = () => ((s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  const syll = ["ka", "lo", "mi", "ra", "te", "é", "ss", "n", "a"];
  const words = Array.from({ length: 40 }, () => {
    let w = "";
    for (let k = 0, m = 1 + Math.floor(r() * 4); k < m; k++) w += syll[Math.floor(r() * 9)];
    return w;
  });
  words.push("日本語", "naïve", "don't");
  return Array.from({ length: n }, () => {
    const len = 2 + Math.floor(r() * 6);
    return Array.from({ length: len }, () => words[Math.floor(r() ** 2 * words.length)]).join(
      r() < 0.2 ? ", " : " ",
    ) + (r() < 0.5 ? "." : "");
  });
}

const world = generateWorld({ seed: 4, size: 16, perClassPerDomain: 3, terse: 0.5 });
const captions = world.items.map((it) => it.caption);

Deno.test("learnBpe: the same merges as the naive learner, pair by pair", () => {
  for (const [texts, n] of [[corpus(1, 300), 400], [corpus(7, 50), 60], [captions, 500]] as const) {
    const want = naiveBpe([...texts], n);
    const got = learnBpe(texts, n);
    assert.ok(want.length > 20, `only ${want.length} merges`);
    assert.deepEqual(got.merges, want);
  }
  // minFrequency: pairs seen once are merged only when asked
  const once = learnBpe(["xyzzy"], 10);
  assert.equal(once.merges.length, 0);
  assert.deepEqual(learnBpe(["xyzzy"], 10, { minFrequency: 1 }).merges, naiveBpe(["xyzzy"], 10, 1));
});

Deno.test("a learnt vocabulary round-trips its corpus, keeps CLIP's layout, and its ids stay below its size", () => {
  for (const texts of [corpus(3, 400), captions]) {
    const bpe = learnBpe(texts, 300);
    const tok = new Tokenizer(bpe.text, "learnt");
    assert.equal(tok.merges, bpe.merges.length);
    assert.equal(tok.vocabSize, 512 + bpe.merges.length + 2);
    assert.equal([tok.sot, tok.eot].join(), [tok.vocabSize - 2, tok.vocabSize - 1].join());
    assert.equal(tok.decoder[tok.sot], "<|startoftext|>");
    assert.equal(tok.decoder[tok.eot], "<|endoftext|>");
    assert.equal(tok.decoder[512], bpe.merges[0].join(""));
    for (const t of [...texts, "words it never saw: zebra 42 ☃"]) {
      const ids = tok.encode(t);
      assert.ok(ids.every((i) => i >= 0 && i < tok.vocabSize - 2), t);
      assert.equal(tok.decode(ids), splitWords(cleanText(t)).map((w) => w + " ").join(""), t);
    }
    // tokenize: sot … eot, and eot is the row's largest id, where the text tower reads
    const ctx = 24, rows = tok.tokenize(texts.slice(0, 50), ctx);
    assert.ok(rows.every((i) => i < tok.vocabSize));
    const eot = eotPositions(rows, ctx);
    eot.forEach((p, r) => {
      assert.equal(rows[r * ctx], tok.sot);
      assert.equal(rows[r * ctx + p], tok.eot);
    });
  }
  // with every pair allowed, each word ends as one token (the learner stops when none is left)
  const tok = new Tokenizer(learnBpe(captions, 5000, { minFrequency: 1 }).text);
  for (const w of new Set(captions.flatMap((c) => splitWords(cleanText(c))))) {
    assert.equal(tok.bpe(w).length, 1, w);
  }
});

Deno.test("the same corpus gives the same bytes, in any order; a damaged file is refused", async () => {
  const a = learnBpe(captions, 200), b = learnBpe([...captions].reverse(), 200);
  assert.equal(a.text, b.text);
  const dir = await Deno.makeTempDir({ prefix: "bpe_" });
  await writeVocab(`${dir}/a.bpe.txt.gz`, a);
  await writeVocab(`${dir}/b.bpe.txt.gz`, b);
  assert.deepEqual(
    await Deno.readFile(`${dir}/a.bpe.txt.gz`),
    await Deno.readFile(`${dir}/b.bpe.txt.gz`),
  );
  const tok = await Tokenizer.load(`${dir}/a.bpe.txt.gz`);
  assert.deepEqual(tok.encode(captions[0]), new Tokenizer(a.text).encode(captions[0]));
  assert.match(a.text, /^#version: 0\.2 merges: 200\n/);
  const lines = a.text.split("\n");
  assert.throws(
    () => new Tokenizer(lines.slice(0, 150).join("\n")),
    /has 149 merge lines; its header declares 200/,
  );
  assert.throws(() => new Tokenizer("#version: 0.2 merges: 50000\n"), /declares 50000 merges/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("pretrain --learn-vocab: the vocabulary beside the model sizes its table and every command finds it", async () => {
  await setup();
  const { pretrain } = await import("../pipeline/pretrain.ts");
  const { loadClip, vocabBeside } = await import("../model/load.ts");
  const { readSafetensors } = await import("../model/safetensors.ts");
  const { VocabNotFoundError } = await import("../model/tokenizer.ts");
  const dir = await Deno.makeTempDir({ prefix: "learn_vocab_" });
  writeWorld(`${dir}/world`, world);
  const out = `${dir}/tiny.safetensors`;
  await pretrain({
    data: `${dir}/world`,
    out,
    learnVocab: 400,
    config: TINY_CLIP,
    epochs: 1,
    batch: 16,
    holdout: 0,
    log: () => {},
  });
  const beside = vocabBeside(out);
  assert.equal(beside, `${dir}/tiny.bpe.txt.gz`);
  const tok = await Tokenizer.load(beside);
  const st = await readSafetensors(out);
  assert.deepEqual(st.tensors.get("token_embedding.weight")!.shape, [tok.vocabSize, 64]);
  assert.equal(JSON.parse(st.metadata["clipkit.vocab"]).merges, tok.merges);
  // found without --vocab, and the same ids as the file read directly
  const { model, tokenizer } = await loadClip(out);
  assert.equal(tokenizer.source, beside);
  assert.deepEqual(tokenizer.encode(captions[1]), tok.encode(captions[1]));
  model.dispose();
  // moved away: refused by name, not read with OpenAI's ids
  await Deno.rename(beside, `${dir}/elsewhere.gz`);
  await assert.rejects(
    () => loadClip(out),
    (e: Error) => e instanceof VocabNotFoundError && e.message.includes(beside),
  );
  // and an explicit vocabulary larger than the table is refused, naming both
  (await loadClip(out, `${dir}/elsewhere.gz`)).model.dispose();
  await assert.rejects(
    () => loadClip(out, makeBig(dir)),
    /has 49408 tokens, but .*tiny\.safetensors's token table has \d+ rows/,
  );
  await Deno.remove(dir, { recursive: true });
});

/** A stand-in for OpenAI's 49,408-token vocabulary (48,894 distinct merges). */
function makeBig(dir: string): string {
  const { chars } = byteAlphabet();
  const lines = ["#version: 0.2"];
  for (let i = 0; lines.length <= 48894; i++) {
    lines.push(`${chars[i % 256]} ${chars[(i >> 8) % 256]}`);
  }
  const path = `${dir}/big.txt`;
  Deno.writeTextFileSync(path, lines.join("\n") + "\n");
  return path;
}
