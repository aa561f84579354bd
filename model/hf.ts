/**
 * Hugging Face `CLIPModel` checkpoints (transformers' names) → OpenAI's names and layouts, on the
 * host, so the rest of the toolkit only ever sees OpenAI state dicts.
 *
 * What differs between the two (everything else is a rename of the same bytes):
 *   - attention: HF keeps separate q/k/v Linear layers; OpenAI's nn.MultiheadAttention keeps one
 *     packed `in_proj_weight` [3w, w] / `in_proj_bias` [3w], rows q then k then v;
 *   - projections: HF's `visual_projection` / `text_projection` are bias-free Linear layers,
 *     weight [embed, width]; OpenAI multiplies by a [width, embed] matrix, i.e. the transpose;
 *   - HF keeps `position_ids` buffers (0..n-1), which carry no weights and are dropped.
 *
 * Everything is checked before anything is produced: every tensor present with the shape the
 * OpenAI model needs, nothing unknown left over, and, given config.json, every size it states equal
 * to what the tensors say. Activations other than QuickGELU are refused (OpenAI's CLIP and this
 * toolkit's model use QuickGELU; `gelu` checkpoints would load and silently compute the wrong thing).
 * Without config.json the activation cannot be known and QuickGELU is assumed.
 */
import { dirname, join } from "node:path";
import { loadStateDict } from "./weights.ts";
import {
  checkWeight,
  DTYPE_BYTES,
  fromFloat32,
  type HostWeight,
  type StateDict,
  toFloat32,
  WeightsError,
} from "./dtypes.ts";

/** config.json as parsed JSON (a `CLIPConfig`: text_config / vision_config / projection_dim ...). */
export type HfConfig = Record<string, unknown>;

const VIS = "vision_model.";
const TXT = "text_model.";
const LAYER = /^(vision|text)_model\.encoder\.layers\.(\d+)\./;

/** True when the state dict uses transformers' CLIPModel names (either tower's embeddings). */
export function isHuggingFaceClip(sd: StateDict): boolean {
  for (const k of sd.keys()) {
    if (k.startsWith(`${VIS}embeddings.`) || k.startsWith(`${TXT}embeddings.`)) return true;
    if (LAYER.test(k)) return true;
  }
  return false;
}

const fmt = (s: readonly number[]) => `[${s.join(", ")}]`;
const sameShape = (a: readonly number[], b: readonly number[]) =>
  a.length === b.length && a.every((d, i) => d === b[i]);

function countLayers(sd: StateDict, tower: "vision" | "text"): number {
  let n = 0;
  for (const k of sd.keys()) {
    const m = LAYER.exec(k);
    if (m && m[1] === tower) n = Math.max(n, +m[2] + 1);
  }
  return n;
}

/** HF per-layer suffix → OpenAI per-block suffix, for the tensors that are only renamed. */
const LAYER_RENAMES: [string, string][] = [
  ["self_attn.out_proj.weight", "attn.out_proj.weight"],
  ["self_attn.out_proj.bias", "attn.out_proj.bias"],
  ["layer_norm1.weight", "ln_1.weight"],
  ["layer_norm1.bias", "ln_1.bias"],
  ["mlp.fc1.weight", "mlp.c_fc.weight"],
  ["mlp.fc1.bias", "mlp.c_fc.bias"],
  ["mlp.fc2.weight", "mlp.c_proj.weight"],
  ["mlp.fc2.bias", "mlp.c_proj.bias"],
  ["layer_norm2.weight", "ln_2.weight"],
  ["layer_norm2.bias", "ln_2.bias"],
];

/** HF shapes of one encoder layer of width w (the MLP is 4w wide, as in OpenAI's CLIP). */
function layerShapes(w: number): Map<string, number[]> {
  const m = new Map<string, number[]>();
  for (const p of ["q", "k", "v", "out"]) {
    m.set(`self_attn.${p}_proj.weight`, [w, w]);
    m.set(`self_attn.${p}_proj.bias`, [w]);
  }
  for (const ln of ["layer_norm1", "layer_norm2"]) {
    m.set(`${ln}.weight`, [w]);
    m.set(`${ln}.bias`, [w]);
  }
  m.set("mlp.fc1.weight", [4 * w, w]);
  m.set("mlp.fc1.bias", [4 * w]);
  m.set("mlp.fc2.weight", [w, 4 * w]);
  m.set("mlp.fc2.bias", [w]);
  return m;
}

