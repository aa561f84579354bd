/**
 * `deno run -A pipeline/evaluate_pretrained.ts --model FILE --data DIR [--out report.json]`
 *
 * Evaluates a pretrained CLIP on a captioned dataset (the format pipeline/pretrain.ts reads), on
 * the pairs pretraining held out (same path hash, holdout fraction and seed, read from the
 * checkpoint's metadata when present):
 *   - zero-shot accuracy per domain, with "a photo of a {class}." and a domain-aware prompt
 *     "a {domain} of a {class}." (folder names with "_" → " ");
 *   - linear-probe accuracy: multinomial logistic regression (full batch, AdamW on the GPU) on
 *     frozen, L2-normalised and standardised image features of the training pairs, tested on the
 *     held-out ones;
 *   - image↔text retrieval recall@1 and @5 among the held-out pairs. Captions are compared as
 *     strings: identical captions count as one candidate text, and a retrieved text (image) is
 *     a hit when the query owns that caption.
 * A checkpoint pretrained without a holdout is evaluated on a 30 % hash split of its own training
 * data (`split.seenInTraining` is then true).
 */
import { parseArgs } from "node:util";
import * as T from "../engine/mod.ts";
import type { Tensor } from "../engine/mod.ts";
import { CLIP } from "../model/clip.ts";
import { findVocab, Tokenizer } from "../model/tokenizer.ts";
import { vocabFor } from "../model/load.ts";
import { loadClipStateDict } from "../model/hf.ts";
import { looksLikeSafetensors, parseSafetensors } from "../model/safetensors.ts";
import { folderClassName } from "./data.ts";
import { inChunks, loadPairs, type PairData, pairPixels, splitPairs } from "./pretrain.ts";

export interface EvaluateOptions {
  /** A checkpoint path, or a loaded model (then pass holdout and seed). */
  model: string | CLIP;
  data: string | PairData;
  vocab?: string;
  /** Held-out fraction and seed of the pretraining run (default: the checkpoint's, else 0.1, 0). */
  holdout?: number;
  seed?: number;
  batch?: number;
  /** Prompt templates: `{class}` and `{domain}` are replaced. */
  templates?: { plain?: string; domain?: string };
  probe?: { steps?: number; lr?: number; weightDecay?: number };
  log?: (line: string) => void;
}

export interface Recall {
  r1: number;
  r5: number;
}

export interface EvalReport {
  model: string;
  data: string;
  split: { train: number; test: number; holdout: number; seed: number; seenInTraining: boolean };
  zeroShot: {
    templates: { plain: string; domain: string };
    overall: { plain: number; domain: number | null };
    perDomain: Record<string, { n: number; plain: number; domain: number }>;
  };
  linearProbe: {
    classes: number;
    steps: number;
    trainAccuracy: number;
    testAccuracy: number;
  } | null;
  retrieval: { pairs: number; texts: number; imageToText: Recall; textToImage: Recall };
}

export const PLAIN_TEMPLATE = "a photo of a {class}.";
export const DOMAIN_TEMPLATE = "a {domain} of a {class}.";

/** Checkpoint metadata written by pretrain (null for other files). */
async function pretrainMeta(path: string): Promise<Record<string, unknown> | null> {
  try {
    const bytes = await Deno.readFile(path);
    if (!looksLikeSafetensors(bytes)) return null;
    const m = parseSafetensors(bytes, path).metadata["clipkit.pretrain"];
    return m ? JSON.parse(m) : null;
  } catch {
    return null;
  }
}

/** L2-normalised image features [n, embed] of some pairs (no tape). */
export function imageFeatures(model: CLIP, d: PairData, idx: number[], batch = 256): Tensor {
  return inChunks(
    idx.length,
    batch,
    (s, e) => T.normalize(model.encodeImage(pairPixels(d, idx.slice(s, e))).features),
  );
}

/** L2-normalised text features [n, embed] of texts (no tape). */
export function textFeatures(model: CLIP, tok: Tokenizer, texts: string[], batch = 256): Tensor {
  const ctx = model.config.contextLength;
  return inChunks(
    texts.length,
    batch,
    (s, e) => T.normalize(model.encodeText(tok.tokenize(texts.slice(s, e), ctx))),
  );
}

/** Row-wise argmax of a host [n, c] matrix. */
function argmaxRows(m: Float32Array, n: number, c: number): Int32Array {
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    let best = 0;
    for (let j = 1; j < c; j++) if (m[i * c + j] > m[i * c + best]) best = j;
    out[i] = best;
  }
  return out;
}

/** a · bᵀ on the GPU, read back. */
async function similarity(a: Tensor, b: Tensor): Promise<Float32Array> {
  const s = T.noGrad(() => T.matmul(a, b, { transB: true }));
  const v = await s.data() as Float32Array;
  s.dispose();
  return v;
}

/**
 * Recall@k of queries [nq] against candidates [nc] given the score matrix (row per query): a
 * query's rank is the number of candidates scoring above its best true candidate.
 */
