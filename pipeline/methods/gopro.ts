/**
 * GOPro: Generate and Optimise Prompts in CLIP using self-supervised learning
 * (Jha, Banerjee, Singha; BMVC 2023). Specification: shared/methods/GOPRO.md.
 *
 * A conditional prompt learner on frozen CLIP. Every block l of the image tower yields *visual
 * primitives* of an image: the per-channel mean μ_l and standard deviation σ_l of its output
 * tokens (class token included). A style token s_l = StyleProj_l((μ_l + σ_l)/2) and a content
 * token c_l = ContentProj_l(μ_l) are fused, g_l = (s_l + c_l)/2, and the layer mixer ρ
 * (Linear over the layer axis) turns g_1 … g_L into one shift b(x) added to each of the M
 * learned context tokens: ctx_m(x) = ctx_m + b(x). Each image so gets its own class prompts
 * `[SOS] ctx(x) {class}. [EOS]` and its own class text features T(x).
 *
 * Training looks at three views of each image (original, MoCo-v3, AugMix), each with its own
 * primitives, prompts and normalised text features T_v, and minimises
 *   L = L_ce + 1.0·L_cons + 0.1·L_vcl
 *   L_ce   cross-entropy of 100·cos(f(x), T_orig(x)_c) with the labels,
 *   L_cons MSE(T_orig, T_moco) + MSE(T_orig, T_augmix) (prompt consistency, both sides trained),
 *   L_vcl  NT-Xent (τ = 0.1) between z1 = normalise(P_v(f(x))) and z2 = normalise(P_v(f(x_moco))),
 *          P_v = Linear + BatchNorm1d (training mode, each view's batch on its own),
 * where f is the frozen image tower's normalised feature throughout.
 * Each weight is an option; 0 removes the term and skips its computation (ablations).
 * Inference uses the original view only, without the image projector.
 *
 * Defects of the authors' public code, fixed here by construction (no switch restores them):
 *   1. its AugMix view of a whole batch came from the first image: views are made per image by
 *      the data pipeline, and this file only consumes them;
 *   2. its MoCo view re-quantised an already normalised tensor and normalised it with ImageNet
 *      statistics: the view comes from the decoded image with CLIP statistics (data pipeline);
 *   3. it kept the checkpoint with the best test accuracy: nothing here sees a test split, the
 *      trainer selects on validation or takes the last epoch;
 *   4. it built a CoCoOp meta-net it never used: there is none;
 *   5. a loaded checkpoint kept the base classes' token buffers: class tokens are never part of
 *      the parameters and are rebuilt from the evaluated class list (`setClasses`);
 *   6. its checkpoints held the frozen CLIP weights: `params` holds only the trained parts.
 *
 * Two inert parameters (kept for checkpoint compatibility; their gradients are zero in exact
 * arithmetic, float32 rounding only): `layer_mixer.bias` shifts every dimension of every context
 * token equally, which the text tower's layer norms remove; `image_projector.bias` sits right
 * before BatchNorm, which subtracts it again with the batch mean.
 */
import { noGrad, param } from "../../engine/autograd.ts";
import { E } from "../../engine/device.ts";
import { EngineError, fmtShape } from "../../engine/errors.ts";
import { own, scope, type Tensor, tensor } from "../../engine/tensor.ts";
import { add, affine, exp, mul, sqrt, square, sub } from "../../engine/ops/elementwise.ts";
import { mean } from "../../engine/ops/reduce.ts";
import { contiguous, reshape } from "../../engine/ops/views.ts";
import { linear, matmul } from "../../engine/ops/matmul.ts";
import { concat, stack } from "../../engine/ops/indexing.ts";
import { crossEntropy, mse, normalize } from "../../engine/ops/nn.ts";
import { randomNormal, randomUniform } from "../../engine/ops/random.ts";
import { BatchNorm1d } from "../../engine/ops/batchnorm.ts";
import { ClassPrompts, phraseEmbedding } from "../prompts.ts";
import type {
  Batch,
  Method,
  MethodContext,
  MethodInstance,
  TrainOutput,
  ViewName,
} from "../method.ts";

/** σ_l = sqrt(mean((X − μ)²) + SIGMA_EPS), as the authors' code. */
const SIGMA_EPS = 2.3e-8;
/** Logit given to an anchor's own similarity in NT-Xent: exp() of it is exactly 0 in f32. */
const SELF_EXCLUDED = -1e9;