interface Dims {
  visionWidth: number;
  patch: number;
  grid: number;
  visionLayers: number;
  textWidth: number;
  vocab: number;
  context: number;
  textLayers: number;
  embed: number;
}

/** Every tensor of an HF CLIPModel with these sizes, with its shape. */
function hfShapes(d: Dims): Map<string, number[]> {
  const m = new Map<string, number[]>();
  const V = d.visionWidth, W = d.textWidth;
  m.set(`${VIS}embeddings.patch_embedding.weight`, [V, 3, d.patch, d.patch]);
  m.set(`${VIS}embeddings.class_embedding`, [V]);
  m.set(`${VIS}embeddings.position_embedding.weight`, [d.grid * d.grid + 1, V]);
  for (const ln of ["pre_layrnorm", "post_layernorm"]) {
    m.set(`${VIS}${ln}.weight`, [V]);
    m.set(`${VIS}${ln}.bias`, [V]);
  }
  for (let i = 0; i < d.visionLayers; i++) {
    for (const [k, s] of layerShapes(V)) m.set(`${VIS}encoder.layers.${i}.${k}`, s);
  }
  m.set("visual_projection.weight", [d.embed, V]);
  m.set(`${TXT}embeddings.token_embedding.weight`, [d.vocab, W]);
  m.set(`${TXT}embeddings.position_embedding.weight`, [d.context, W]);
  for (let i = 0; i < d.textLayers; i++) {
    for (const [k, s] of layerShapes(W)) m.set(`${TXT}encoder.layers.${i}.${k}`, s);
  }
  m.set(`${TXT}final_layer_norm.weight`, [W]);
  m.set(`${TXT}final_layer_norm.bias`, [W]);
  m.set("text_projection.weight", [d.embed, W]);
  m.set("logit_scale", []);
  return m;
}

/** Buffers HF saves (in older versions) that hold no weights. */
const IGNORED = new Set([`${VIS}embeddings.position_ids`, `${TXT}embeddings.position_ids`]);

/** A problem found while checking; `tensor` names the tensor (or config key) it is about. */
interface Problem {
  tensor: string;
  text: string;
}

/**
 * Reads the sizes off the tensors (as OpenAI's build_model does for its names). Missing anchor
 * tensors are reported and a 0 stands in, so every problem is listed in one error.
 */
function readDims(sd: StateDict, problems: Problem[]): Dims {
  const shapeOf = (name: string, rank: number): number[] | undefined => {
    const w = sd.get(name);
    if (!w) {
      problems.push({ tensor: name, text: `missing ${name}` });
      return undefined;
    }
    if (w.shape.length !== rank) {
      problems.push({
        tensor: name,
        text: `${name} is ${fmt(w.shape)}, expected a ${rank}-d tensor`,
      });
      return undefined;
    }
    return w.shape;
  };
  const patchW = shapeOf(`${VIS}embeddings.patch_embedding.weight`, 4);
  const vpos = shapeOf(`${VIS}embeddings.position_embedding.weight`, 2);
  const tok = shapeOf(`${TXT}embeddings.token_embedding.weight`, 2);
  const tpos = shapeOf(`${TXT}embeddings.position_embedding.weight`, 2);
  const vproj = shapeOf("visual_projection.weight", 2);
  let grid = 0;
  if (vpos) {
    grid = Math.round(Math.sqrt(vpos[0] - 1));
    if (grid * grid + 1 !== vpos[0]) {
      problems.push({
        tensor: `${VIS}embeddings.position_embedding.weight`,
        text: `${VIS}embeddings.position_embedding.weight ${fmt(vpos)}: ${vpos[0]} rows is not ` +
          `1 + grid² (one class token plus a square grid of patches)`,
      });
      grid = 0;
    }
  }
  return {
    visionWidth: patchW?.[0] ?? 0,
    patch: patchW?.[3] ?? 0,
    grid,
    visionLayers: countLayers(sd, "vision"),
    textWidth: tok?.[1] ?? 0,
    vocab: tok?.[0] ?? 0,
    context: tpos?.[0] ?? 0,
    textLayers: countLayers(sd, "text"),
    embed: vproj?.[0] ?? 0,
  };
}

const isObj = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);

