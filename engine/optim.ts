/**
 * Optimisers (SGD with momentum, AdamW) with fused in-place update kernels, learning-rate
 * schedules and global gradient-norm clipping.
 *
 * An optimiser updates its parameters' storage in place, one dispatch per parameter per step;
 * hyperparameters travel in uniforms, so changing the learning rate every step compiles nothing.
 * Its state (momentum buffers, Adam moments) is created lazily at a parameter's first step, like
 * PyTorch's, and is owned: scopes never free it, `dispose()` does. Nothing here reads back except
 * `stateDict()`.
 */
import { E, f32Bits, grid1d } from "./device.ts";
import { EngineError, fmtShape } from "./errors.ts";
import { empty, own, Tensor, tensor } from "./tensor.ts";
import { full, zeros } from "./ops/elementwise.ts";
import {
  adamwScalars,
  adamwWgsl,
  clipFinishWgsl,
  gradScaleWgsl,
  type SgdVariant,
  sgdWgsl,
  sumsqGroups,
  sumsqWgsl,
} from "../kernels/optim.ts";

/** One parameter's saved state: its shape, its own step count and host copies of its tensors. */
export interface ParamState {
  shape: number[];
  step: number;
  tensors: Record<string, Float32Array>;
}

/** A plain snapshot of an optimiser (what `stateDict()` returns and `loadStateDict()` takes). */
export interface OptimizerStateDict {
  kind: string;
  /** Number of `step()` calls. */
  steps: number;
  hyper: Record<string, number | boolean>;
  /** One entry per parameter, in order; null where the parameter has not stepped yet. */
  state: (ParamState | null)[];
}

interface LiveState {
  step: number;
  tensors: Record<string, Tensor>;
}

const nonNegative = (op: string, name: string, x: unknown) => {
  if (typeof x !== "number" || !(x >= 0) || !Number.isFinite(x)) {
    throw new EngineError(op, `${name} must be a finite number ≥ 0, got ${x}`);
  }
};

function checkGradLayout(op: string, what: string, g: Tensor) {
  if (g.dtype !== "f32" || !g.isContiguous) {
    throw new EngineError(
      op,
      `${what}: gradient must be contiguous f32, got ${g.dtype} view ${fmtShape(g.shape)}`,
    );
  }
}

export abstract class Optimizer {
  readonly params: Tensor[];
  /** Number of `step()` calls. */
  steps = 0;
  protected state: (LiveState | null)[];
  private disposed = false;
  abstract readonly kind: string;

  constructor(params: Tensor[], op: string) {
    if (!Array.isArray(params) || params.length === 0) {
      throw new EngineError(op, "got an empty parameter list");
    }
    const seen = new Set<Tensor>();
    params.forEach((p, i) => {
      if (!(p instanceof Tensor)) throw new EngineError(op, `param ${i} is not a Tensor`);
      p.buf(op);
      const what = describe(p, i);
      if (!p.requiresGrad || p.node) {
        throw new EngineError(
          op,
          `${what} is not a trainable leaf (use param(); results of ops cannot be optimised)`,
        );
      }
      if (p.dtype !== "f32" || !p.isContiguous) {
        throw new EngineError(op, `${what} must be a contiguous f32 tensor`);
      }
      if (seen.has(p)) throw new EngineError(op, `${what} appears twice in the parameter list`);
      seen.add(p);
    });
    this.params = [...params];
    this.state = params.map(() => null);
  }

  abstract get lr(): number;
  /** Sets the learning rate used by the next `step()` (no compilation: it is a uniform). */
  abstract setLr(lr: number): void;
  /** The names of the per-parameter state tensors under hyperparameters `h`. */
  protected abstract stateNames(h: Record<string, number | boolean>): string[];
  protected abstract hyper(): Record<string, number | boolean>;
  /** Validates `h` (throwing) and returns a function that installs it. */
  protected abstract checkHyper(h: Record<string, number | boolean>): () => void;
  protected abstract update(p: Tensor, g: Tensor, st: LiveState): void;

  protected alive(op: string) {
    if (this.disposed) throw new EngineError(op, `the ${this.kind} optimiser was disposed`);
  }