export const gopro: Method = {
  name: "gopro",
  paper: "Jha, Banerjee, Singha, GOPro: Generate and Optimize Prompts in CLIP using " +
    "Self-Supervised Learning, BMVC 2023",
  options: {
    nCtx: { default: 4, help: "context length M (ignored with initPhrase: its token count)" },
    initPhrase: {
      default: "a photo of a",
      help: 'initialise the context from a phrase ("": random)',
    },
    ceWeight: { default: 1, help: "weight of L_ce (0: off)" },
    consWeight: { default: 1, help: "weight of L_cons, prompt consistency across views (0: off)" },
    vclWeight: { default: 0.1, help: "weight of L_vcl, visual contrastive NT-Xent (0: off)" },
    tau: { default: 0.1, help: "NT-Xent temperature of L_vcl" },
  },
  defaults: {
    optimizer: "sgd",
    lr: 0.002,
    momentum: 0.9,
    weightDecay: 5e-4,
    batch: 4,
    epochs: 50,
    warmupEpochs: 1,
    warmupLr: 1e-5,
  },
  views: ["orig", "moco", "augmix"],
  frozenImageFeatures: false,
  graph: (o) => {
    const w = checkOptions(o);
    return [
      { stage: "load", what: "few-shot images (16 shots)" },
      {
        stage: "views",
        what: "original, MoCo-v3 and AugMix views of each image",
        with: { views: neededViews(w) },
      },
      {
        stage: "encode",
        what: "frozen image tower: features f and every block's output tokens X_l",
        with: { hidden: true, cache: false },
      },
      {
        stage: "prompt",
        what: "μ_l, σ_l → style/content tokens → layer mixer b(x); " +
          "[SOS] (ctx + b(x)) {class}. [EOS] per image and view through the frozen text tower",
        with: { nCtx: o.initPhrase ? `tokens of "${o.initPhrase}"` : o.nCtx },
      },
      {
        stage: "loss",
        what: "L_ce(100·cos, labels) + L_cons(MSE of T across views) + L_vcl(NT-Xent on P_v(f))",
        with: { ce: w.ce, cons: w.cons, vcl: w.vcl, tau: w.tau },
      },
      { stage: "step", what: "SGD on ctx, projections, layer mixer and image projector" },
    ];
  },
  create: (c) => new GoPro(c),
};

interface Weights {
  ce: number;
  cons: number;
  vcl: number;
  tau: number;
}

function checkOptions(o: Record<string, unknown>): Weights {
  const num = (k: string) => {
    const v = o[k];
    if (typeof v !== "number" || !Number.isFinite(v) || v < 0) {
      throw new EngineError(
        "gopro",
        `option ${k} must be a finite number ≥ 0, got ${JSON.stringify(v)}`,
      );
    }
    return v;
  };
  const w = {
    ce: num("ceWeight"),
    cons: num("consWeight"),
    vcl: num("vclWeight"),
    tau: num("tau"),
  };
  if (!(w.tau > 0)) throw new EngineError("gopro", `option tau must be > 0, got ${w.tau}`);
  if (!w.ce && !w.cons && !w.vcl) {
    throw new EngineError("gopro", "every loss weight is 0: nothing to train");
  }
  if (typeof o.initPhrase !== "string") {
    throw new EngineError(
      "gopro",
      `option initPhrase must be a string, got ${JSON.stringify(o.initPhrase)}`,
    );
  }
  if (!o.initPhrase && (!Number.isInteger(o.nCtx) || (o.nCtx as number) < 1)) {
    throw new EngineError(
      "gopro",
      `option nCtx must be a positive integer, got ${JSON.stringify(o.nCtx)}`,
    );
  }
  return w;
}

function neededViews(w: Weights): ViewName[] {
  return [
    "orig",
    ...(w.cons || w.vcl ? ["moco" as const] : []),
    ...(w.cons ? ["augmix" as const] : []),
  ];
}

/** A Linear layer's parameters in PyTorch's layout: weight [out, in], bias [out]. */
interface Linear {
  weight: Tensor;
  bias: Tensor;
}

/** The visual primitives of one view, constants for the trained parts. */
interface Primitives {
  /** f(x): image features [B, embed] (not normalised). */
  features: Tensor;
  /** Per layer: the style input (μ_l + σ_l)/2 and the content input μ_l, [B, vision width]. */
  style: Tensor[];
  content: Tensor[];
}

export interface GoProOutput extends TrainOutput {
  /** b(x) of the original view [B, text width]. */
  shift: Tensor;
}

export class GoPro implements MethodInstance {
  params = new Map<string, Tensor>();
  private w: Weights;
  private prompts: ClassPrompts;
  private ctx: Tensor;
  private styleProj: Linear[] = [];
  private contentProj: Linear[] = [];
  private layerMixer: Linear;
  private imageProjector: Linear;
  /** Always in training mode: GOPro uses P_v only in L_vcl. Its running statistics are buffers,
   * updated as PyTorch does but never read, and not part of `params`. */
  private bn: BatchNorm1d;