/** A tower's settings: `<tower>_config`, overridden by the legacy `<tower>_config_dict` (as HF). */
function towerConfig(config: HfConfig, tower: "text" | "vision"): Record<string, unknown> {
  const base = isObj(config[`${tower}_config`]) ? config[`${tower}_config`] as object : {};
  const legacy = isObj(config[`${tower}_config_dict`])
    ? config[`${tower}_config_dict`] as object
    : {};
  return { ...base, ...legacy };
}

/** Compares config.json with the tensors; the hidden_act refusal is thrown at once. */
function checkConfig(config: HfConfig, d: Dims, problems: Problem[], file: string): void {
  const type = config.model_type;
  if (type !== undefined && type !== "clip") {
    throw new WeightsError(
      file,
      `config.json has model_type ${JSON.stringify(type)}; only a full "clip" CLIPModel ` +
        `(both towers and their projections) can be converted to OpenAI's CLIP`,
    );
  }
  const text = towerConfig(config, "text"), vision = towerConfig(config, "vision");
  for (const [tower, c] of [["text_config", text], ["vision_config", vision]] as const) {
    // transformers' default is quick_gelu, so an absent key means QuickGELU
    const act = c.hidden_act ?? "quick_gelu";
    if (act !== "quick_gelu") {
      throw new WeightsError(
        file,
        `config.json ${tower}.hidden_act is ${JSON.stringify(act)}, but this toolkit's CLIP ` +
          `uses QuickGELU (x·sigmoid(1.702x)) like OpenAI's models; a checkpoint trained with ` +
          `another activation would load and compute wrong features, so it is refused`,
      );
    }
  }
  const check = (key: string, value: unknown, want: number, tensor: string, what: string) => {
    if (value === undefined || want === 0) return; // not stated, or the tensor is already reported
    if (value !== want) {
      problems.push({
        tensor: key,
        text: `config.json ${key} = ${JSON.stringify(value)}, but ${tensor} gives ${what} ${want}`,
      });
    }
  };
  const vPatch = `${VIS}embeddings.patch_embedding.weight`;
  const vPos = `${VIS}embeddings.position_embedding.weight`;
  const tTok = `${TXT}embeddings.token_embedding.weight`;
  const tPos = `${TXT}embeddings.position_embedding.weight`;
  check("projection_dim", config.projection_dim, d.embed, "visual_projection.weight", "embed");
  check("vision_config.hidden_size", vision.hidden_size, d.visionWidth, vPatch, "width");
  check("vision_config.patch_size", vision.patch_size, d.patch, vPatch, "patch size");
  check("vision_config.num_channels", vision.num_channels, 3, vPatch, "input channels");
  check(
    "vision_config.image_size",
    vision.image_size,
    d.patch * d.grid,
    `${vPos} with patch ${d.patch}`,
    "image size",
  );
  check(
    "vision_config.num_hidden_layers",
    vision.num_hidden_layers,
    d.visionLayers,
    `${VIS}encoder.layers.*`,
    "layers",
  );
  check(
    "vision_config.intermediate_size",
    vision.intermediate_size,
    4 * d.visionWidth,
    vPatch,
    "the MLP width (4 × width)",
  );
  check("text_config.hidden_size", text.hidden_size, d.textWidth, tTok, "width");
  check("text_config.vocab_size", text.vocab_size, d.vocab, tTok, "vocabulary size");
  check(
    "text_config.max_position_embeddings",
    text.max_position_embeddings,
    d.context,
    tPos,
    "context",
  );
  check(
    "text_config.num_hidden_layers",
    text.num_hidden_layers,
    d.textLayers,
    `${TXT}encoder.layers.*`,
    "layers",
  );
  check(
    "text_config.intermediate_size",
    text.intermediate_size,
    4 * d.textWidth,
    tTok,
    "the MLP width (4 × width)",
  );
  // The OpenAI layout carries no head count: the model reads heads = width / 64 off the tensors.
  for (
    const [tower, c, w] of [["vision", vision, d.visionWidth], ["text", text, d.textWidth]] as const
  ) {
    const h = c.num_attention_heads;
    if (h !== undefined && w !== 0 && h !== w / 64) {
      problems.push({
        tensor: `${tower}_config.num_attention_heads`,
        text: `config.json ${tower}_config.num_attention_heads = ${JSON.stringify(h)} with width ` +
          `${w}, but this toolkit's CLIP uses 64-wide heads (heads = width / 64 = ${w / 64})`,
      });
    }
    const eps = c.layer_norm_eps;
    if (eps !== undefined && eps !== 1e-5) {
      problems.push({
        tensor: `${tower}_config.layer_norm_eps`,
        text: `config.json ${tower}_config.layer_norm_eps = ${JSON.stringify(eps)}, but this ` +
          `toolkit's CLIP uses 1e-5`,
      });
    }
  }
}

