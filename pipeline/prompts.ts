/**
 * Class prompts in token-embedding space, shared by the prompt learners (CoOp, CoCoOp, GOPro,
 * MaPLe): placeholder prompts `X X … X {class}.` are tokenised and embedded once (frozen); learned
 * context vectors are spliced over the placeholders; the end-of-text positions come from the ids.
 * Everything is rebuilt from the current class list (so context transfers to new classes).
 */
import { EngineError, fmtShape } from "../engine/errors.ts";
import { bindingLimit } from "../engine/device.ts";
import { own, scope, type Tensor, tensor } from "../engine/tensor.ts";
import { noGrad } from "../engine/autograd.ts";
import { chunked } from "../engine/chunked.ts";
import { expand, narrow, reshape } from "../engine/ops/views.ts";
import { concat, sliceAssign } from "../engine/ops/indexing.ts";
import type { CLIP } from "../model/clip.ts";
import { eotPositions } from "../model/clip.ts";
import type { Tokenizer } from "../model/tokenizer.ts";

export type ClassTokenPosition = "end" | "middle" | "front";

/** "golden_retriever" → "golden retriever"; empty names are refused. */
export function cleanClassName(name: string): string {
  const s = name.replace(/_/g, " ").trim();
  if (!s) throw new EngineError("prompts", `empty class name ${JSON.stringify(name)}`);
  return s;
}

/** Token embeddings of an init phrase's words (e.g. "a photo of a" → [4, width]). */
export function phraseEmbedding(model: CLIP, tok: Tokenizer, phrase: string): Tensor {
  const ids = tok.encode(phrase);
  if (!ids.length) {
    throw new EngineError("prompts", `init phrase ${JSON.stringify(phrase)} has no tokens`);
  }
  return scope(() =>
    noGrad(() => model.embedTokens(tensor(Int32Array.from(ids), [ids.length], "i32")))
  );
}

export class ClassPrompts {
  readonly classnames: string[];
  readonly nCtx: number;
  readonly position: ClassTokenPosition;
  readonly phrase: string;
  /** i32 ids of the placeholder prompts, [C, ctx]. */
  readonly ids: Int32Array;
  /** Frozen token embeddings of the placeholder prompts, [C, ctx, width], in blocks of classes
   * that each fit one binding (one block unless C · ctx · width floats exceed it). */
  private blocks: Tensor[] = [];
  private blockRows: number;
  /** i32 [C] end-of-text positions. */
  readonly eot: Tensor;
  /** Token count of each class name (for the middle/front layouts). */
  private nameLengths: number[];
  private model: CLIP;

  /**
   * With `phrase`, its first nCtx tokens are the learned ones (MaPLe: "a photo of a", nCtx 2);
   * otherwise nCtx "X" placeholders.
   */
  constructor(
    model: CLIP,
    tok: Tokenizer,
    classnames: string[],
    nCtx: number,
    position: ClassTokenPosition = "end",
    phrase = "",
  ) {
    this.model = model;
    this.classnames = classnames.map(cleanClassName);
    this.nCtx = nCtx;
    this.position = position;
    const ctxLen = model.config.contextLength;
    if (phrase && position !== "end") {
      throw new EngineError("prompts", "a phrase prompt takes the class token at the end");
    }
    const placeholder = phrase || Array(nCtx).fill("X").join(" ");
    this.phrase = phrase;
    const words = phrase ? tok.encode(phrase).length : nCtx;
    if (words < nCtx) {
      throw new EngineError(
        "prompts",
        `init phrase "${phrase}" has ${words} tokens, fewer than nCtx ${nCtx}`,
      );
    }
    this.ids = tok.tokenize(
      this.classnames.map((c) => (nCtx ? `${placeholder} ${c}.` : `${c}.`)),
      ctxLen,
    );
    this.nameLengths = this.classnames.map((c) => tok.encode(c).length);
    const C = this.classnames.length;
    // owned: a method built inside a scope keeps its prompts until dispose()
    const W = model.config.transformerWidth;
    this.blockRows = Math.max(1, Math.floor(bindingLimit() / (4 * ctxLen * W)));
    for (let s = 0; s < C; s += this.blockRows) {
      const n = Math.min(this.blockRows, C - s);
      const ids = this.ids.subarray(s * ctxLen, (s + n) * ctxLen);
      this.blocks.push(
        own(scope(() => noGrad(() => model.embedTokens(tensor(ids, [n, ctxLen], "i32"))))),
      );
    }
    this.eot = own(tensor(eotPositions(this.ids, ctxLen), [C], "i32"));
  }

