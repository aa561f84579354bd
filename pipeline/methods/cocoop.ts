/**
 * CoCoOp: Conditional Prompt Learning for Vision-Language Models (Zhou et al., CVPR 2022).
 *
 * CoOp's context vectors ctx_1 … ctx_M plus a lightweight meta-net h_θ (Linear → ReLU → Linear)
 * that turns each image's normalised feature into a meta-token π = h_θ(x) added to every context
 * token: ctx_m(x) = ctx_m + π. Each image thus gets its own class prompts
 * `[SOS] ctx_1(x) … ctx_M(x) {class}. [EOS]`, so the text tower runs B·C sequences per batch.
 * Both CLIP towers stay frozen; the meta-net reads the frozen image feature, so features can be
 * cached by the trainer.
 */
import { noGrad, param } from "../../engine/autograd.ts";
import { EngineError } from "../../engine/errors.ts";
import { own, scope, type Tensor } from "../../engine/tensor.ts";
import { add, exp, mul, relu } from "../../engine/ops/elementwise.ts";
import { concat } from "../../engine/ops/indexing.ts";
import { linear, matmul } from "../../engine/ops/matmul.ts";
import { crossEntropy, normalize } from "../../engine/ops/nn.ts";
import { randomNormal, randomUniform } from "../../engine/ops/random.ts";
import { contiguous, narrow, reshape } from "../../engine/ops/views.ts";
import { ClassPrompts, phraseEmbedding } from "../prompts.ts";
import {
  type Batch,
  loadParams,
  type Method,
  type MethodContext,
  type MethodInstance,
  type TrainOutput,
} from "../method.ts";

export const cocoop: Method = {
  name: "cocoop",
  paper: "Zhou et al., Conditional Prompt Learning for Vision-Language Models, CVPR 2022",
  options: {
    nCtx: { default: 4, help: "context length M (ignored with initPhrase: its token count)" },
    initPhrase: {
      default: "a photo of a",
      help: 'initialise the context from a phrase ("" = random)',
    },
    metaRatio: { default: 16, help: "meta-net bottleneck: hidden width = embed / metaRatio" },
    predictSequences: {
      default: 1024,
      help: "text sequences (images × classes) per chunk at inference",
    },
  },
  defaults: {
    optimizer: "sgd",
    lr: 0.002,
    momentum: 0.9,
    weightDecay: 5e-4,
    batch: 1,
    epochs: 10,
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
        "π(x) = linear2(relu(linear1(f(x)/‖f(x)‖))); [SOS] ctx_1+π … ctx_M+π {class}. [EOS] per image through the frozen text tower",
      with: {
        nCtx: o.initPhrase ? `tokens of "${o.initPhrase}"` : o.nCtx,
        metaNet: `embed → embed/${o.metaRatio} → text width`,
        sequences: "batch × classes",
      },
    },
    { stage: "loss", what: "cross-entropy on 100·cos(f(x_b), t_b,c)" },
    { stage: "step", what: "SGD on ctx and meta_net" },
  ],
  create: (c) => new CoCoOp(c),
};

/** PyTorch's default Linear initialisation: weight and bias ~ U(−1/√in, 1/√in). */
function linearInit(out: number, inp: number, seed: number): [Tensor, Tensor] {
  const bound = 1 / Math.sqrt(inp);
  return [
    own(param(randomUniform([out, inp], seed, -bound, bound))),
    own(param(randomUniform([out], seed + 1, -bound, bound))),
  ];
}

/** The token embeddings of the init phrase, as a fresh tensor (the context's initial value). */
function phraseContext(c: MethodContext, phrase: string): Tensor {
  const e = phraseEmbedding(c.model, c.tokenizer, phrase);
  const ctx = contiguous(e, true);
  e.dispose();
  return ctx;
}

export class CoCoOp implements MethodInstance {
  params = new Map<string, Tensor>();
  private prompts: ClassPrompts;
  private ctx: Tensor;
  private meta: { w1: Tensor; b1: Tensor; w2: Tensor; b2: Tensor };

