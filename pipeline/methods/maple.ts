/**
 * MaPLe: Multi-modal Prompt Learning (Khattak et al., CVPR 2023).
 *
 * Prompts in both CLIP towers, coupled so the vision prompts are a function of the language
 * prompts:
 *   - layer 1, language: M learnable tokens `ctx` (initialised from the first M words of
 *     "a photo of a") replace those words: `[SOS] p_1 … p_M of a {class}. [EOS]`;
 *   - layer 1, vision: the coupling function `proj` (Linear text width → vision width) maps the
 *     language prompts to M vision prompts, appended after the class and patch tokens (after the
 *     positional embedding, before ln_pre); there is no separate vision prompt parameter;
 *   - deep prompts, blocks 2 … J: block j has its own language prompts `deep_text.j` and coupling
 *     `deep_proj.j`; at the block's input they replace the prompt tokens of both towers (text
 *     positions 1 … M, the last M vision tokens). After block J the prompts flow on.
 * One set of prompts serves the whole batch. Both towers stay frozen, but the vision prompts
 * change the image features, so they cannot be cached.
 */
import { noGrad, param } from "../../engine/autograd.ts";
import { EngineError } from "../../engine/errors.ts";
import { own, scope, type Tensor } from "../../engine/tensor.ts";
import { linear } from "../../engine/ops/matmul.ts";
import { sliceAssign } from "../../engine/ops/indexing.ts";
import { crossEntropy } from "../../engine/ops/nn.ts";
import { randomNormal, randomUniform } from "../../engine/ops/random.ts";
import { contiguous, narrow, reshape } from "../../engine/ops/views.ts";
import { classesPerPass, ClassPrompts } from "../prompts.ts";
import { chunked } from "../../engine/chunked.ts";
import {
  type Batch,
  loadParams,
  type Method,
  type MethodContext,
  type MethodInstance,
  type TrainOutput,
} from "../method.ts";

export const maple: Method = {
  name: "maple",
  paper: "Khattak et al., MaPLe: Multi-modal Prompt Learning, CVPR 2023",
  options: {
    nCtx: { default: 2, help: "prompt tokens M per layer and tower" },
    initPhrase: {
      default: "a photo of a",
      help: 'the prompt reads "{initPhrase} {class}."; its first M words are learned ("" = random)',
    },
    depth: {
      default: 9,
      help:
        "prompt depth J: blocks 1 … J get prompts (1 = shallow prompts only); capped at the towers' depth for small CLIPs",
    },
  },
  defaults: {
    optimizer: "sgd",
    lr: 0.0035,
    momentum: 0.9,
    weightDecay: 5e-4,
    batch: 4,
    epochs: 5,
    warmupEpochs: 1,
    warmupLr: 1e-5,
  },
  views: ["orig"],
  frozenImageFeatures: false,
  graph: (o) => [
    { stage: "load", what: "few-shot images, CLIP test transform" },
    { stage: "views", what: "original view", with: { views: ["orig"] } },
    {
      stage: "encode",
      what:
        "image tower with vision prompts proj(ctx) appended before ln_pre, deep_proj.j(deep_text.j) at blocks 2..J",
      with: { cache: false, depth: o.depth },
    },
    {
      stage: "prompt",
      what: `[SOS] p_1..p_M (rest of "${o.initPhrase}") {class}. [EOS]; deep_text.j at blocks 2..J`,
      with: { nCtx: o.nCtx, depth: o.depth, coupling: "Linear(text width → vision width)" },
    },
    { stage: "loss", what: "cross-entropy on 100·cos(image, class text)" },
    { stage: "step", what: "SGD on ctx, proj, deep_text, deep_proj" },
  ],
  create: (c) => new MaPLe(c),
};

/** PyTorch's default Linear initialisation: weight and bias ~ U(−1/√in, 1/√in). */
function linearInit(out: number, inp: number, seed: number): [Tensor, Tensor] {
  const bound = 1 / Math.sqrt(inp);
  return [
    own(param(randomUniform([out, inp], seed, -bound, bound))),
    own(param(randomUniform([out], seed + 1, -bound, bound))),
  ];
}

interface Coupling {
  weight: Tensor;
  bias: Tensor;
}

export class MaPLe implements MethodInstance {
  params = new Map<string, Tensor>();
  readonly depth: number;
  private prompts: ClassPrompts;
  private ctx: Tensor;
  private proj: Coupling;
  /** Index j (block j + 1 in the paper's 1-based count) holds block j's prompts; 0 is unused. */
  private deepText: Tensor[] = [];
  private deepProj: Coupling[] = [];

