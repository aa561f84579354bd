/**
 * Hugging Face CLIPModel → OpenAI names (host only, no GPU): the golden micro CLIP is rewritten
 * into transformers' layout by an inverse mapping written here independently of model/hf.ts,
 * mapped back, and must come out byte for byte; then the refusals (missing, misshapen, unknown
 * tensors, a non-QuickGELU activation, config.json disagreeing with the tensors).
 */
import assert from "node:assert/strict";
import { sharedDir } from "./util.ts";
import { hfToOpenAI, isHuggingFaceClip, loadClipStateDict } from "../model/hf.ts";
import {
  type HostWeight,
  loadStateDict,
  serializeSafetensors,
  type StateDict,
  toFloat32,
  WeightsError,
} from "../model/weights.ts";
import { expectedShapes, inferConfig } from "../model/clip.ts";

const MICRO = sharedDir() + "golden/micro/model.safetensors";
const golden = await loadStateDict(MICRO);

// --- the inverse mapping (OpenAI → HF), independent of model/hf.ts -------------------------------

const ELEM: Record<string, number> = { F32: 4, F16: 2, BF16: 2, I64: 8 };

/** Rows [from, to) of a 2-d (or 1-d) tensor. */
function rows(w: HostWeight, from: number, to: number): HostWeight {
  const rowBytes = w.data.length / w.shape[0];
  return {
    dtype: w.dtype,
    shape: [to - from, ...w.shape.slice(1)],
    data: w.data.slice(from * rowBytes, to * rowBytes),
  };
}

/** Transpose through typed arrays of the element width (the module under test works on bytes). */
function transposed(w: HostWeight): HostWeight {
  const [r, c] = w.shape;
  const size = ELEM[w.dtype];
  const src = w.data.slice();
  const Arr = size === 2 ? Uint16Array : Uint32Array;
  const a = new Arr(src.buffer), t = new Arr(a.length);
  for (let k = 0; k < a.length; k++) t[(k % c) * r + Math.floor(k / c)] = a[k];
  return { dtype: w.dtype, shape: [c, r], data: new Uint8Array(t.buffer) };
}

function toHF(sd: StateDict, { positionIds = true } = {}): StateDict {
  const hf: StateDict = new Map();
  const blockRe = /^(visual\.transformer|transformer)\.resblocks\.(\d+)\.(.+)$/;
  const sub: Record<string, string> = {
    "attn.out_proj.weight": "self_attn.out_proj.weight",
    "attn.out_proj.bias": "self_attn.out_proj.bias",
    "ln_1.weight": "layer_norm1.weight",
    "ln_1.bias": "layer_norm1.bias",
    "ln_2.weight": "layer_norm2.weight",
    "ln_2.bias": "layer_norm2.bias",
    "mlp.c_fc.weight": "mlp.fc1.weight",
    "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight",
    "mlp.c_proj.bias": "mlp.fc2.bias",
  };
  const top: Record<string, string> = {
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "vision_model.post_layernorm.bias",
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
    "logit_scale": "logit_scale",
  };
  // a different insertion order from OpenAI's, as HF files have
  for (const [name, w] of [...sd].reverse()) {
    const m = blockRe.exec(name);
    if (m) {
      const p = `${m[1] === "transformer" ? "text" : "vision"}_model.encoder.layers.${m[2]}.`;
      if (m[3] === "attn.in_proj_weight" || m[3] === "attn.in_proj_bias") {
        const kind = m[3].endsWith("weight") ? "weight" : "bias";
        const n = w.shape[0] / 3;
        ["q", "k", "v"].forEach((x, i) => {
          hf.set(`${p}self_attn.${x}_proj.${kind}`, rows(w, i * n, (i + 1) * n));
        });
      } else {
        assert.ok(sub[m[3]], `test mapping lacks ${m[3]}`);
        hf.set(p + sub[m[3]], w);
      }
    } else if (name === "visual.proj") hf.set("visual_projection.weight", transposed(w));
    else if (name === "text_projection") hf.set("text_projection.weight", transposed(w));
    else {
      assert.ok(top[name], `test mapping lacks ${name}`);
      hf.set(top[name], w);
    }
  }
  if (positionIds) {
    const ids = (n: number): HostWeight => ({
      dtype: "I64",
      shape: [1, n],
      data: new Uint8Array(
        new BigInt64Array(Array.from({ length: n }, (_, i) => BigInt(i))).buffer,
      ),
    });
    hf.set("vision_model.embeddings.position_ids", ids(17));
    hf.set("text_model.embeddings.position_ids", ids(77));
  }
  return hf;
}

