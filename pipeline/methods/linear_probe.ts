/**
 * Linear probe (Radford et al., ICML 2021, §3.2 and appendix A.3): a linear classifier
 * `head` (Linear(embed → classes), PyTorch layout) on the L2-normalised frozen image features,
 * trained with cross-entropy. Only the head trains; the features can be cached.
 *
 * CLIP's paper fits an L-BFGS logistic regression and picks the L2 strength by a sweep on
 * validation. Here the trainer runs the head with the defaults below (AdamW over cached
 * features: our choice, not the paper's), and with `sweep: true` `tune(val)` does CLIP's
 * selection instead: one full-batch L2-regularised logistic regression per strength λ of
 * `sweepGrid` (loss = mean CE + λ/2·‖W‖², bias unregularised; full-batch Nesterov gradient
 * descent with step sweepLr/(1 + λ), all strengths trained at once as a batch of heads on the
 * GPU, only the accuracy table read back), keeps the head with the best
 * validation accuracy (ties: the stronger λ), and writes it into `head`. Unlike the paper, the
 * chosen head is not refitted on train + validation.
 */
import { backward, noGrad, param } from "../../engine/autograd.ts";
import { E } from "../../engine/device.ts";
import { EngineError } from "../../engine/errors.ts";
import { own, scope, type Tensor, tensor } from "../../engine/tensor.ts";
import { add, exp, mul, square, zeros } from "../../engine/ops/elementwise.ts";
import { concat } from "../../engine/ops/indexing.ts";
import { linear, matmul } from "../../engine/ops/matmul.ts";
import { crossEntropy, normalize } from "../../engine/ops/nn.ts";
import { sum } from "../../engine/ops/reduce.ts";
import { contiguous, expand, reshape } from "../../engine/ops/views.ts";
import { SGD } from "../../engine/optim.ts";
import { resolveTemplates } from "../templates.ts";
import {
  type Batch,
  type FeatureSet,
  loadParams,
  type Method,
  type MethodContext,
  type MethodInstance,
  type TrainOutput,
} from "../method.ts";
import { classifierWeights, frozenFeatures, hitCounts } from "./zeroshot.ts";

/** λ = 10^-6 … 10^-1 in half-decades. */
const SWEEP_GRID = Array.from(
  { length: 11 },
  (_, k) => Number((10 ** (-6 + k / 2)).toPrecision(3)),
);
/** Elements of one batch of heads' training logits (bounds the sweep's memory). */
const SWEEP_BUDGET = 1 << 24;

export const linearProbe: Method = {
  name: "linear-probe",
  paper:
    "Radford et al., Learning Transferable Visual Models From Natural Language Supervision, ICML 2021 (linear-probe evaluation)",
  options: {
    init: {
      default: "zeros",
      help: "zeros (logistic regression) | text (zero-shot class weights × logit scale, bias 0)",
    },
    templates: {
      default: "single",
      help: "templates of the text init (see pipeline/templates.ts)",
    },
    sweep: {
      default: false,
      help:
        "tune(): refit the head for each L2 strength of sweepGrid on the training features and keep the best on validation (CLIP's protocol)",
    },
    sweepGrid: { default: SWEEP_GRID, help: "L2 strengths λ tried by the sweep (loss + λ/2·‖W‖²)" },
    sweepSteps: { default: 300, help: "full-batch Nesterov steps per sweep fit" },
    sweepLr: {
      default: 1,
      help:
        "step size of the sweep fits, divided by 1 + λ per head (unit features: CE curvature ≤ 1)",
    },
  },
  defaults: {
    optimizer: "adamw",
    lr: 1e-3,
    weightDecay: 1e-2,
    batch: 32,
    epochs: 100,
    warmupEpochs: 0,
    warmupLr: 0,
  },
  views: ["orig"],
  frozenImageFeatures: true,
  graph: (o) => [
    { stage: "load", what: "few-shot images, CLIP test transform" },
    { stage: "views", what: "original view", with: { views: ["orig"] } },
    { stage: "encode", what: "frozen image tower (features cached)", with: { cache: true } },
    {
      stage: "prompt",
      what: "none: head = Linear(embed → classes) on the normalised image feature",
      with: { init: o.init },
    },
    { stage: "loss", what: "cross-entropy on head(f/‖f‖)" },
    {
      stage: "step",
      what: o.sweep
        ? "AdamW on head; then tune(): L2 sweep on validation replaces it"
        : "AdamW on head (decoupled weight decay)",
      with: o.sweep ? { sweepGrid: o.sweepGrid, sweepSteps: o.sweepSteps } : undefined,
    },
  ],
  create: (c) => new LinearProbe(c),
};