  /** Updates every parameter that has a gradient; parameters without one are skipped. */
  step(): void {
    const op = `${this.kind}.step`;
    this.alive(op);
    const work: [Tensor, Tensor, number][] = [];
    // validate everything before the first launch, so a bad gradient leaves no half-done step
    this.params.forEach((p, i) => {
      p.buf(op);
      const g = p.grad;
      if (!g) return;
      const what = describe(p, i);
      g.buf(`${op} (gradient of ${what})`);
      if (g.shape.length !== p.shape.length || g.shape.some((s, d) => s !== p.shape[d])) {
        throw new EngineError(
          op,
          `${what}: gradient ${fmtShape(g.shape)} does not match the parameter`,
        );
      }
      checkGradLayout(op, what, g);
      if (g.storage === p.storage) {
        throw new EngineError(op, `${what}: gradient shares the parameter's storage`);
      }
      work.push([p, g, i]);
    });
    this.steps++;
    for (const [p, g, i] of work) {
      const st = this.state[i] ??= {
        step: 0,
        tensors: Object.fromEntries(
          this.stateNames(this.hyper()).map((k) => [k, own(zeros(p.shape))]),
        ),
      };
      st.step++;
      if (p.size) this.update(p, g, st);
    }
  }

  /** Disposes every parameter's gradient. */
  zeroGrad(): void {
    for (const p of this.params) {
      p.grad?.dispose();
      p.grad = null;
    }
  }

  /** Frees the optimiser's state; the optimiser cannot be used afterwards. */
  dispose(): void {
    this.clearState();
    this.disposed = true;
  }

  private clearState() {
    for (const s of this.state) if (s) { for (const t of Object.values(s.tensors)) t.dispose(); }
    this.state = this.params.map(() => null);
  }

  /** A snapshot: step counts, hyperparameters and Float32Array copies of every state tensor.
   * The copies are recorded before this returns, so later steps do not leak into it. */
  async stateDict(): Promise<OptimizerStateDict> {
    this.alive(`${this.kind}.stateDict`);
    const hyper = this.hyper(), steps = this.steps;
    const pending = this.state.map((s, i) => {
      if (!s) return null;
      const names = Object.keys(s.tensors);
      // E().read records its copy synchronously; only the mapping is awaited
      const reads = names.map((k) =>
        E().read(s.tensors[k].buf("stateDict"), 0, s.tensors[k].size * 4)
      );
      return { shape: [...this.params[i].shape], step: s.step, names, reads };
    });
    const state = await Promise.all(pending.map(async (e) => {
      if (!e) return null;
      const bufs = await Promise.all(e.reads);
      const tensors: Record<string, Float32Array> = {};
      e.names.forEach((k, j) => (tensors[k] = new Float32Array(bufs[j])));
      return { shape: e.shape, step: e.step, tensors };
    }));
    return { kind: this.kind, steps, hyper, state };
  }

  /** Restores a `stateDict()` snapshot (hyperparameters included). Everything is validated first:
   * on a mismatch it throws, naming the parameter, and changes nothing. */
  loadStateDict(sd: OptimizerStateDict): void {
    const op = `${this.kind}.loadStateDict`;
    this.alive(op);
    if (!sd || sd.kind !== this.kind) {
      throw new EngineError(op, `the state dict is for ${sd?.kind ?? "nothing"}, not ${this.kind}`);
    }
    if (!Array.isArray(sd.state) || sd.state.length !== this.params.length) {
      throw new EngineError(
        op,
        `the state dict holds ${sd.state?.length} parameter states; this optimiser has ${this.params.length} parameters`,
      );
    }
    if (!Number.isInteger(sd.steps) || sd.steps < 0) {
      throw new EngineError(op, `invalid step count ${sd.steps}`);
    }
    const install = this.checkHyper(sd.hyper ?? {});
    const names = this.stateNames(sd.hyper);
    sd.state.forEach((s, i) => {
      if (!s) return;
      const p = this.params[i], what = describe(p, i);
      if (
        !Array.isArray(s.shape) || s.shape.length !== p.rank ||
        s.shape.some((d, k) => d !== p.shape[k])
      ) {
        throw new EngineError(op, `${what}: saved state has shape ${fmtShape(s.shape ?? [])}`);
      }
      if (!Number.isInteger(s.step) || s.step < 1) {
        throw new EngineError(op, `${what}: invalid step ${s.step}`);
      }
      const got = Object.keys(s.tensors ?? {}).sort().join(", "),
        want = [...names].sort().join(", ");
      if (got !== want) {
        throw new EngineError(op, `${what}: saved state tensors {${got}}, expected {${want}}`);
      }
      for (const k of names) {
        const a = s.tensors[k];
        if (!(a instanceof Float32Array) || a.length !== p.size) {
          throw new EngineError(
            op,
            `${what}: saved ${k} has ${
              (a as { length?: number })?.length
            } values, expected ${p.size}`,
          );
        }
      }
    });
    // fresh buffers, so the upload cannot overtake recorded work still using the old state
    const fresh = sd.state.map((s, i) =>
      s
        ? {
          step: s.step,
          tensors: Object.fromEntries(
            names.map((k) => [k, own(tensor(s.tensors[k], [...this.params[i].shape]))]),
          ),
        }
        : null
    );
    this.clearState();
    this.state = fresh;
    this.steps = sd.steps;
    install();
  }
}