  get size() {
    return this.classnames.length;
  }

  /**
   * Prompt embeddings with the context spliced in. `ctx` is [M, W] (unified), [C, M, W]
   * (class-specific) or [B, M, W] / [B, C, M, W] with `perImage` (conditional context): the
   * result is [C, ctx, W], or [B·C, ctx, W] per image, row b·C + c. With `start`/`count`, only
   * classes start … start + count − 1 (a chunk of the text tower's pass; see `classesPerPass`).
   */
  compose(ctx: Tensor, perImage = false, start = 0, count = this.size): Tensor {
    const M = this.nCtx, C = count;
    const [L, W] = this.blocks[0].shape.slice(1);
    if (ctx.shape[ctx.rank - 2] !== M || ctx.shape[ctx.rank - 1] !== W) {
      throw new EngineError(
        "prompts",
        `context ${fmtShape(ctx.shape)} does not match [${M}, ${W}]`,
      );
    }
    const whole = start === 0 && count === this.size;
    const emb = this.embeddingsOf(start, count);
    // class-specific context: the chunk's classes only
    const classAxis = perImage ? 1 : 0;
    if (!whole && ctx.rank === (perImage ? 4 : 3) && ctx.shape[classAxis] === this.size) {
      ctx = narrow(ctx, classAxis, start, count);
    }
    if (!perImage) return this.splice(emb, ctx, C, start);
    const B = ctx.shape[0];
    const base = expand(reshape(emb, [1, C, L, W]), [B, C, L, W]);
    const per = ctx.rank === 3 ? reshape(ctx, [B, 1, M, W]) : ctx;
    return reshape(this.splice(base, per, C, start), [B * C, L, W]);
  }

  /** The frozen prompt embeddings of classes start … start + count − 1, [count, ctx, width]. */
  embeddingsOf(start: number, count: number): Tensor {
    const R = this.blockRows,
      first = Math.floor(start / R),
      last = Math.floor((start + count - 1) / R);
    const pieces: Tensor[] = [];
    for (let b = first; b <= last; b++) {
      const lo = Math.max(start, b * R), hi = Math.min(start + count, (b + 1) * R);
      const block = this.blocks[b];
      pieces.push(
        lo === b * R && hi - lo === block.shape[0] ? block : narrow(block, 0, lo - b * R, hi - lo),
      );
    }
    return pieces.length === 1 ? pieces[0] : concat(pieces, 0);
  }

  /** eot positions of classes start … start + count − 1 ([count]), or of their [B·count]
   * rows per image with `B`. */
  eotOf(start: number, count: number, B?: number): Tensor {
    const e = start === 0 && count === this.size ? this.eot : narrow(this.eot, 0, start, count);
    return B === undefined ? e : reshape(expand(reshape(e, [1, count]), [B, count]), [B * count]);
  }

  /** Text features [C, embed] with context `ctx` ([M, W] or [C, M, W]) spliced in, in chunks of
   * classes that fit the text tape's budget (each chunk's tape rebuilt in backward). */
  textFeatures(ctx: Tensor): Tensor {
    const model = this.model;
    return chunked(
      [ctx],
      this.size,
      classesPerPass(model),
      ([cx], s, n) => model.encodeEmbeddings(this.compose(cx, false, s, n), this.eotOf(s, n)),
    );
  }

