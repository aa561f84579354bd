/**
 * Tip-Adapter and Tip-Adapter-F: Training-free Adaption of CLIP for Few-shot Classification
 * (Zhang et al., ECCV 2022).
 *
 * A key-value cache built from the few-shot training set:
 *   keys F [N·K, D]: the training images' features, averaged over the augmented passes (random
 *     resized crop 0.5–1 and flip; `FeatureSet.augmented`) when given, then L2-normalised (the
 *     public code averages the raw features and normalises the average);
 *   values L [N·K, C]: one-hot labels.
 * For a normalised test feature f:
 *   logits = 100·f Wᵀ + α · exp(−β (1 − f Fᵀ)) L,
 * W the normalised zero-shot class weights of the template list (100 = exp(logit_scale) for
 * OpenAI's models; the model's own scale is used). α (residual ratio) and β (sharpness) start at
 * the `alpha`, `beta` options and are chosen by `tune(val)`: a grid search on validation
 * features, β over 0.1 + i·(s_β − 0.1)/n_β, i < n_β, and α likewise (the public code's grid),
 * keeping the first best accuracy in β-major order. The whole grid runs batched on the GPU
 * (blocks of β values and validation rows bounded by `searchChunk` elements); one table of
 * correct counts is read back.
 *
 * Tip-Adapter-F (`finetune: true`, or the `tipAdapterF` method) makes the keys a trainable
 * parameter `cache_keys` (a Linear(D → N·K, no bias) weight initialised with F), trained with
 * cross-entropy on the logits above at the initial α, β (AdamW lr 0.001, eps 1e-4, weight decay
 * 0.01 as PyTorch's default, cosine over 20 epochs, batch 256); α and β are searched again
 * afterwards. The public code picked the best epoch on test features; selecting on validation
 * is the trainer's job.
 *
 * The cache is checkpointed: after fit(train), `params` holds `cache_keys` and `cache_values`
 * (the one-hot L; never trained: forward reads it detached, and with finetune it is a leaf only
 * so an optimiser accepts the list), so an evaluation can load() a checkpoint without the
 * training features; `state()` / `restore()` carry α, β. Under another class list (base-to-new)
 * each cache entry keeps its class by name; classes the cache never saw get CLIP's logits alone.
 */
import { noGrad, param } from "../../engine/autograd.ts";
import { EngineError, fmtShape } from "../../engine/errors.ts";
import { own, scope, type Tensor, tensor } from "../../engine/tensor.ts";
import { add, exp, mul, sub } from "../../engine/ops/elementwise.ts";
import { concat } from "../../engine/ops/indexing.ts";
import { matmul } from "../../engine/ops/matmul.ts";
import { crossEntropy, normalize } from "../../engine/ops/nn.ts";
import { mean } from "../../engine/ops/reduce.ts";
import { contiguous, narrow, reshape } from "../../engine/ops/views.ts";
import { resolveTemplates } from "../templates.ts";
import {
  type Batch,
  type FeatureSet,
  loadParams,
  type Method,
  type MethodContext,
  type MethodInstance,
  type OptimDefaults,
  type Stage,
  type TrainOutput,
} from "../method.ts";
import { classifierWeights, frozenFeatures, hitCounts } from "./zeroshot.ts";

const options = (finetune: boolean): Method["options"] => ({
  finetune: {
    default: finetune,
    help: "Tip-Adapter-F: train the cache keys (then tune α, β again)",
  },
  templates: {
    default: "single",
    help:
      "templates of the class weights W (list name, template with {}, or a list; e.g. imagenet7)",
  },
  alpha: { default: 1, help: "residual ratio α before (and without) tune(); tune() replaces it" },
  beta: { default: 1, help: "sharpness β before (and without) tune(); tune() replaces it" },
  searchScale: {
    default: [7, 3],
    help:
      "[s_β, s_α]: grid upper ends (public configs: 7,3 ImageNet/Pets; 12,10 EuroSAT; 13,13 DTD; 30,30 Aircraft)",
  },
  searchSteps: { default: [200, 20], help: "[n_β, n_α]: grid sizes" },
  searchChunk: {
    default: 1 << 24,
    help: "elements of one batched block of the grid search (bounds its GPU memory)",
  },
  augmentPasses: {
    default: 10,
    help:
      "augmented passes over the training set the trainer encodes for the cache keys (FeatureSet.augmented); 0: test-transform features",
  },
});