export class LinearProbe implements MethodInstance {
  params = new Map<string, Tensor>();
  private weight: Tensor;
  private bias: Tensor;
  private classes: number;
  /** Normalised training features and labels, kept by fit() for the sweep. */
  private train: { x: Tensor; labels: Int32Array } | null = null;
  private chosen: number | null = null;
  /** The last sweep's strengths and correct validation counts (for logs and tests). */
  lastSweep: { grid: number[]; hits: Float32Array } | null = null;
  tune?: (val: FeatureSet) => Promise<Record<string, number>>;

  constructor(private c: MethodContext) {
    const o = c.options;
    const C = c.classnames.length, D = c.model.config.embedDim;
    if (!C) throw new EngineError("linear-probe", "no class names");
    this.classes = C;
    this.weight = own(param(this.initialWeight(C, D)));
    this.bias = own(param(zeros([C])));
    this.params.set("head.weight", this.weight);
    this.params.set("head.bias", this.bias);
    if (o.sweep) this.tune = (val) => this.sweepTune(val);
  }

  private initialWeight(C: number, D: number): Tensor {
    const init = String(this.c.options.init);
    if (init === "zeros") return zeros([C, D]);
    if (init !== "text") {
      throw new EngineError("linear-probe", `init must be "zeros" or "text", got "${init}"`);
    }
    const w = classifierWeights(
      this.c.model,
      this.c.tokenizer,
      this.c.classnames,
      resolveTemplates(this.c.options.templates, "linear-probe"),
    );
    // head(f̂) = exp(logit_scale)·f̂·Wᵀ: the probe starts as the zero-shot classifier
    const out = noGrad(() => scope(() => mul(w, exp(this.c.model.w("logit_scale")))));
    w.dispose();
    return out;
  }

  setClasses(classnames: string[]) {
    if (classnames.length !== this.classes) {
      throw new EngineError(
        "linear-probe",
        `the head is trained for ${this.classes} classes and has no text side: it cannot move to a list of ${classnames.length}`,
      );
    }
  }

  /** Logits [B, C] = head(f / ‖f‖). */
  logits(features: Tensor): Tensor {
    return linear(normalize(features), this.weight, this.bias);
  }

  forward(batch: Batch): TrainOutput {
    const logits = this.logits(
      frozenFeatures("linear-probe", this.c.model, batch.views.orig, batch.features),
    );
    const loss = crossEntropy(logits, batch.labels);
    return { logits, loss, terms: { ce: loss } };
  }

  predict(pixels: Tensor, features?: Tensor): Tensor {
    // only the logits outlive the call, even outside a caller's scope
    return noGrad(() =>
      scope(() => this.logits(frozenFeatures("linear-probe", this.c.model, pixels, features)))
    );
  }

  /** Keeps the normalised training features for the sweep (only with `sweep`). */
  fit(train: FeatureSet) {
    if (!this.c.options.sweep) return;
    checkSet("fit", train, this.classes);
    this.train?.x.dispose();
    this.train = {
      x: own(noGrad(() => scope(() => contiguous(normalize(train.features), true)))),
      labels: Int32Array.from(train.hostLabels),
    };
  }