function describe(p: Tensor, i: number): string {
  return `param ${i}${p.name ? ` (${p.name})` : ""} ${fmtShape(p.shape)}`;
}

// ---------------------------------------------------------------------------------------------

export interface SGDOptions {
  lr?: number;
  momentum?: number;
  weightDecay?: number;
  nesterov?: boolean;
}

/** SGD with PyTorch's semantics (dampening 0): b = μ·b + (g + wd·p); p -= lr·b, or with
 * nesterov p -= lr·((g + wd·p) + μ·b). */
export class SGD extends Optimizer {
  readonly kind = "SGD";
  private h: Required<SGDOptions>;

  constructor(params: Tensor[], opts: SGDOptions = {}) {
    super(params, "SGD");
    const h = { lr: 1e-3, momentum: 0, weightDecay: 0, nesterov: false, ...opts };
    this.h = h;
    this.checkHyper(h)();
  }

  get lr() {
    return this.h.lr;
  }
  get options(): Readonly<Required<SGDOptions>> {
    return { ...this.h };
  }
  setLr(lr: number) {
    nonNegative("SGD.setLr", "lr", lr);
    this.h.lr = lr;
  }

  protected stateNames(h: Record<string, number | boolean>) {
    return h.momentum !== 0 ? ["momentum_buffer"] : [];
  }
  protected hyper() {
    return { ...this.h };
  }
  protected checkHyper(h: Record<string, number | boolean>) {
    const op = "SGD";
    for (const k of ["lr", "momentum", "weightDecay"]) nonNegative(op, k, h[k]);
    if (typeof h.nesterov !== "boolean") {
      throw new EngineError(op, `nesterov must be a boolean, got ${h.nesterov}`);
    }
    if (h.nesterov && h.momentum === 0) throw new EngineError(op, "nesterov needs a momentum > 0");
    const v = h as Required<SGDOptions>;
    return () => {
      this.h = { lr: v.lr, momentum: v.momentum, weightDecay: v.weightDecay, nesterov: v.nesterov };
    };
  }

  protected update(p: Tensor, g: Tensor, st: LiveState) {
    const { lr, momentum, weightDecay, nesterov } = this.h;
    const variant: SgdVariant = momentum === 0 ? "sgd" : nesterov ? "sgd_nesterov" : "sgd_momentum";
    const b = st.tensors.momentum_buffer;
    E().launch({
      kernel: `optim_${variant}`,
      wgsl: () => sgdWgsl(variant),
      inputs: [g.buf()],
      outputs: variant === "sgd" ? [p.buf()] : [p.buf(), b.buf("SGD.step")],
      uniforms: [
        p.size,
        p.offset,
        g.offset,
        0,
        f32Bits(lr),
        f32Bits(momentum),
        f32Bits(weightDecay),
      ],
      workgroups: grid1d(p.size),
    });
  }
}

export interface AdamWOptions {
  lr?: number;
  betas?: [number, number];
  eps?: number;
  weightDecay?: number;
}

/** AdamW with PyTorch's semantics (decoupled weight decay p ·= 1 − lr·wd before the Adam step;
 * per-parameter step counts for the bias corrections). */
export class AdamW extends Optimizer {
  readonly kind = "AdamW";
  private h: { lr: number; beta1: number; beta2: number; eps: number; weightDecay: number };