export function recallAt(
  scores: Float32Array,
  nq: number,
  nc: number,
  truth: (q: number) => number[],
  ks: number[],
): number[] {
  const hits = ks.map(() => 0);
  for (let q = 0; q < nq; q++) {
    const row = scores.subarray(q * nc, (q + 1) * nc);
    let best = -Infinity;
    for (const c of truth(q)) best = Math.max(best, row[c]);
    let rank = 0;
    for (let c = 0; c < nc; c++) if (row[c] > best) rank++;
    ks.forEach((k, i) => (hits[i] += rank < k ? 1 : 0));
  }
  return hits.map((h) => (nq ? h / nq : 0));
}

/** Multinomial logistic regression on [n, e] features, full batch; returns train/test accuracy. */
async function linearProbe(
  xtr: Tensor,
  ytr: Int32Array,
  xte: Tensor,
  yte: Int32Array,
  classes: number,
  { steps = 300, lr = 0.05, weightDecay = 1e-4 } = {},
): Promise<{ trainAccuracy: number; testAccuracy: number; steps: number }> {
  const E = xtr.shape[1];
  // standardise with the training statistics
  const [mu, sd] = T.noGrad(() => {
    const m = T.mean(xtr, 0, true);
    return [m, T.sqrt(T.add(T.mean(T.square(T.sub(xtr, m)), 0, true), 1e-6))];
  });
  const std = (x: Tensor) => T.noGrad(() => T.div(T.sub(x, mu), sd));
  const [a, b] = [std(xtr), std(xte)];
  const W = T.param(T.zeros([classes, E])), bias = T.param(T.zeros([classes]));
  const opt = new T.AdamW([W, bias], { lr, weightDecay });
  const labels = T.tensor(ytr, [ytr.length], "i32");
  for (let s = 0; s < steps; s++) {
    T.scope(() => {
      T.backward(T.crossEntropy(T.linear(a, W, bias), labels));
      opt.step();
      opt.zeroGrad();
    });
  }
  const acc = async (x: Tensor, y: Int32Array) => {
    const l = T.noGrad(() => T.linear(x, W, bias));
    const p = argmaxRows(await l.data() as Float32Array, y.length, classes);
    l.dispose();
    return y.length ? p.reduce((n, c, i) => n + (c === y[i] ? 1 : 0), 0) / y.length : 0;
  };
  const out = { trainAccuracy: await acc(a, ytr), testAccuracy: await acc(b, yte), steps };
  for (const t of [mu, sd, a, b, W, bias, labels]) t.dispose();
  opt.dispose();
  return out;
}