  private async sweepTune(val: FeatureSet): Promise<Record<string, number>> {
    const op = "linear_probe.tune";
    if (!this.train) throw new EngineError(op, "the sweep needs fit(train) first");
    checkSet(op, val, this.classes);
    const o = this.c.options;
    const grid = (o.sweepGrid as number[]).map(Number);
    if (!grid.length || grid.some((l) => !(l >= 0))) {
      throw new EngineError(
        op,
        `sweepGrid must be strengths ≥ 0, got ${JSON.stringify(o.sweepGrid)}`,
      );
    }
    const steps = Number(o.sweepSteps), lr = Number(o.sweepLr);
    const { x, labels } = this.train;
    const [N, D] = x.shape, C = this.classes;
    const per = Math.max(1, Math.min(grid.length, Math.floor(SWEEP_BUDGET / Math.max(1, N * C))));
    const heads: { w: Tensor; b: Tensor }[] = [];
    const tables: Tensor[] = [];
    const init = this.initialWeight(C, D);
    const xv = noGrad(() => scope(() => normalize(val.features)));
    for (let g0 = 0; g0 < grid.length; g0 += per) {
      const lam = grid.slice(g0, g0 + per), G = lam.length;
      const w = own(
        param(
          noGrad(() => scope(() => contiguous(expand(reshape(init, [1, C, D]), [G, C, D]), true))),
        ),
      );
      const b = own(param(zeros([G, 1, C])));
      const lamT = tensor(lam, [G, 1, 1]);
      // per-head step lr/(1 + λ): the curvature of CE on unit features (with the bias) is ≤ 1,
      // the penalty's λ, so every head stays inside Nesterov's stable range
      const stepT = tensor(lam.map((l) => 1 / (1 + l)), [G]);
      const rep = new Int32Array(G * N);
      for (let g = 0; g < G; g++) rep.set(labels, g * N);
      const y = tensor(rep, [G * N], "i32");
      const opt = new SGD([w, b], { lr, momentum: 0.9, nesterov: true });
      for (let s = 0; s < steps; s++) {
        scope(() => {
          const logits = add(matmul(x, w, { transB: true }), b); // [G, N, C]
          const ce = crossEntropy(reshape(logits, [G * N, C]), y, { reduction: "none" });
          const perHead = add(
            mul(sum(reshape(ce, [G, N]), 1), 1 / N),
            mul(sum(mul(square(w), lamT), [1, 2]), 0.5),
          );
          backward(sum(mul(perHead, stepT)));
        });
        opt.step();
        opt.zeroGrad();
      }
      opt.dispose();
      lamT.dispose();
      stepT.dispose();
      y.dispose();
      heads.push({ w, b });
      tables.push(noGrad(() =>
        scope(() => {
          const vl = add(matmul(xv, w, { transB: true }), b); // [G, Nv, C]
          return reshape(hitCounts(null, vl, tensor([1]), val.labels), [G]);
        })
      ));
    }
    init.dispose();
    xv.dispose();
    const table = noGrad(() => (tables.length === 1 ? tables[0] : concat(tables, 0)));
    const hits = await table.data();
    table.dispose();
    if (tables.length > 1) tables.forEach((t) => t.dispose());
    let best = 0;
    for (let k = 1; k < grid.length; k++) {
      if (hits[k] > hits[best] || (hits[k] === hits[best] && grid[k] > grid[best])) best = k;
    }
    const hb = heads[Math.floor(best / per)], g = best % per;
    E().copy(
      hb.w.buf(op),
      (hb.w.offset + g * C * D) * 4,
      this.weight.buf(op),
      this.weight.offset * 4,
      C * D * 4,
    );
    E().copy(
      hb.b.buf(op),
      (hb.b.offset + g * C) * 4,
      this.bias.buf(op),
      this.bias.offset * 4,
      C * 4,
    );
    for (const h of heads) {
      h.w.dispose();
      h.b.dispose();
    }
    this.chosen = grid[best];
    this.lastSweep = { grid, hits: hits as Float32Array };
    return { weightDecay: grid[best], valAccuracy: hits[best] / val.labels.shape[0] };
  }

  /** The L2 strength the sweep chose (absent without a sweep; the head itself is a parameter). */
  state(): Record<string, number> {
    return this.chosen === null ? {} : { weightDecay: this.chosen };
  }

  restore(state: Record<string, number>) {
    if (state.weightDecay !== undefined) this.chosen = state.weightDecay;
  }

  load(values: Map<string, Float32Array>) {
    loadParams("linear-probe", this.params, values);
  }

  dispose() {
    this.weight.dispose();
    this.bias.dispose();
    this.train?.x.dispose();
    this.train = null;
  }
}

function checkSet(op: string, s: FeatureSet, classes: number) {
  if (s.classes !== classes) {
    throw new EngineError(op, `the feature set has ${s.classes} classes, the head ${classes}`);
  }
  for (let i = 0; i < s.hostLabels.length; i++) {
    const y = s.hostLabels[i];
    if (!(y >= 0 && y < classes)) {
      throw new EngineError(op, `label ${y} at ${i} is not in [0, ${classes})`);
    }
  }
}