const graph = (o: Record<string, unknown>): Stage[] => [
  {
    stage: "load",
    what: "few-shot images; CLIP test transform, and random resized crop (0.5–1) + flip",
  },
  {
    stage: "views",
    what: "original view; augmented passes for the cache",
    with: { views: ["orig"], augmentPasses: o.augmentPasses },
  },
  { stage: "encode", what: "frozen image tower (features cached)", with: { cache: true } },
  {
    stage: "prompt",
    what:
      "W: class weights of the templates; cache keys F = normalised (averaged) training features, values L = one-hot labels",
    with: { templates: resolveTemplates(o.templates, "tip-adapter") },
  },
  {
    stage: "loss",
    what: "logits = 100·f Wᵀ + α·exp(−β(1 − f Fᵀ)) L" +
      (o.finetune ? "; cross-entropy" : " (no training)"),
  },
  {
    stage: "step",
    what: (o.finetune ? "AdamW on cache_keys; then " : "") +
      "grid search of α, β on validation (tune)",
    with: { searchScale: o.searchScale, searchSteps: o.searchSteps },
  },
];

const trainingFree: OptimDefaults = {
  optimizer: "none",
  lr: 0,
  batch: 256,
  epochs: 0,
  warmupEpochs: 0,
  warmupLr: 0,
};

export const tipAdapter: Method = {
  name: "tip-adapter",
  paper:
    "Zhang et al., Tip-Adapter: Training-free Adaption of CLIP for Few-shot Classification, ECCV 2022",
  options: options(false),
  defaults: trainingFree,
  views: ["orig"],
  frozenImageFeatures: true,
  graph,
  create: (c) => new TipAdapter(c, "tip-adapter"),
};

/** Tip-Adapter-F: the same method with `finetune` on and its training defaults. */
export const tipAdapterF: Method = {
  ...tipAdapter,
  name: "tip-adapter-f",
  options: options(true),
  defaults: {
    optimizer: "adamw",
    lr: 0.001,
    eps: 1e-4,
    weightDecay: 0.01,
    batch: 256,
    epochs: 20,
    warmupEpochs: 0,
    warmupLr: 0,
  },
  create: (c) => new TipAdapter(c, "tip-adapter-f"),
};

/** The public code's grid: 0.1 + i·(scale − 0.1)/steps for i < steps. */
export function searchGrid(scale: number, steps: number): number[] {
  return Array.from({ length: steps }, (_, i) => (i * (scale - 0.1)) / steps + 0.1);
}

function pair(op: string, name: string, v: unknown, integer: boolean): [number, number] {
  const ok = Array.isArray(v) && v.length === 2 &&
    v.every((x) =>
      typeof x === "number" && Number.isFinite(x) && x > 0 && (!integer || Number.isInteger(x))
    );
  if (!ok) {
    throw new EngineError(
      op,
      `${name} must be two ${integer ? "positive integers" : "positive numbers"}, got ${
        JSON.stringify(v)
      }`,
    );
  }
  return v as [number, number];
}

export interface SearchResult {
  betas: number[];
  alphas: number[];
  /** Correct validation counts [betas, alphas], row-major. */
  counts: Float32Array;
  rows: number;
}

export class TipAdapter implements MethodInstance {
  params = new Map<string, Tensor>();
  /** Normalised class weights W [C, embed]. */
  classWeights: Tensor;
  alpha: number;
  beta: number;
  /** Cache keys F [N·K, embed] (trainable with finetune). */
  keys: Tensor | null = null;
  /** Cache values L [N·K, classes of the cache], one-hot, as built (checkpointed). */
  values: Tensor | null = null;
  /** The last grid search's table (for logs and tests). */
  lastSearch: SearchResult | null = null;
  private finetune: boolean;
  private templates: string[];
  private classnames: string[];
  /** Class names of the values' columns, and each cache entry's label among them. */
  private cacheNames: string[] = [];
  private cacheLabels: Int32Array = new Int32Array(0);
  /** L re-indexed to the current class list (the same tensor as `values` when lists agree). */
  private active: Tensor | null = null;

