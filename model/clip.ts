/**
 * OpenAI CLIP on the engine: the ViT image tower and the causal text transformer, with OpenAI's
 * parameter names, loaded from a state dict (see model/weights.ts for the file formats).
 *
 * Hooks the prompt learners need:
 *   - encodeImage(..., { hidden: true }) returns every block's output (GOPro's style/content
 *     statistics);
 *   - `extraTokens` appends tokens after the image tokens before ln_pre, and `beforeBlock` may
 *     replace tokens at the input of any block (MaPLe's deep prompts), in either tower;
 *   - encodeEmbeddings() takes token embeddings instead of ids (CoOp and its descendants).
 * Loaded weights are frozen (no requiresGrad), so backward dispatches no weight-gradient work.
 * Pretraining builds a trainable model instead: `CLIP.random(config, seed)` (OpenAI's
 * initialisation) or `fromStateDict(sd, { trainable: true })`, both f32 `param()` leaves listed
 * by `trainable`; `stateDict()` reads the weights back under OpenAI's names.
 */
import { bindingLimit, E } from "../engine/device.ts";
import { EngineError, fmtShape } from "../engine/errors.ts";
import { scope, Tensor, tensor } from "../engine/tensor.ts";
import { param } from "../engine/autograd.ts";
import { add, exp, full, mul, quickGelu } from "../engine/ops/elementwise.ts";
import { randomNormal, randomUniform } from "../engine/ops/random.ts";
import { expand, narrow, permute, reshape, squeeze } from "../engine/ops/views.ts";
import { linear, matmul } from "../engine/ops/matmul.ts";
import { attention, layerNorm, normalize } from "../engine/ops/nn.ts";
import { concat, embedding, takeRows } from "../engine/ops/indexing.ts";
import { conv2dPatch } from "../engine/ops/conv.ts";
import { type HostWeight, type StateDict, toFloat32 } from "./weights.ts";

export interface ClipConfig {
  embedDim: number;
  imageResolution: number;
  visionLayers: number;
  visionWidth: number;
  visionPatchSize: number;
  visionHeads: number;
  contextLength: number;
  vocabSize: number;
  transformerWidth: number;
  transformerHeads: number;
  transformerLayers: number;
}

const get = (sd: StateDict, name: string, file: string): HostWeight => {
  const w = sd.get(name);
  if (!w) throw new EngineError("clip", `${file}: missing tensor ${name}`);
  return w;
};

function countBlocks(sd: StateDict, prefix: string): number {
  let n = 0;
  for (const k of sd.keys()) {
    const m = k.startsWith(prefix) ? /^(\d+)\./.exec(k.slice(prefix.length)) : null;
    if (m) n = Math.max(n, +m[1] + 1);
  }
  return n;
}

/** Reads the configuration off an OpenAI state dict (as OpenAI's build_model does). */
export function inferConfig(sd: StateDict, file = "checkpoint"): ClipConfig {
  const conv = get(sd, "visual.conv1.weight", file);
  const vpos = get(sd, "visual.positional_embedding", file);
  const tproj = get(sd, "text_projection", file);
  const tpos = get(sd, "positional_embedding", file);
  const tok = get(sd, "token_embedding.weight", file);
  const visionWidth = conv.shape[0];
  const visionPatchSize = conv.shape[3];
  const grid = Math.round(Math.sqrt(vpos.shape[0] - 1));
  if (grid * grid + 1 !== vpos.shape[0]) {
    throw new EngineError(
      "clip",
      `${file}: visual.positional_embedding ${fmtShape(vpos.shape)} is not 1 + grid² rows`,
    );
  }
  const transformerWidth = get(sd, "ln_final.weight", file).shape[0];
  return {
    embedDim: tproj.shape[1],
    imageResolution: visionPatchSize * grid,
    visionLayers: countBlocks(sd, "visual.transformer.resblocks."),
    visionWidth,
    visionPatchSize,
    visionHeads: visionWidth / 64,
    contextLength: tpos.shape[0],
    vocabSize: tok.shape[0],
    transformerWidth,
    transformerHeads: transformerWidth / 64,
    transformerLayers: countBlocks(sd, "transformer.resblocks."),
  };
}