type Cfg = Record<string, unknown> & {
  text_config: Record<string, unknown>;
  vision_config: Record<string, unknown>;
};

/** config.json of the micro model as transformers writes it (abridged). */
function microConfig(): Cfg {
  return {
    architectures: ["CLIPModel"],
    model_type: "clip",
    projection_dim: 64,
    logit_scale_init_value: 2.6592,
    text_config: {
      hidden_size: 64,
      intermediate_size: 256,
      num_hidden_layers: 2,
      num_attention_heads: 1,
      max_position_embeddings: 77,
      vocab_size: 49408,
      hidden_act: "quick_gelu",
      layer_norm_eps: 1e-5,
      model_type: "clip_text_model",
    },
    vision_config: {
      hidden_size: 128,
      intermediate_size: 512,
      num_hidden_layers: 2,
      num_attention_heads: 2,
      image_size: 32,
      patch_size: 8,
      num_channels: 3,
      hidden_act: "quick_gelu",
      layer_norm_eps: 1e-5,
      model_type: "clip_vision_model",
    },
  };
}

function assertSameDict(actual: StateDict, expected: StateDict) {
  assert.deepEqual([...actual.keys()], [...expected.keys()], "names, in OpenAI's order");
  for (const [name, e] of expected) {
    const a = actual.get(name)!;
    assert.equal(a.dtype, e.dtype, `${name} dtype`);
    assert.deepEqual(a.shape, e.shape, `${name} shape`);
    assert.equal(a.data.length, e.data.length, `${name} bytes`);
    const i = a.data.findIndex((v, k) => v !== e.data[k]);
    assert.equal(i, -1, `${name}: byte ${i} differs`);
  }
}

/** assert.throws matcher: a WeightsError whose message contains every fragment. */
const refuses = (...fragments: (string | RegExp)[]) => (e: unknown) => {
  assert.ok(e instanceof WeightsError, `expected a WeightsError, got ${e}`);
  for (const f of fragments) {
    if (typeof f === "string") assert.ok(e.message.includes(f), `"${f}" not in:\n${e.message}`);
    else assert.match(e.message, f);
  }
  return true;
};

// --------------------------------------------------------------------------------------------------

Deno.test("the test's inverse mapping really changes names and layouts", () => {
  const hf = toHF(golden);
  assert.ok(isHuggingFaceClip(hf));
  assert.ok(!isHuggingFaceClip(golden));
  assert.ok(!hf.has("visual.proj") && !hf.has("transformer.resblocks.0.attn.in_proj_weight"));
  assert.deepEqual(hf.get("visual_projection.weight")!.shape, [64, 128]);
  assert.deepEqual(hf.get("vision_model.encoder.layers.1.self_attn.k_proj.weight")!.shape, [
    128,
    128,
  ]);
  // a transpose really moved values: element (0, 1) of visual.proj is element (1, 0) of HF's
  const p = toFloat32(golden.get("visual.proj")!),
    q = toFloat32(hf.get("visual_projection.weight")!);
  assert.equal(q[1 * 128 + 0], p[0 * 64 + 1]);
  assert.notEqual(p[1], p[64]); // the check above would not notice a no-op otherwise
});

