/**
 * BatchNorm1d (Ioffe & Szegedy, 2015) as PyTorch defines it, composed from elementwise and
 * reduction ops (autograd derives the gradient; the batch is small wherever it is used, e.g.
 * GOPro's image projector, so a fused kernel would buy nothing).
 *
 *   training: statistics of the batch, per channel over N (and L for [N, C, L] input), biased
 *             variance in the normalisation; running statistics, when given, move by
 *             r ← (1 − momentum)·r + momentum·batch statistic, the variance taken unbiased.
 *   eval:     the running statistics normalise; nothing is updated.
 * y = (x − mean) / sqrt(var + eps) · weight + bias, eps 1e-5 and momentum 0.1 by default.
 *
 * `cpuBatchNorm` is the float64 reference, running-statistic updates included.
 */
import { EngineError, fmtShape } from "../errors.ts";
import { noGrad, param } from "../autograd.ts";
import { own, type Tensor } from "../tensor.ts";
import { add, affine, full, mul, rsqrt, square, sub } from "./elementwise.ts";
import { mean } from "./reduce.ts";
import { reshape } from "./views.ts";
import { assignInto } from "./assign.ts";
import type { HostTensor } from "../../kernels/elementwise.ts";

export interface BatchNormOptions {
  /** Batch statistics (default) or the running ones. */
  training?: boolean;
  /** f32 [C] buffers: updated in training, read in eval. */
  runningMean?: Tensor | null;
  runningVar?: Tensor | null;
  momentum?: number;
  eps?: number;
}

const OP = "batchNorm";

function checkChannelVector(name: string, t: Tensor | null | undefined, C: number, x: Tensor) {
  if (!t) return;
  t.buf(OP);
  if (t.dtype === "i32" || t.rank !== 1 || t.shape[0] !== C) {
    throw new EngineError(
      OP,
      `${name} ${t.dtype} ${fmtShape(t.shape)} does not match the ${C} channels of input ${
        fmtShape(x.shape)
      } (expected f32 [${C}])`,
    );
  }
}

/**
 * Batch normalisation of x [N, C] or [N, C, L] over every axis but the channel axis 1, with
 * optional affine weight and bias [C].
 */
export function batchNorm(
  x: Tensor,
  weight?: Tensor | null,
  bias?: Tensor | null,
  opts: BatchNormOptions = {},
): Tensor {
  const { training = true, runningMean = null, runningVar = null, momentum = 0.1, eps = 1e-5 } =
    opts;
  x.buf(OP);
  if (x.dtype === "i32") {
    throw new EngineError(OP, `input must be float, got i32 ${fmtShape(x.shape)}`);
  }
  if (x.rank !== 2 && x.rank !== 3) {
    throw new EngineError(OP, `input must be [N, C] or [N, C, L], got ${fmtShape(x.shape)}`);
  }
  const C = x.shape[1];
  checkChannelVector("weight", weight, C, x);
  checkChannelVector("bias", bias, C, x);
  checkChannelVector("runningMean", runningMean, C, x);
  checkChannelVector("runningVar", runningVar, C, x);
  if (!(eps > 0)) throw new EngineError(OP, `eps must be positive, got ${eps}`);
  if (!(momentum >= 0 && momentum <= 1)) {
    throw new EngineError(OP, `momentum must be in [0, 1], got ${momentum}`);
  }
  if (!runningMean !== !runningVar) {
    throw new EngineError(OP, "runningMean and runningVar go together");
  }
  const axes = x.rank === 2 ? [0] : [0, 2];
  const n = x.rank === 2 ? x.shape[0] : x.shape[0] * x.shape[2];
  // per-channel vectors [C] broadcast over [N, C] directly, over [N, C, L] as [C, 1]
  const chan = (t: Tensor) => (x.rank === 2 ? t : reshape(t, [C, 1]));
  let centred: Tensor, rstd: Tensor;
  if (training) {
    if (n < 2) {
      throw new EngineError(
        OP,
        `training needs more than one value per channel, got input ${fmtShape(x.shape)}`,
      );
    }
    const mu = mean(x, axes, true);
    centred = sub(x, mu);
    const v = mean(square(centred), axes, true);
    rstd = rsqrt(add(v, eps));
    if (runningMean && runningVar) {
      noGrad(() => {
        const upd = (r: Tensor, batch: Tensor, scale: number) => {
          const next = add(affine(r, 1 - momentum, 0), mul(reshape(batch, [C]), momentum * scale));
          assignInto(r, next);
          next.dispose();
        };
        upd(runningMean, mu, 1);
        upd(runningVar, v, n / (n - 1));
      });
    }
  } else {
    if (!runningMean || !runningVar) {
      throw new EngineError(
        OP,
        `eval mode needs runningMean and runningVar (input ${fmtShape(x.shape)})`,
      );
    }
    centred = sub(x, chan(runningMean));
    rstd = chan(rsqrt(add(runningVar, eps)));
  }
  let y = mul(centred, rstd);
  if (weight) y = mul(y, chan(weight));
  return bias ? add(y, chan(bias)) : y;
}

