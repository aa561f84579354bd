/**
 * CLIP BPE tokenizer: the golden cases of the official code path, truncation, padding, decoding,
 * Python-compatible text clean-up, and the missing-vocabulary error. Host only (no GPU needed).
 */
import { assert, sharedDir } from "./util.ts";
import {
  cleanText,
  CONTEXT_LENGTH,
  defaultVocabPath,
  EOT,
  findVocab,
  htmlUnescape,
  SOT,
  splitWords,
  Tokenizer,
  VOCAB_FILE,
  VOCAB_SIZE,
  VOCAB_URL,
  VocabNotFoundError,
} from "../model/tokenizer.ts";

const shared = sharedDir();
const vocabPath = `${shared}clip/${VOCAB_FILE}`;
const tok = await Tokenizer.load(vocabPath);

interface Case {
  text: string;
  bpe: number[];
  ids77: number[];
}
const cases: Case[] = JSON.parse(
  Deno.readTextFileSync(`${shared}golden/micro/tokenizer_cases.json`),
);

const row = (a: Int32Array, i: number, n = CONTEXT_LENGTH) =>
  Array.from(a.subarray(i * n, i * n + n));
const padded = (
  ids: number[],
  n = CONTEXT_LENGTH,
) => [...ids, ...new Array(n - ids.length).fill(0)];

Deno.test("tokenizer: vocabulary layout matches OpenAI's (49,408 tokens, 48,894 merges)", () => {
  assert.equal(tok.vocabSize, VOCAB_SIZE);
  assert.equal(tok.encoder.size, VOCAB_SIZE);
  assert.equal(tok.decoder[0], "!");
  assert.equal(tok.decoder[255], "\u0143"); // last byte outside the printable ranges (0xad)
  assert.equal(tok.decoder[256], "!</w>");
  assert.equal(tok.decoder[512], "in"); // first merge "i n"
  assert.equal(tok.decoder[49405], "jekyll</w>"); // merge 48,894, the last one used
  assert.equal(tok.encoder.has("habib</w>"), false); // merge 48,895 is not used
  assert.equal(tok.decoder[SOT], "<|startoftext|>");
  assert.equal(tok.decoder[EOT], "<|endoftext|>");
});

Deno.test("tokenizer: every golden case (bpe and ids77)", () => {
  assert.ok(cases.length >= 20, `only ${cases.length} golden cases`);
  for (const c of cases) {
    assert.deepEqual(tok.encode(c.text), c.bpe, `encode ${JSON.stringify(c.text)}`);
    assert.deepEqual(
      row(tok.tokenize(c.text), 0),
      padded(c.ids77),
      `tokenize ${JSON.stringify(c.text)}`,
    );
  }
  // the same, as one batch
  const all = tok.tokenize(cases.map((c) => c.text));
  assert.equal(all.length, cases.length * CONTEXT_LENGTH);
  cases.forEach((c, i) => assert.deepEqual(row(all, i), padded(c.ids77), `batch row ${i}`));
});

Deno.test("tokenizer: empty and blank texts give start, end, zeros", () => {
  for (const t of ["", " ", "\t\n ", "&nbsp;"]) {
    assert.deepEqual(tok.encode(t), [], JSON.stringify(t));
    assert.deepEqual(row(tok.tokenize(t), 0), padded([SOT, EOT]), JSON.stringify(t));
  }
  assert.equal(tok.tokenize([]).length, 0);
});