  constructor(params: Tensor[], opts: AdamWOptions = {}) {
    super(params, "AdamW");
    const [beta1, beta2] = opts.betas ?? [0.9, 0.999];
    const h = {
      lr: opts.lr ?? 1e-3,
      beta1,
      beta2,
      eps: opts.eps ?? 1e-8,
      weightDecay: opts.weightDecay ?? 1e-2,
    };
    this.h = h;
    this.checkHyper(h)();
  }

  get lr() {
    return this.h.lr;
  }
  get options(): Readonly<Required<AdamWOptions>> {
    const h = this.h;
    return { lr: h.lr, betas: [h.beta1, h.beta2], eps: h.eps, weightDecay: h.weightDecay };
  }
  setLr(lr: number) {
    nonNegative("AdamW.setLr", "lr", lr);
    this.h.lr = lr;
  }

  protected stateNames() {
    return ["exp_avg", "exp_avg_sq"];
  }
  protected hyper() {
    return { ...this.h };
  }
  protected checkHyper(h: Record<string, number | boolean>) {
    const op = "AdamW";
    for (const k of ["lr", "beta1", "beta2", "eps", "weightDecay"]) nonNegative(op, k, h[k]);
    for (const k of ["beta1", "beta2"]) {
      if (!((h[k] as number) < 1)) throw new EngineError(op, `${k} must be in [0, 1), got ${h[k]}`);
    }
    const v = h as Record<string, number>;
    return () => {
      this.h = { lr: v.lr, beta1: v.beta1, beta2: v.beta2, eps: v.eps, weightDecay: v.weightDecay };
    };
  }

  protected update(p: Tensor, g: Tensor, st: LiveState) {
    const s = adamwScalars(this.h, st.step);
    E().launch({
      kernel: "optim_adamw",
      wgsl: adamwWgsl,
      inputs: [g.buf()],
      outputs: [
        p.buf(),
        st.tensors.exp_avg.buf("AdamW.step"),
        st.tensors.exp_avg_sq.buf("AdamW.step"),
      ],
      uniforms: [p.size, p.offset, g.offset, 0, ...s.map(f32Bits)],
      workgroups: grid1d(p.size),
    });
  }
}

// ---------------------------------------------------------------------------------------------

/**
 * Scales the parameters' gradients in place so that their global L2 norm is at most `maxNorm`
 * (scale min(1, maxNorm / (norm + 1e-6)), as PyTorch's clip_grad_norm_). Everything happens on
 * the GPU: per-gradient sums of squares, one fold into the norm and the scale, one scaling
 * dispatch per gradient. Returns the norm before clipping as a scalar tensor (no readback).
 */
export function clipGradNorm(params: Tensor[], maxNorm: number): Tensor {
  const op = "clipGradNorm";
  if (typeof maxNorm !== "number" || !(maxNorm >= 0)) {
    throw new EngineError(op, `maxNorm must be a number ≥ 0, got ${maxNorm}`);
  }
  const grads: Tensor[] = [];
  const seen = new Set<Tensor>();
  params.forEach((p, i) => {
    const g = p.grad;
    if (!g || seen.has(g)) return;
    seen.add(g);
    const what = describe(p, i);
    g.buf(`${op} (gradient of ${what})`);
    checkGradLayout(op, what, g);
  });
  for (const g of seen) grads.push(g);
  if (!grads.length) return full([], 0);
  const groups = grads.map((g) => sumsqGroups(g.size));
  const slots = groups.reduce((a, b) => a + b, 0);
  const partial = empty([slots]);
  let base = 0;
  grads.forEach((g, k) => {
    E().launch({
      kernel: "optim_sumsq",
      wgsl: sumsqWgsl,
      inputs: [g.buf()],
      outputs: [partial.buf()],
      uniforms: [g.size, g.offset, base],
      workgroups: [groups[k]],
    });
    base += groups[k];
  });
  const norm = empty([]), scale = empty([]);
  E().launch({
    kernel: "optim_clip_finish",
    wgsl: clipFinishWgsl,
    inputs: [partial.buf()],
    outputs: [norm.buf(), scale.buf()],
    uniforms: [slots, 0, 0, 0, f32Bits(maxNorm)],
    workgroups: [1],
  });
  for (const g of grads) {
    if (!g.size) continue;
    E().launch({
      kernel: "optim_grad_scale",
      wgsl: gradScaleWgsl,
      inputs: [scale.buf()],
      outputs: [g.buf()],
      uniforms: [g.size, g.offset],
      workgroups: grid1d(g.size),
    });
  }
  partial.dispose();
  scale.dispose();
  return norm;
}

