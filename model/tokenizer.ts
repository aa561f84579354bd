/**
 * OpenAI CLIP's byte-level BPE tokenizer (the behaviour of `clip/simple_tokenizer.py` and
 * `clip.tokenize`), host side.
 *
 * Vocabulary: the 256 byte symbols (GPT-2's printable byte alphabet), their `</w>` end-of-word
 * variants, the first 48,894 merges of `bpe_simple_vocab_16e6.txt.gz` joined, then
 * `<|startoftext|>` = 49406 and `<|endoftext|>` = 49407. A vocabulary learnt by `learnBpe`
 * (model/bpe_learn.ts) has the same layout with its own merges: its header line declares how many
 * (`#version: 0.2 merges: N`), and start/end-of-text are its last two ids (`sot`, `eot`), so the
 * end-of-text position is still the largest id of a row, as OpenAI's text tower finds it.
 *
 * Text clean-up follows CLIP: fix the text, unescape HTML twice, strip, collapse whitespace, strip,
 * lower-case. CLIP's "fix" is ftfy.fix_text, which is not available here; we apply NFC
 * normalisation only — the same substitution the golden cases were generated with (their README:
 * "NFC normalisation and no other text clean-up" instead of ftfy; the HTML unescaping and
 * whitespace collapsing of the official code path did run, as the `&amp; &lt;tag&gt;` case shows).
 * So ftfy's other repairs (mojibake, curly quotes → straight, full-width → ASCII, ...) are not
 * applied: "don’t" tokenizes differently from "don't", as it would under the golden generator.
 *
 * Python-compatibility details that matter for exact ids:
 * - whitespace is Python's `str.isspace` set (includes \x1c–\x1f and \x85, not \ufeff), not JS `\s`;
 * - CLIP compiles its split regex with IGNORECASE: after lower-casing the only visible effects are
 *   that `'ſ` (long s) counts as the contraction `'s`, and U+0345 (combining ypogegrammeni, which
 *   case-folds to a letter) matches neither the letter nor the "other" class and is dropped;
 * - `html.unescape` semantics: numeric references with the HTML5 fix-ups (0x80–0x9f read as
 *   windows-1252, surrogates / out-of-range → U+FFFD, non-characters removed), named references
 *   with or without `;` for the legacy names, longest legacy prefix otherwise. The named table here
 *   is HTML 4's set plus &apos; (all the common ones), not HTML5's full 2,231 names.
 * Unicode-version differences between V8 and Python (newly assigned letters) are not emulated.
 */
import { gunzipSync } from "fflate";

export const SOT = 49406;
export const EOT = 49407;
export const VOCAB_SIZE = 49408;
export const CONTEXT_LENGTH = 77;
/** Merges used by CLIP: 49152 − 256 − 2 (lines 1..48894 after the version header). */
export const N_MERGES = 48894;
export const VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz";
export const VOCAB_URL =
  "https://github.com/openai/CLIP/raw/main/clip/bpe_simple_vocab_16e6.txt.gz";

// ---------------------------------------------------------------------------------------------
// Locating the vocabulary

export class VocabNotFoundError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "VocabNotFoundError";
  }
}

function envGet(name: string): string | undefined {
  try {
    const v = Deno.env.get(name);
    return v === "" ? undefined : v;
  } catch {
    return undefined; // no --allow-env: behave as if unset
  }
}

/** Where the vocabulary is expected: `$CLIPKIT_CACHE/<file>`, else `~/.cache/clipkit/<file>`. */
export function defaultVocabPath(): string {
  const dir = envGet("CLIPKIT_CACHE") ??
    `${envGet("HOME") ?? envGet("USERPROFILE") ?? "~"}/.cache/clipkit`;
  return `${dir.replace(/\/+$/, "")}/${VOCAB_FILE}`;
}

function statKind(path: string): "file" | "dir" | null {
  try {
    const s = Deno.statSync(path);
    return s.isDirectory ? "dir" : "file";
  } catch (e) {
    if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory) return null;
    throw e;
  }
}

function howToGet(target: string): string {
  return `Download the file clip/${VOCAB_FILE} of OpenAI's CLIP repository (MIT):\n` +
    `  ${VOCAB_URL}\n` +
    `and save it as ${target} (the folder can be changed with $CLIPKIT_CACHE), ` +
    `or pass --vocab FILE with the path of a copy.`;
}