  constructor(private c: MethodContext, private op: string) {
    const o = c.options;
    this.finetune = !!o.finetune;
    this.alpha = Number(o.alpha);
    this.beta = Number(o.beta);
    if (!Number.isFinite(this.alpha) || !Number.isFinite(this.beta)) {
      throw new EngineError(op, `alpha and beta must be numbers, got ${o.alpha}, ${o.beta}`);
    }
    pair(op, "searchScale", o.searchScale, false);
    pair(op, "searchSteps", o.searchSteps, true);
    this.templates = resolveTemplates(o.templates, op);
    this.classnames = [...c.classnames];
    this.classWeights = classifierWeights(c.model, c.tokenizer, c.classnames, this.templates);
  }

  private get classes() {
    return this.classnames.length;
  }

  /**
   * A new class list: W is rebuilt; cache entries keep their class by name, and entries whose
   * class is not in the list drop out (for classes the cache never saw, the logits are CLIP's).
   */
  setClasses(classnames: string[]) {
    const next = classifierWeights(this.c.model, this.c.tokenizer, classnames, this.templates);
    this.classWeights.dispose();
    this.classWeights = next;
    this.classnames = [...classnames];
    this.remap();
  }

  private remap() {
    if (this.active && this.active !== this.values) this.active.dispose();
    this.active = null;
    if (!this.values) return;
    const same = this.cacheNames.length === this.classes &&
      this.cacheNames.every((n, i) => n === this.classnames[i]);
    if (same) {
      this.active = this.values;
      return;
    }
    const C = this.classes, NK = this.cacheLabels.length;
    const onehot = new Float32Array(NK * C);
    this.cacheLabels.forEach((y, n) => {
      const c = this.classnames.indexOf(this.cacheNames[y]);
      if (c >= 0) onehot[n * C + c] = 1;
    });
    this.active = own(tensor(onehot, [NK, C]));
  }

  /** Installs a cache: keys [NK, D] and one-hot values over the current class list. */
  private install(keys: Tensor, labels: Int32Array) {
    const NK = labels.length, C = this.classes;
    const onehot = new Float32Array(NK * C);
    labels.forEach((y, n) => (onehot[n * C + y] = 1));
    this.dropCache();
    this.keys = this.finetune ? param(keys) : keys;
    // a trainable leaf only so the optimiser accepts the list; forward reads it detached
    const values = own(tensor(onehot, [NK, C]));
    this.values = this.finetune ? param(values) : values;
    this.cacheNames = [...this.classnames];
    this.cacheLabels = Int32Array.from(labels);
    this.params.set("cache_keys", this.keys);
    this.params.set("cache_values", this.values);
    this.remap();
  }

  private dropCache() {
    if (this.active && this.active !== this.values) this.active.dispose();
    this.keys?.dispose();
    this.values?.dispose();
    this.keys = this.values = this.active = null;
    this.params.clear();
  }

  private checkSet(what: string, s: FeatureSet) {
    if (s.classes !== this.classes) {
      throw new EngineError(
        this.op,
        `${what} has ${s.classes} classes, the class list ${this.classes}`,
      );
    }
    const D = this.c.model.config.embedDim;
    if (s.features.rank !== 2 || s.features.shape[1] !== D) {
      throw new EngineError(
        this.op,
        `${what} features ${fmtShape(s.features.shape)} are not [N, ${D}]`,
      );
    }
    for (let i = 0; i < s.hostLabels.length; i++) {
      const y = s.hostLabels[i];
      if (!(y >= 0 && y < this.classes)) {
        throw new EngineError(
          this.op,
          `${what}: label ${y} at ${i} is not in [0, ${this.classes})`,
        );
      }
    }
  }