export async function evaluatePretrained(o: EvaluateOptions): Promise<EvalReport> {
  const log = o.log ?? console.log;
  await T.initEngine();
  const meta = typeof o.model === "string" ? await pretrainMeta(o.model) : null;
  const hyper = (meta?.hyper ?? {}) as { holdout?: number; seed?: number };
  const holdout = o.holdout ?? hyper.holdout ?? 0.1, seed = o.seed ?? hyper.seed ?? 0;
  const batch = o.batch ?? 256;
  const model = typeof o.model === "string"
    ? CLIP.fromStateDict(await loadClipStateDict(o.model), { file: o.model })
    : o.model;
  try {
    const R = model.config.imageResolution;
    const data = typeof o.data === "string" ? await loadPairs(o.data, R, { log }) : o.data;
    if (data.resolution !== R) {
      throw new Error(`pairs are preprocessed at ${data.resolution} px; the model takes ${R}`);
    }
    const seenInTraining = !(holdout > 0);
    const { train, test } = splitPairs(data, seenInTraining ? 0.3 : holdout, seed);
    if (!test.length) throw new Error(`no held-out pairs (holdout ${holdout}, seed ${seed})`);
    const tok = await Tokenizer.load(
      typeof o.model === "string" ? await vocabFor(o.model, o.vocab) : findVocab(o.vocab),
    );
    const plainT = o.templates?.plain ?? PLAIN_TEMPLATE;
    const domainT = o.templates?.domain ?? DOMAIN_TEMPLATE;
    const C = data.classnames.length;
    const prompts = (tpl: string, domain: string) =>
      data.classnames.map((c) => tpl.replaceAll("{class}", c).replaceAll("{domain}", domain));

    const imgTest = imageFeatures(model, data, test, batch);
    try {
      // zero-shot, per domain
      const yTest = Int32Array.from(test, (i) => data.labels[i]);
      const plainTxt = textFeatures(model, tok, prompts(plainT, ""), batch);
      const predPlain = argmaxRows(await similarity(imgTest, plainTxt), test.length, C);
      plainTxt.dispose();
      const groups = new Map<number, number[]>(); // domain → positions in test
      test.forEach((i, k) => {
        const d = data.domains[i];
        if (!groups.has(d)) groups.set(d, []);
        groups.get(d)!.push(k);
      });
      const perDomain: EvalReport["zeroShot"]["perDomain"] = {};
      let plainHits = 0, domainHits = 0, domainN = 0;
      for (const [d, ks] of [...groups].sort((x, y) => x[0] - y[0])) {
        const name = d >= 0 ? data.domainNames[d] : "all";
        const ph = ks.filter((k) => predPlain[k] === yTest[k]).length;
        plainHits += ph;
        let dh = NaN;
        if (d >= 0) {
          const txt = textFeatures(model, tok, prompts(domainT, folderClassName(name)), batch);
          const sub = T.scope(() =>
            T.noGrad(() =>
              T.indexSelect(imgTest, 0, T.tensor(Int32Array.from(ks), [ks.length], "i32"))
            )
          );
          const pred = argmaxRows(await similarity(sub, txt), ks.length, C);
          sub.dispose();
          txt.dispose();
          dh = ks.filter((k, j) => pred[j] === yTest[k]).length;
          domainHits += dh;
          domainN += ks.length;
        }
        perDomain[name] = { n: ks.length, plain: ph / ks.length, domain: dh / ks.length };
      }

      // linear probe: train pairs → held-out pairs
      let probe: EvalReport["linearProbe"] = null;
      if (train.length && C > 1) {
        const imgTrain = imageFeatures(model, data, train, batch);
        probe = {
          classes: C,
          ...(await linearProbe(
            imgTrain,
            Int32Array.from(train, (i) => data.labels[i]),
            imgTest,
            yTest,
            C,
            o.probe,
          )),
        };
        imgTrain.dispose();
      }

      // retrieval among the held-out pairs (captions as strings)
      const textIndex = new Map<string, number>();
      const ownTexts = test.map((i) =>
        data.captions[i].map((c) => {
          if (!textIndex.has(c)) textIndex.set(c, textIndex.size);
          return textIndex.get(c)!;
        })
      );
      const owners: number[][] = Array.from({ length: textIndex.size }, () => []);
      ownTexts.forEach((ts, k) => ts.forEach((t) => owners[t].push(k)));
      const txt = textFeatures(model, tok, [...textIndex.keys()], batch);
      const s = await similarity(imgTest, txt); // [test, texts]
      const sT = await similarity(txt, imgTest);
      txt.dispose();
      const [i1, i5] = recallAt(s, test.length, textIndex.size, (q) => ownTexts[q], [1, 5]);
      const [t1, t5] = recallAt(sT, textIndex.size, test.length, (q) => owners[q], [1, 5]);

      return {
        model: typeof o.model === "string" ? o.model : "<model>",
        data: typeof o.data === "string" ? o.data : data.root,
        split: { train: train.length, test: test.length, holdout, seed, seenInTraining },
        zeroShot: {
          templates: { plain: plainT, domain: domainT },
          overall: {
            plain: plainHits / test.length,
            domain: domainN ? domainHits / domainN : null,
          },
          perDomain,
        },
        linearProbe: probe,
        retrieval: {
          pairs: test.length,
          texts: textIndex.size,
          imageToText: { r1: i1, r5: i5 },
          textToImage: { r1: t1, r5: t5 },
        },
      };
    } finally {
      imgTest.dispose();
    }
  } finally {
    if (typeof o.model === "string") model.dispose();
  }
}

// ---------------------------------------------------------------------------------------------
// CLI

const USAGE = `usage: deno task eval-pretrained --model FILE --data DIR
  [--vocab FILE] [--holdout F] [--seed N] [--batch N] [--out report.json]
  [--plain-template "a photo of a {class}."] [--domain-template "a {domain} of a {class}."]`;

export async function main(args: string[]): Promise<number> {
  let parsed;
  const str = { type: "string" as const };
  try {
    parsed = parseArgs({
      args,
      options: {
        model: str,
        data: str,
        vocab: str,
        holdout: str,
        seed: str,
        batch: str,
        out: str,
        "plain-template": str,
        "domain-template": str,
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (err) {
    console.error(`${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  const v = parsed.values;
  if (v.help) {
    console.log(USAGE);
    return 0;
  }
  if (!v.model || !v.data) {
    console.error(`--model and --data are required\n${USAGE}`);
    return 2;
  }
  const num = (s?: string) => (s === undefined ? undefined : Number(s));
  try {
    const report = await evaluatePretrained({
      model: v.model,
      data: v.data,
      vocab: v.vocab,
      holdout: num(v.holdout),
      seed: num(v.seed),
      batch: num(v.batch),
      templates: { plain: v["plain-template"], domain: v["domain-template"] },
      log: (s) => console.error(s),
    });
    const json = JSON.stringify(report, null, 2);
    if (v.out) await Deno.writeTextFile(v.out, json + "\n");
    console.log(json);
    return 0;
  } catch (e) {
    console.error(`evaluate: ${(e as Error).message}`);
    return 1;
  }
}