/** [r, c] → [c, r], element by element on the raw bytes (any dtype). */
function transpose2d(w: HostWeight): HostWeight {
  const [r, c] = w.shape, b = DTYPE_BYTES[w.dtype];
  const src = w.data, out = new Uint8Array(src.length);
  for (let i = 0; i < r; i++) {
    for (let j = 0; j < c; j++) {
      const from = (i * c + j) * b, to = (j * r + i) * b;
      for (let k = 0; k < b; k++) out[to + k] = src[from + k];
    }
  }
  return { dtype: w.dtype, shape: [c, r], data: out };
}

/** Stacks tensors along dim 0; mixed dtypes are widened to F32 (exact for F16/BF16). */
function concat0(parts: HostWeight[]): HostWeight {
  const rows = parts.reduce((a, p) => a + p.shape[0], 0);
  const shape = [rows, ...parts[0].shape.slice(1)];
  if (parts.every((p) => p.dtype === parts[0].dtype)) {
    const out = new Uint8Array(parts.reduce((a, p) => a + p.data.length, 0));
    let at = 0;
    for (const p of parts) {
      out.set(p.data, at);
      at += p.data.length;
    }
    return { dtype: parts[0].dtype, shape, data: out };
  }
  const vals = new Float32Array(
    parts.reduce((a, p) => a + p.data.length / DTYPE_BYTES[p.dtype], 0),
  );
  let at = 0;
  for (const p of parts) {
    const f = toFloat32(p);
    vals.set(f, at);
    at += f.length;
  }
  return fromFloat32(vals, shape, "F32");
}

/**
 * Maps a Hugging Face CLIPModel state dict onto OpenAI's names and layouts (the order of OpenAI's
 * own state_dict()). `config` is config.json's parsed contents, checked against the tensors when
 * given. Throws a WeightsError listing every missing, misshapen, unknown or inconsistent tensor
 * (each named) before producing anything. Renamed tensors share their bytes with `sd`.
 */