/**
 * The vocabulary file to use: `explicit` when given (a file, or a folder holding
 * bpe_simple_vocab_16e6.txt.gz), else `defaultVocabPath()`. Throws `VocabNotFoundError` saying
 * what to download and where to put it. Never downloads anything.
 */
export function findVocab(explicit?: string): string {
  if (explicit !== undefined && explicit !== "") {
    const kind = statKind(explicit);
    if (kind === "file") return explicit;
    if (kind === "dir") {
      const inside = `${explicit.replace(/\/+$/, "")}/${VOCAB_FILE}`;
      if (statKind(inside) === "file") return inside;
    }
    throw new VocabNotFoundError(
      `CLIP's BPE vocabulary was not found at ${explicit} (given explicitly).\n` +
        howToGet(defaultVocabPath()),
    );
  }
  const path = defaultVocabPath();
  if (statKind(path) === "file") return path;
  throw new VocabNotFoundError(
    `CLIP's BPE vocabulary (${VOCAB_FILE}) was not found at ${path}.\n` + howToGet(path),
  );
}

// ---------------------------------------------------------------------------------------------
// Text clean-up

/** Python's str.isspace set (what `re`'s \s matches in whitespace_clean). */
const WS = String.raw`\t-\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000`;
const WS_RUN = new RegExp(`[${WS}]+`, "gu");
const WS_EDGES = new RegExp(`^[${WS}]+|[${WS}]+$`, "gu");

/** CLIP's split pattern; see the header for the `'ſ` and U+0345 cases (IGNORECASE in Python). */
const SPLIT = new RegExp(
  String.raw`<\|startoftext\|>|<\|endoftext\|>|'[sſ]|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|` +
    String.raw`[^${WS}\p{L}\p{N}\u0345]+`,
  "gu",
);

// HTML 4 named references (+ apos, and the upper-case legacy aliases of HTML5).
const LATIN1_NAMES =
  "nbsp iexcl cent pound curren yen brvbar sect uml copy ordf laquo not shy reg " +
  "macr deg plusmn sup2 sup3 acute micro para middot cedil sup1 ordm raquo frac14 frac12 frac34 " +
  "iquest Agrave Aacute Acirc Atilde Auml Aring AElig Ccedil Egrave Eacute Ecirc Euml Igrave " +
  "Iacute Icirc Iuml ETH Ntilde Ograve Oacute Ocirc Otilde Ouml times Oslash Ugrave Uacute Ucirc " +
  "Uuml Yacute THORN szlig agrave aacute acirc atilde auml aring aelig ccedil egrave eacute ecirc " +
  "euml igrave iacute icirc iuml eth ntilde ograve oacute ocirc otilde ouml divide oslash ugrave " +
  "uacute ucirc uuml yacute thorn yuml"; // U+00A0..U+00FF in order
const GREEK_UPPER = "Alpha Beta Gamma Delta Epsilon Zeta Eta Theta Iota Kappa Lambda Mu Nu Xi " +
  "Omicron Pi Rho - Sigma Tau Upsilon Phi Chi Psi Omega"; // U+0391.., U+03A2 unassigned
const GREEK_LOWER = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi " +
  "omicron pi rho sigmaf sigma tau upsilon phi chi psi omega"; // U+03B1..