/** Every tensor the model needs, with its expected shape. */
export function expectedShapes(c: ClipConfig): Map<string, number[]> {
  const m = new Map<string, number[]>();
  const V = c.visionWidth, W = c.transformerWidth, g = c.imageResolution / c.visionPatchSize;
  const block = (p: string, w: number) => {
    m.set(`${p}.attn.in_proj_weight`, [3 * w, w]);
    m.set(`${p}.attn.in_proj_bias`, [3 * w]);
    m.set(`${p}.attn.out_proj.weight`, [w, w]);
    m.set(`${p}.attn.out_proj.bias`, [w]);
    for (const ln of ["ln_1", "ln_2"]) {
      m.set(`${p}.${ln}.weight`, [w]);
      m.set(`${p}.${ln}.bias`, [w]);
    }
    m.set(`${p}.mlp.c_fc.weight`, [4 * w, w]);
    m.set(`${p}.mlp.c_fc.bias`, [4 * w]);
    m.set(`${p}.mlp.c_proj.weight`, [w, 4 * w]);
    m.set(`${p}.mlp.c_proj.bias`, [w]);
  };
  m.set("visual.conv1.weight", [V, 3, c.visionPatchSize, c.visionPatchSize]);
  m.set("visual.class_embedding", [V]);
  m.set("visual.positional_embedding", [g * g + 1, V]);
  for (const n of ["ln_pre", "ln_post"]) {
    m.set(`visual.${n}.weight`, [V]);
    m.set(`visual.${n}.bias`, [V]);
  }
  m.set("visual.proj", [V, c.embedDim]);
  for (let i = 0; i < c.visionLayers; i++) block(`visual.transformer.resblocks.${i}`, V);
  m.set("token_embedding.weight", [c.vocabSize, W]);
  m.set("positional_embedding", [c.contextLength, W]);
  for (let i = 0; i < c.transformerLayers; i++) block(`transformer.resblocks.${i}`, W);
  m.set("ln_final.weight", [W]);
  m.set("ln_final.bias", [W]);
  m.set("text_projection", [W, c.embedDim]);
  m.set("logit_scale", []);
  return m;
}

interface Block {
  ln1w: Tensor;
  ln1b: Tensor;
  inW: Tensor;
  inB: Tensor;
  outW: Tensor;
  outB: Tensor;
  ln2w: Tensor;
  ln2b: Tensor;
  fcW: Tensor;
  fcB: Tensor;
  projW: Tensor;
  projB: Tensor;
}

export interface ImageOptions {
  /** Return every block's output ([B, T, width] each). */
  hidden?: boolean;
  /** [B or 1, n, width] tokens appended after the image tokens, before ln_pre (MaPLe). */
  extraTokens?: Tensor;
  /** Called with each block's input; may return a replacement (MaPLe's deep prompts). */
  beforeBlock?: (layer: number, x: Tensor) => Tensor;
}

export interface TextOptions {
  beforeBlock?: (layer: number, x: Tensor) => Tensor;
  hidden?: boolean;
}

export interface LoadOptions {
  /** Keep f16 checkpoint tensors as f16 on the device (default: when the adapter has shader-f16). */
  f16?: boolean;
  file?: string;
  /** Upload every weight as an f32 trainable leaf (`param()`), e.g. to resume pretraining. */
  trainable?: boolean;
}

/**
 * OpenAI's initialisation (clip/model.py): `initialize_parameters` for the token and positional
 * embeddings, the text blocks and text_projection; `scale · randn` (scale = width^-0.5) for the
 * class embedding, visual positional embedding and visual.proj; PyTorch's module defaults for
 * everything CLIP leaves alone (the conv and the vision blocks: Linear/Conv2d U(±1/√fan_in),
 * MultiheadAttention's xavier-uniform in_proj and zero in/out biases; LayerNorm 1 and 0).
 * Returns [kind, a, b]: normal(mean a, std b), uniform(a, b) or constant a.
 */