  /** Text features [B, C, embed] of each image's own prompts, context `ctx` [B, M, W] (row b:
   * image b's), in chunks of classes as textFeatures. */
  perImageTextFeatures(ctx: Tensor): Tensor {
    const model = this.model, B = ctx.shape[0];
    return chunked(
      [ctx],
      this.size,
      classesPerPass(model, B),
      ([cx], s, n) =>
        reshape(model.encodeEmbeddings(this.compose(cx, true, s, n), this.eotOf(s, n, B)), [
          B,
          n,
          -1,
        ]),
      1,
    );
  }

  private splice(base: Tensor, ctx: Tensor, C: number, first = 0): Tensor {
    const M = this.nCtx, r = base.rank;
    if (this.position === "end") {
      const begin = new Array(r).fill(0);
      begin[r - 2] = 1;
      const size = [...base.shape];
      size[r - 2] = M;
      return sliceAssign(base, ctx, begin, size);
    }
    // front / middle: rebuild each class row around its name's tokens
    const rows: Tensor[] = [];
    const half = this.position === "middle" ? Math.floor(M / 2) : 0;
    for (let c = 0; c < C; c++) {
      const row = narrow(base, r - 3, c, 1);
      const cctx = ctx.shape[r - 3] === C ? narrow(ctx, r - 3, c, 1) : ctx;
      const n = this.nameLengths[first + c];
      const [L] = base.shape.slice(r - 2);
      const name = narrow(row, r - 2, 1 + M, n);
      const parts = [narrow(row, r - 2, 0, 1)];
      const ctxB = (
        t: Tensor,
      ) => (t.rank === r
        ? t
        : expand(t, [...row.shape.slice(0, r - 2), t.shape[t.rank - 2], t.shape[t.rank - 1]]));
      if (half > 0) parts.push(ctxB(narrow(cctx, cctx.rank - 2, 0, half)));
      parts.push(name);
      parts.push(ctxB(narrow(cctx, cctx.rank - 2, half, M - half)));
      parts.push(narrow(row, r - 2, 1 + M + n, L - 1 - M - n));
      rows.push(concat(parts, r - 2));
    }
    return concat(rows, r - 3);
  }

  dispose() {
    this.blocks.forEach((b) => b.dispose());
    this.eot.dispose();
  }
}

/**
 * How much the text tower's tape may hold in one pass of a training step (bytes). The prompt
 * learners push their class prompts through it in chunks of `classesPerPass` classes (see
 * engine/chunked.ts: each chunk's tape is rebuilt in backward), so that 1,000 classes train
 * within a fixed memory. `train --text-budget GIB` sets it; tests lower it to force chunks.
 */
export const DEFAULT_TEXT_BUDGET_GIB = 4;
export const textTape = { budgetBytes: DEFAULT_TEXT_BUDGET_GIB * 2 ** 30 };

/** Floats a taped text-tower block keeps per token and unit of width (the saved activations:
 * layer norms' inputs, q/k/v, attention output, the 4×-wide MLP input and activation, ...),
 * rounded up from what the engine's backward rules save. */
const TAPE_FLOATS_PER_TOKEN = 24;

/** Classes per text-tower pass with the tape, each class `rowsPerClass` sequences (the batch's
 * images for per-image prompts): within the tape's budget, and with the pass's prompt
 * embeddings within one binding. */
export function classesPerPass(model: CLIP, rowsPerClass = 1): number {
  const c = model.config;
  const sequence = 4 * c.contextLength * c.transformerWidth; // bytes of one prompt's embeddings
  const tape = TAPE_FLOATS_PER_TOKEN * sequence * c.transformerLayers;
  const byBudget = Math.floor(textTape.budgetBytes / (tape * rowsPerClass));
  const byBinding = Math.floor(bindingLimit() / (sequence * rowsPerClass));
  return Math.max(1, Math.min(byBudget, byBinding));
}

/** Hand-written prompt text features for each class (zero-shot CLIP), averaged over templates. */
export function templateIds(
  tok: Tokenizer,
  classnames: string[],
  template: string,
  ctx = 77,
): Int32Array {
  return tok.tokenize(classnames.map((c) => template.replaceAll("{}", cleanClassName(c))), ctx);
}