const OTHER_NAMES: [string, number][] = Object.entries({
  quot: 34,
  amp: 38,
  apos: 39,
  lt: 60,
  gt: 62,
  QUOT: 34,
  AMP: 38,
  LT: 60,
  GT: 62,
  COPY: 169,
  REG: 174,
  OElig: 338,
  oelig: 339,
  Scaron: 352,
  scaron: 353,
  Yuml: 376,
  fnof: 402,
  circ: 710,
  tilde: 732,
  thetasym: 977,
  upsih: 978,
  piv: 982,
  ensp: 8194,
  emsp: 8195,
  thinsp: 8201,
  zwnj: 8204,
  zwj: 8205,
  lrm: 8206,
  rlm: 8207,
  ndash: 8211,
  mdash: 8212,
  lsquo: 8216,
  rsquo: 8217,
  sbquo: 8218,
  ldquo: 8220,
  rdquo: 8221,
  bdquo: 8222,
  dagger: 8224,
  Dagger: 8225,
  bull: 8226,
  hellip: 8230,
  permil: 8240,
  prime: 8242,
  Prime: 8243,
  lsaquo: 8249,
  rsaquo: 8250,
  oline: 8254,
  frasl: 8260,
  euro: 8364,
  image: 8465,
  weierp: 8472,
  real: 8476,
  trade: 8482,
  alefsym: 8501,
  larr: 8592,
  uarr: 8593,
  rarr: 8594,
  darr: 8595,
  harr: 8596,
  crarr: 8629,
  lArr: 8656,
  uArr: 8657,
  rArr: 8658,
  dArr: 8659,
  hArr: 8660,
  forall: 8704,
  part: 8706,
  exist: 8707,
  empty: 8709,
  nabla: 8711,
  isin: 8712,
  notin: 8713,
  ni: 8715,
  prod: 8719,
  sum: 8721,
  minus: 8722,
  lowast: 8727,
  radic: 8730,
  prop: 8733,
  infin: 8734,
  ang: 8736,
  and: 8743,
  or: 8744,
  cap: 8745,
  cup: 8746,
  int: 8747,
  there4: 8756,
  sim: 8764,
  cong: 8773,
  asymp: 8776,
  ne: 8800,
  equiv: 8801,
  le: 8804,
  ge: 8805,
  sub: 8834,
  sup: 8835,
  nsub: 8836,
  sube: 8838,
  supe: 8839,
  oplus: 8853,
  otimes: 8855,
  perp: 8869,
  sdot: 8901,
  lceil: 8968,
  rceil: 8969,
  lfloor: 8970,
  rfloor: 8971,
  lang: 0x27e8,
  rang: 0x27e9,
  loz: 9674,
  spades: 9824,
  clubs: 9827,
  hearts: 9829,
  diams: 9830,
});

/** name (with trailing ";") → text; legacy names also without ";" (as in HTML5 / Python). */
const ENTITIES: Map<string, string> = (() => {
  const m = new Map<string, string>();
  const legacy = new Set(["quot", "amp", "lt", "gt", "QUOT", "AMP", "LT", "GT", "COPY", "REG"]);
  const add = (name: string, cp: number, isLegacy: boolean) => {
    m.set(name + ";", String.fromCodePoint(cp));
    if (isLegacy) m.set(name, String.fromCodePoint(cp));
  };
  LATIN1_NAMES.split(" ").forEach((n, i) => add(n, 0xa0 + i, true));
  GREEK_UPPER.split(" ").forEach((n, i) => n !== "-" && add(n, 0x391 + i, false));
  GREEK_LOWER.split(" ").forEach((n, i) => add(n, 0x3b1 + i, false));
  for (const [n, cp] of OTHER_NAMES) add(n, cp, legacy.has(n));
  return m;
})();

/** Numeric references 0x80..0x9f read as windows-1252 (undefined bytes map to themselves). */
const CP1252 = [
  0x20ac,
  0x81,
  0x201a,
  0x192,
  0x201e,
  0x2026,
  0x2020,
  0x2021,
  0x2c6,
  0x2030,
  0x160,
  0x2039,
  0x152,
  0x8d,
  0x17d,
  0x8f,
  0x90,
  0x2018,
  0x2019,
  0x201c,
  0x201d,
  0x2022,
  0x2013,
  0x2014,
  0x2dc,
  0x2122,
  0x161,
  0x203a,
  0x153,
  0x9d,
  0x17e,
  0x178,
];

function numericRef(num: number): string {
  if (num === 0) return "\ufffd";
  if (num === 0x0d) return "\r";
  if (num >= 0x80 && num <= 0x9f) return String.fromCodePoint(CP1252[num - 0x80]);
  if ((num >= 0xd800 && num <= 0xdfff) || num > 0x10ffff) return "\ufffd";
  if (
    (num >= 0x1 && num <= 0x8) || num === 0xb || (num >= 0xe && num <= 0x1f) ||
    (num >= 0x7f && num <= 0x9f) || (num >= 0xfdd0 && num <= 0xfdef) || (num & 0xfffe) === 0xfffe
  ) return "";
  return String.fromCodePoint(num);
}

const CHARREF = /&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)/gu;