  /** Builds the cache (keys F, one-hot values L) from the training features. */
  fit(train: FeatureSet) {
    this.checkSet("the training set", train);
    const N = train.features.shape[0];
    const aug = train.augmented;
    if (aug && (aug.rank !== 3 || aug.shape[1] !== N || aug.shape[2] !== train.features.shape[1])) {
      throw new EngineError(
        this.op,
        `augmented features ${fmtShape(aug.shape)} are not [passes, ${N}, ${
          train.features.shape[1]
        }]`,
      );
    }
    const keys = own(
      noGrad(() =>
        scope(() =>
          contiguous(normalize(aug && aug.shape[0] ? mean(aug, 0) : train.features), true)
        )
      ),
    );
    this.install(keys, train.hostLabels);
  }

  /** The keys and the current class list's values, detached from the values' leaf. */
  private cache(): { keys: Tensor; values: Tensor } {
    if (!this.keys || !this.active) {
      throw new EngineError(
        this.op,
        "the cache is empty: call fit(train) or load a checkpoint first",
      );
    }
    const v = this.active;
    return { keys: this.keys, values: v.view(v.shape, v.strides, v.offset) };
  }

  /** Tip-Adapter's logits for normalised features fN [B, D] at the given α, β. */
  logitsOf(fN: Tensor, alpha = this.alpha, beta = this.beta): Tensor {
    const { keys, values } = this.cache();
    try {
      const clip = this.c.model.logits(fN, this.classWeights);
      const affinity = matmul(fN, keys, { transB: true }); // [B, N·K]
      const cache = matmul(exp(mul(sub(affinity, 1), beta)), values); // exp(−β(1 − a)) L
      return add(clip, mul(cache, alpha));
    } finally {
      values.dispose(); // the op saved its own view when it needs one
    }
  }

  forward(batch: Batch): TrainOutput {
    const f = frozenFeatures(this.op, this.c.model, batch.views.orig, batch.features);
    const logits = this.logitsOf(normalize(f));
    const loss = crossEntropy(logits, batch.labels);
    return { logits, loss, terms: { ce: loss } };
  }

  predict(pixels: Tensor, features?: Tensor): Tensor {
    // only the logits outlive the call, even outside a caller's scope
    return noGrad(() =>
      scope(() => this.logitsOf(normalize(frozenFeatures(this.op, this.c.model, pixels, features))))
    );
  }

  /** Grid search of α, β on validation features; keeps and returns the best pair. */
  async tune(val: FeatureSet): Promise<Record<string, number>> {
    this.checkSet("the validation set", val);
    const o = this.c.options;
    const [sB, sA] = pair(this.op, "searchScale", o.searchScale, false);
    const [nB, nA] = pair(this.op, "searchSteps", o.searchSteps, true);
    const budget = Math.max(1, Number(o.searchChunk));
    const betas = searchGrid(sB, nB), alphas = searchGrid(sA, nA);
    const Nv = val.features.shape[0], C = this.classes;
    if (!Nv) throw new EngineError(this.op, "the validation set is empty");
    const { keys, values } = this.cache();
    const NK = keys.shape[0];
    // one β and one validation row cost NK affinities, C cache logits and nA hit flags
    const cost = NK + C + nA;
    const rows = Math.max(1, Math.min(Nv, Math.floor(budget / cost)));
    const per = Math.max(1, Math.min(nB, Math.floor(budget / (rows * cost))));
    let table: Tensor;
    try {
      table = noGrad(() =>
        scope(() => {
          const betaT = tensor(betas), alphaT = tensor(alphas);
          let total: Tensor | null = null;
          for (let r0 = 0; r0 < Nv; r0 += rows) {
            const r = Math.min(rows, Nv - r0);
            const prev: Tensor | null = total;
            total = scope((): Tensor => {
              const fN = normalize(narrow(val.features, 0, r0, r));
              const clip = this.c.model.logits(fN, this.classWeights); // [r, C]
              const a = reshape(matmul(fN, keys, { transB: true }), [1, r, NK]);
              const lb = narrow(val.labels, 0, r0, r);
              const blocks: Tensor[] = [];
              for (let b0 = 0; b0 < nB; b0 += per) {
                const nb = Math.min(per, nB - b0);
                blocks.push(scope(() => {
                  const bt = reshape(narrow(betaT, 0, b0, nb), [nb, 1, 1]);
                  const cache = matmul(exp(mul(sub(a, 1), bt)), values); // [nb, r, C]
                  return hitCounts(clip, cache, alphaT, lb); // [nb, nA]
                }));
              }
              const part = blocks.length === 1 ? blocks[0] : concat(blocks, 0);
              return prev ? add(prev, part) : part;
            });
          }
          return total!;
        })
      );
    } finally {
      values.dispose();
    }
    const counts = (await table.data()) as Float32Array;
    table.dispose();
    let best = 0;
    for (let k = 1; k < counts.length; k++) if (counts[k] > counts[best]) best = k;
    this.beta = betas[Math.floor(best / nA)];
    this.alpha = alphas[best % nA];
    this.lastSearch = { betas, alphas, counts, rows: Nv };
    return { alpha: this.alpha, beta: this.beta };
  }