  constructor(private c: MethodContext) {
    const o = c.options;
    this.w = checkOptions(o);
    const { transformerWidth: W, visionWidth: V, visionLayers: L, embedDim: D } = c.model.config;
    let seed = c.seed * 1024;
    const phrase = o.initPhrase as string;
    this.ctx = this.add(
      "ctx",
      phrase
        ? scope(() => contiguous(phraseEmbedding(c.model, c.tokenizer, phrase), true))
        : randomNormal([o.nCtx as number, W], seed++, 0, 0.02),
    );
    // PyTorch's default Linear initialisation: U(±1/sqrt(in)) for weight and bias
    const lin = (name: string, out: number, inp: number): Linear => {
      const k = 1 / Math.sqrt(inp);
      return {
        weight: this.add(`${name}.weight`, randomUniform([out, inp], seed++, -k, k)),
        bias: this.add(`${name}.bias`, randomUniform([out], seed++, -k, k)),
      };
    };
    for (let l = 0; l < L; l++) {
      this.styleProj.push(lin(`style_proj.${l}`, W, V));
      this.contentProj.push(lin(`content_proj.${l}`, W, V));
    }
    this.layerMixer = lin("layer_mixer", 1, L);
    this.imageProjector = lin("image_projector", D, D);
    this.bn = new BatchNorm1d(D);
    this.add("image_projector.bn.weight", this.bn.weight);
    this.add("image_projector.bn.bias", this.bn.bias);
    this.prompts = new ClassPrompts(c.model, c.tokenizer, c.classnames, this.ctx.shape[0], "end");
  }

  private add(name: string, t: Tensor): Tensor {
    const p = own(param(t));
    p.name = `gopro.${name}`;
    this.params.set(name, p);
    return p;
  }

  /**
   * Replaces every parameter's values (a checkpoint, or the golden initial values). Names and
   * shapes are checked before anything is written; gradients are cleared.
   */
  load(values: Map<string, Float32Array>) {
    const problems: string[] = [];
    for (const name of values.keys()) {
      if (!this.params.has(name)) problems.push(`unknown parameter ${name}`);
    }
    for (const [name, t] of this.params) {
      const v = values.get(name);
      if (!v) problems.push(`missing ${name} ${fmtShape(t.shape)}`);
      else if (v.length !== t.size) {
        problems.push(`${name} has ${v.length} values, expected ${fmtShape(t.shape)} (${t.size})`);
      }
    }
    if (problems.length) {
      throw new EngineError("gopro.load", problems.join("; "));
    }
    for (const [name, t] of this.params) {
      t.grad?.dispose();
      t.grad = null;
      // a copy recorded in the current batch: a queue write would land before pending kernels
      const src = tensor(values.get(name)!, t.shape);
      E().copy(src.buf("gopro.load"), 0, t.buf("gopro.load"), t.offset * 4, t.size * 4);
      src.dispose();
    }
  }

  setClasses(classnames: string[]) {
    const next = new ClassPrompts(
      this.c.model,
      this.c.tokenizer,
      classnames,
      this.prompts.nCtx,
      "end",
    );
    this.prompts.dispose();
    this.prompts = next;
  }

  /**
   * Visual primitives of one view from every block's output X_l [B, T, V]: μ_l over the tokens
   * (class token included) and σ_l = sqrt(mean((X_l − μ_l)²) + 2.3e-8). No gradient into CLIP.
   */
  private primitives(pixels: Tensor, hidden: boolean): Primitives {
    return noGrad(() =>
      scope(() => {
        const out = this.c.model.encodeImage(pixels, { hidden });
        const style: Tensor[] = [], content: Tensor[] = [];
        for (const x of out.hidden) {
          const mu = mean(x, 1, true);
          const sigma = sqrt(add(mean(square(sub(x, mu)), 1), SIGMA_EPS));
          const m = reshape(mu, [x.shape[0], x.shape[2]]);
          style.push(mul(add(m, sigma), 0.5));
          content.push(contiguous(m, true));
        }
        return { features: out.features, style, content };
      })
    );
  }

  /** b(x) [B, W]: per layer g_l = (s_l + c_l)/2, mixed over the layers by ρ. */
  shift(p: Primitives): Tensor {
    const g = p.style.map((st, l) => {
      const s = linear(st, this.styleProj[l].weight, this.styleProj[l].bias);
      const c = linear(p.content[l], this.contentProj[l].weight, this.contentProj[l].bias);
      return mul(add(s, c), 0.5);
    });
    const [B, W] = g[0].shape;
    const mixed = linear(stack(g, -1), this.layerMixer.weight, this.layerMixer.bias); // [B, W, 1]
    return reshape(mixed, [B, W]);
  }