// ---------------------------------------------------------------------------------------------
// Learning-rate schedules: pure functions of the 0-based index of the step (or epoch) about to
// be taken. Call `opt.setLr(schedule(i))` before step i.

export type Schedule = (step: number) => number;

function checkSteps(op: string, o: Record<string, number | undefined>) {
  for (const [k, v] of Object.entries(o)) {
    if (v !== undefined && (!Number.isInteger(v) || v < 0)) {
      throw new EngineError(op, `${k} must be an integer ≥ 0, got ${v}`);
    }
  }
}

export interface CosineScheduleOptions {
  baseLr: number;
  /** Steps in the whole run, warm-up included. */
  totalSteps: number;
  warmupSteps?: number;
  /** Constant warm-up lr; without it the warm-up is linear from 0 (step 0 has lr 0). */
  warmupLr?: number;
  /** The floor the cosine decays to (default 0). */
  minLr?: number;
  /** The cosine's period after the warm-up (default totalSteps − warmupSteps, ending at minLr).
   * Dassl/CoOp run theirs over all epochs (CosineAnnealingLR(T_max = max_epoch) started after
   * the warm-up), which is `cosineSteps: totalSteps`; see coopSchedule. */
  cosineSteps?: number;
}

/**
 * Warm-up, then cosine decay from baseLr to minLr:
 *   step < warmupSteps: warmupLr (constant warm-up), or baseLr·step/warmupSteps (linear);
 *   otherwise minLr + (baseLr − minLr)·(1 + cos(π·min(1, (step − warmupSteps)/cosineSteps)))/2.
 */
export function cosineSchedule(o: CosineScheduleOptions): Schedule {
  const op = "cosineSchedule";
  const { baseLr, totalSteps, warmupSteps = 0, warmupLr, minLr = 0 } = o;
  checkSteps(op, { totalSteps, warmupSteps, cosineSteps: o.cosineSteps });
  nonNegative(op, "baseLr", baseLr);
  nonNegative(op, "minLr", minLr);
  if (warmupLr !== undefined) nonNegative(op, "warmupLr", warmupLr);
  if (totalSteps <= warmupSteps) {
    throw new EngineError(op, `totalSteps ${totalSteps} must exceed warmupSteps ${warmupSteps}`);
  }
  const period = o.cosineSteps ?? totalSteps - warmupSteps;
  if (period < 1) throw new EngineError(op, `cosineSteps must be ≥ 1, got ${period}`);
  return (step: number) => {
    if (step < warmupSteps) return warmupLr ?? (baseLr * step) / warmupSteps;
    const t = Math.min(1, (step - warmupSteps) / period);
    return minLr + ((baseLr - minLr) * (1 + Math.cos(Math.PI * t))) / 2;
  };
}

/** Linear warm-up from warmupLr (default 0) at step 0 to baseLr at warmupSteps, then constant. */
export function linearWarmup(
  o: { baseLr: number; warmupSteps: number; warmupLr?: number },
): Schedule {
  const op = "linearWarmup";
  const { baseLr, warmupSteps, warmupLr = 0 } = o;
  checkSteps(op, { warmupSteps });
  nonNegative(op, "baseLr", baseLr);
  nonNegative(op, "warmupLr", warmupLr);
  return (step: number) =>
    step >= warmupSteps
      ? baseLr
      : warmupLr + ((baseLr - warmupLr) * Math.max(0, step)) / warmupSteps;
}

/**
 * CoOp's schedule, per epoch (Dassl's ConstantWarmupScheduler around CosineAnnealingLR with
 * T_max = epochs): epochs < warmupEpochs at warmupLr, then epoch e at
 * baseLr·(1 + cos(π·(e − warmupEpochs)/epochs))/2, so epoch warmupEpochs runs at baseLr.
 */
export function coopSchedule(
  o: { baseLr: number; epochs: number; warmupEpochs?: number; warmupLr?: number },
): Schedule {
  const { baseLr, epochs, warmupEpochs = 1, warmupLr = 1e-5 } = o;
  return cosineSchedule({
    baseLr,
    totalSteps: epochs,
    warmupSteps: warmupEpochs,
    warmupLr,
    cosineSteps: epochs,
  });
}