Deno.test("HF → OpenAI gives back the golden micro state dict byte for byte", () => {
  const out = hfToOpenAI(toHF(golden), microConfig(), "micro-hf");
  assertSameDict(out, golden);
  // and it is exactly what the model loader expects
  const want = expectedShapes(inferConfig(out));
  assert.deepEqual(new Set(out.keys()), new Set(want.keys()));
  for (const [k, s] of want) assert.deepEqual(out.get(k)!.shape, s, k);
});

Deno.test("without config.json and without position_ids buffers it maps the same", () => {
  assertSameDict(hfToOpenAI(toHF(golden, { positionIds: false })), golden);
});

Deno.test("q/k/v in mixed dtypes are widened to F32, values preserved", () => {
  const hf = toHF(golden);
  const k = "text_model.encoder.layers.0.self_attn.k_proj.weight";
  const w = hf.get(k)!;
  const f = toFloat32(w);
  hf.set(k, { dtype: "F32", shape: w.shape, data: new Uint8Array(f.buffer) });
  const out = hfToOpenAI(hf);
  const inProj = out.get("transformer.resblocks.0.attn.in_proj_weight")!;
  assert.equal(inProj.dtype, "F32");
  assert.deepEqual(
    toFloat32(inProj),
    toFloat32(golden.get("transformer.resblocks.0.attn.in_proj_weight")!),
  );
});

Deno.test("a missing k_proj is named", () => {
  const hf = toHF(golden);
  const name = "vision_model.encoder.layers.1.self_attn.k_proj.weight";
  hf.delete(name);
  assert.throws(() => hfToOpenAI(hf, undefined, "x.safetensors"), (e: unknown) => {
    refuses("x.safetensors", `missing ${name} [128, 128]`)(e);
    assert.equal((e as WeightsError).tensor, name);
    return true;
  });
});

Deno.test("misshapen, unexpected and anchor-less dicts are refused, naming every tensor", () => {
  const hf = toHF(golden);
  const bias = "text_model.encoder.layers.1.self_attn.q_proj.bias";
  hf.set(bias, rows(hf.get(bias)!, 0, 63));
  hf.set("vision_model.encoder.layers.0.self_attn.qkv.weight", hf.get(bias)!);
  assert.throws(
    () => hfToOpenAI(hf),
    refuses(
      "2 problems",
      `${bias} is [63], expected [64]`,
      "unexpected tensor vision_model.encoder.layers.0.self_attn.qkv.weight",
    ),
  );

  const noProj = toHF(golden);
  noProj.delete("visual_projection.weight");
  assert.throws(() => hfToOpenAI(noProj), refuses("missing visual_projection.weight"));

  // a single tower (CLIPVisionModel) is not a CLIPModel
  const vision: StateDict = new Map([...toHF(golden)].filter(([k]) => k.startsWith("vision_")));
  assert.throws(
    () => hfToOpenAI(vision),
    refuses(
      "missing text_model.embeddings.token_embedding.weight",
      "no text_model.encoder.layers.N tensors",
    ),
  );

  // a broken patch-position table
  const badPos = toHF(golden);
  const vp = "vision_model.embeddings.position_embedding.weight";
  badPos.set(vp, rows(badPos.get(vp)!, 0, 16));
  assert.throws(() => hfToOpenAI(badPos), refuses(vp, "1 + grid²"));
});

Deno.test("a non-QuickGELU activation is refused", () => {
  for (const tower of ["text_config", "vision_config"] as const) {
    const cfg = microConfig();
    cfg[tower].hidden_act = "gelu";
    assert.throws(
      () => hfToOpenAI(toHF(golden), cfg),
      refuses(`${tower}.hidden_act is "gelu"`, "QuickGELU"),
    );
  }
  // transformers' default when the key is absent is quick_gelu
  const cfg = microConfig();
  delete cfg.vision_config.hidden_act;
  assertSameDict(hfToOpenAI(toHF(golden), cfg), golden);
});