  /** T(x) [B, C, embed], normalised: each image's class prompts with ctx_m + b(x). */
  textFeatures(shift: Tensor): Tensor {
    const [B, W] = shift.shape;
    const M = this.ctx.shape[0];
    const ctx = add(reshape(this.ctx, [1, M, W]), reshape(shift, [B, 1, W]));
    return normalize(this.prompts.perImageTextFeatures(ctx)); // [B, C, embed]
  }

  /** exp(logit_scale) · cos(f(x), T(x)_c) [B, C]. */
  private logits(features: Tensor, text: Tensor): Tensor {
    const B = features.shape[0], D = features.shape[1];
    const f = reshape(normalize(features), [B, 1, D]);
    const cos = reshape(matmul(f, text, { transB: true }), [B, text.shape[1]]);
    return mul(cos, exp(this.c.model.w("logit_scale")));
  }

  /**
   * z = normalise(P_v(f)), P_v = Linear then BatchNorm1d in training mode (each view's own batch
   * statistics), on the normalised image features f, as in L_ce.
   */
  private project(features: Tensor): Tensor {
    const f = normalize(features);
    const h = linear(f, this.imageProjector.weight, this.imageProjector.bias);
    return normalize(this.bn.forward(h));
  }

  /**
   * NT-Xent over the 2B embeddings [z1; z2]: anchor i's positive is its other view, its
   * negatives the other 2B − 2 embeddings (itself excluded); averaged over all 2B anchors.
   */
  private ntXent(z1: Tensor, z2: Tensor): Tensor {
    const B = z1.shape[0];
    const z = concat([z1, z2], 0);
    const self = new Float32Array(4 * B * B);
    for (let i = 0; i < 2 * B; i++) self[i * 2 * B + i] = SELF_EXCLUDED;
    const sim = add(
      affine(matmul(z, z, { transB: true }), 1 / this.w.tau, 0),
      tensor(self, [2 * B, 2 * B]),
    );
    const positive = Int32Array.from({ length: 2 * B }, (_, i) => (i + B) % (2 * B));
    return crossEntropy(sim, positive);
  }

  private view(batch: Batch, name: ViewName): Tensor {
    const v = batch.views[name];
    if (!v) {
      throw new EngineError(
        "gopro",
        `the ${name} view is missing (enabled terms: ${
          Object.entries(this.w).filter(([k, x]) => k !== "tau" && x).map(([k]) => k).join(", ")
        })`,
      );
    }
    return v;
  }

  forward(batch: Batch): GoProOutput {
    const { ce, cons, vcl } = this.w;
    for (const v of neededViews(this.w)) this.view(batch, v);
    const orig = this.primitives(this.view(batch, "orig"), true);
    const B = orig.features.shape[0];
    if (batch.labels.rank !== 1 || batch.labels.shape[0] !== B) {
      throw new EngineError(
        "gopro",
        `labels ${fmtShape(batch.labels.shape)} do not fit ${B} images`,
      );
    }
    // the logits are always returned (training accuracy); without ce or cons nothing trains T_orig
    const shift = ce || cons ? this.shift(orig) : noGrad(() => this.shift(orig));
    const tOrig = ce || cons ? this.textFeatures(shift) : noGrad(() => this.textFeatures(shift));
    const logits = this.logits(orig.features, tOrig);
    const terms: Record<string, Tensor> = {};
    const parts: Tensor[] = [];
    const term = (name: string, weight: number, value: () => Tensor) => {
      if (!weight) return;
      const v = value();
      terms[name] = v;
      parts.push(weight === 1 ? v : mul(v, weight));
    };
    const moco = cons || vcl ? this.primitives(this.view(batch, "moco"), !!cons) : null;
    term("ce", ce, () => crossEntropy(logits, batch.labels));
    term("cons", cons, () => {
      const augmix = this.primitives(this.view(batch, "augmix"), true);
      const tMoco = this.textFeatures(this.shift(moco!));
      const tAugmix = this.textFeatures(this.shift(augmix));
      return add(mse(tOrig, tMoco), mse(tOrig, tAugmix));
    });
    term("vcl", vcl, () => {
      if (B < 2) {
        throw new EngineError("gopro", `L_vcl needs at least 2 images per batch, got ${B}`);
      }
      return this.ntXent(this.project(orig.features), this.project(moco!.features));
    });
    const loss = parts.reduce((a, b) => add(a, b));
    return { logits, loss, terms, shift };
  }

  predict(pixels: Tensor, _features?: Tensor): Tensor {
    if (!pixels) {
      throw new EngineError("gopro", "predict needs the pixels (its shift reads every block)");
    }
    return noGrad(() =>
      scope(() => {
        const p = this.primitives(pixels, true);
        return this.logits(p.features, this.textFeatures(this.shift(p)));
      })
    );
  }

  dispose() {
    this.prompts.dispose();
    for (const t of this.params.values()) t.dispose();
    this.params.clear();
    this.bn.dispose();
  }
}