/**
 * torch.nn.BatchNorm1d: trainable weight (ones) and bias (zeros), running mean (zeros) and
 * variance (ones) as untrained buffers; `training` picks the mode.
 */
export class BatchNorm1d {
  readonly weight: Tensor;
  readonly bias: Tensor;
  readonly runningMean: Tensor;
  readonly runningVar: Tensor;
  training = true;

  constructor(readonly channels: number, readonly eps = 1e-5, readonly momentum = 0.1) {
    if (!Number.isInteger(channels) || channels < 1) {
      throw new EngineError("BatchNorm1d", `channels must be a positive integer, got ${channels}`);
    }
    this.weight = own(param(full([channels], 1)));
    this.bias = own(param(full([channels], 0)));
    this.runningMean = own(full([channels], 0));
    this.runningVar = own(full([channels], 1));
  }

  forward(x: Tensor): Tensor {
    return batchNorm(x, this.weight, this.bias, {
      training: this.training,
      runningMean: this.runningMean,
      runningVar: this.runningVar,
      momentum: this.momentum,
      eps: this.eps,
    });
  }

  dispose() {
    for (const t of [this.weight, this.bias, this.runningMean, this.runningVar]) t.dispose();
  }
}

/** Float64 reference: y, and the running statistics after the update (training) or as given. */
export function cpuBatchNorm(
  x: HostTensor,
  weight?: HostTensor | null,
  bias?: HostTensor | null,
  opts: {
    training?: boolean;
    runningMean?: HostTensor | null;
    runningVar?: HostTensor | null;
    momentum?: number;
    eps?: number;
  } = {},
): { y: HostTensor; runningMean?: HostTensor; runningVar?: HostTensor } {
  const { training = true, runningMean, runningVar, momentum = 0.1, eps = 1e-5 } = opts;
  const [N, C] = x.shape;
  const L = x.shape.length === 3 ? x.shape[2] : 1;
  const n = N * L;
  const at = (i: number, c: number, l: number) => (i * C + c) * L + l;
  const y = new Float64Array(x.data.length);
  const rm = runningMean ? Float64Array.from(runningMean.data) : undefined;
  const rv = runningVar ? Float64Array.from(runningVar.data) : undefined;
  for (let c = 0; c < C; c++) {
    let mu: number, v: number;
    if (training) {
      mu = 0;
      for (let i = 0; i < N; i++) for (let l = 0; l < L; l++) mu += x.data[at(i, c, l)];
      mu /= n;
      v = 0;
      for (let i = 0; i < N; i++) for (let l = 0; l < L; l++) v += (x.data[at(i, c, l)] - mu) ** 2;
      v /= n;
      if (rm && rv) {
        rm[c] = (1 - momentum) * rm[c] + momentum * mu;
        rv[c] = (1 - momentum) * rv[c] + momentum * v * n / (n - 1);
      }
    } else {
      mu = runningMean!.data[c];
      v = runningVar!.data[c];
    }
    const r = 1 / Math.sqrt(v + eps);
    const w = weight ? weight.data[c] : 1, b = bias ? bias.data[c] : 0;
    for (let i = 0; i < N; i++) {
      for (let l = 0; l < L; l++) y[at(i, c, l)] = (x.data[at(i, c, l)] - mu) * r * w + b;
    }
  }
  return {
    y: { shape: [...x.shape], data: y },
    runningMean: rm && { shape: [C], data: rm },
    runningVar: rv && { shape: [C], data: rv },
  };
}