export function initOf(
  name: string,
  shape: number[],
  c: ClipConfig,
): ["normal" | "uniform" | "const", number, number] {
  const U = (
    fanIn: number,
  ): ["uniform", number, number] => ["uniform", -(fanIn ** -0.5), fanIn ** -0.5];
  if (/(^|\.)ln_\w+\.weight$/.test(name)) return ["const", 1, 0];
  if (/(^|\.)ln_\w+\.bias$/.test(name) || /attn\.(in_proj_bias|out_proj\.bias)$/.test(name)) {
    return ["const", 0, 0];
  }
  const W = c.transformerWidth, V = c.visionWidth;
  switch (name) {
    case "logit_scale":
      return ["const", Math.log(1 / 0.07), 0];
    case "token_embedding.weight":
      return ["normal", 0, 0.02];
    case "positional_embedding":
      return ["normal", 0, 0.01];
    case "text_projection":
      return ["normal", 0, W ** -0.5];
    case "visual.conv1.weight":
      return U(3 * c.visionPatchSize * c.visionPatchSize);
    case "visual.class_embedding":
    case "visual.positional_embedding":
    case "visual.proj":
      return ["normal", 0, V ** -0.5];
  }
  const m = /^(visual\.)?transformer\.resblocks\.\d+\.(.+)$/.exec(name);
  if (!m) throw new EngineError("CLIP.random", `no initialisation for ${name} ${fmtShape(shape)}`);
  const part = m[2];
  if (m[1]) {
    // vision blocks: PyTorch defaults (fan_in = shape[1] for Linear weights, biases alike)
    if (part === "attn.in_proj_weight") {
      const b = Math.sqrt(6 / (shape[0] + shape[1]));
      return ["uniform", -b, b];
    }
    return U(part.endsWith("c_proj.weight") || part.endsWith("c_proj.bias") ? 4 * V : V);
  }
  const projStd = W ** -0.5 * (2 * c.transformerLayers) ** -0.5;
  switch (part) {
    case "attn.in_proj_weight":
      return ["normal", 0, W ** -0.5];
    case "attn.out_proj.weight":
    case "mlp.c_proj.weight":
      return ["normal", 0, projStd];
    case "mlp.c_fc.weight":
      return ["normal", 0, (2 * W) ** -0.5];
    case "mlp.c_fc.bias":
      return U(W);
    case "mlp.c_proj.bias":
      return U(4 * W);
  }
  throw new EngineError("CLIP.random", `no initialisation for ${name} ${fmtShape(shape)}`);
}

/** Refuses configurations an OpenAI checkpoint cannot describe (heads are read as width / 64). */
function checkConfig(c: ClipConfig) {
  const bad: string[] = [];
  for (const [k, v] of Object.entries(c)) {
    if (!Number.isInteger(v) || v < 1) bad.push(`${k} must be a positive integer, got ${v}`);
  }
  for (
    const [w, h, tower] of [
      [c.visionWidth, c.visionHeads, "vision"],
      [c.transformerWidth, c.transformerHeads, "text"],
    ] as const
  ) {
    if (w % 64 || h !== w / 64) {
      bad.push(
        `${tower} width ${w} with ${h} heads: checkpoints imply heads = width / 64, ` +
          `so the width must be a multiple of 64 (and heads = width / 64)`,
      );
    }
  }
  if (c.imageResolution % c.visionPatchSize) {
    bad.push(
      `imageResolution ${c.imageResolution} is not a multiple of the patch ${c.visionPatchSize}`,
    );
  }
  if (c.contextLength < 2) {
    bad.push(`contextLength ${c.contextLength} leaves no room for start and end tokens`);
  }
  if (bad.length) throw new EngineError("CLIP.random", bad.join("; "));
}

export class CLIP {
  readonly config: ClipConfig;
  readonly weights = new Map<string, Tensor>();
  /** The token table as row blocks, when it is larger than one binding (frozen models only). */
  private tokenBlocks: { first: number; rows: Tensor }[] = [];
  private vBlocks: Block[] = [];
  private tBlocks: Block[] = [];