/** Python's html.unescape (see the header for the size of the named table). */
export function htmlUnescape(s: string): string {
  if (!s.includes("&")) return s;
  return s.replace(CHARREF, (whole, ref: string) => {
    if (ref[0] === "#") {
      const hex = ref[1] === "x" || ref[1] === "X";
      const digits = ref.slice(hex ? 2 : 1).replace(/;$/, "");
      return numericRef(hex ? parseInt(digits, 16) : parseInt(digits, 10));
    }
    const hit = ENTITIES.get(ref);
    if (hit !== undefined) return hit;
    const cps = Array.from(ref); // prefixes count code points, as in Python
    for (let x = cps.length - 1; x > 1; x--) {
      const h = ENTITIES.get(cps.slice(0, x).join(""));
      if (h !== undefined) return h + cps.slice(x).join("");
    }
    return whole;
  });
}

/** CLIP's clean-up: fix (NFC here), unescape HTML twice, collapse whitespace, strip, lower-case. */
export function cleanText(text: string): string {
  let t = text.normalize("NFC");
  t = htmlUnescape(htmlUnescape(t));
  return t.replace(WS_RUN, " ").replace(WS_EDGES, "").toLowerCase();
}

/** CLIP's pre-tokenisation of an already cleaned text. */
export function splitWords(cleaned: string): string[] {
  return cleaned.match(SPLIT) ?? [];
}

// ---------------------------------------------------------------------------------------------
// Byte alphabet and BPE

/** GPT-2's reversible byte → printable character map, in vocabulary order. */
export function byteAlphabet(): { bytes: number[]; chars: string[] } {
  const bytes: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) bytes.push(b);
  for (let b = 0xa1; b <= 0xac; b++) bytes.push(b);
  for (let b = 0xae; b <= 0xff; b++) bytes.push(b);
  const cps = [...bytes];
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bytes.includes(b)) {
      bytes.push(b);
      cps.push(256 + n++);
    }
  }
  return { bytes, chars: cps.map((c) => String.fromCodePoint(c)) };
}

/** UTF-8 bytes of a string; lone surrogates become U+FFFD (Python would raise). */
export function utf8(s: string, out: number[]): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    let c = s.charCodeAt(i);
    if (c < 0x80) {
      out[n++] = c;
      continue;
    }
    if (c >= 0xd800 && c <= 0xdfff) {
      const d = i + 1 < s.length ? s.charCodeAt(i + 1) : 0;
      if (c <= 0xdbff && d >= 0xdc00 && d <= 0xdfff) {
        c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
        i++;
      } else c = 0xfffd;
    }
    if (c < 0x800) {
      out[n++] = 0xc0 | (c >> 6);
    } else if (c < 0x10000) {
      out[n++] = 0xe0 | (c >> 12);
      out[n++] = 0x80 | ((c >> 6) & 63);
    } else {
      out[n++] = 0xf0 | (c >> 18);
      out[n++] = 0x80 | ((c >> 12) & 63);
      out[n++] = 0x80 | ((c >> 6) & 63);
    }
    out[n++] = 0x80 | (c & 63);
  }
  return n;
}

const CACHE_LIMIT = 1 << 16;

export class Tokenizer {
  /** token string (byte alphabet, `</w>` marks) → id, as OpenAI's `encoder`. */
  readonly encoder: Map<string, number>;
  /** id → token string (undefined for ids that a later duplicate overwrote; none in CLIP's file). */
  readonly decoder: (string | undefined)[];
  readonly vocabSize: number;
  /** `<|startoftext|>` and `<|endoftext|>`: the last two ids (49406, 49407 in OpenAI's). */
  readonly sot: number;
  readonly eot: number;
  /** How many merges the vocabulary holds (N_MERGES in OpenAI's). */
  readonly merges: number;
  /** the file this was loaded from, when loaded with `load`. */
  readonly source?: string;

  private readonly byteId = new Int32Array(256);
  private readonly byteEndId = new Int32Array(256);
  private readonly charToByte = new Map<number, number>();
  /** (left id · 65536 + right id) → merge rank */
  private readonly ranks = new Map<number, number>();
  private readonly mergeLeft: Int32Array;
  private readonly mergeRight: Int32Array;
  private readonly mergeOut: Int32Array;
  private readonly cache = new Map<string, number[]>();
  private readonly scratch: number[] = [];