  constructor(private c: MethodContext) {
    const o = c.options;
    const cfg = c.model.config;
    const W = cfg.transformerWidth, V = cfg.visionWidth;
    const M = Number(o.nCtx);
    const phrase = String(o.initPhrase ?? "");
    const maxDepth = Math.min(cfg.visionLayers, cfg.transformerLayers);
    // the paper's J = 9 assumes 12 blocks; a smaller CLIP gets prompts in every block it has
    const J = Math.min(Number(o.depth), maxDepth);
    if (!Number.isInteger(M) || M < 1) {
      throw new EngineError("maple", `nCtx must be ≥ 1, got ${o.nCtx}`);
    }
    if (!Number.isInteger(J) || J < 1) {
      throw new EngineError(
        "maple",
        `depth must be in 1 … ${maxDepth} (blocks per tower), got ${o.depth}`,
      );
    }
    this.depth = J;
    this.prompts = new ClassPrompts(c.model, c.tokenizer, c.classnames, M, "end", phrase);
    const s = c.seed * 64; // distinct streams per part, never shared between neighbouring seeds
    this.ctx = own(param(
      phrase
        ? scope(() => {
          // the phrase's first M words as the prompt embeds them (row 0: the same for every class)
          const words = narrow(this.prompts.embeddingsOf(0, 1), 1, 1, M);
          return contiguous(reshape(words, [M, W]), true);
        })
        : randomNormal([M, W], s, 0, 0.02),
    ));
    this.params.set("ctx", this.ctx);
    const [pw, pb] = linearInit(V, W, s + 2);
    this.proj = { weight: pw, bias: pb };
    this.params.set("proj.weight", pw);
    this.params.set("proj.bias", pb);
    // as in the authors' code, the deep couplings start as copies of one Linear
    const [dw, db] = J > 1 ? linearInit(V, W, s + 4) : [];
    for (let j = 1; j < J; j++) {
      const t = own(param(randomNormal([M, W], s + 8 + j, 0, 0.02)));
      const [weight, bias] = noGrad(() => [dw!, db!].map((t) => own(param(contiguous(t, true)))));
      this.deepText[j] = t;
      this.deepProj[j] = { weight, bias };
      this.params.set(`deep_text.${j}`, t);
      this.params.set(`deep_proj.${j}.weight`, weight);
      this.params.set(`deep_proj.${j}.bias`, bias);
    }
    dw?.dispose();
    db?.dispose();
  }

  /** i32 ids of the class prompts [C, ctx] (the learned tokens sit at positions 1 … M). */
  get promptIds(): Int32Array {
    return this.prompts.ids;
  }

  /** Replaces every trained parameter's values (names as in `params`). */
  load(values: Map<string, Float32Array>) {
    loadParams("maple", this.params, values);
  }

  setClasses(classnames: string[]) {
    const p = this.prompts;
    const next = new ClassPrompts(
      this.c.model,
      this.c.tokenizer,
      classnames,
      p.nCtx,
      "end",
      p.phrase,
    );
    p.dispose();
    this.prompts = next;
  }

  private couple(k: Coupling, prompt: Tensor): Tensor {
    return linear(prompt, k.weight, k.bias);
  }

  private deep = (layer: number) => layer >= 1 && layer < this.depth;

  /** Class text features [C, embed]: language prompts at the input and at blocks 2 … J, in
   * chunks of classes that fit the text tape's budget. */
  textFeatures(): Tensor {
    const { model } = this.c, p = this.prompts;
    const layers = this.deepText.map((_, l) => l).filter((l) => this.deep(l));
    const inputs = [this.ctx, ...layers.map((l) => this.deepText[l])];
    return chunked(
      inputs,
      p.size,
      classesPerPass(model),
      ([ctx, ...deep], s, n) =>
        model.encodeEmbeddings(p.compose(ctx, false, s, n), p.eotOf(s, n), {
          beforeBlock: (l, x) => {
            const k = layers.indexOf(l);
            return k < 0 ? x : sliceAssign(x, deep[k], [0, 1]);
          },
        }),
    );
  }

  /** Image features [B, embed]: coupled vision prompts appended, then replaced at blocks 2 … J. */
  imageFeatures(pixels: Tensor): Tensor {
    const M = this.ctx.shape[0];
    const shallow = this.couple(this.proj, this.ctx);
    return this.c.model.encodeImage(pixels, {
      extraTokens: reshape(shallow, [1, M, -1]),
      beforeBlock: (l, x) =>
        this.deep(l)
          ? sliceAssign(x, this.couple(this.deepProj[l], this.deepText[l]), [0, x.shape[1] - M])
          : x,
    }).features;
  }

  forward(batch: Batch): TrainOutput {
    const pixels = batch.views.orig;
    if (!pixels) {
      throw new EngineError(
        "maple",
        "needs the original view (image features depend on the prompts)",
      );
    }
    const logits = this.c.model.logits(this.imageFeatures(pixels), this.textFeatures());
    const loss = crossEntropy(logits, batch.labels);
    return { logits, loss, terms: { ce: loss } };
  }

  predict(pixels: Tensor): Tensor {
    if (!pixels) {
      throw new EngineError("maple", "needs pixels: cached frozen features do not apply");
    }
    return noGrad(() => this.c.model.logits(this.imageFeatures(pixels), this.textFeatures()));
  }

  dispose() {
    this.prompts.dispose();
    for (const p of this.params.values()) p.dispose();
  }
}