  private constructor(config: ClipConfig) {
    this.config = config;
  }

  /**
   * Builds the model from a state dict. Every expected tensor is checked (present, right shape)
   * before any GPU memory is used; the errors name the tensor.
   */
  static fromStateDict(sd: StateDict, opts: LoadOptions = {}): CLIP {
    const file = opts.file ?? "checkpoint";
    const config = inferConfig(sd, file);
    const expected = expectedShapes(config);
    const problems: string[] = [];
    for (const [name, shape] of expected) {
      const w = sd.get(name);
      if (!w) problems.push(`missing ${name} ${fmtShape(shape)}`);
      else if (w.shape.length !== shape.length || w.shape.some((s, i) => s !== shape[i])) {
        problems.push(`${name} is ${fmtShape(w.shape)}, expected ${fmtShape(shape)}`);
      }
    }
    if (problems.length) {
      throw new EngineError(
        "clip",
        `${file} does not fit CLIP ${JSON.stringify(config)}:\n  ${problems.join("\n  ")}`,
      );
    }
    const useF16 = !opts.trainable && (opts.f16 ?? true) && E().f16;
    const limit = bindingLimit();
    const m = new CLIP(config);
    for (const name of expected.keys()) {
      const w = sd.get(name)!;
      const keepF16 = useF16 && w.dtype === "F16" && name !== "logit_scale";
      const host = keepF16
        ? new Uint16Array(w.data.buffer, w.data.byteOffset, w.data.byteLength / 2)
        : toFloat32(w);
      const dtype = keepF16 ? "f16" : "f32";
      if (host.byteLength > limit) {
        if (name !== "token_embedding.weight" || opts.trainable) {
          throw new EngineError(
            "alloc",
            `${file}: ${name} ${fmtShape(w.shape)} (${host.byteLength} bytes as ${dtype}) is ` +
              `larger than this adapter binds at once (${limit} bytes)${
                opts.trainable ? "; a model this size can only be loaded frozen" : ""
              }`,
          );
        }
        m.tokenBlocks = splitRows(host, w.shape, dtype, limit, name);
        continue;
      }
      const t = keepF16 ? tensor(host as Uint16Array, w.shape, "f16") : tensor(host, w.shape);
      t.name = name;
      m.weights.set(name, opts.trainable ? param(t) : t);
    }
    m.wire();
    return m;
  }

  /**
   * A freshly initialised model (OpenAI's initialisation, see `initOf`) with every weight an f32
   * trainable leaf. Tensor k of `expectedShapes` order draws from Philox stream seed·4096 + k, so
   * a seed gives the same model on every adapter.
   */
  static random(config: ClipConfig, seed = 0): CLIP {
    checkConfig(config);
    if (!Number.isSafeInteger(seed) || seed < 0 || seed >= 2 ** 40) {
      throw new EngineError("CLIP.random", `seed must be an integer in [0, 2^40), got ${seed}`);
    }
    const m = new CLIP({ ...config });
    let k = 0;
    for (const [name, shape] of expectedShapes(config)) {
      const [kind, a, b] = initOf(name, shape, config);
      const s = seed * 4096 + k++;
      const t = kind === "normal"
        ? randomNormal(shape, s, a, b)
        : kind === "uniform"
        ? randomUniform(shape, s, a, b)
        : full(shape, a);
      t.name = name;
      m.weights.set(name, param(t));
    }
    m.wire();
    return m;
  }

  /** The trainable weights (requiresGrad leaves) by OpenAI name; empty for a loaded, frozen model. */
  get trainable(): Map<string, Tensor> {
    const out = new Map<string, Tensor>();
    for (const [k, t] of this.weights) if (t.requiresGrad && !t.node) out.set(k, t);
    return out;
  }