Deno.test("config.json disagreeing with the tensors is named", () => {
  const cases: [(c: Cfg) => void, string[]][] = [
    [(c) => (c.vision_config.hidden_size = 768), [
      "vision_config.hidden_size = 768",
      "vision_model.embeddings.patch_embedding.weight gives width 128",
    ]],
    [(c) => (c.vision_config.patch_size = 16), ["vision_config.patch_size = 16"]],
    [(c) => (c.vision_config.image_size = 224), ["vision_config.image_size = 224", "32"]],
    [(c) => (c.text_config.num_hidden_layers = 12), [
      "text_config.num_hidden_layers = 12",
      "text_model.encoder.layers.* gives layers 2",
    ]],
    [(c) => (c.text_config.vocab_size = 49409), ["text_config.vocab_size = 49409"]],
    [(c) => (c.text_config.max_position_embeddings = 76), ["max_position_embeddings = 76"]],
    [(c) => (c.projection_dim = 512), ["projection_dim = 512", "visual_projection.weight"]],
    [(c) => (c.vision_config.num_attention_heads = 4), [
      "vision_config.num_attention_heads = 4",
      "heads = width / 64 = 2",
    ]],
    [(c) => (c.text_config.intermediate_size = 200), ["text_config.intermediate_size = 200"]],
    [(c) => (c.vision_config.layer_norm_eps = 1e-6), ["vision_config.layer_norm_eps"]],
    // the legacy *_config_dict overrides *_config, as transformers does
    [(c) => (c.text_config_dict = { hidden_size: 99 }), ["text_config.hidden_size = 99"]],
    [(c) => (c.model_type = "siglip"), ['model_type "siglip"']],
  ];
  for (const [edit, fragments] of cases) {
    const cfg = microConfig();
    edit(cfg);
    assert.throws(() => hfToOpenAI(toHF(golden), cfg, "m"), refuses(...fragments));
  }
  // an old config whose text_config holds defaults, corrected by text_config_dict
  const legacy = microConfig();
  legacy.text_config.hidden_size = 512;
  legacy.text_config_dict = { hidden_size: 64 };
  assertSameDict(hfToOpenAI(toHF(golden), legacy), golden);
});

Deno.test("loadClipStateDict: HF files (with config.json beside them), folders, OpenAI files", async () => {
  const dir = await Deno.makeTempDir({ prefix: "clipkit-hf-" });
  try {
    const file = `${dir}/model.safetensors`;
    await Deno.writeFile(file, serializeSafetensors(toHF(golden)));
    // no config.json: mapped, unchecked
    assertSameDict(await loadClipStateDict(file), golden);
    // a folder, as downloaded from the hub
    await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(microConfig()));
    assertSameDict(await loadClipStateDict(dir), golden);
    // config.json beside the file is read and checked
    const bad = microConfig();
    bad.text_config.hidden_act = "gelu";
    await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(bad));
    await assert.rejects(() => loadClipStateDict(file), refuses("hidden_act", file));
    await Deno.writeTextFile(`${dir}/config.json`, "{not json");
    await assert.rejects(() => loadClipStateDict(file), refuses("config.json", "not valid JSON"));
    // an explicit config path wins
    await Deno.writeTextFile(`${dir}/good.json`, JSON.stringify(microConfig()));
    assertSameDict(await loadClipStateDict(file, { configPath: `${dir}/good.json` }), golden);
    // OpenAI-named files pass through untouched, in all three formats
    for (const f of ["model.safetensors", "model.pt", "model.jit.pt"]) {
      assertSameDict(await loadClipStateDict(sharedDir() + "golden/micro/" + f), golden);
    }
    const empty = await Deno.makeTempDir({ dir });
    await assert.rejects(() => loadClipStateDict(empty), refuses("model.safetensors"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
