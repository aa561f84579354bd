/**
 * Zero-shot CLIP (Radford et al., Learning Transferable Visual Models From Natural Language
 * Supervision, ICML 2021): the class weights are the text features of hand-written prompts
 * ("a photo of a {class}."), or of a template ensemble (each prompt's feature normalised, the
 * template features averaged, the average normalised again); logits = exp(logit_scale) · cos,
 * i.e. 100 · cos for OpenAI's models. Nothing is trained.
 *
 * Also home of the pieces the feature-level methods share (linear probe, CLIP-Adapter,
 * Tip-Adapter): the text classifier, the frozen-feature lookup, and `hitCounts`, a GPU kernel
 * that scores a whole grid of classifiers against labels so a hyperparameter search reads back
 * one small accuracy table instead of one number per grid point.
 */
import { E, grid1d, WGSL_PRELUDE } from "../../engine/device.ts";
import { noGrad } from "../../engine/autograd.ts";
import { EngineError, fmtShape } from "../../engine/errors.ts";
import { empty, own, scope, type Tensor } from "../../engine/tensor.ts";
import { add } from "../../engine/ops/elementwise.ts";
import { concat } from "../../engine/ops/indexing.ts";
import { crossEntropy, normalize } from "../../engine/ops/nn.ts";
import { sum } from "../../engine/ops/reduce.ts";
import { contiguous } from "../../engine/ops/views.ts";
import type { CLIP } from "../../model/clip.ts";
import type { Tokenizer } from "../../model/tokenizer.ts";
import { templateIds } from "../prompts.ts";
import { resolveTemplates } from "../templates.ts";
import {
  type Batch,
  loadParams,
  type Method,
  type MethodContext,
  type MethodInstance,
  type TrainOutput,
} from "../method.ts";

/** Text sequences per text-tower call when building a classifier (bounds activation memory). */
const TEXT_CHUNK = 256;

/**
 * The zero-shot classifier [C, embed]: for each template, the class prompts' text features
 * normalised; summed over templates and normalised again (the average's direction). Frozen and
 * owned: the caller disposes it.
 */
export function classifierWeights(
  model: CLIP,
  tok: Tokenizer,
  classnames: string[],
  templates: string[],
): Tensor {
  if (!classnames.length) throw new EngineError("classifier", "no class names");
  const ctx = model.config.contextLength, C = classnames.length;
  return own(noGrad(() =>
    scope(() => {
      let acc: Tensor | null = null;
      for (const t of templates) {
        const ids = templateIds(tok, classnames, t, ctx);
        const parts: Tensor[] = [];
        for (let r = 0; r < C; r += TEXT_CHUNK) {
          const rows = ids.subarray(r * ctx, Math.min(C, r + TEXT_CHUNK) * ctx);
          parts.push(scope(() => model.encodeText(rows)));
        }
        const prev: Tensor | null = acc;
        acc = scope((): Tensor => {
          const f = normalize(parts.length === 1 ? parts[0] : concat(parts, 0));
          return prev ? add(prev, f) : f;
        });
      }
      return normalize(acc!);
    })
  ));
}

/** The frozen image features of a batch: the cached ones when given, else the image tower's. */
export function frozenFeatures(
  op: string,
  model: CLIP,
  pixels?: Tensor,
  features?: Tensor,
): Tensor {
  if (features) return features;
  if (!pixels) throw new EngineError(op, "needs the original view or cached features");
  return noGrad(() => scope(() => model.encodeImage(pixels).features));
}

// ---------------------------------------------------------------------------------------------
// hitCounts: accuracy of a grid of classifiers, on the GPU.
//
// One invocation per (b, a, n): the logits of row n under grid point (b, a) are
// base[n, :] + alphas[a] · scores[b, n, :]; it writes 1 when their first maximum is at the label
// (the argmax PyTorch's topk(1) returns for distinct values), else 0. A reduction over n gives
// the [B, A] table of correct counts. Uniform words: [0] B·A·N, [1] N, [2] C, [3] A,
// [4] base offset, [5] scores offset, [6] alphas offset, [7] labels offset.

function hitsWgsl(hasBase: boolean): string {
  const b = hasBase ? 1 : 0;
  return `${WGSL_PRELUDE}
${hasBase ? "@group(0) @binding(1) var<storage, read> base: array<f32>;" : ""}
@group(0) @binding(${b + 1}) var<storage, read> scores: array<f32>;
@group(0) @binding(${b + 2}) var<storage, read> alphas: array<f32>;
@group(0) @binding(${b + 3}) var<storage, read> labels: array<i32>;
@group(0) @binding(${b + 4}) var<storage, read_write> hits: array<f32>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linearIndex(gid, nwg);
  if (i >= uw(0u)) { return; }
  let N = uw(1u);
  let C = uw(2u);
  let A = uw(3u);
  let n = i % N;
  let a = (i / N) % A;
  let bb = i / (N * A);
  let alpha = alphas[uw(6u) + a];
  let so = uw(5u) + (bb * N + n) * C;
  let bo = uw(4u) + n * C;
  var best = ${hasBase ? "base[bo] + " : ""}alpha * scores[so];
  var arg = 0u;
  for (var c = 1u; c < C; c++) {
    let v = ${hasBase ? "base[bo + c] + " : ""}alpha * scores[so + c];
    if (v > best) { best = v; arg = c; }
  }
  hits[i] = select(0.0, 1.0, i32(arg) == labels[uw(7u) + n]);
}`;
}

/**
 * Correct counts [B, A] (f32) of the classifiers base + alphas[a] · scores[b]: base [N, C] or
 * null, scores [B, N, C], alphas [A], labels i32 [N]. No autograd, no readback.
 */