export function hfToOpenAI(sd: StateDict, config?: HfConfig, file = "<hf checkpoint>"): StateDict {
  if (config !== undefined && !isObj(config)) {
    throw new WeightsError(file, "config.json is not a JSON object");
  }
  const problems: Problem[] = [];
  const dims = readDims(sd, problems);
  if (dims.visionLayers === 0) {
    problems.push({ tensor: `${VIS}encoder.layers.0`, text: `no ${VIS}encoder.layers.N tensors` });
  }
  if (dims.textLayers === 0) {
    problems.push({ tensor: `${TXT}encoder.layers.0`, text: `no ${TXT}encoder.layers.N tensors` });
  }
  const sizesKnown = problems.length === 0;
  if (config) checkConfig(config, dims, problems, file);
  if (sizesKnown) {
    const expected = hfShapes(dims);
    for (const [name, shape] of expected) {
      const w = sd.get(name);
      if (!w) {
        problems.push({ tensor: name, text: `missing ${name} ${fmt(shape)}` });
        continue;
      }
      if (!sameShape(w.shape, shape)) {
        problems.push({
          tensor: name,
          text: `${name} is ${fmt(w.shape)}, expected ${fmt(shape)}`,
        });
        continue;
      }
      try {
        checkWeight(w, name);
      } catch (e) {
        problems.push({ tensor: name, text: (e as Error).message });
      }
    }
    for (const name of sd.keys()) {
      if (!expected.has(name) && !IGNORED.has(name)) {
        problems.push({ tensor: name, text: `unexpected tensor ${name}` });
      }
    }
  }
  if (problems.length) {
    throw new WeightsError(
      file,
      `not a Hugging Face CLIPModel this toolkit can convert (${problems.length} problem` +
        `${problems.length > 1 ? "s" : ""}):\n  ${problems.map((p) => p.text).join("\n  ")}`,
      problems.length === 1 ? problems[0].tensor : undefined,
    );
  }

  const get = (name: string) => sd.get(name)!;
  const out: StateDict = new Map();
  const layers = (hfPrefix: string, oaPrefix: string, n: number) => {
    for (let i = 0; i < n; i++) {
      const h = `${hfPrefix}${i}.`, o = `${oaPrefix}${i}.`;
      for (const kind of ["weight", "bias"]) {
        out.set(
          `${o}attn.in_proj_${kind}`,
          concat0(["q", "k", "v"].map((p) => get(`${h}self_attn.${p}_proj.${kind}`))),
        );
      }
      for (const [from, to] of LAYER_RENAMES) out.set(o + to, get(h + from));
    }
  };
  out.set("positional_embedding", get(`${TXT}embeddings.position_embedding.weight`));
  out.set("text_projection", transpose2d(get("text_projection.weight")));
  out.set("logit_scale", get("logit_scale"));
  out.set("visual.class_embedding", get(`${VIS}embeddings.class_embedding`));
  out.set("visual.positional_embedding", get(`${VIS}embeddings.position_embedding.weight`));
  out.set("visual.proj", transpose2d(get("visual_projection.weight")));
  out.set("visual.conv1.weight", get(`${VIS}embeddings.patch_embedding.weight`));
  out.set("visual.ln_pre.weight", get(`${VIS}pre_layrnorm.weight`));
  out.set("visual.ln_pre.bias", get(`${VIS}pre_layrnorm.bias`));
  layers(`${VIS}encoder.layers.`, "visual.transformer.resblocks.", dims.visionLayers);
  out.set("visual.ln_post.weight", get(`${VIS}post_layernorm.weight`));
  out.set("visual.ln_post.bias", get(`${VIS}post_layernorm.bias`));
  layers(`${TXT}encoder.layers.`, "transformer.resblocks.", dims.textLayers);
  out.set("token_embedding.weight", get(`${TXT}embeddings.token_embedding.weight`));
  out.set("ln_final.weight", get(`${TXT}final_layer_norm.weight`));
  out.set("ln_final.bias", get(`${TXT}final_layer_norm.bias`));
  return out;
}

async function statOrNull(path: string): Promise<Deno.FileInfo | null> {
  try {
    return await Deno.stat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory) return null;
    throw e;
  }
}

/** Weight files looked for, in order, when a Hugging Face model folder is given. */
const FOLDER_FILES = ["model.safetensors", "pytorch_model.bin"];

export interface LoadClipOptions {
  /** config.json to check an HF checkpoint against (default: config.json beside the file). */
  configPath?: string;
}

/**
 * Loads any supported checkpoint (safetensors, torch.save zip, TorchScript zip; or a Hugging Face
 * model folder holding model.safetensors / pytorch_model.bin) and returns it with OpenAI's names:
 * Hugging Face names are detected and mapped, checked against config.json beside the file when
 * there is one.
 */
export async function loadClipStateDict(
  path: string,
  opts: LoadClipOptions = {},
): Promise<StateDict> {
  let file = path;
  if ((await statOrNull(path))?.isDirectory) {
    const found = [];
    for (const f of FOLDER_FILES) {
      if ((await statOrNull(join(path, f)))?.isFile) found.push(join(path, f));
    }
    if (!found.length) {
      throw new WeightsError(
        path,
        `a folder without a checkpoint (looked for ${FOLDER_FILES.join(", ")})`,
      );
    }
    file = found[0];
  }
  const sd = await loadStateDict(file);
  if (!isHuggingFaceClip(sd)) return sd;
  const cfgPath = opts.configPath ?? join(dirname(file), "config.json");
  let config: HfConfig | undefined;
  if (opts.configPath !== undefined || (await statOrNull(cfgPath))?.isFile) {
    let text: string;
    try {
      text = await Deno.readTextFile(cfgPath);
    } catch (e) {
      throw new WeightsError(cfgPath, `cannot read the file (${(e as Error).message})`);
    }
    try {
      config = JSON.parse(text);
    } catch (e) {
      throw new WeightsError(cfgPath, `not valid JSON (${(e as Error).message})`);
    }
    if (!isObj(config)) throw new WeightsError(cfgPath, "config.json is not a JSON object");
  }
  return hfToOpenAI(sd, config, file);
}