  constructor(private c: MethodContext) {
    const o = c.options;
    const { transformerWidth: W, embedDim: D } = c.model.config;
    const phrase = String(o.initPhrase ?? "");
    const ratio = Number(o.metaRatio);
    const hidden = Math.floor(D / ratio);
    if (!(hidden >= 1)) {
      throw new EngineError(
        "cocoop",
        `metaRatio ${o.metaRatio} leaves no hidden unit of embed ${D}`,
      );
    }
    // distinct streams per part, never shared between neighbouring seeds
    const s = c.seed * 64;
    this.ctx = own(param(
      phrase ? phraseContext(c, phrase) : randomNormal([Number(o.nCtx), W], s, 0, 0.02),
    ));
    const [w1, b1] = linearInit(hidden, D, s + 2);
    const [w2, b2] = linearInit(W, hidden, s + 4);
    this.meta = { w1, b1, w2, b2 };
    this.params.set("ctx", this.ctx);
    this.params.set("meta_net.linear1.weight", w1);
    this.params.set("meta_net.linear1.bias", b1);
    this.params.set("meta_net.linear2.weight", w2);
    this.params.set("meta_net.linear2.bias", b2);
    this.prompts = new ClassPrompts(c.model, c.tokenizer, c.classnames, this.ctx.shape[0]);
  }

  /** Replaces every trained parameter's values (names as in `params`). */
  load(values: Map<string, Float32Array>) {
    loadParams("cocoop", this.params, values);
  }

  setClasses(classnames: string[]) {
    const next = new ClassPrompts(this.c.model, this.c.tokenizer, classnames, this.prompts.nCtx);
    this.prompts.dispose();
    this.prompts = next;
  }

  /** The meta-token π(x) = linear2(relu(linear1(x̂))) for normalised image features [B, embed]. */
  metaNet(imageFeaturesNormed: Tensor): Tensor {
    const { w1, b1, w2, b2 } = this.meta;
    return linear(relu(linear(imageFeaturesNormed, w1, b1)), w2, b2);
  }

  /**
   * Logits [B, C] of normalised image features [B, embed]: each image's own class prompts go
   * through the text tower (B·C sequences) and are scored against that image only.
   */
  conditionalLogits(imgN: Tensor): Tensor {
    const B = imgN.shape[0], C = this.prompts.size, W = this.ctx.shape[1];
    const pi = this.metaNet(imgN);
    const ctxB = add(reshape(this.ctx, [1, -1, W]), reshape(pi, [B, 1, W])); // [B, M, W]
    const txtN = normalize(this.prompts.perImageTextFeatures(ctxB)); // [B, C, embed]
    const cos = matmul(reshape(imgN, [B, 1, -1]), txtN, { transB: true }); // [B, 1, C]
    return mul(reshape(cos, [B, C]), exp(this.c.model.w("logit_scale")));
  }

  private imageFeatures(pixels?: Tensor, features?: Tensor): Tensor {
    if (features) return features;
    if (!pixels) throw new EngineError("cocoop", "needs the original view or cached features");
    return noGrad(() => this.c.model.encodeImage(pixels).features);
  }

  forward(batch: Batch): TrainOutput {
    const imgN = normalize(this.imageFeatures(batch.views.orig, batch.features));
    const logits = this.conditionalLogits(imgN);
    const loss = crossEntropy(logits, batch.labels);
    return { logits, loss, terms: { ce: loss } };
  }

  predict(pixels: Tensor, features?: Tensor): Tensor {
    return noGrad(() => {
      const imgN = normalize(this.imageFeatures(pixels, features));
      const B = imgN.shape[0];
      // B·C text sequences per batch: score the images in chunks to bound memory
      const per = Math.max(
        1,
        Math.floor(Number(this.c.options.predictSequences) / this.prompts.size),
      );
      if (B <= per) return this.conditionalLogits(imgN);
      const parts: Tensor[] = [];
      for (let b = 0; b < B; b += per) {
        parts.push(scope(() => this.conditionalLogits(narrow(imgN, 0, b, Math.min(per, B - b)))));
      }
      return concat(parts, 0);
    });
  }

  dispose() {
    this.prompts.dispose();
    for (const p of this.params.values()) p.dispose();
  }
}