  state(): Record<string, number> {
    return { alpha: this.alpha, beta: this.beta };
  }

  restore(state: Record<string, number>) {
    for (const k of ["alpha", "beta"] as const) {
      const v = state[k];
      if (v === undefined) continue;
      if (!Number.isFinite(v)) {
        throw new EngineError(this.op, `restore: ${k} must be a number, got ${v}`);
      }
      this[k] = v;
    }
  }

  /**
   * Checkpoint values: `cache_keys` [N·K·embed] and `cache_values` (one-hot [N·K·classes]). After
   * fit() they overwrite the cache built there; without it (evaluation) they build the cache,
   * the values' columns being the class list the method was created with.
   */
  load(values: Map<string, Float32Array>) {
    if (this.keys) {
      // validate the one-hot rows before loadParams writes anything
      const v = values.get("cache_values");
      const labels = v && v.length === this.values!.size
        ? oneHotLabels(this.op, v, this.cacheNames.length)
        : null;
      loadParams(this.op, this.params, values);
      this.cacheLabels = labels!;
      this.remap();
      return;
    }
    const k = values.get("cache_keys"), v = values.get("cache_values");
    const extra = [...values.keys()].filter((n) => n !== "cache_keys" && n !== "cache_values");
    if (!k || !v || extra.length) {
      throw new EngineError(
        this.op,
        `load: a checkpoint holds cache_keys and cache_values${
          extra.length ? `, not ${extra.join(", ")}` : ""
        } (or call fit(train) first)`,
      );
    }
    const D = this.c.model.config.embedDim;
    if (k.length % D) {
      throw new EngineError(this.op, `load: cache_keys has ${k.length} values, not rows of ${D}`);
    }
    const NK = k.length / D;
    if (v.length !== NK * this.classes) {
      throw new EngineError(
        this.op,
        `load: cache_values has ${v.length} values, expected [${NK}, ${this.classes}]`,
      );
    }
    const labels = oneHotLabels(this.op, v, this.classes);
    this.install(own(tensor(k, [NK, D])), labels);
  }

  dispose() {
    this.classWeights.dispose();
    this.dropCache();
  }
}

/** Each row's class from one-hot values [N, C]; refuses rows that are not one-hot. */
function oneHotLabels(op: string, v: Float32Array, C: number): Int32Array {
  const N = v.length / C, out = new Int32Array(N);
  for (let n = 0; n < N; n++) {
    let hot = -1;
    for (let c = 0; c < C; c++) {
      const x = v[n * C + c];
      if (x === 1 && hot < 0) hot = c;
      else if (x !== 0) hot = -2;
    }
    if (hot < 0) throw new EngineError(op, `load: cache_values row ${n} is not one-hot`);
    out[n] = hot;
  }
  return out;
}