Deno.test("tokenizer: truncation keeps the end token last; padding is zero", () => {
  const long = cases.find((c) => c.bpe.length + 2 > CONTEXT_LENGTH);
  assert.ok(long, "the golden cases hold a text longer than the context");
  const r = row(tok.tokenize(long.text), 0);
  assert.deepEqual(r, [SOT, ...long.bpe.slice(0, CONTEXT_LENGTH - 2), EOT]);
  assert.throws(
    () => tok.tokenize(["a dog", long.text], CONTEXT_LENGTH, false),
    (e: Error) =>
      /input 1 "the quick brown fox/.test(e.message) && /context length 77/.test(e.message),
  );

  const t = "a photo of a dog."; // 6 BPE ids, 8 with start and end
  const ids = [SOT, 320, 1125, 539, 320, 1929, 269, EOT];
  assert.deepEqual(row(tok.tokenize(t, 10), 0, 10), [...ids, 0, 0]);
  assert.deepEqual(row(tok.tokenize(t, 8, false), 0, 8), ids); // exact fit is not "too long"
  assert.deepEqual(row(tok.tokenize(t, 7), 0, 7), [SOT, 320, 1125, 539, 320, 1929, EOT]);
  assert.deepEqual(row(tok.tokenize([t, "a", t], 7), 1, 7), [SOT, 320, EOT, 0, 0, 0, 0]);
  assert.throws(
    () => tok.tokenize(t, 7, false),
    /"a photo of a dog\." is too long for context length 7/,
  );
  assert.throws(() => tok.tokenize(t, 0), /contextLength/);
  assert.deepEqual(Array.from(tok.tokenize(t)), Array.from(tok.tokenize([t])));
});

Deno.test("tokenizer: decode round-trips plain text", () => {
  for (
    const [t, want] of [
      ["a photo of a dog", "a photo of a dog "],
      ["A Photo  of\ta DOG", "a photo of a dog "],
      ["café naïve résumé", "café naïve résumé "],
      ["日本語のテキスト", "日本語のテキスト "],
      ["emoji 😀👍 test", "emoji 😀👍 test "],
      ["supercalifragilisticexpialidocious", "supercalifragilisticexpialidocious "],
    ]
  ) assert.equal(tok.decode(tok.encode(t)), want, t);
  assert.equal(tok.decode([SOT, 320, EOT]), "<|startoftext|>a <|endoftext|>");
  assert.equal(tok.decode(tok.encode("a dog.")), "a dog . "); // punctuation is its own word
  assert.throws(() => tok.decode([VOCAB_SIZE]), /id 49408 is not in the vocabulary/);
  assert.throws(() => tok.decode([-1]), /id -1/);
});

Deno.test("tokenizer: text clean-up follows Python (html.unescape, str.isspace, lower)", () => {
  // expected values from Python's html.unescape
  const unescape: [string, string][] = [
    ["&amp;amp;", "&amp;"],
    ["&#39;&#x27&#X41", "''A"],
    ["&#150;&#128;&#129;", "\u2013\u20ac\x81"], // windows-1252 fix-ups
    ["&#0;&#xD800;&#1114112;&#12345678901234567890;", "\ufffd\ufffd\ufffd\ufffd"],
    ["a&#11;b&#x7f;c&#xFFFE;d&#13;", "abcd\r"],
    ["&nbsp&copyx &notit; &ampx;", "\xa0\u00a9x \u00acit; &x;"], // legacy names need no ";"
    ["&hearts;&lang;&Sigma;&apos;", "\u2665\u27e8\u03a3'"],
    ["&foo; & &; &#; &#x; &Hearts;", "&foo; & &; &#; &#x; &Hearts;"],
    ["no entities", "no entities"],
  ];
  for (const [s, want] of unescape) assert.equal(htmlUnescape(s), want, s);

  assert.equal(cleanText("&amp;amp;"), "&"); // unescaped twice
  assert.equal(cleanText("  A\u00a0\x85B\t\n\x1cC\u3000 "), "a b c");
  assert.equal(cleanText("\ufeffa"), "\ufeffa"); // not whitespace in Python
  assert.equal(cleanText("CAFE\u0301"), "caf\u00e9"); // NFC, then lower-case
  assert.deepEqual(tok.encode("cafe\u0301"), tok.encode("café"));
  assert.deepEqual(splitWords("it's it'ſ x\u0345y 12 a-b"), [
    "it",
    "'s",
    "it",
    "'ſ",
    "x",
    "y",
    "1",
    "2",
    "a",
    "-",
    "b",
  ]);
  assert.deepEqual(tok.encode("<|endoftext|> <|STARTOFTEXT|>"), [EOT, SOT]);
  // expected ids from Python (regex with IGNORECASE, html.unescape, NFC in place of ftfy)
  const py: [string, number[]][] = [
    ["don\u2019t", [847, 728, 503, 339]], // no ftfy: curly quote stays
    ["it'\u017f fine", [585, 6, 129, 379, 3797]],
    ["&amp;amp; &#150; &nbsp;x &notit; &#x1F600;", [261, 1224, 343, 126, 361, 585, 282, 7334]],
    ["a\u0345b \ufeffc", [320, 321, 171, 119, 379, 322]],
    ["CAFE\u0301 \u0130stanbul \u03a3\u039f\u03a3", [
      15304,
      328,
      16384,
      11231,
      139,
      225,
      138,
      123,
      139,
      480,
    ]],
  ];
  for (const [t, ids] of py) assert.deepEqual(tok.encode(t), ids, JSON.stringify(t));
});

