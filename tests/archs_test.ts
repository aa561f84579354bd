/**
 * model/archs.ts: OpenAI's released architectures have the parameter counts OpenAI's notebook
 * prints, and `initStateDict` writes OpenAI's initialisation, dtypes and names, deterministically.
 */
import { assert, setup } from "./util.ts";
import { initStateDict, OPENAI_ARCHS, parameterCount } from "../model/archs.ts";
import { CLIP, type ClipConfig, expectedShapes, initOf } from "../model/clip.ts";
import { serializeSafetensors } from "../model/safetensors.ts";
import { toFloat32 } from "../model/dtypes.ts";
import { HostRng } from "../engine/ops/random.ts";
import { f16ToF32, f32ToF16 } from "../engine/tensor.ts";

Deno.test("OpenAI's architectures have OpenAI's parameter counts", () => {
  // clip.available_models() with "Model parameters: ..." from OpenAI's Interacting-with-CLIP notebook
  const published: Record<string, number> = {
    "ViT-B/32": 151_277_313,
    "ViT-B/16": 149_620_737,
    "ViT-L/14": 427_616_513,
    "ViT-L/14@336px": 427_944_193,
  };
  assert.deepEqual(Object.keys(OPENAI_ARCHS).sort(), Object.keys(published).sort());
  for (const [name, n] of Object.entries(published)) {
    assert.equal(parameterCount(OPENAI_ARCHS[name]), n, name);
  }
});

const SMALL: ClipConfig = {
  embedDim: 64,
  imageResolution: 32,
  visionLayers: 2,
  visionWidth: 128,
  visionPatchSize: 8,
  visionHeads: 2,
  contextLength: 77,
  vocabSize: 500,
  transformerWidth: 64,
  transformerHeads: 1,
  transformerLayers: 2,
};

Deno.test("initStateDict: OpenAI's names, dtypes and initialisation, the same bytes per seed", async () => {
  await setup();
  const sd = initStateDict(SMALL, 3);
  const shapes = expectedShapes(SMALL);
  assert.deepEqual([...sd.keys()], [...shapes.keys()]);
  for (const [name, w] of sd) {
    assert.deepEqual(w.shape, shapes.get(name), name);
    const f32 = /ln_|class_embedding|positional_embedding|logit_scale/.test(name);
    assert.equal(w.dtype, f32 ? "F32" : "F16", name);
  }
  // element i of tensor k is HostRng(seed · 4096 + k)'s i-th draw, stored as f16 or f32
  [...shapes].forEach(([name, shape], k) => {
    const [kind, a, b] = initOf(name, shape, SMALL);
    if (kind === "const") return;
    const rng = new HostRng(3 * 4096 + k);
    const got = toFloat32(sd.get(name)!);
    for (let i = 0; i < Math.min(got.length, 37); i++) {
      const v: number = kind === "normal" ? rng.normal(a, b) : rng.uniform(a, b);
      const want: number = sd.get(name)!.dtype === "F16"
        ? f16ToF32(f32ToF16(Float32Array.of(v)))[0]
        : Math.fround(v);
      assert.equal(got[i], want, `${name}[${i}]`);
    }
  });
  // the statistics OpenAI's initialize_parameters asks for
  const tok = toFloat32(sd.get("token_embedding.weight")!);
  const sd2 = Math.sqrt(tok.reduce((s, x) => s + x * x, 0) / tok.length);
  assert.ok(Math.abs(sd2 - 0.02) < 0.001, `token embedding std ${sd2}`);
  assert.equal(toFloat32(sd.get("logit_scale")!)[0], Math.fround(Math.log(1 / 0.07)));
  assert.deepEqual(serializeSafetensors(initStateDict(SMALL, 3)), serializeSafetensors(sd));
  assert.notDeepEqual(
    toFloat32(initStateDict(SMALL, 4).get("visual.proj")!),
    toFloat32(sd.get("visual.proj")!),
  );
  // and CLIP reads it back as the configuration it was drawn for
  const m = CLIP.fromStateDict(sd);
  assert.deepEqual(m.config, SMALL);
  m.dispose();
});