  /** Reads every weight back as F32 host tensors under OpenAI's names (expectedShapes order). */
  async stateDict(): Promise<StateDict> {
    const names = [...expectedShapes(this.config).keys()];
    const data = await Promise.all(names.map((n) => this.w(n).data() as Promise<Float32Array>));
    const sd: StateDict = new Map();
    names.forEach((n, i) => {
      const f = data[i];
      sd.set(n, {
        dtype: "F32",
        shape: [...this.w(n).shape],
        data: new Uint8Array(f.buffer, f.byteOffset, f.byteLength),
      });
    });
    return sd;
  }

  /** Points the blocks at their weights (after `weights` is filled). */
  private wire() {
    const config = this.config;
    const block = (p: string): Block => {
      const w = (n: string) => this.weights.get(`${p}.${n}`)!;
      return {
        ln1w: w("ln_1.weight"),
        ln1b: w("ln_1.bias"),
        inW: w("attn.in_proj_weight"),
        inB: w("attn.in_proj_bias"),
        outW: w("attn.out_proj.weight"),
        outB: w("attn.out_proj.bias"),
        ln2w: w("ln_2.weight"),
        ln2b: w("ln_2.bias"),
        fcW: w("mlp.c_fc.weight"),
        fcB: w("mlp.c_fc.bias"),
        projW: w("mlp.c_proj.weight"),
        projB: w("mlp.c_proj.bias"),
      };
    };
    for (let i = 0; i < config.visionLayers; i++) {
      this.vBlocks.push(block(`visual.transformer.resblocks.${i}`));
    }
    for (let i = 0; i < config.transformerLayers; i++) {
      this.tBlocks.push(block(`transformer.resblocks.${i}`));
    }
  }

  w(name: string): Tensor {
    const t = this.weights.get(name);
    if (!t) throw new EngineError("clip", `no weight ${name}`);
    return t;
  }

  /**
   * One pre-norm residual block: x + attn(ln_1(x)), then + mlp(ln_2(x)). Each half runs in its
   * own scope, so its intermediates are freed when it ends (those a backward rule saved stay
   * with the tape): a forward holds about one half-block of activations beyond its input.
   */
  private block(x: Tensor, b: Block, heads: number, causal: boolean): Tensor {
    const [B, T, W] = x.shape;
    const D = W / heads;
    const y = scope(() => {
      const h = layerNorm(x, b.ln1w, b.ln1b, 1e-5);
      const qkv = permute(reshape(linear(h, b.inW, b.inB), [B, T, 3, heads, D]), [2, 0, 3, 1, 4]);
      const pick = (i: number) => squeeze(narrow(qkv, 0, i, 1), 0); // [B, heads, T, D] views
      const o = attention(pick(0), pick(1), pick(2), { causal });
      const merged = reshape(permute(o, [0, 2, 1, 3]), [B, T, W]);
      return add(x, linear(merged, b.outW, b.outB));
    });
    const out = scope(() => {
      // the 4×-wide hidden layer is the block's largest tensor: free each as soon as it is read
      const h = layerNorm(y, b.ln2w, b.ln2b, 1e-5);
      const fc = linear(h, b.fcW, b.fcB);
      h.dispose();
      const act = quickGelu(fc);
      fc.dispose();
      const m = linear(act, b.projW, b.projB);
      act.dispose();
      return add(y, m);
    });
    y.dispose();
    return out;
  }

  /**
   * The blocks in turn; `x` (made by the caller's stem for this call) and each block's output
   * are freed once the next block has read them (unless `hidden` returns the outputs), so the
   * residual stream is held once, not once per layer.
   */
  private runBlocks(
    x: Tensor,
    blocks: Block[],
    heads: number,
    causal: boolean,
    beforeBlock?: (layer: number, x: Tensor) => Tensor,
    hidden?: Tensor[],
  ): Tensor {
    let prev = x; // the last block's output (first: the stem's), made here
    blocks.forEach((b, i) => {
      if (beforeBlock) x = beforeBlock(i, x);
      const out = this.block(x, b, heads, causal);
      if (hidden) hidden.push(out);
      if (i === 0 || !hidden) prev.dispose();
      x = prev = out;
    });
    return x;
  }

