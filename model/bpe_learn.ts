/**
 * Learning a byte-level BPE vocabulary from a caption corpus: the procedure CLIP's merges came
 * from (Sennrich et al. 2016 over GPT-2's byte alphabet), so that a model pretrained here needs no
 * downloaded vocabulary.
 *
 *  1. Every text is cleaned and split into words exactly as the tokenizer does (`cleanText`,
 *     `splitWords`), and the words are counted.
 *  2. A word is its UTF-8 bytes as symbols of the printable byte alphabet, the last one marked with
 *     `</w>` (so "a" at a word's end and "a" inside one are different symbols, as in CLIP's file).
 *  3. Repeatedly, the adjacent symbol pair with the highest count (summed over the words' counts)
 *     is merged everywhere into one new symbol. Ties go to the pair whose left, then right, symbol
 *     comes first in code-unit order, so the same corpus always gives the same bytes. It stops after
 *     `merges` merges, or when no pair occurs `minFrequency` times.
 *
 * The result is written in the merges-file format `Tokenizer` reads — a version header declaring
 * the count (`#version: 0.2 merges: N`), then one "left right" pair a line — so the vocabulary is
 * the 256 byte symbols, their 256 `</w>` variants, one token per merge, then `<|startoftext|>` and
 * `<|endoftext|>` as the last two ids, the layout of OpenAI's (whose `SimpleTokenizer` reads the
 * file too: it skips the header and keeps what follows).
 *
 * Counting is incremental: each pair knows the words it has occurred in, a merge re-counts only
 * those words, and the next pair comes off a max-heap whose stale entries are skipped when popped.
 */
import { gzipSync } from "fflate";
import { byteAlphabet, cleanText, splitWords, utf8 } from "./tokenizer.ts";

export interface LearnBpeOptions {
  /** Stop when the most frequent pair occurs fewer times than this (default 2). */
  minFrequency?: number;
}

export interface LearnedBpe {
  /** The merges file's text (header + one merge a line, newline-terminated). */
  text: string;
  /** The merges learnt, in order. */
  merges: [string, string][];
  /** Distinct words of the corpus, and the word occurrences. */
  words: number;
  occurrences: number;
}

const SEP = "\u0000"; // never a symbol: byte 0 maps to U+0100 in the byte alphabet

/** Learns up to `merges` BPE merges from `texts` (see the top of this file). */
export function learnBpe(
  texts: Iterable<string>,
  merges: number,
  opts: LearnBpeOptions = {},
): LearnedBpe {
  if (!Number.isInteger(merges) || merges < 0) {
    throw new Error(`learnBpe: merges must be a whole number ≥ 0, got ${merges}`);
  }
  const minFrequency = opts.minFrequency ?? 2;
  const { bytes, chars } = byteAlphabet();
  const charOf: string[] = new Array(256);
  bytes.forEach((b, i) => (charOf[b] = chars[i]));

  // 1–2. words and their counts, as symbol sequences
  const counts = new Map<string, number>();
  let occurrences = 0;
  for (const t of texts) {
    for (const w of splitWords(cleanText(t))) {
      if (w === "<|startoftext|>" || w === "<|endoftext|>") continue;
      counts.set(w, (counts.get(w) ?? 0) + 1);
      occurrences++;
    }
  }
  const buf: number[] = [];
  const words: string[][] = [], freq: number[] = [];
  for (const [w, c] of [...counts].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))) {
    const n = utf8(w, buf);
    if (n === 0) continue;
    const sym = Array.from(buf.slice(0, n), (b) => charOf[b]);
    sym[n - 1] += "</w>";
    words.push(sym);
    freq.push(c);
  }

  // 3. pair counts, where each pair occurs, and a max-heap of (count, pair)
  const pairCount = new Map<string, number>();
  const pairWords = new Map<string, Set<number>>();
  const heap: [number, string][] = [];
  const before = (x: [number, string], y: [number, string]) =>
    x[0] !== y[0] ? x[0] > y[0] : x[1] < y[1]; // key "a\0b" orders by a, then b
  const push = (e: [number, string]) => {
    heap.push(e);
    for (let i = heap.length - 1; i > 0;) {
      const p = (i - 1) >> 1;
      if (!before(heap[i], heap[p])) break;
      [heap[i], heap[p]] = [heap[p], heap[i]];
      i = p;
    }
  };
  const pop = (): [number, string] | undefined => {
    const top = heap[0], last = heap.pop();
    if (heap.length && last) {
      heap[0] = last;
      for (let i = 0;;) {
        const l = 2 * i + 1, r = l + 1;
        let m = i;
        if (l < heap.length && before(heap[l], heap[m])) m = l;
        if (r < heap.length && before(heap[r], heap[m])) m = r;
        if (m === i) break;
        [heap[i], heap[m]] = [heap[m], heap[i]];
        i = m;
      }
    }
    return top;
  };
  const touched = new Set<string>();
  const count = (w: number, sign: 1 | -1) => {
    const s = words[w];
    for (let i = 0; i + 1 < s.length; i++) {
      const k = s[i] + SEP + s[i + 1];
      pairCount.set(k, (pairCount.get(k) ?? 0) + sign * freq[w]);
      let ws = pairWords.get(k);
      if (!ws) pairWords.set(k, ws = new Set());
      if (sign > 0) ws.add(w);
      touched.add(k);
    }
  };
  const flushTouched = () => {
    for (const k of touched) {
      const c = pairCount.get(k)!;
      if (c > 0) push([c, k]);
      else {
        pairCount.delete(k);
        pairWords.delete(k);
      }
    }
    touched.clear();
  };
  words.forEach((_, w) => count(w, 1));
  flushTouched();

  const learnt: [string, string][] = [];
  while (learnt.length < merges) {
    const top = pop();
    if (!top) break;
    const [c, k] = top;
    if (pairCount.get(k) !== c) continue; // stale
    if (c < minFrequency) break;
    const [a, b] = k.split(SEP);
    learnt.push([a, b]);
    const merged = a + b;
    for (const w of [...pairWords.get(k)!]) {
      const s = words[w];
      let has = false;
      for (let i = 0; i + 1 < s.length; i++) if (s[i] === a && s[i + 1] === b) has = true;
      if (!has) continue; // a word whose pair went in an earlier merge
      count(w, -1);
      const next: string[] = [];
      for (let i = 0; i < s.length;) {
        if (s[i] === a && i + 1 < s.length && s[i + 1] === b) {
          next.push(merged);
          i += 2;
        } else next.push(s[i++]);
      }
      words[w] = next;
      count(w, 1);
    }
    flushTouched();
  }
  const text = `#version: 0.2 merges: ${learnt.length}\n` +
    learnt.map(([a, b]) => `${a} ${b}\n`).join("");
  return { text, merges: learnt, words: words.length, occurrences };
}

/** Writes a learnt vocabulary gzip-compressed (as OpenAI ships its own), deterministically. */
export async function writeVocab(path: string, learnt: LearnedBpe): Promise<void> {
  // mtime 0 and no file name: the same vocabulary gives the same bytes
  const gz = gzipSync(new TextEncoder().encode(learnt.text), { level: 9, mtime: 0 });
  const tmp = `${path}.tmp`;
  await Deno.writeFile(tmp, gz);
  await Deno.rename(tmp, path);
}
