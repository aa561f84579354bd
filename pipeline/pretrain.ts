/**
 * `deno task pretrain --data DIR --out model.safetensors [options]`
 *
 * CLIP pretraining from scratch: a small CLIP (`CLIP.random`, OpenAI's initialisation) trained on
 * image–caption pairs with the symmetric InfoNCE loss and a learnable temperature (clamped at
 * 100 after every step, as OpenCLIP does), AdamW (weight decay on matrices only), linear warm-up
 * then cosine decay, and global gradient-norm clipping. The result is an ordinary OpenAI-named
 * safetensors checkpoint (F32) that every other command loads like a released model.
 *
 * Data: a dataset folder (class or domain folders, see pipeline/data.ts) with `captions.jsonl`
 * at its root, one `{"path": "<relative image path>", "caption": "..."}` (or `"captions": [...]`)
 * per line; an image may have several lines, and one of its captions is drawn per epoch. Images
 * without a caption get "a photo of a {class}.". Images are decoded and preprocessed once and kept
 * as Float32Array. A seeded hash of each path holds out a fraction of the pairs (`holdout`) that
 * training never sees; pipeline/evaluate_pretrained.ts evaluates on them.
 *
 * The token table keeps CLIP's 49,408 rows (checkpoint compatibility). By default only the rows
 * the captions use are trained, as a compact table (`embedRows: "seen"`): rows that never occur
 * get zero gradients, so AdamW only decays them by Π(1 − lrₜ·wd), which is applied when the table
 * is written back. This equals training the whole table (`"all"`) and spares an AdamW update,
 * a gradient-norm pass and an index-add over the full table each step.
 *
 * Resuming: after every epoch the model is written to `out` and the training state (model,
 * AdamW moments, extension parameters) to `<out>.resume.safetensors`; `resume: true` continues
 * from there and reaches the same weights as an uninterrupted run (the epoch order is a function
 * of seed and epoch).
 *
 * Extensions (ProtoCLIP): a `PretrainExtension` adds trainable tensors, runs a hook before each
 * episode (a slice of the epoch's shuffled pairs; by default the whole epoch) with a feature
 * extractor over the episode, and adds loss terms computed from each batch's features.
 */
import { parseArgs } from "node:util";
import * as T from "../engine/mod.ts";
import type { Tensor } from "../engine/mod.ts";
import { clampLogitScale, infoNCE, protoclipExtension } from "./protoclip.ts";
import { CLIP, type ClipConfig, eotPositions, initOf } from "../model/clip.ts";
import { findVocab, Tokenizer, VOCAB_SIZE } from "../model/tokenizer.ts";
import { learnBpe, writeVocab } from "../model/bpe_learn.ts";
import { VOCAB_META, vocabBeside } from "../model/load.ts";
import { decodeImage } from "../model/image.ts";
import { clipPreprocess } from "../model/preprocess.ts";
import { type HostWeight, type StateDict, toFloat32 } from "../model/weights.ts";
import { saveSafetensors } from "../model/safetensors.ts";
import {
  canonicalJson,
  type Dataset,
  itemLocation,
  readDataset,
  readImageBytes,
  readZipEntry,
  sha256,
  zipIndex,
} from "./data.ts";

// ---------------------------------------------------------------------------------------------
// Model configuration

/** The default pretraining model: a small ViT for 32-px images, and a short text context. */
export const SMALL_CLIP: Readonly<ClipConfig> = {
  embedDim: 128,
  imageResolution: 32,
  visionPatchSize: 4,
  visionWidth: 128,
  visionLayers: 4,
  visionHeads: 2,
  contextLength: 32,
  vocabSize: VOCAB_SIZE,
  transformerWidth: 128,
  transformerHeads: 2,
  transformerLayers: 4,
};

