/**
 * What a method is, as data the trainer runs: its stages (load → views → encode → prompt → loss →
 * step), its paper defaults, and the functions that build its trained parts and compute its
 * logits and losses. One method per file in pipeline/methods/, named as its paper names it.
 */
import { type Tensor, writeTensor } from "../engine/tensor.ts";
import { EngineError, fmtShape } from "../engine/errors.ts";
import type { CLIP } from "../model/clip.ts";
import type { Tokenizer } from "../model/tokenizer.ts";

/** The three views GOPro uses; the others use "orig" only. */
export type ViewName = "orig" | "moco" | "augmix";

/** One stage of the declarative training graph (printed by `train --dry-run`). */
export interface Stage {
  stage: "load" | "views" | "encode" | "prompt" | "loss" | "step";
  /** What this stage does, in the paper's words. */
  what: string;
  /** Stage parameters (plain data). */
  with?: Record<string, unknown>;
}

export interface OptimDefaults {
  optimizer: "sgd" | "adamw" | "none";
  lr: number;
  momentum?: number;
  weightDecay?: number;
  eps?: number;
  batch: number;
  epochs: number;
  warmupEpochs: number;
  warmupLr: number;
}

/** Everything a method needs to build itself. */
export interface MethodContext {
  model: CLIP;
  tokenizer: Tokenizer;
  classnames: string[];
  /** Method options (each method documents its own; unknown keys are refused). */
  options: Record<string, unknown>;
  seed: number;
}

export interface Batch {
  /** Pixel tensors per view, [B, 3, R, R]. */
  views: Partial<Record<ViewName, Tensor>>;
  /** i32 [B] */
  labels: Tensor;
  /** Frozen image features of the original view, when the trainer caches them. */
  features?: Tensor;
}

export interface TrainOutput {
  logits: Tensor;
  loss: Tensor;
  /** Each loss term on its own (for logging and ablations). */
  terms: Record<string, Tensor>;
}

/** Frozen image features of a labelled set, as the trainer caches them. */
export interface FeatureSet {
  /** Image features of the CLIP test transform, [N, embed] (not normalised). */
  features: Tensor;
  /** Features of `passes` augmented views (Tip-Adapter's cache), [passes, N, embed], when built. */
  augmented?: Tensor;
  /** i32 [N] */
  labels: Tensor;
  /** Host copy of the labels. */
  hostLabels: Int32Array;
  classes: number;
}

/** A built method: its trained parameters and the functions over them. */
export interface MethodInstance {
  /** Trained parameters by their paper names (e.g. "ctx", "meta_net.linear1.weight"). */
  params: Map<string, Tensor>;
  /** Class names the prompts are built for; rebuilt whenever they change. */
  setClasses(classnames: string[]): void;
  /** Training forward pass with autograd (call inside a scope). */
  forward(batch: Batch): TrainOutput;
  /** Inference logits [B, classes] for the original view (no autograd needed). */
  predict(pixels: Tensor, features?: Tensor): Tensor;
  /** Training-free parts built from the training set before any step (Tip-Adapter's cache). */
  fit?(train: FeatureSet): void;
  /** Hyperparameters searched on validation features after training (Tip-Adapter's α, β). */
  tune?(val: FeatureSet): Promise<Record<string, number>>;
  /** Uploads parameter values by name (checkpoints, golden tests); refuses unknown names or shapes. */
  load(values: Map<string, Float32Array>): void;
  /** Hyperparameters found by tune() or fit() that a checkpoint must keep (e.g. α, β). */
  state?(): Record<string, number>;
  /** Puts back what state() returned (when a checkpoint is loaded). */
  restore?(state: Record<string, number>): void;
  /** Frees the parameters and any frozen buffers the method holds. */
  dispose(): void;
}

export interface Method {
  name: string;
  paper: string;
  /** Option names with defaults (the paper's settings) and one-line help. */
  options: Record<string, { default: unknown; help: string }>;
  defaults: OptimDefaults;
  /** Views of each training image the method needs. */
  views: ViewName[];
  /** True when the image tower's output of the original view never changes (features can be cached). */
  frozenImageFeatures: boolean;
  graph(options: Record<string, unknown>): Stage[];
  create(ctx: MethodContext): MethodInstance;
}

/** Options merged over the method's defaults; unknown names are refused, naming the method. */
export function resolveOptions(m: Method, given: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(m.options)) out[k] = v.default;
  for (const [k, v] of Object.entries(given)) {
    if (!(k in m.options)) {
      throw new Error(
        `${m.name}: unknown option "${k}" (known: ${Object.keys(m.options).join(", ")})`,
      );
    }
    if (v !== undefined) out[k] = v;
  }
  return out;
}

/**
 * Writes stored values into trained parameters by name (a checkpoint, a golden case). Every
 * parameter must be given, with its element count; unknown names are refused; nothing is
 * written unless everything fits.
 */
export function loadParams(
  method: string,
  params: Map<string, Tensor>,
  values: Map<string, Float32Array>,
) {
  const unknown = [...values.keys()].filter((k) => !params.has(k));
  const missing = [...params.keys()].filter((k) => !values.has(k));
  if (unknown.length || missing.length) {
    const parts = [
      unknown.length ? `unknown ${unknown.join(", ")}` : "",
      missing.length ? `missing ${missing.join(", ")}` : "",
    ];
    throw new EngineError(method, `load: ${parts.filter(Boolean).join("; ")}`);
  }
  for (const [k, p] of params) {
    const v = values.get(k)!;
    if (v.length !== p.size) {
      throw new EngineError(
        method,
        `load: ${k} has ${v.length} values, expected ${fmtShape(p.shape)}`,
      );
    }
  }
  for (const [k, p] of params) writeTensor(p, values.get(k)!);
}

/** Parameter count per part (the prefix before the first dot). */
export function countParams(params: Map<string, Tensor>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [name, t] of params) {
    const part = name.split(".")[0];
    out[part] = (out[part] ?? 0) + t.size;
  }
  return out;
}