Deno.test("tokenizer: repeated words come from the cache unchanged", () => {
  const t = "a photo of a horse in the style of a sketch";
  const first = tok.encode(t);
  for (let i = 0; i < 3; i++) assert.deepEqual(tok.encode(t), first);
  assert.deepEqual(tok.bpe("horse"), tok.encode("horse"));
  assert.deepEqual(tok.bpe(""), []);
});

Deno.test("tokenizer: a bad vocabulary file is refused", () => {
  assert.throws(
    () => new Tokenizer("#version: 0.2\ni n\nt h\n"),
    /2 merge lines; CLIP needs 48894/,
  );
  const lines = ["#version: 0.2", ...new Array(48894).fill("a b")];
  lines[100] = "a b c";
  assert.throws(() => new Tokenizer(lines.join("\n")), /line 101 is not a merge/);
});

Deno.test("tokenizer: missing vocabulary says what to download and where", async () => {
  const tmp = Deno.makeTempDirSync({ prefix: "clipkit_tok_" });
  const saved = { cache: Deno.env.get("CLIPKIT_CACHE"), home: Deno.env.get("HOME") };
  const restore = (k: string, v: string | undefined) =>
    v === undefined ? Deno.env.delete(k) : Deno.env.set(k, v);
  const explains = (path: string) => (e: unknown) => {
    assert.ok(e instanceof VocabNotFoundError, `not a VocabNotFoundError: ${e}`);
    for (const part of [path, VOCAB_URL, `clip/${VOCAB_FILE}`, "--vocab FILE", "CLIPKIT_CACHE"]) {
      assert.ok(e.message.includes(part), `message lacks ${part}: ${e.message}`);
    }
    return true;
  };
  try {
    // explicit path
    assert.throws(() => findVocab(`${tmp}/nope.txt.gz`), explains(`${tmp}/nope.txt.gz`));
    await assert.rejects(
      () => Tokenizer.load(`${tmp}/nope.txt.gz`),
      explains(`${tmp}/nope.txt.gz`),
    );
    assert.equal(findVocab(vocabPath), vocabPath);
    assert.equal(findVocab(`${shared}clip`), `${shared}clip/${VOCAB_FILE}`); // a folder holding it

    // $CLIPKIT_CACHE
    Deno.env.set("CLIPKIT_CACHE", tmp);
    const want = `${tmp}/${VOCAB_FILE}`;
    assert.equal(defaultVocabPath(), want);
    assert.throws(() => findVocab(), explains(want));
    assert.throws(() => findVocab(""), explains(want));
    Deno.symlinkSync(vocabPath, want);
    assert.equal(findVocab(), want);
    assert.deepEqual((await Tokenizer.load()).encode("a dog"), [320, 1929]);

    // ~/.cache/clipkit
    Deno.env.delete("CLIPKIT_CACHE");
    Deno.env.set("HOME", tmp);
    const home = `${tmp}/.cache/clipkit/${VOCAB_FILE}`;
    assert.equal(defaultVocabPath(), home);
    assert.throws(() => findVocab(), explains(home));
  } finally {
    restore("CLIPKIT_CACHE", saved.cache);
    restore("HOME", saved.home);
    Deno.removeSync(tmp, { recursive: true });
  }
});