/** Fills a partial configuration from SMALL_CLIP; heads follow the widths (width / 64). */
export function pretrainConfig(c: Partial<ClipConfig> = {}): ClipConfig {
  const out = { ...SMALL_CLIP, ...c };
  if (c.visionHeads === undefined) out.visionHeads = out.visionWidth / 64;
  if (c.transformerHeads === undefined) out.transformerHeads = out.transformerWidth / 64;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Pairs

/** Image–caption pairs with preprocessed pixels, in the dataset's path order. */
export interface PairData {
  root: string;
  paths: string[];
  /** Class index per image. */
  labels: Int32Array;
  /** Domain index per image (−1 without domains). */
  domains: Int32Array;
  classnames: string[];
  domainNames: string[];
  /** Captions per image (at least one each). */
  captions: string[][];
  /** How many images fell back to "a photo of a {class}.". */
  fallback: number;
  /** [N, 3, R, R], CLIP-normalised. */
  pixels: Float32Array;
  resolution: number;
  /** sha256 of paths, labels, domains, captions and resolution (resume compatibility). */
  digest: string;
}

export const FALLBACK_TEMPLATE = "a photo of a {}.";

/** Parses `captions.jsonl` text (path → captions); `file` names it in errors. */
export function parseCaptions(text: string, file = "captions.jsonl"): Map<string, string[]> {
  const out = new Map<string, string[]>();
  text.split("\n").forEach((line, i) => {
    if (!line.trim()) return;
    let rec: Record<string, unknown>;
    try {
      rec = JSON.parse(line);
    } catch (e) {
      throw new Error(`${file}:${i + 1}: not JSON (${(e as Error).message})`);
    }
    const path = typeof rec.path === "string" ? rec.path.replace(/^\.\//, "") : null;
    const caps = typeof rec.caption === "string"
      ? [rec.caption]
      : Array.isArray(rec.captions) && rec.captions.every((c) => typeof c === "string")
      ? rec.captions as string[]
      : null;
    if (!path || !caps) {
      throw new Error(`${file}:${i + 1}: needs "path" and "caption" (or "captions": [...])`);
    }
    const list = out.get(path) ?? [];
    for (const c of caps) if (c.trim()) list.push(c);
    out.set(path, list);
  });
  return out;
}

/** The captions beside a dataset (its root's captions.jsonl, in a folder or zip), if any. */
export function datasetCaptions(ds: Dataset, file?: string): Map<string, string[]> {
  if (file) {
    // a file the user named must exist
    try {
      return parseCaptions(Deno.readTextFileSync(file), file);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) throw new Error(`captions file ${file} not found`);
      throw e;
    }
  }
  try {
    if (ds.source === "zip") {
      const name = `${ds.prefix ?? ""}captions.jsonl`;
      if (!zipIndex(ds.root).entries.has(name)) return new Map();
      const text = new TextDecoder().decode(readZipEntry(ds.root, name));
      return parseCaptions(text, `${ds.root}!/${name}`);
    }
    const f = `${ds.root}/captions.jsonl`;
    return parseCaptions(Deno.readTextFileSync(f), f);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return new Map();
    throw e;
  }
}

/**
 * Loads a captioned dataset, decoding and preprocessing every image once to `resolution`.
 * Unreadable images are skipped with a warning.
 */
export async function loadPairs(
  data: string | Dataset,
  resolution: number,
  { log = console.log, captionsFile }: { log?: (s: string) => void; captionsFile?: string } = {},
): Promise<PairData> {
  const ds = typeof data === "string" ? readDataset(data) : data;
  const caps = datasetCaptions(ds, captionsFile);
  const domainNames = ds.domains ?? [];
  const domainIndex = new Map(domainNames.map((d, i) => [d, i]));
  const per = 3 * resolution * resolution;
  const pixels = new Float32Array(ds.items.length * per);
  const paths: string[] = [], labels: number[] = [], domains: number[] = [];
  const captions: string[][] = [];
  let fallback = 0, skipped = 0;
  const t0 = performance.now();
  for (const it of ds.items) {
    try {
      const img = decodeImage(await readImageBytes(ds, it), itemLocation(ds, it));
      clipPreprocess(img, resolution, pixels, paths.length * per);
    } catch (e) {
      skipped++;
      log(`warning: skipping ${itemLocation(ds, it)}: ${(e as Error).message}`);
      continue;
    }
    let c = caps.get(it.path);
    if (!c?.length) {
      c = [FALLBACK_TEMPLATE.replace("{}", ds.classnames[it.label])];
      fallback++;
    }
    paths.push(it.path);
    labels.push(it.label);
    domains.push(it.domain !== undefined ? domainIndex.get(it.domain) ?? -1 : -1);
    captions.push(c);
    if (paths.length % 2000 === 0) {
      log(`decoded ${paths.length}/${ds.items.length} images (${secs(t0)} s)`);
    }
  }
  if (!paths.length) throw new Error(`${ds.root}: no readable images`);
  const known = new Set(ds.items.map((i) => i.path));
  const stray = [...caps.keys()].filter((p) => !known.has(p));
  if (stray.length) {
    log(`warning: ${stray.length} caption path(s) match no image (e.g. ${stray[0]})`);
  }
  if (caps.size && fallback) {
    log(`${fallback} image(s) without a caption use "${FALLBACK_TEMPLATE}"`);
  }
  const digest = "sha256:" +
    sha256(canonicalJson({ paths, labels, domains, captions, resolution }));
  return {
    root: ds.root,
    paths,
    labels: Int32Array.from(labels),
    domains: Int32Array.from(domains),
    classnames: ds.classnames,
    domainNames,
    captions,
    fallback,
    pixels: pixels.subarray(0, paths.length * per),
    resolution,
    digest,
  };
}

/** True when a pair is held out of training: a seeded hash of its path, below `fraction`. */
export function isHeldOut(path: string, fraction: number, seed: number): boolean {
  if (!(fraction > 0)) return false;
  return parseInt(sha256(`${seed}:${path}`).slice(0, 8), 16) / 2 ** 32 < fraction;
}

/** Indices of the held-out (test) and training pairs. */
export function splitPairs(
  d: Pick<PairData, "paths">,
  fraction: number,
  seed: number,
): { train: number[]; test: number[] } {
  const train: number[] = [], test: number[] = [];
  d.paths.forEach((p, i) => (isHeldOut(p, fraction, seed) ? test : train).push(i));
  return { train, test };
}

// ---------------------------------------------------------------------------------------------
// The loss: CLIP's symmetric InfoNCE, pipeline/protoclip.ts's infoNCE(image, text, logitScale)
// (logitScale: the log-scale parameter; the multiplier exp(min(logitScale, ln 100))).

export { infoNCE };

// ---------------------------------------------------------------------------------------------
// Extension point (ProtoCLIP)

/** What a loss extension sees of one batch (tensors on the tape; do not dispose them). */
export interface BatchContext {
  model: CLIP;
  /** Image and text features [B, embed], before normalisation. */
  image: Tensor;
  text: Tensor;
  /** exp(logit_scale), a scalar (CLIP's temperature multiplier). */
  scale: Tensor;
  /** Pair indices (into PairData) of the batch, in batch order. */
  indices: Int32Array;
  epoch: number;
  /** Global step (0-based). */
  step: number;
}

export interface EpisodeContext {
  model: CLIP;
  data: PairData;
  epoch: number;
  episode: number;
  /** Pair indices of this episode, in training order. */
  indices: Int32Array;
  /**
   * Image and text features [n, embed] (not normalised, no tape) of the given pairs, with the
   * captions drawn for this epoch, computed in batches. The caller disposes them.
   */
  encode(indices: Int32Array): { image: Tensor; text: Tensor };
}

export interface PretrainExtension {
  name: string;
  /** Extra trainable leaves (projection heads, a second temperature) by name: trained with the
   * model's AdamW (decay on rank ≥ 2), kept in the resume state, not in the exported CLIP. */
  params?: Map<string, Tensor>;
  /** Pairs per episode (rounded to whole batches); default: the whole epoch. */
  episodeSize?: number;
  /** Runs before each episode's training pass (ProtoCLIP: features, K-means, targets). */
  episode?(ctx: EpisodeContext): Promise<void> | void;
  /** Extra loss terms (weighted scalars on the tape), added to InfoNCE. */
  loss?(ctx: BatchContext): Record<string, Tensor>;
  /** Runs after each optimiser step (e.g. clamping its own temperature). */
  afterStep?(): void;
  /** Settings recorded in the checkpoint metadata. */
  describe?(): Record<string, unknown>;
  dispose?(): void;
}

// ---------------------------------------------------------------------------------------------
// Training

/**
 * f(s, e) over rows [s, e) of n in chunks, each in its own scope without a tape, concatenated:
 * only one chunk's activations are alive at a time.
 */
export function inChunks(n: number, chunk: number, f: (s: number, e: number) => Tensor): Tensor {
  const parts: Tensor[] = [];
  for (let s = 0; s < n; s += chunk) {
    parts.push(T.scope(() => T.noGrad(() => f(s, Math.min(n, s + chunk)))));
  }
  const all = T.concat(parts);
  parts.forEach((t) => t.dispose());
  return all;
}

/** The preprocessed images of pairs idx as one tensor [n, 3, R, R]. */
export function pairPixels(d: PairData, idx: ArrayLike<number>): Tensor {
  const R = d.resolution, per = 3 * R * R, n = idx.length;
  const px = new Float32Array(n * per);
  for (let k = 0; k < n; k++) px.set(d.pixels.subarray(idx[k] * per, (idx[k] + 1) * per), k * per);
  return T.tensor(px, [n, 3, R, R]);
}

/** The mean (and covariance) over rows of the features `encode` gives, read back to the host. */
async function moments(model: CLIP, encode: (m: CLIP) => Tensor, covariance = false) {
  const f = T.scope(() => T.noGrad(() => encode(model)));
  const [n, E] = f.shape;
  const fv = await f.data() as Float32Array;
  f.dispose();
  const mean = new Float64Array(E);
  for (let i = 0; i < n; i++) for (let k = 0; k < E; k++) mean[k] += fv[i * E + k] / n;
  if (!covariance) return { E, mean, cov: null };
  const cov = new Float64Array(E * E);
  for (let i = 0; i < n; i++) {
    for (let a = 0; a < E; a++) {
      const x = fv[i * E + a] - mean[a];
      for (let b = a; b < E; b++) cov[a * E + b] += (x * (fv[i * E + b] - mean[b])) / n;
    }
  }
  for (let a = 0; a < E; a++) for (let b = 0; b < a; b++) cov[a * E + b] = cov[b * E + a];
  return { E, mean, cov };
}

/**
 * Shifts a layer norm's bias b (followed by the projection P [W, E]) so that the mean of the
 * features `encode` gives becomes zero: the least-norm δ with δ·P = −mean, δ = −P (PᵀP)⁻¹ meanᵀ.
 */
export async function centreBias(
  model: CLIP,
  biasName: string,
  projName: string,
  encode: (m: CLIP) => Tensor,
) {
  const { E, mean } = await moments(model, encode);
  const P = await model.w(projName).data() as Float32Array, W = P.length / E;
  // A = PᵀP (E×E), solved for y by Gauss–Jordan with partial pivoting
  const A = new Float64Array(E * (E + 1));
  for (let a = 0; a < E; a++) {
    for (let b = 0; b < E; b++) {
      let acc = 0;
      for (let w = 0; w < W; w++) acc += P[w * E + a] * P[w * E + b];
      A[a * (E + 1) + b] = acc;
    }
    A[a * (E + 1) + E] = mean[a];
  }
  for (let c = 0; c < E; c++) {
    let piv = c;
    for (let r = c + 1; r < E; r++) {
      if (Math.abs(A[r * (E + 1) + c]) > Math.abs(A[piv * (E + 1) + c])) piv = r;
    }
    if (Math.abs(A[piv * (E + 1) + c]) < 1e-12) {
      throw new Error(`pretrain: centreInit: ${projName} has rank < ${E}`);
    }
    for (let j = 0; j <= E; j++) {
      const t = A[c * (E + 1) + j];
      A[c * (E + 1) + j] = A[piv * (E + 1) + j];
      A[piv * (E + 1) + j] = t;
    }
    for (let r = 0; r < E; r++) {
      if (r === c) continue;
      const k = A[r * (E + 1) + c] / A[c * (E + 1) + c];
      if (k) { for (let j = c; j <= E; j++) A[r * (E + 1) + j] -= k * A[c * (E + 1) + j]; }
    }
  }
  const y = Float64Array.from({ length: E }, (_, a) => A[a * (E + 1) + E] / A[a * (E + 1) + a]);
  const bias = model.w(biasName);
  const b = await bias.data() as Float32Array;
  for (let w = 0; w < W; w++) {
    let acc = 0;
    for (let a = 0; a < E; a++) acc += P[w * E + a] * y[a];
    b[w] -= acc;
  }
  T.writeTensor(bias, b);
}

/**
 * Eigen-decomposition of a symmetric n×n matrix (row-major) by cyclic Jacobi rotations: the
 * eigenvalues, and the eigenvectors as the columns of V. For the small (embedding-sized)
 * covariances of whitenProjection.
 */
export function symmetricEigen(A: ArrayLike<number>, n: number) {
  const a = Float64Array.from(A), V = new Float64Array(n * n);
  for (let i = 0; i < n; i++) V[i * n + i] = 1;
  for (let sweep = 0; sweep < 64; sweep++) {
    let off = 0, diag = 0;
    for (let p = 0; p < n; p++) {
      diag += a[p * n + p] ** 2;
      for (let q = p + 1; q < n; q++) off += a[p * n + q] ** 2;
    }
    if (off <= 1e-30 * diag || off === 0) break;
    for (let p = 0; p < n; p++) {
      for (let q = p + 1; q < n; q++) {
        const apq = a[p * n + q];
        if (apq === 0) continue;
        // the rotation that zeroes a[p][q]
        const th = (a[q * n + q] - a[p * n + p]) / (2 * apq);
        const t = (th >= 0 ? 1 : -1) / (Math.abs(th) + Math.sqrt(th * th + 1));
        const c = 1 / Math.sqrt(t * t + 1), s = t * c;
        for (let k = 0; k < n; k++) {
          const x = a[k * n + p], y = a[k * n + q];
          a[k * n + p] = c * x - s * y;
          a[k * n + q] = s * x + c * y;
        }
        for (let k = 0; k < n; k++) {
          const x = a[p * n + k], y = a[q * n + k];
          a[p * n + k] = c * x - s * y;
          a[q * n + k] = s * x + c * y;
        }
        for (let k = 0; k < n; k++) {
          const x = V[k * n + p], y = V[k * n + q];
          V[k * n + p] = c * x - s * y;
          V[k * n + q] = s * x + c * y;
        }
      }
    }
  }
  return { values: Float64Array.from({ length: n }, (_, i) => a[i * n + i]), vectors: V };
}

/**
 * Right-multiplies a tower's projection P [W, E] by the ZCA whitening Z = V diag(σ̄/√(λ+ε)) Vᵀ of
 * the (centred) features `encode` gives, so that they vary equally in every direction, keeping
 * their total variance (σ̄² the mean eigenvalue; ε = 10⁻³σ̄² bounds the gain of flat directions).
 * A random tower's features vary mostly along a few directions, set by what its random weights
 * happen to favour (in a caption, often the frame's words over the noun); whitened, every
 * direction in which the inputs differ counts alike.
 */
export async function whitenProjection(
  model: CLIP,
  projName: string,
  encode: (m: CLIP) => Tensor,
) {
  const { E, cov } = await moments(model, encode, true);
  const { values, vectors: V } = symmetricEigen(cov!, E);
  const avg = values.reduce((s, v) => s + Math.max(v, 0), 0) / E;
  if (!(avg > 0)) {
    throw new Error(`pretrain: whitenInit: the features before ${projName} do not vary`);
  }
  const gain = Array.from(values, (v) => Math.sqrt(avg / (Math.max(v, 0) + 1e-3 * avg)));
  const Z = new Float64Array(E * E); // V diag(gain) Vᵀ
  for (let a = 0; a < E; a++) {
    for (let b = 0; b < E; b++) {
      let acc = 0;
      for (let k = 0; k < E; k++) acc += V[a * E + k] * gain[k] * V[b * E + k];
      Z[a * E + b] = acc;
    }
  }
  const proj = model.w(projName);
  const P = await proj.data() as Float32Array, W = P.length / E;
  const out = new Float32Array(P.length);
  for (let w = 0; w < W; w++) {
    for (let b = 0; b < E; b++) {
      let acc = 0;
      for (let a = 0; a < E; a++) acc += P[w * E + a] * Z[a * E + b];
      out[w * E + b] = acc;
    }
  }
  T.writeTensor(proj, out);
}

/** What centreInit averages over: at most this many unique captions and images, in chunks. */
const CENTRE_SAMPLE = { captions: 4096, images: 512, chunk: 256 };

export type Positives = "pair" | "class";
export const POSITIVES: readonly Positives[] = ["pair", "class"];

export interface PretrainOptions {
  /** A dataset path (folder with captions.jsonl, zip or manifest) or loaded pairs. */
  data: string | PairData;
  /**
   * A captions.jsonl to use instead of the one at the dataset's root (captions for a dataset
   * that has none, such as PACS, or another wording of the same images).
   */
  captions?: string;
  /** The output checkpoint (safetensors). */
  out: string;
  /** Model shape; missing fields from SMALL_CLIP. */
  config?: Partial<ClipConfig>;
  epochs?: number;
  batch?: number;
  lr?: number;
  /** Warm-up steps (linear from 0); default min(2000, 10% of the run). */
  warmup?: number;
  weightDecay?: number;
  betas?: [number, number];
  eps?: number;
  /** Max global gradient norm (0 disables). */
  gradClip?: number;
  seed?: number;
  /** The BPE vocabulary file (see findVocab); OpenAI's by default. */
  vocab?: string;
  /**
   * Learn a byte-level BPE vocabulary of (at most) this many merges from the training captions
   * (model/bpe_learn.ts) instead of reading one: it is written beside the checkpoint
   * (`vocabBeside(out)`), recorded in its metadata, and sizes the token table (512 + merges + 2
   * rows), so that the model needs no downloaded file. Not with `vocab`.
   */
  learnVocab?: number;
  /** Fraction of pairs held out of training (by path hash). */
  holdout?: number;
  /** Continue from `<out>.resume.safetensors` when it exists. */
  resume?: boolean;
  /** Train only the token rows the captions use ("seen", exact) or the whole table ("all"). */
  embedRows?: "seen" | "all";
  /**
   * Standard deviation at initialisation of the token rows the captions use (default OpenAI's
   * 0.02, what `CLIP.random` draws; the other rows keep it). A small model trained for minutes
   * keeps 0.02-words too faint beside the positional embedding to tell the captions' nouns
   * apart; 1 (nn.Embedding's default) learnt faster in our measurements (README, "The default
   * run"). Unseen rows stay faint, so a word pretraining never saw adds little to a prompt.
   */
  embedInitStd?: number;
  /**
   * The temperature multiplier exp(logit_scale) at initialisation (default CLIP's 1/0.07; at most
   * 100, the clamp). A small model starts with nearly parallel features in each tower, so that
   * what tells a batch's pairs apart is a small part of each feature; a larger multiplier gives
   * that part a usable gradient from the first steps.
   */
  logitScaleInit?: number;
  /**
   * Data-dependent start: set the biases of the last layer norms (`ln_final`, `visual.ln_post`)
   * so that each tower's mean feature over the training captions (a sample of the images) is
   * zero. At OpenAI's initialisation every caption's feature is nearly the same vector (cosine
   * ≈ 0.99 between "a sketch of a star." and "a sketch of a heart."), so what tells pairs apart
   * is a small part of each feature; centred, it is the whole feature. Default off.
   */
  centreInit?: boolean;
  /**
   * centreInit, and the text projection whitened over the captions (whitenProjection), so that the
   * captions' features start spread equally in every direction. A random text tower's features of
   * the captions vary mostly along a few directions that its random weights favour, and which words
   * those are is luck: on the world, the loss a perfect image tower could reach against the locked
   * text features of the start (lockTextEpochs) was 1.5 with seed 0 and 2.7 with seed 1; whitened,
   * 0.75–0.84 for seeds 0–3 (README). Default off.
   */
  whitenInit?: boolean;
  /**
   * Epochs at the start during which the text tower is locked (not updated; LiT's locking, on the
   * text side): its features of the captions then act as fixed targets that the image tower learns
   * to meet before the two are trained together. Default 0.
   */
  lockTextEpochs?: number;
  /**
   * Draw every batch from a single domain (style), the batches of all domains shuffled together.
   * In a mixed batch the style alone tells most pairs apart, so InfoNCE is met by style first;
   * within one style it needs what the captions say about the content (count, shape) from the
   * first step. Needs domains; pairs that do not fill a domain's last batch wait for a later epoch.
   */
  batchByDomain?: boolean;
  /**
   * Which pairs of a batch InfoNCE counts as positives of each other: "pair" (CLIP: only the
   * matching caption) or "class" (every pair of the same class label, UniCL's image-text-label
   * target), so that "two stars in a sketch" and "a sketch of a star" are not pushed apart as
   * negatives. Identical caption strings need no option: their features are tied, and the loss
   * and its gradients are then the same whichever of them is the target. Default "pair".
   */
  positives?: Positives;
  /**
   * The text tower's learning rate relative to the schedule's (default 1). With the small CLIP's
   * token rows at std 1, the text tower trained at the image tower's rate can collapse: every
   * caption's feature nearly the same, the loss at ln B and the gradient gone (measured: README).
   */
  textLrScale?: number;
  /**
   * Steps over which the text tower's learning rate ramps linearly from 0 once lockTextEpochs
   * end (default 0: it starts at the full rate). Adam's first steps move every weight by about the
   * learning rate whatever its gradient, and a text tower released at the peak rate can collapse
   * in a few dozen steps (measured: README).
   */
  unlockWarmup?: number;
  /** Steps between progress lines (each reads back once). */
  logEvery?: number;
  /** Stop after this many steps in total (the schedule still spans all epochs). */
  maxSteps?: number;
  extension?: PretrainExtension;
  log?: (line: string) => void;
  /** Return the trained model (the caller disposes it) instead of disposing it. */
  keepModel?: boolean;
}

export interface StepRecord {
  step: number;
  epoch: number;
  loss: number;
  infoNCE: number;
  lr: number;
  scale: number;
  gradNorm: number;
  terms?: Record<string, number>;
}

export interface PretrainResult {
  out: string;
  statePath: string;
  config: ClipConfig;
  /** Epochs completed (in total, over resumes). */
  epochs: number;
  /** Global steps completed. */
  steps: number;
  stepsPerEpoch: number;
  trainPairs: number;
  heldOutPairs: number;
  /** Steps run by this call. */
  history: StepRecord[];
  /** Mean loss of each epoch this call ran. */
  epochLoss: { epoch: number; loss: number }[];
  resumedFrom: number | null;
  seconds: number;
  /** Training throughput of this call, after the first progress interval (compilation). */
  imagesPerSec: number;
  /** What the checkpoint's metadata records. */
  summary: Record<string, unknown>;
  /** The trained model, with `keepModel`. */
  model?: CLIP;
}

export const statePathOf = (out: string) =>
  out.replace(/\.safetensors$/i, "") + ".resume.safetensors";

const secs = (t0: number) => ((performance.now() - t0) / 1000).toFixed(1);
const fmtTime = (s: number) =>
  !Number.isFinite(s)
    ? "?"
    : s >= 3600
    ? `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`
    : s >= 60
    ? `${Math.floor(s / 60)}m${String(Math.floor(s % 60)).padStart(2, "0")}s`
    : `${s.toFixed(0)}s`;

/**
 * An epoch's pair order: a shuffle cut to whole batches, or with `domains`, whole batches that
 * each hold one domain's pairs, in shuffled order.
 */
export function epochOrder(
  rng: T.HostRng,
  train: number[],
  batch: number,
  domains: Int32Array | null,
): number[] {
  const shuffled = rng.shuffle([...train]);
  if (!domains) return shuffled.slice(0, Math.floor(shuffled.length / batch) * batch);
  const byDomain = new Map<number, number[]>();
  for (const i of shuffled) {
    if (!byDomain.has(domains[i])) byDomain.set(domains[i], []);
    byDomain.get(domains[i])!.push(i);
  }
  const batches: number[][] = [];
  for (const d of [...byDomain.keys()].sort((a, b) => a - b)) {
    const list = byDomain.get(d)!;
    for (let s = 0; s + batch <= list.length; s += batch) batches.push(list.slice(s, s + batch));
  }
  return rng.shuffle(batches).flat();
}

/** The seed of epoch e's shuffle and caption draws (independent of earlier epochs: resumable). */
const epochSeed = (seed: number, epoch: number) => (seed * 1_000_003 + epoch * 7919 + 17) % 2 ** 40;

const TABLE = "token_embedding.weight";
const COMPACT = "token_embedding.rows";

function f32Weight(a: Float32Array, shape: number[]): HostWeight {
  return { dtype: "F32", shape, data: new Uint8Array(a.buffer, a.byteOffset, a.byteLength) };
}

interface Group {
  opt: T.AdamW;
  names: string[];
  /** The text tower's (its learning rate follows textRate), or null: every parameter's. */
  text: boolean | null;
}

/** Trains a CLIP from scratch; see the module comment. */
export async function pretrain(o: PretrainOptions): Promise<PretrainResult> {
  const log = o.log ?? console.log;
  await T.initEngine();
  const config = pretrainConfig(o.config);
  const epochs = o.epochs ?? 10, seed = o.seed ?? 0, holdout = o.holdout ?? 0.1;
  const lr = o.lr ?? 5e-4, weightDecay = o.weightDecay ?? 0.2;
  const betas = o.betas ?? [0.9, 0.98], eps = o.eps ?? 1e-6;
  const gradClip = o.gradClip ?? 1, logEvery = Math.max(1, o.logEvery ?? 10);
  const embedRows = o.embedRows ?? "seen";
  // OpenAI's token std, as CLIP.random draws it
  const openaiTokenStd = initOf("token_embedding.weight", [], config)[2];
  const embedInitStd = o.embedInitStd ?? openaiTokenStd;
  const logitScaleInit = o.logitScaleInit ?? 1 / 0.07;
  const lockTextEpochs = o.lockTextEpochs ?? 0;
  // whitening starts from the centred features, so whitenInit implies centreInit
  const whitenInit = !!o.whitenInit, centreInit = !!o.centreInit || whitenInit;
  const textLrScale = o.textLrScale ?? 1;
  if (!(textLrScale > 0)) throw new Error(`pretrain: textLrScale must be > 0, got ${textLrScale}`);
  const positives = o.positives ?? "pair";
  if (!POSITIVES.includes(positives)) {
    throw new Error(`pretrain: positives must be one of ${POSITIVES.join(", ")}, got ${positives}`);
  }
  const unlockWarmup = o.unlockWarmup ?? 0;
  if (!(Number.isInteger(unlockWarmup) && unlockWarmup >= 0)) {
    throw new Error(`pretrain: unlockWarmup must be an integer ≥ 0, got ${unlockWarmup}`);
  }
  if (!(Number.isInteger(lockTextEpochs) && lockTextEpochs >= 0)) {
    throw new Error(`pretrain: lockTextEpochs must be an integer ≥ 0, got ${lockTextEpochs}`);
  }
  if (!(logitScaleInit >= 1 && logitScaleInit <= 100)) {
    throw new Error(`pretrain: logitScaleInit must be in [1, 100], got ${logitScaleInit}`);
  }
  if (!(embedInitStd > 0)) {
    throw new Error(`pretrain: embedInitStd must be > 0, got ${embedInitStd}`);
  }
  const ext = o.extension;
  for (const [k, v] of Object.entries({ epochs, batch: o.batch ?? 64 })) {
    if (!Number.isInteger(v) || v < 1) throw new Error(`pretrain: ${k} must be an integer ≥ 1`);
  }
  if (!(holdout >= 0 && holdout < 1)) throw new Error(`pretrain: holdout ${holdout} not in [0, 1)`);
  if (embedRows !== "seen" && embedRows !== "all") {
    throw new Error(`pretrain: embedRows must be "seen" or "all", got ${embedRows}`);
  }
  const tStart = performance.now();

  // data and captions
  const data = typeof o.data === "string"
    ? await loadPairs(o.data, config.imageResolution, { log, captionsFile: o.captions })
    : o.data;
  if (data.resolution !== config.imageResolution) {
    throw new Error(
      `pretrain: pairs are preprocessed at ${data.resolution} px, the model takes ${config.imageResolution}`,
    );
  }
  const { train, test } = splitPairs(data, holdout, seed);
  if (train.length < 2) throw new Error(`pretrain: ${train.length} training pair(s); need ≥ 2`);
  let batch = o.batch ?? 64;
  if (batch > train.length) {
    log(`batch ${batch} exceeds the ${train.length} training pairs; using ${train.length}`);
    batch = train.length;
  }
  const batchByDomain = !!o.batchByDomain;
  if (batchByDomain && train.some((i) => data.domains[i] < 0)) {
    throw new Error(`pretrain: batchByDomain needs a domain for every image (${data.root})`);
  }
  const batchDomains = batchByDomain ? data.domains : null;
  // every epoch's order has the same length, whatever its shuffle
  const stepsPerEpoch = epochOrder(T.hostRng(0), train, batch, batchDomains).length / batch;
  if (stepsPerEpoch < 1) throw new Error(`pretrain: no domain has a full batch of ${batch} pairs`);
  const totalSteps = epochs * stepsPerEpoch;
  const warmup = o.warmup ?? Math.min(2000, Math.floor(totalSteps / 10));
  const schedule = T.cosineSchedule({ baseLr: lr, totalSteps, warmupSteps: warmup });

  let tokenizer: Tokenizer, learnt: { file: string; merges: number; sha256: string } | null = null;
  if (o.learnVocab !== undefined) {
    if (o.vocab) throw new Error("pretrain: give either vocab (a file) or learnVocab, not both");
    if (!(Number.isInteger(o.learnVocab) && o.learnVocab >= 1)) {
      throw new Error(`pretrain: learnVocab must be a whole number ≥ 1, got ${o.learnVocab}`);
    }
    const bpe = learnBpe(train.flatMap((i) => data.captions[i]), o.learnVocab);
    const file = vocabBeside(o.out);
    await writeVocab(file, bpe);
    tokenizer = new Tokenizer(bpe.text, file);
    learnt = { file: file.split("/").pop()!, merges: bpe.merges.length, sha256: sha256(bpe.text) };
    config.vocabSize = tokenizer.vocabSize;
    log(
      `learnt a vocabulary of ${bpe.merges.length} merges (${tokenizer.vocabSize} tokens) from ` +
        `${bpe.words} distinct words of the training captions → ${file}`,
    );
  } else tokenizer = await Tokenizer.load(findVocab(o.vocab));
  if (tokenizer.vocabSize > config.vocabSize) {
    throw new Error(
      `pretrain: the vocabulary ${tokenizer.source} has ${tokenizer.vocabSize} tokens, more than ` +
        `the model's ${config.vocabSize} token rows`,
    );
  }
  const ctx = config.contextLength;
  const capStart = new Int32Array(data.captions.length + 1);
  data.captions.forEach((c, i) => (capStart[i + 1] = capStart[i] + c.length));
  const ids = tokenizer.tokenize(data.captions.flat(), ctx);
  const eot = eotPositions(ids, ctx);
  // the rows the captions use, and the ids renumbered into them
  const seen = [...new Set(ids)].sort((a, b) => a - b);
  const compactOf = new Map(seen.map((id, k) => [id, k]));
  const tokenIds = embedRows === "seen" ? ids.map((id) => compactOf.get(id)!) : ids;

  const statePath = statePathOf(o.out);
  const hyper = {
    lr,
    weightDecay,
    betas,
    eps,
    gradClip,
    batch,
    seed,
    holdout,
    warmup,
    embedRows,
    embedInitStd,
    logitScaleInit,
    centreInit,
    whitenInit,
    lockTextEpochs,
    batchByDomain,
    positives,
    textLrScale,
    unlockWarmup,
    learnVocab: learnt?.merges ?? null,
  };
  const identity = {
    config,
    data: data.digest,
    batch,
    seed,
    holdout,
    embedRows,
    embedInitStd,
    logitScaleInit,
    centreInit,
    lockTextEpochs,
    batchByDomain,
    // absent when "pair", so that states written before the option still resume
    ...(positives !== "pair" ? { positives } : {}),
    ...(textLrScale !== 1 ? { textLrScale } : {}),
    ...(unlockWarmup ? { unlockWarmup } : {}),
    ...(whitenInit ? { whitenInit } : {}),
    ...(learnt ? { vocab: learnt } : {}),
    extension: ext?.name ?? null,
  };

  // model: fresh, or from the resume state
  let startEpoch = 0;
  let resumed: { sd: StateDict; meta: Record<string, unknown> } | null = null;
  if (o.resume) {
    const st = await Deno.stat(statePath).catch(() => null);
    if (st?.isFile) {
      const { readSafetensors } = await import("../model/safetensors.ts");
      const file = await readSafetensors(statePath);
      const meta = JSON.parse(file.metadata["clipkit.pretrain.state"] ?? "null");
      if (!meta) throw new Error(`${statePath} is not a pretraining state`);
      if (canonicalJson(meta.identity) !== canonicalJson(identity)) {
        throw new Error(
          `${statePath} belongs to another run (${canonicalJson(meta.identity)}); this run is ${
            canonicalJson(identity)
          }. Remove it or drop --resume.`,
        );
      }
      resumed = { sd: file.tensors, meta };
      startEpoch = meta.epochsDone;
    } else log(`no training state at ${statePath}; starting from scratch`);
  }
  const model = resumed
    ? CLIP.fromStateDict(resumed.sd, { trainable: true, file: statePath })
    : CLIP.random(config, seed);

  // the compact token table (embedRows "seen"): rows of the full one, trained in its place
  const fullTable = model.w(TABLE);
  if (!resumed && embedInitStd !== openaiTokenStd) {
    // the rows the captions use, scaled from OpenAI's std to embedInitStd
    const table = await fullTable.data() as Float32Array, W = config.transformerWidth;
    const k = embedInitStd / openaiTokenStd;
    for (const id of seen) for (let j = id * W; j < (id + 1) * W; j++) table[j] *= k;
    T.writeTensor(fullTable, table);
  }
  if (!resumed && Math.abs(logitScaleInit - 1 / 0.07) > 1e-9) {
    T.writeTensor(model.w("logit_scale"), new Float32Array([Math.log(logitScaleInit)]));
  }
  if (!resumed && centreInit) {
    // a spread sample of the unique captions and the first images, encoded in chunks so that
    // the activations of a large caption set never sit in memory at once
    const unique = [...new Set(train.flatMap((i) => data.captions[i]))];
    const captions = unique.length <= CENTRE_SAMPLE.captions ? unique : Array.from(
      { length: CENTRE_SAMPLE.captions },
      (_, k) => unique[Math.floor((k * unique.length) / CENTRE_SAMPLE.captions)],
    );
    const sample = train.slice(0, CENTRE_SAMPLE.images);
    const texts = (m: CLIP) =>
      inChunks(
        captions.length,
        CENTRE_SAMPLE.chunk,
        (s, e) => m.encodeText(tokenizer.tokenize(captions.slice(s, e), ctx)),
      );
    const images = (m: CLIP) =>
      inChunks(
        sample.length,
        CENTRE_SAMPLE.chunk,
        (s, e) => m.encodeImage(pairPixels(data, sample.slice(s, e))).features,
      );
    await centreBias(model, "ln_final.bias", "text_projection", texts);
    await centreBias(model, "visual.ln_post.bias", "visual.proj", images);
    if (whitenInit) await whitenProjection(model, "text_projection", texts);
    log(
      `centred the features${whitenInit ? " and whitened the captions'" : ""}: ` +
        `${captions.length} captions, ${sample.length} images`,
    );
  }
  let compact: Tensor | null = null;
  let unseenDecay = 1; // Π(1 − lrₜ·wd) since the full table was last written
  if (embedRows === "seen") {
    const idx = T.tensor(Int32Array.from(seen), [seen.length], "i32");
    compact = T.own(T.param(T.noGrad(() => T.indexSelect(fullTable, 0, idx))));
    compact.name = COMPACT;
    idx.dispose();
  }

  // parameters and optimisers (decay on rank ≥ 2, none on gains, biases, embeddings' vectors)
  const named = new Map<string, Tensor>();
  for (const [k, t] of model.trainable) if (!(compact && k === TABLE)) named.set(k, t);
  if (compact) named.set(COMPACT, compact);
  // the text tower's parameters (locked for the first lockTextEpochs epochs)
  const textParams = [...named].filter(([k]) =>
    !k.startsWith("visual.") && k !== "logit_scale" && !k.startsWith("ext.")
  ).map(([, t]) => t);
  for (const [k, t] of ext?.params ?? []) {
    if (!t.requiresGrad || t.node) {
      throw new Error(`pretrain: extension tensor ${k} is not a param()`);
    }
    named.set(`ext.${k}`, t);
  }
  const groups: Group[] = [];
  const isText = new Set(textParams);
  // the text tower gets groups of its own only when its learning rate differs
  const towers = textLrScale === 1 && !unlockWarmup ? [null] : [false, true];
  for (const decay of [true, false]) {
    for (const text of towers) {
      const names = [...named.keys()].filter((k) =>
        (named.get(k)!.rank >= 2) === decay && (text === null || isText.has(named.get(k)!) === text)
      );
      if (!names.length) continue;
      groups.push({
        opt: new T.AdamW(names.map((k) => named.get(k)!), {
          lr,
          betas,
          eps,
          weightDecay: decay ? weightDecay : 0,
        }),
        names,
        text,
      });
    }
  }
  const params = [...named.values()];
  /** The text tower's learning rate relative to the schedule's at a step (0 while locked). */
  const unlockStep = lockTextEpochs * stepsPerEpoch;
  const textRate = (step: number) =>
    step < unlockStep
      ? 0
      : textLrScale * (unlockWarmup ? Math.min(1, (step - unlockStep + 1) / unlockWarmup) : 1);
  const release = (all: boolean) => {
    compact?.dispose();
    for (const g of groups) g.opt.dispose();
    ext?.dispose?.();
    if (all) model.dispose();
  };
  const logitScale = model.w("logit_scale");

  if (resumed) {
    try {
      const { sd, meta } = resumed;
      for (const [k, t] of ext?.params ?? []) {
        const w = sd.get(`ext.${k}`);
        if (!w) throw new Error(`${statePath}: no saved extension tensor ext.${k}`);
        T.writeTensor(t, toFloat32(w));
      }
      const steps = meta.optimizerSteps as number[];
      const paramSteps = meta.paramSteps as Record<string, number>;
      groups.forEach((g, gi) => {
        const sdOpt = {
          kind: "AdamW",
          steps: steps[gi],
          hyper: (meta.optimizerHyper as Record<string, number>[])[gi],
          state: g.names.map((k) => {
            const m = sd.get(`optim.${k}.exp_avg`), v = sd.get(`optim.${k}.exp_avg_sq`);
            if (!m || !v) return null;
            return {
              shape: [...named.get(k)!.shape],
              step: paramSteps[k],
              tensors: { exp_avg: toFloat32(m), exp_avg_sq: toFloat32(v) },
            };
          }),
        };
        g.opt.loadStateDict(sdOpt);
      });
    } catch (e) {
      release(true);
      throw e;
    }
    log(
      `resumed ${statePath}: ${startEpoch}/${epochs} epochs done (step ${
        startEpoch * stepsPerEpoch
      })`,
    );
  }

  const nParams = params.reduce((a, t) => a + t.size, 0);
  log(
    `pretraining CLIP ${JSON.stringify(config)}\n` +
      `  ${train.length} training pairs, ${test.length} held out; batch ${batch}, ` +
      `${stepsPerEpoch} steps/epoch × ${epochs} epochs, warm-up ${warmup}; ` +
      `${(nParams / 1e6).toFixed(2)}M trained values (token rows: ${
        embedRows === "seen" ? `${seen.length} seen of ${config.vocabSize}` : "all"
      })`,
  );

  const pickCaptions = (epoch: number) => {
    const rng = T.hostRng(epochSeed(seed, epoch) + 1);
    return Int32Array.from(
      data.captions,
      (c, i) => capStart[i] + (c.length > 1 ? rng.int(c.length) : 0),
    );
  };
  const batchInputs = (idx: ArrayLike<number>, chosen: Int32Array) => {
    const n = idx.length;
    const tk = new Int32Array(n * ctx), pos = new Int32Array(n);
    for (let b = 0; b < n; b++) {
      const row = chosen[idx[b]];
      tk.set(tokenIds.subarray(row * ctx, (row + 1) * ctx), b * ctx);
      pos[b] = eot[row];
    }
    return {
      pixels: pairPixels(data, idx),
      ids: T.tensor(tk, [n, ctx], "i32"),
      eot: T.tensor(pos, [n], "i32"),
    };
  };
  /** The group id of each pair of a batch (see PretrainOptions.positives); none for "pair". */
  const groupsOf = (idx: ArrayLike<number>) =>
    positives === "class" ? Int32Array.from(idx, (i) => data.labels[i]) : undefined;
  const table = () => compact ?? fullTable;
  /** Both towers' features; a locked text tower runs off the tape, so backward skips it. */
  const forward = (inp: ReturnType<typeof batchInputs>, textLocked = false) => {
    const text = () => model.encodeEmbeddings(T.embedding(table(), inp.ids), inp.eot);
    return {
      image: model.encodeImage(inp.pixels).features,
      text: textLocked ? T.noGrad(text) : text(),
    };
  };

  /** Writes the compact rows (and the decay of the others) into the full table. */
  const syncTable = async () => {
    if (!compact) return;
    const [full, rows] = await Promise.all([fullTable.data(), compact.data()]) as Float32Array[];
    const W = config.transformerWidth;
    if (unseenDecay !== 1) { for (let i = 0; i < full.length; i++) full[i] *= unseenDecay; }
    seen.forEach((id, k) => full.set(rows.subarray(k * W, (k + 1) * W), id * W));
    T.writeTensor(fullTable, full);
    unseenDecay = 1;
  };

  const summary = (epochsDone: number, extra: Record<string, unknown>) => ({
    config,
    epochs,
    epochsDone,
    steps: epochsDone * stepsPerEpoch,
    stepsPerEpoch,
    trainPairs: train.length,
    heldOutPairs: test.length,
    data: typeof o.data === "string" ? o.data : data.root,
    dataDigest: data.digest,
    hyper,
    tokenRows: embedRows === "seen" ? seen.length : config.vocabSize,
    extension: ext ? { name: ext.name, ...(ext.describe?.() ?? {}) } : null,
    ...extra,
  });

  const save = async (epochsDone: number, extra: Record<string, unknown>) => {
    await syncTable();
    const sd = await model.stateDict();
    const info = summary(epochsDone, extra);
    await saveSafetensors(o.out, sd, {
      format: "pt",
      "clipkit.pretrain": JSON.stringify(info),
      ...(learnt ? { [VOCAB_META]: JSON.stringify(learnt) } : {}),
    });
    // the resume state: model, AdamW moments, extension tensors
    const state: StateDict = new Map(sd);
    const optimizerSteps: number[] = [], optimizerHyper: unknown[] = [];
    const paramSteps: Record<string, number> = {};
    for (const g of groups) {
      const s = await g.opt.stateDict();
      optimizerSteps.push(s.steps);
      optimizerHyper.push(s.hyper);
      s.state.forEach((p, j) => {
        if (!p) return;
        const k = g.names[j];
        paramSteps[k] = p.step;
        state.set(`optim.${k}.exp_avg`, f32Weight(p.tensors.exp_avg, p.shape));
        state.set(`optim.${k}.exp_avg_sq`, f32Weight(p.tensors.exp_avg_sq, p.shape));
      });
    }
    for (const [k, t] of ext?.params ?? []) {
      state.set(`ext.${k}`, f32Weight(await t.data() as Float32Array, [...t.shape]));
    }
    const meta = {
      identity,
      epochsDone,
      optimizerSteps,
      optimizerHyper,
      paramSteps,
      summary: info,
    };
    await saveSafetensors(statePath, state, { "clipkit.pretrain.state": JSON.stringify(meta) });
  };

  // ------------------------------------------------------------------- the loop
  const history: StepRecord[] = [];
  const epochLoss: { epoch: number; loss: number }[] = [];
  let step = startEpoch * stepsPerEpoch;
  const stopAt = Math.min(totalSteps, o.maxSteps ?? Infinity);
  const termNames: string[] = [];
  let pending: { t: Tensor; step: number; epoch: number; lr: number; terms: string[] }[] = [];
  let intervalStart = performance.now(), intervalImages = 0;
  let steadyImages = 0, steadySeconds = 0, intervals = 0;
  let trainStart = performance.now();
  let lastLoss = NaN;

  const flush = async (epoch: number) => {
    if (!pending.length) return;
    const all = T.concat(pending.map((p) => p.t));
    const v = await all.data() as Float32Array;
    all.dispose();
    let at = 0;
    pending.forEach((p) => {
      const r = v.subarray(at, at += 4 + p.terms.length);
      const terms = Object.fromEntries(p.terms.map((n, q) => [n, r[4 + q]]));
      history.push({
        step: p.step,
        epoch: p.epoch,
        loss: r[0],
        infoNCE: r[1],
        scale: r[2],
        gradNorm: r[3],
        lr: p.lr,
        ...(p.terms.length ? { terms } : {}),
      });
      p.t.dispose();
    });
    const last = history[history.length - 1];
    lastLoss = last.loss;
    const dt = (performance.now() - intervalStart) / 1000;
    const ips = intervalImages / dt;
    if (intervals++ > 0) {
      steadyImages += intervalImages;
      steadySeconds += dt;
    }
    const rate = steadySeconds ? steadyImages / steadySeconds : ips;
    const eta = ((stopAt - step) * batch) / rate;
    log(
      `epoch ${epoch + 1}/${epochs} step ${step}/${totalSteps} loss ${last.loss.toFixed(4)}` +
        (last.terms
          ? ` (infoNCE ${last.infoNCE.toFixed(4)}${
            Object.entries(last.terms).map(([n, x]) => `, ${n} ${x.toFixed(4)}`).join("")
          })`
          : "") +
        ` lr ${last.lr.toExponential(2)} scale ${last.scale.toFixed(2)} grad ${
          last.gradNorm.toFixed(3)
        }` +
        ` | ${ips.toFixed(1)} img/s | ETA ${fmtTime(eta)}`,
    );
    pending = [];
    intervalStart = performance.now();
    intervalImages = 0;
  };

  if (startEpoch >= epochs) log(`all ${epochs} epochs were already done`);
  trainStart = performance.now();
  try {
    for (let epoch = startEpoch; epoch < epochs && step < stopAt; epoch++) {
      const order = epochOrder(
        T.hostRng(epochSeed(seed, epoch)),
        train,
        batch,
        batchDomains,
      );
      const chosen = pickCaptions(epoch);
      const epSize = ext?.episodeSize
        ? Math.max(1, Math.round(ext.episodeSize / batch)) * batch
        : order.length;
      const firstRecord = history.length + pending.length;
      for (let e0 = 0, ep = 0; e0 < order.length && step < stopAt; e0 += epSize, ep++) {
        const episode = Int32Array.from(order.slice(e0, e0 + epSize));
        if (ext?.episode) {
          await flush(epoch);
          await ext.episode({
            model,
            data,
            epoch,
            episode: ep,
            indices: episode,
            encode: (idx) =>
              T.noGrad(() => {
                const im: Tensor[] = [], tx: Tensor[] = [];
                for (let s = 0; s < idx.length; s += batch) {
                  T.scope(() => {
                    const f = forward(batchInputs(idx.subarray(s, s + batch), chosen));
                    im.push(T.keep(f.image));
                    tx.push(T.keep(f.text));
                  });
                }
                const out = { image: T.concat(im), text: T.concat(tx) };
                [...im, ...tx].forEach((t) => t.dispose());
                return out;
              }),
          });
          intervalStart = performance.now(); // the hook's time is not training throughput
        }
        for (let s = 0; s + batch <= episode.length && step < stopAt; s += batch) {
          const idx = episode.subarray(s, s + batch);
          const lrNow = schedule(step);
          const stats = T.scope(() => {
            const f = forward(batchInputs(idx, chosen), epoch < lockTextEpochs);
            const scale = T.exp(logitScale);
            const nce = infoNCE(f.image, f.text, logitScale, { positives: groupsOf(idx) });
            const terms = ext?.loss?.({
              model,
              image: f.image,
              text: f.text,
              scale,
              indices: idx,
              epoch,
              step,
            }) ?? {};
            for (const k of Object.keys(terms)) if (!termNames.includes(k)) termNames.push(k);
            let total = nce;
            for (const k of termNames) if (terms[k]) total = T.add(total, terms[k]);
            T.backward(total);
            // the locked text tower ran off the tape; an extension's loss may still reach it
            if (epoch < lockTextEpochs) {
              for (const p of textParams) {
                p.grad?.dispose();
                p.grad = null;
              }
            }
            const norm = gradClip > 0
              ? T.clipGradNorm(params, gradClip)
              : T.noGrad(() => T.full([], NaN));
            for (const g of groups) g.opt.setLr(lrNow * (g.text ? textRate(step) : 1));
            for (const g of groups) g.opt.step();
            for (const g of groups) g.opt.zeroGrad();
            clampLogitScale(logitScale); // into [0, ln 100], OpenCLIP's rule
            ext?.afterStep?.();
            const row = [
              total,
              nce,
              scale,
              norm,
              ...termNames.map((k) => terms[k] ?? T.full([], 0)),
            ];
            return T.noGrad(() => T.concat(row.map((t) => T.reshape(t, [1]))));
          });
          // rows that never occur only decay; applied when the table is written back
          if (compact) unseenDecay *= 1 - lrNow * textRate(step) * weightDecay;
          pending.push({ t: stats, step, epoch, lr: lrNow, terms: [...termNames] });
          step++;
          intervalImages += batch;
          if (step % logEvery === 0) await flush(epoch);
        }
      }
      await flush(epoch);
      const recs = history.slice(firstRecord);
      const mean = recs.reduce((a, r) => a + r.loss, 0) / Math.max(1, recs.length);
      epochLoss.push({ epoch: epoch + 1, loss: mean });
      const complete = step === (epoch + 1) * stepsPerEpoch;
      if (complete) {
        await save(epoch + 1, {
          lastEpochLoss: mean,
          seconds: +secs(tStart),
          imagesPerSec: steadySeconds ? steadyImages / steadySeconds : null,
        });
        log(
          `epoch ${epoch + 1}/${epochs}: mean loss ${mean.toFixed(4)}; saved ${o.out} (${
            secs(tStart)
          } s)`,
        );
        intervalStart = performance.now(); // saving is not training throughput
      } else log(`stopped after step ${step} (maxSteps); epoch ${epoch + 1} not saved`);
    }
  } catch (e) {
    release(true);
    throw e;
  }
  const trainSeconds = (performance.now() - trainStart) / 1000;
  const epochsDone = Math.floor(step / stepsPerEpoch);
  const result: PretrainResult = {
    out: o.out,
    statePath,
    config,
    epochs: epochsDone,
    steps: step,
    stepsPerEpoch,
    trainPairs: train.length,
    heldOutPairs: test.length,
    history,
    epochLoss,
    resumedFrom: resumed ? startEpoch : null,
    seconds: +secs(tStart),
    imagesPerSec: steadySeconds
      ? steadyImages / steadySeconds
      : history.length * batch / Math.max(trainSeconds, 1e-9),
    summary: summary(epochsDone, { lastLoss }),
  };
  if (o.keepModel) {
    await syncTable();
    result.model = model;
  }
  release(!o.keepModel);
  return result;
}

// ---------------------------------------------------------------------------------------------
// CLI

const USAGE = `usage: deno task pretrain --data DIR --out model.safetensors [options]
  --epochs N (10)  --batch N (64)  --lr X (5e-4)  --warmup STEPS (10% ≤ 2000)  --wd X (0.2)
  --captions FILE (a captions.jsonl other than the dataset's own)
  --grad-clip X (1; 0 = off)  --seed N (0)  --holdout F (0.1)  --resume
  --vocab FILE (OpenAI's BPE merges; default the cache)  --learn-vocab N (learn N merges from the
    training captions instead, written beside --out as NAME.bpe.txt.gz and found there by every command)
  --image-size PX (32)  --patch PX (4)  --vision-width N (128)  --vision-layers N (4)
  --text-width N (128)  --text-layers N (4)  --context N (32)  --embed N (128)
  --embed-rows seen|all (seen)  --embed-init-std X (0.02, OpenAI's)  --logit-scale-init X (14.3)  --centre-init  --whiten-init  --lock-text-epochs N (0)  --batch-by-domain
  --positives pair|class (pair)  --text-lr-scale X (1)  --unlock-warmup STEPS (0)  --log-every N (10)
  --max-steps N
  --proto (ProtoCLIP: InfoNCE + prototype loss from the 2nd epoch)  --proto-k N (32)
  --proto-episode PAIRS (the epoch)`;

export async function main(args: string[]): Promise<number> {
  let parsed;
  const str = { type: "string" as const };
  try {
    parsed = parseArgs({
      args,
      options: {
        data: str,
        captions: str,
        out: str,
        epochs: str,
        batch: str,
        lr: str,
        warmup: str,
        wd: str,
        "grad-clip": str,
        seed: str,
        holdout: str,
        vocab: str,
        "learn-vocab": str,
        resume: { type: "boolean" },
        "image-size": str,
        patch: str,
        "vision-width": str,
        "vision-layers": str,
        "text-width": str,
        "text-layers": str,
        context: str,
        embed: str,
        "embed-rows": str,
        "embed-init-std": str,
        "logit-scale-init": str,
        "centre-init": { type: "boolean" },
        "whiten-init": { type: "boolean" },
        "lock-text-epochs": str,
        "batch-by-domain": { type: "boolean" },
        positives: str,
        "text-lr-scale": str,
        "unlock-warmup": str,
        "log-every": str,
        "max-steps": str,
        proto: { type: "boolean" },
        "proto-k": str,
        "proto-episode": str,
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
  if (!v.data || !v.out) {
    console.error(`--data and --out are required\n${USAGE}`);
    return 2;
  }
  const bad: string[] = [];
  const num = (k: keyof typeof v, int = true): number | undefined => {
    const s = v[k];
    if (s === undefined) return undefined;
    const x = Number(s);
    if (!Number.isFinite(x) || (int && !Number.isInteger(x))) bad.push(`--${k} ${s}`);
    return x;
  };
  const cfg: Partial<ClipConfig> = {};
  const set = (k: keyof ClipConfig, flag: keyof typeof v) => {
    const x = num(flag);
    if (x !== undefined) cfg[k] = x;
  };
  set("imageResolution", "image-size");
  set("visionPatchSize", "patch");
  set("visionWidth", "vision-width");
  set("visionLayers", "vision-layers");
  set("transformerWidth", "text-width");
  set("transformerLayers", "text-layers");
  set("contextLength", "context");
  set("embedDim", "embed");
  const opts: PretrainOptions = {
    data: v.data,
    captions: v.captions,
    out: v.out,
    config: cfg,
    epochs: num("epochs"),
    batch: num("batch"),
    lr: num("lr", false),
    warmup: num("warmup"),
    weightDecay: num("wd", false),
    gradClip: num("grad-clip", false),
    seed: num("seed"),
    holdout: num("holdout", false),
    vocab: v.vocab,
    learnVocab: num("learn-vocab"),
    resume: v.resume,
    embedRows: v["embed-rows"] as "seen" | "all" | undefined,
    embedInitStd: num("embed-init-std", false),
    logitScaleInit: num("logit-scale-init", false),
    centreInit: v["centre-init"],
    whitenInit: v["whiten-init"],
    lockTextEpochs: num("lock-text-epochs"),
    batchByDomain: !!v["batch-by-domain"],
    positives: v.positives as Positives | undefined,
    textLrScale: num("text-lr-scale", false),
    unlockWarmup: num("unlock-warmup"),
    logEvery: num("log-every"),
    maxSteps: num("max-steps"),
  };
  if (v.proto) {
    const k = num("proto-k"), episodeSize = num("proto-episode");
    if (!bad.length) {
      await T.initEngine(); // the extension's heads live on the device
      opts.extension = protoclipExtension(pretrainConfig(cfg), {
        seed: opts.seed ?? 0,
        k,
        episodeSize,
      });
    }
  } else if (v["proto-k"] || v["proto-episode"]) {
    console.error(`--proto-k and --proto-episode need --proto\n${USAGE}`);
    return 2;
  }
  if (bad.length) {
    console.error(`not a valid number: ${bad.join(", ")}\n${USAGE}`);
    return 2;
  }
  try {
    const r = await pretrain(opts);
    console.log(
      `done: ${r.epochs} epoch(s), ${r.steps} steps, ${
        r.imagesPerSec.toFixed(1)
      } img/s, ${r.seconds} s → ${r.out}`,
    );
    return 0;
  } catch (e) {
    const msg = (e as Error).message;
    console.error(msg.startsWith("pretrain:") ? msg : `pretrain: ${msg}`);
    return 1;
  }
}