  /** Image tower: pixels [B, 3, R, R] → image features [B, embed] (before normalisation). */
  encodeImage(pixels: Tensor, opts: ImageOptions = {}): { features: Tensor; hidden: Tensor[] } {
    const c = this.config;
    const R = c.imageResolution;
    if (
      pixels.rank !== 4 || pixels.shape[1] !== 3 || pixels.shape[2] !== R || pixels.shape[3] !== R
    ) {
      throw new EngineError(
        "encodeImage",
        `pixels must be [B, 3, ${R}, ${R}], got ${fmtShape(pixels.shape)}`,
      );
    }
    const B = pixels.shape[0], V = c.visionWidth;
    const T = (R / c.visionPatchSize) ** 2 + 1 + (opts.extraTokens?.shape[1] ?? 0);
    const cap = rowsPerPass(Math.max(T * 4 * V, c.visionHeads * T * T, 3 * R * R));
    if (B > cap) return this.encodeImageChunks(pixels, opts, cap);
    // the stem in its own scope: only ln_pre's output outlives it
    let x = scope(() => {
      const patches = conv2dPatch(pixels, this.w("visual.conv1.weight")); // [B, V, g, g]
      const tokens = permute(reshape(patches, [B, V, -1]), [0, 2, 1]); // [B, g², V]
      const cls = expand(reshape(this.w("visual.class_embedding"), [1, 1, V]), [B, 1, V]);
      let t = add(concat([cls, tokens], 1), this.w("visual.positional_embedding"));
      if (opts.extraTokens) {
        const e = opts.extraTokens;
        t = concat([t, e.shape[0] === B ? e : expand(e, [B, e.shape[1], V])], 1);
      }
      return layerNorm(t, this.w("visual.ln_pre.weight"), this.w("visual.ln_pre.bias"), 1e-5);
    });
    const hidden: Tensor[] = [];
    x = this.runBlocks(
      x,
      this.vBlocks,
      c.visionHeads,
      false,
      opts.beforeBlock,
      opts.hidden ? hidden : undefined,
    );
    const cls0 = squeeze(narrow(x, 1, 0, 1), 1);
    const pooled = layerNorm(
      cls0,
      this.w("visual.ln_post.weight"),
      this.w("visual.ln_post.bias"),
      1e-5,
    );
    return { features: matmul(pooled, this.w("visual.proj")), hidden };
  }

  /** encodeImage over batch chunks of `cap` images (each pass's tensors fit one binding). */
  private encodeImageChunks(
    pixels: Tensor,
    opts: ImageOptions,
    cap: number,
  ): { features: Tensor; hidden: Tensor[] } {
    return scope(() => {
      const B = pixels.shape[0], e = opts.extraTokens;
      const parts: { features: Tensor; hidden: Tensor[] }[] = [];
      for (let s = 0; s < B; s += cap) {
        const n = Math.min(cap, B - s);
        const extraTokens = e && e.shape[0] === B ? narrow(e, 0, s, n) : e;
        parts.push(this.encodeImage(narrow(pixels, 0, s, n), { ...opts, extraTokens }));
      }
      const hidden = parts[0].hidden.map((_, l) => concat(parts.map((p) => p.hidden[l]), 0));
      return { features: concat(parts.map((p) => p.features), 0), hidden };
    });
  }

  /** Token embeddings of ids [N, ctx] (i32) → [N, ctx, width]. */
  embedTokens(ids: Tensor): Tensor {
    if (!this.tokenBlocks.length) return embedding(this.w("token_embedding.weight"), ids);
    // Σ over blocks of each block's lookup: an id outside a block reads 0 there
    return scope(() =>
      this.tokenBlocks.map((b) => embedding(b.rows, ids, b.first)).reduce((a, b) => add(a, b))
    );
  }

