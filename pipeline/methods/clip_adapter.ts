/**
 * CLIP-Adapter: Better Vision-Language Models with Feature Adapters (Gao et al., IJCV 2024;
 * arXiv 2110.04544).
 *
 * A bottleneck adapter on the frozen image feature f (before normalisation):
 *   A(f) = ReLU(fc2 · ReLU(fc1 · f)), fc1: D → D/4, fc2: D/4 → D, no biases;
 *   f' = ratio · A(f) + (1 − ratio) · f   (residual ratio 0.2);
 *   logits = exp(logit_scale) · cos(f', class text features of hand-written templates).
 * Only the adapter trains. The public code trains through CoOp's Dassl trainer with CoOp's
 * configuration, so the defaults are CoOp's (SGD 0.002, momentum 0.9, weight decay 5e-4,
 * batch 32, 200 epochs, cosine, one warm-up epoch at 1e-5); later re-implementations run the
 * same adapter with SGD 0.01 for 20 epochs.
 */
import { noGrad, param } from "../../engine/autograd.ts";
import { EngineError } from "../../engine/errors.ts";
import { own, scope, type Tensor } from "../../engine/tensor.ts";
import { add, mul, relu } from "../../engine/ops/elementwise.ts";
import { linear } from "../../engine/ops/matmul.ts";
import { crossEntropy } from "../../engine/ops/nn.ts";
import { randomUniform } from "../../engine/ops/random.ts";
import { resolveTemplates } from "../templates.ts";
import {
  type Batch,
  loadParams,
  type Method,
  type MethodContext,
  type MethodInstance,
  type TrainOutput,
} from "../method.ts";
import { classifierWeights, frozenFeatures } from "./zeroshot.ts";

export const clipAdapter: Method = {
  name: "clip-adapter",
  paper: "Gao et al., CLIP-Adapter: Better Vision-Language Models with Feature Adapters, IJCV 2024",
  options: {
    ratio: { default: 0.2, help: "residual ratio: f' = ratio·adapter(f) + (1 − ratio)·f" },
    reduction: { default: 4, help: "bottleneck: hidden width = embed / reduction" },
    templates: {
      default: "single",
      help:
        "class-text templates (list name, template with {}, or a list; see pipeline/templates.ts)",
    },
  },
  defaults: {
    optimizer: "sgd",
    lr: 0.002,
    momentum: 0.9,
    weightDecay: 5e-4,
    batch: 32,
    epochs: 200,
    warmupEpochs: 1,
    warmupLr: 1e-5,
  },
  views: ["orig"],
  frozenImageFeatures: true,
  graph: (o) => [
    { stage: "load", what: "few-shot images, CLIP test transform" },
    { stage: "views", what: "original view", with: { views: ["orig"] } },
    { stage: "encode", what: "frozen image tower (features cached)", with: { cache: true } },
    {
      stage: "prompt",
      what:
        "class weights from hand-written templates (frozen); image side: f' = r·A(f) + (1 − r)·f",
      with: {
        templates: resolveTemplates(o.templates, "clip-adapter"),
        adapter: `embed → embed/${o.reduction} → embed, ReLU after each, no bias`,
        ratio: o.ratio,
      },
    },
    { stage: "loss", what: "cross-entropy on 100·cos(f', class weights)" },
    { stage: "step", what: "SGD on the adapter" },
  ],
  create: (c) => new ClipAdapter(c),
};

/** PyTorch's default Linear weight initialisation: U(−1/√in, 1/√in). */
function linearWeight(out: number, inp: number, seed: number): Tensor {
  const bound = 1 / Math.sqrt(inp);
  return own(param(randomUniform([out, inp], seed, -bound, bound)));
}

export class ClipAdapter implements MethodInstance {
  params = new Map<string, Tensor>();
  /** Normalised class weights [C, embed]. */
  classWeights: Tensor;
  private fc1: Tensor;
  private fc2: Tensor;
  private ratio: number;
  private templates: string[];

  constructor(private c: MethodContext) {
    const o = c.options;
    const D = c.model.config.embedDim;
    const hidden = Math.floor(D / Number(o.reduction));
    if (!(hidden >= 1)) {
      throw new EngineError(
        "clip-adapter",
        `reduction ${o.reduction} leaves no hidden unit of embed ${D}`,
      );
    }
    this.ratio = Number(o.ratio);
    if (!(this.ratio >= 0 && this.ratio <= 1)) {
      throw new EngineError("clip-adapter", `ratio must be in [0, 1], got ${o.ratio}`);
    }
    this.templates = resolveTemplates(o.templates, "clip-adapter");
    const s = c.seed * 64;
    this.fc1 = linearWeight(hidden, D, s + 1);
    this.fc2 = linearWeight(D, hidden, s + 2);
    this.params.set("adapter.fc1.weight", this.fc1);
    this.params.set("adapter.fc2.weight", this.fc2);
    this.classWeights = classifierWeights(c.model, c.tokenizer, c.classnames, this.templates);
  }

  setClasses(classnames: string[]) {
    const next = classifierWeights(this.c.model, this.c.tokenizer, classnames, this.templates);
    this.classWeights.dispose();
    this.classWeights = next;
  }

  /** f' = ratio·A(f) + (1 − ratio)·f on unnormalised image features [B, embed]. */
  adapt(f: Tensor): Tensor {
    const a = relu(linear(relu(linear(f, this.fc1)), this.fc2));
    return add(mul(a, this.ratio), mul(f, 1 - this.ratio));
  }

  forward(batch: Batch): TrainOutput {
    const f = frozenFeatures("clip-adapter", this.c.model, batch.views.orig, batch.features);
    const logits = this.c.model.logits(this.adapt(f), this.classWeights);
    const loss = crossEntropy(logits, batch.labels);
    return { logits, loss, terms: { ce: loss } };
  }

  predict(pixels: Tensor, features?: Tensor): Tensor {
    // only the logits outlive the call, even outside a caller's scope
    return noGrad(() =>
      scope(() =>
        this.c.model.logits(
          this.adapt(frozenFeatures("clip-adapter", this.c.model, pixels, features)),
          this.classWeights,
        )
      )
    );
  }

  load(values: Map<string, Float32Array>) {
    loadParams("clip-adapter", this.params, values);
  }

  dispose() {
    this.fc1.dispose();
    this.fc2.dispose();
    this.classWeights.dispose();
  }
}