  /**
   * Builds the tokenizer from the decompressed merges file (version header + merges). OpenAI's file
   * (no count in its header) must hold at least N_MERGES merges, of which CLIP uses the first
   * N_MERGES; a learnt one (`merges: N` in its header) exactly the N it declares.
   */
  constructor(mergesText: string, source?: string) {
    this.source = source;
    const where = source ? ` in ${source}` : "";
    const eol = mergesText.indexOf("\n");
    const header = mergesText.slice(0, eol < 0 ? mergesText.length : eol);
    const declared = /^#version:.*\bmerges: (\d+)\s*$/.exec(header);
    const want = declared ? Number(declared[1]) : N_MERGES;
    if (want > N_MERGES) {
      throw new Error(
        `BPE vocabulary${where} declares ${want} merges; at most ${N_MERGES} are used`,
      );
    }
    // Only the header and the first `want` lines are used; OpenAI's file holds 262,144 merges.
    const lines: string[] = [];
    for (let pos = 0; lines.length <= want && pos <= mergesText.length;) {
      const end = mergesText.indexOf("\n", pos);
      lines.push(mergesText.slice(pos, end < 0 ? mergesText.length : end));
      pos = end < 0 ? mergesText.length + 1 : end + 1;
    }
    if (lines.length < want + 1 || lines.slice(1).some((l) => l.trim() === "")) {
      const got = lines.slice(1).filter((l) => l.trim() !== "").length;
      throw new Error(
        `BPE vocabulary${where} has ${got} merge lines; ${
          declared ? `its header declares ${want}` : `CLIP needs ${N_MERGES}`
        }`,
      );
    }
    const merges: [string, string][] = [];
    for (let i = 1; i <= want; i++) {
      const line = lines[i], sp = line.indexOf(" ");
      const simple = sp > 0 && sp === line.lastIndexOf(" ") && /^\S+ \S+$/.test(line);
      const parts = simple ? [line.slice(0, sp), line.slice(sp + 1)] : line.trim().split(/\s+/);
      if (parts.length !== 2) {
        throw new Error(`BPE vocabulary${where}: line ${i + 1} is not a merge ("${lines[i]}")`);
      }
      merges.push([parts[0], parts[1]]);
    }
    this.merges = merges.length;

    const { bytes, chars } = byteAlphabet();
    const vocab: string[] = [...chars, ...chars.map((c) => c + "</w>")];
    for (const [a, b] of merges) vocab.push(a + b);
    vocab.push("<|startoftext|>", "<|endoftext|>");
    this.vocabSize = vocab.length;
    this.sot = vocab.length - 2;
    this.eot = vocab.length - 1;
    this.encoder = new Map();
    vocab.forEach((t, i) => this.encoder.set(t, i)); // later duplicates win, as dict(zip(...))
    this.decoder = new Array(vocab.length).fill(undefined);
    for (const [t, i] of this.encoder) this.decoder[i] = t;

    for (let i = 0; i < 256; i++) {
      this.byteId[bytes[i]] = this.encoder.get(chars[i])!;
      this.byteEndId[bytes[i]] = this.encoder.get(chars[i] + "</w>")!;
      this.charToByte.set(chars[i].codePointAt(0)!, bytes[i]);
    }

    this.mergeLeft = new Int32Array(merges.length).fill(-1);
    this.mergeRight = new Int32Array(merges.length).fill(-1);
    this.mergeOut = new Int32Array(merges.length).fill(-1);
    merges.forEach(([a, b], r) => {
      const ia = this.encoder.get(a), ib = this.encoder.get(b);
      // A pair whose parts are not tokens can never form during BPE: skip it.
      if (ia === undefined || ib === undefined) return;
      this.ranks.set(ia * 65536 + ib, r); // a repeated pair keeps its last rank, as dict(zip(...))
      this.mergeLeft[r] = ia;
      this.mergeRight[r] = ib;
      this.mergeOut[r] = this.encoder.get(vocab[512 + r])!; // vocab[512 + r] is a + b
    });
    this.resetCache();
  }

