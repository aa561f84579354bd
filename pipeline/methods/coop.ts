/**
 * CoOp: Learning to Prompt for Vision-Language Models (Zhou et al., IJCV 2022).
 *
 * The only trained parameters are M context vectors in token-embedding space, spliced into
 * `[SOS] ctx_1 … ctx_M {class}. [EOS]`; both CLIP towers stay frozen, so the image features of
 * a training image never change and the trainer may cache them.
 */
import { param } from "../../engine/autograd.ts";
import { noGrad } from "../../engine/autograd.ts";
import { EngineError } from "../../engine/errors.ts";
import { own, type Tensor } from "../../engine/tensor.ts";
import { randomNormal } from "../../engine/ops/random.ts";
import { crossEntropy } from "../../engine/ops/nn.ts";
import { ClassPrompts, type ClassTokenPosition, phraseEmbedding } from "../prompts.ts";
import {
  type Batch,
  loadParams,
  type Method,
  type MethodContext,
  type MethodInstance,
} from "../method.ts";

export const coop: Method = {
  name: "coop",
  paper: "Zhou et al., Learning to Prompt for Vision-Language Models, IJCV 2022",
  options: {
    nCtx: { default: 16, help: "context length M (ignored with initPhrase: its token count)" },
    initPhrase: { default: "", help: 'initialise the context from a phrase, e.g. "a photo of a"' },
    classTokenPosition: { default: "end", help: "end | middle | front" },
    classSpecific: { default: false, help: "one context per class (random init only)" },
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
      what: "[SOS] ctx_1..ctx_M {class}. [EOS] through the frozen text tower",
      with: {
        nCtx: o.initPhrase ? `tokens of "${o.initPhrase}"` : o.nCtx,
        position: o.classTokenPosition,
        classSpecific: o.classSpecific,
      },
    },
    { stage: "loss", what: "cross-entropy on 100·cos(image, class text)" },
    { stage: "step", what: "SGD on ctx" },
  ],
  create: (c) => new CoOp(c),
};

class CoOp implements MethodInstance {
  params = new Map<string, Tensor>();
  private prompts: ClassPrompts;
  private ctx: Tensor;

  constructor(private c: MethodContext) {
    const o = c.options;
    const W = c.model.config.transformerWidth;
    const phrase = String(o.initPhrase ?? "");
    if (phrase && o.classSpecific) {
      throw new EngineError(
        "coop",
        "class-specific context takes a random initialisation, not initPhrase",
      );
    }
    const C = c.classnames.length;
    const ctx = phrase ? phraseEmbedding(c.model, c.tokenizer, phrase) : randomNormal(
      o.classSpecific ? [C, Number(o.nCtx), W] : [Number(o.nCtx), W],
      c.seed,
      0,
      0.02,
    );
    this.ctx = own(param(ctx));
    this.params.set("ctx", this.ctx);
    const M = this.ctx.shape[this.ctx.rank - 2];
    this.prompts = new ClassPrompts(
      c.model,
      c.tokenizer,
      c.classnames,
      M,
      o.classTokenPosition as ClassTokenPosition,
    );
  }

  setClasses(classnames: string[]) {
    if (this.ctx.rank === 3 && classnames.length !== this.ctx.shape[0]) {
      throw new EngineError("coop", "class-specific context cannot move to another class list");
    }
    this.prompts.dispose();
    this.prompts = new ClassPrompts(
      this.c.model,
      this.c.tokenizer,
      classnames,
      this.prompts.nCtx,
      this.prompts.position,
    );
  }

  /** Class text features [C, embed] for the current context, in chunks of classes that fit
   * the text tape's budget (each chunk's tape rebuilt in backward). */
  textFeatures(): Tensor {
    return this.prompts.textFeatures(this.ctx);
  }

  private imageFeatures(pixels?: Tensor, features?: Tensor): Tensor {
    if (features) return features;
    if (!pixels) throw new EngineError("coop", "needs the original view or cached features");
    return noGrad(() => this.c.model.encodeImage(pixels).features);
  }

  forward(batch: Batch) {
    const logits = this.c.model.logits(
      this.imageFeatures(batch.views.orig, batch.features),
      this.textFeatures(),
    );
    const loss = crossEntropy(logits, batch.labels);
    return { logits, loss, terms: { ce: loss } };
  }

  load(values: Map<string, Float32Array>) {
    loadParams("coop", this.params, values);
  }

  predict(pixels: Tensor, features?: Tensor): Tensor {
    return noGrad(() =>
      this.c.model.logits(this.imageFeatures(pixels, features), this.textFeatures())
    );
  }

  dispose() {
    this.prompts.dispose();
    this.ctx.dispose();
  }
}