export function hitCounts(
  base: Tensor | null,
  scores: Tensor,
  alphas: Tensor,
  labels: Tensor,
): Tensor {
  const op = "hitCounts";
  if (scores.rank !== 3) {
    throw new EngineError(op, `scores must be [B, N, C], got ${fmtShape(scores.shape)}`);
  }
  const [B, N, C] = scores.shape;
  if (base && (base.rank !== 2 || base.shape[0] !== N || base.shape[1] !== C)) {
    throw new EngineError(
      op,
      `base ${fmtShape(base.shape)} does not fit scores ${fmtShape(scores.shape)}`,
    );
  }
  if (alphas.rank !== 1) {
    throw new EngineError(op, `alphas must be [A], got ${fmtShape(alphas.shape)}`);
  }
  if (labels.dtype !== "i32" || labels.rank !== 1 || labels.shape[0] !== N) {
    throw new EngineError(
      op,
      `labels must be i32 [${N}], got ${labels.dtype} ${fmtShape(labels.shape)}`,
    );
  }
  for (const [what, t] of [["scores", scores], ["alphas", alphas], ["base", base]] as const) {
    if (t && t.dtype !== "f32") throw new EngineError(op, `${what} must be f32, got ${t.dtype}`);
  }
  if (C < 1) throw new EngineError(op, `no classes in scores ${fmtShape(scores.shape)}`);
  const A = alphas.shape[0];
  return noGrad(() =>
    scope(() => {
      const s = contiguous(scores), al = contiguous(alphas), lb = contiguous(labels);
      const bs = base ? contiguous(base) : null;
      const hits = empty([B, A, N]);
      const n = B * A * N;
      if (n) {
        E().launch({
          kernel: "hit_counts",
          key: bs ? "base" : "nobase",
          wgsl: () => hitsWgsl(!!bs),
          inputs: [...(bs ? [bs.buf(op)] : []), s.buf(op), al.buf(op), lb.buf(op)],
          outputs: [hits.buf()],
          uniforms: [n, N, C, A, bs?.offset ?? 0, s.offset, al.offset, lb.offset],
          workgroups: grid1d(n),
        });
      }
      return sum(hits, 2);
    })
  );
}

/** Float64 reference of hitCounts on contiguous host arrays. */
export function cpuHitCounts(
  base: ArrayLike<number> | null,
  scores: ArrayLike<number>,
  alphas: ArrayLike<number>,
  labels: ArrayLike<number>,
  [B, N, C]: number[],
): Float64Array {
  const A = alphas.length, out = new Float64Array(B * A);
  for (let b = 0; b < B; b++) {
    for (let a = 0; a < A; a++) {
      for (let n = 0; n < N; n++) {
        let best = -Infinity, arg = -1;
        for (let c = 0; c < C; c++) {
          const v = (base ? base[n * C + c] : 0) + alphas[a] * scores[(b * N + n) * C + c];
          if (v > best) [best, arg] = [v, c];
        }
        if (arg === labels[n]) out[b * A + a]++;
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------

export const zeroshot: Method = {
  name: "zeroshot",
  paper:
    "Radford et al., Learning Transferable Visual Models From Natural Language Supervision, ICML 2021",
  options: {
    templates: {
      default: "single",
      help:
        "template list name (single, imagenet7, pacs, ... see pipeline/templates.ts), a template with {}, or a list",
    },
  },
  defaults: {
    optimizer: "none",
    lr: 0,
    batch: 32,
    epochs: 0,
    warmupEpochs: 0,
    warmupLr: 0,
  },
  views: ["orig"],
  frozenImageFeatures: true,
  graph: (o) => [
    { stage: "load", what: "images, CLIP test transform" },
    { stage: "views", what: "original view", with: { views: ["orig"] } },
    { stage: "encode", what: "frozen image tower (features cached)", with: { cache: true } },
    {
      stage: "prompt",
      what: "class weights: text features of every template, normalised, averaged, normalised",
      with: { templates: resolveTemplates(o.templates, "zeroshot") },
    },
    { stage: "loss", what: "none (evaluation only): logits = 100·cos(image, class weights)" },
    { stage: "step", what: "none: nothing is trained" },
  ],
  create: (c) => new ZeroShot(c),
};

export class ZeroShot implements MethodInstance {
  params = new Map<string, Tensor>();
  /** Normalised class weights [C, embed]. */
  classWeights: Tensor;
  private templates: string[];

  constructor(private c: MethodContext) {
    this.templates = resolveTemplates(c.options.templates, "zeroshot");
    this.classWeights = classifierWeights(c.model, c.tokenizer, c.classnames, this.templates);
  }

  setClasses(classnames: string[]) {
    const next = classifierWeights(this.c.model, this.c.tokenizer, classnames, this.templates);
    this.classWeights.dispose();
    this.classWeights = next;
  }

  forward(batch: Batch): TrainOutput {
    const f = frozenFeatures("zeroshot", this.c.model, batch.views.orig, batch.features);
    const logits = this.c.model.logits(f, this.classWeights);
    const loss = crossEntropy(logits, batch.labels);
    return { logits, loss, terms: { ce: loss } };
  }

  predict(pixels: Tensor, features?: Tensor): Tensor {
    // only the logits outlive the call, even outside a caller's scope
    return noGrad(() =>
      scope(() =>
        this.c.model.logits(
          frozenFeatures("zeroshot", this.c.model, pixels, features),
          this.classWeights,
        )
      )
    );
  }

  load(values: Map<string, Float32Array>) {
    loadParams("zeroshot", this.params, values);
  }

  dispose() {
    this.classWeights.dispose();
  }
}