  /** Reads `bpe_simple_vocab_16e6.txt.gz` (or its decompressed text); see `findVocab`. */
  static async load(path?: string): Promise<Tokenizer> {
    const file = findVocab(path);
    const raw = await Deno.readFile(file);
    let data = raw;
    if (raw[0] === 0x1f && raw[1] === 0x8b) {
      try {
        data = gunzipSync(raw);
      } catch (e) {
        throw new Error(`cannot decompress the BPE vocabulary ${file}: ${(e as Error).message}`);
      }
    }
    return new Tokenizer(new TextDecoder().decode(data), file);
  }

  private resetCache() {
    this.cache.clear();
    this.cache.set("<|startoftext|>", [this.sot]);
    this.cache.set("<|endoftext|>", [this.eot]);
  }

  /** BPE ids of one pre-tokenised word (cached). */
  bpe(word: string): number[] {
    const hit = this.cache.get(word);
    if (hit !== undefined) return hit;
    const buf = this.scratch;
    const n = utf8(word, buf);
    if (n === 0) return [];
    let sym: number[] = new Array(n);
    for (let i = 0; i < n - 1; i++) sym[i] = this.byteId[buf[i]];
    sym[n - 1] = this.byteEndId[buf[n - 1]];
    while (sym.length > 1) {
      let best = Infinity;
      for (let i = 0; i + 1 < sym.length; i++) {
        const r = this.ranks.get(sym[i] * 65536 + sym[i + 1]);
        if (r !== undefined && r < best) best = r;
      }
      if (best === Infinity) break;
      const a = this.mergeLeft[best], b = this.mergeRight[best], m = this.mergeOut[best];
      const next: number[] = [];
      for (let i = 0; i < sym.length;) {
        if (sym[i] === a && i + 1 < sym.length && sym[i + 1] === b) {
          next.push(m);
          i += 2;
        } else next.push(sym[i++]);
      }
      sym = next;
    }
    if (this.cache.size >= CACHE_LIMIT) this.resetCache();
    this.cache.set(word, sym);
    return sym;
  }

  /** BPE ids of a text, without start/end tokens (OpenAI's `SimpleTokenizer.encode`). */
  encode(text: string): number[] {
    const ids: number[] = [];
    for (const w of splitWords(cleanText(text))) {
      for (const id of this.bpe(w)) ids.push(id);
    }
    return ids;
  }

  /**
   * Ids as decoded by OpenAI's `decode`: token strings joined, bytes decoded as UTF-8 (invalid
   * sequences → U+FFFD), `</w>` → " ". Special tokens decode to their names and padding id 0 to
   * "!", so strip those first when decoding a `tokenize` row.
   */
  decode(ids: Iterable<number>): string {
    const bytes: number[] = [];
    for (const id of ids) {
      const t = Number.isInteger(id) ? this.decoder[id] : undefined;
      if (t === undefined) throw new Error(`Tokenizer.decode: id ${id} is not in the vocabulary`);
      for (const ch of t) bytes.push(this.charToByte.get(ch.codePointAt(0)!)!);
    }
    return new TextDecoder().decode(new Uint8Array(bytes)).replaceAll("</w>", " ");
  }

  /**
   * `clip.tokenize`: [n, contextLength] row-major ids, each row `sot … eot` then zeros (49406,
   * 49407 in OpenAI's vocabulary). Too long: with `truncate`, cut to contextLength keeping eot last;
   * otherwise throw.
   */
  tokenize(texts: string[] | string, contextLength = CONTEXT_LENGTH, truncate = true): Int32Array {
    const list = typeof texts === "string" ? [texts] : texts;
    if (!Number.isInteger(contextLength) || contextLength < 1) {
      throw new Error(
        `Tokenizer.tokenize: contextLength must be a positive integer, got ${contextLength}`,
      );
    }
    const out = new Int32Array(list.length * contextLength);
    list.forEach((text, i) => {
      const ids = [this.sot, ...this.encode(text), this.eot];
      if (ids.length > contextLength) {
        if (!truncate) {
          const shown = text.length > 200 ? text.slice(0, 200) + "…" : text;
          throw new Error(
            `Tokenizer.tokenize: input ${i} "${shown}" is too long for context length ` +
              `${contextLength} (${ids.length} tokens with start and end)`,
          );
        }
        ids.length = contextLength;
        ids[contextLength - 1] = this.eot;
      }
      out.set(ids, i * contextLength);
    });
    return out;
  }
}