  /**
   * Text tower from token embeddings x [N, ctx, width] (prompt learners splice learned vectors into
   * them); `eot` holds each row's end-of-text position (i32 [N]).
   */
  encodeEmbeddings(x: Tensor, eot: Tensor, opts: TextOptions = {}): Tensor {
    const c = this.config;
    const [N, L, W] = x.shape;
    const cap = rowsPerPass(Math.max(L * 4 * W, c.transformerHeads * L * L));
    if (N > cap) {
      return scope(() => {
        const parts: Tensor[] = [];
        for (let s = 0; s < N; s += cap) {
          const n = Math.min(cap, N - s);
          parts.push(this.encodeEmbeddings(narrow(x, 0, s, n), narrow(eot, 0, s, n), opts));
        }
        return concat(parts, 0);
      });
    }
    x = add(x, this.w("positional_embedding"));
    x = this.runBlocks(x, this.tBlocks, c.transformerHeads, true, opts.beforeBlock);
    x = layerNorm(x, this.w("ln_final.weight"), this.w("ln_final.bias"), 1e-5);
    return matmul(takeRows(x, eot), this.w("text_projection"));
  }

  /** Text tower from token ids [N, ctx] (Int32Array or i32 tensor). */
  encodeText(tokens: Int32Array | Tensor, opts: TextOptions = {}): Tensor {
    const ctx = this.config.contextLength;
    const host = tokens instanceof Tensor ? null : tokens;
    if (host && host.length % ctx) {
      throw new EngineError("encodeText", `token ids (${host.length}) are not rows of ${ctx}`);
    }
    const ids = host ? tensor(host, [host.length / ctx, ctx], "i32") : (tokens as Tensor);
    const eot = host ? tensor(eotPositions(host, ctx), [host.length / ctx], "i32") : null;
    if (!eot) {
      throw new EngineError(
        "encodeText",
        "pass host token ids (Int32Array) so end-of-text positions are known",
      );
    }
    return this.encodeEmbeddings(this.embedTokens(ids), eot, opts);
  }

  /** exp(logit_scale) · normalise(image) · normalise(text)ᵀ */
  logits(imageFeatures: Tensor, textFeatures: Tensor): Tensor {
    const scale = exp(this.w("logit_scale"));
    return mul(matmul(normalize(imageFeatures), normalize(textFeatures), { transB: true }), scale);
  }

  dispose() {
    for (const t of this.weights.values()) t.dispose();
    for (const b of this.tokenBlocks) b.rows.dispose();
    this.weights.clear();
    this.tokenBlocks = [];
  }
}

/**
 * How many rows (images, sequences) one pass may hold so that its largest tensor, `perRow` f32
 * values a row (the MLP's 4×-wide layer, or the attention backward's scores), fits one binding.
 */
function rowsPerPass(perRow: number): number {
  return Math.max(1, Math.floor(bindingLimit() / (4 * perRow)));
}

/** A [V, D] host table uploaded as row blocks of at most `limit` bytes each. */
function splitRows(
  host: Float32Array | Uint16Array,
  shape: number[],
  dtype: "f16" | "f32",
  limit: number,
  name: string,
): { first: number; rows: Tensor }[] {
  const [V, D] = shape;
  const per = Math.max(1, Math.floor(limit / (D * host.BYTES_PER_ELEMENT)));
  const blocks: { first: number; rows: Tensor }[] = [];
  for (let first = 0; first < V; first += per) {
    const n = Math.min(per, V - first);
    const part = host.slice(first * D, (first + n) * D);
    const rows = dtype === "f16"
      ? tensor(part as Uint16Array, [n, D], "f16")
      : tensor(part, [n, D]);
    rows.name = `${name}[${first}:${first + n}]`;
    blocks.push({ first, rows });
  }
  return blocks;
}

/** The end-of-text position of each row: the largest id (49407) in CLIP's vocabulary. */
export function eotPositions(ids: Int32Array, ctx: number): Int32Array {
  const n = ids.length / ctx;
  const out = new Int32Array(n);
  for (let r = 0; r < n; r++) {
    let best = 0;
    for (let i = 1; i < ctx; i++) if (ids[r * ctx + i] > ids[r * ctx + best]) best = i;
    out[r] = best;
  }
  return out;
}
