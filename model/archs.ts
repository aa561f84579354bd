/**
 * OpenAI's released CLIP architectures, and random-weight checkpoints of their exact shapes.
 *
 * The configurations are the ones OpenAI's `build_model` reads off the released state dicts
 * (heads = width / 64, context 77, vocabulary 49,408). `initStateDict` draws OpenAI's
 * initialisation (`initOf` in clip.ts) on the host, tensor k of `expectedShapes` order from
 * stream seed·4096 + k (HostRng's and the GPU's), and stores it as OpenAI's releases do: F16 for the linear,
 * convolution, attention, projection and token-embedding tensors, F32 for the layer norms, the
 * class and positional embeddings and logit_scale. Nothing touches the GPU, so a checkpoint of
 * any size can be written on any machine (ViT-L/14's f32 token table alone exceeds some
 * adapters' largest binding).
 */
import { type ClipConfig, expectedShapes, initOf } from "./clip.ts";
import { f32ToF16Bits, type HostWeight, type StateDict } from "./dtypes.ts";
import { blockNormal, fillStream, wordToUnit } from "../kernels/random.ts";

const CHUNK = 1 << 20; // stream words drawn at a time (a multiple of 4)

const text = { contextLength: 77, vocabSize: 49408, transformerLayers: 12 };

const B32: ClipConfig = {
  embedDim: 512,
  imageResolution: 224,
  visionLayers: 12,
  visionWidth: 768,
  visionPatchSize: 32,
  visionHeads: 12,
  transformerWidth: 512,
  transformerHeads: 8,
  ...text,
};
const L14: ClipConfig = {
  embedDim: 768,
  imageResolution: 224,
  visionLayers: 24,
  visionWidth: 1024,
  visionPatchSize: 14,
  visionHeads: 16,
  transformerWidth: 768,
  transformerHeads: 12,
  ...text,
};

/** The released ViTs by OpenAI's names (`clip.available_models()`). */
export const OPENAI_ARCHS: Record<string, ClipConfig> = {
  "ViT-B/32": B32,
  "ViT-B/16": { ...B32, visionPatchSize: 16 },
  "ViT-L/14": L14,
  "ViT-L/14@336px": { ...L14, imageResolution: 336 },
};

/** The tensors OpenAI's releases keep in f32 (everything else is f16). */
const F32_TENSOR =
  /(^|\.)ln_\w+\.(weight|bias)$|(^|\.)(class_embedding|positional_embedding)$|^logit_scale$/;

/** Number of parameters of a configuration (what OpenAI's notebook prints per model). */
export function parameterCount(c: ClipConfig): number {
  let n = 0;
  for (const shape of expectedShapes(c).values()) n += shape.reduce((a, b) => a * b, 1);
  return n;
}

/**
 * A random-weight state dict with OpenAI's names, shapes, dtypes and initialisation. `onTensor`
 * is told each tensor's name once it is drawn (for progress on the large models).
 */
export function initStateDict(
  c: ClipConfig,
  seed = 0,
  onTensor?: (name: string, index: number, count: number) => void,
): StateDict {
  const sd: StateDict = new Map();
  const shapes = [...expectedShapes(c)];
  shapes.forEach(([name, shape], k) => {
    const [kind, a, b] = initOf(name, shape, c);
    const n = shape.reduce((x, y) => x * y, 1);
    const f32 = F32_TENSOR.test(name);
    const f = f32 ? new Float32Array(n) : null;
    const h = f32 ? null : new Uint16Array(n);
    const put = (i: number, v: number) => {
      if (f) f[i] = v;
      else h![i] = f32ToF16Bits(v);
    };
    if (kind === "const") {
      for (let i = 0; i < n; i++) put(i, a);
    } else {
      // stream element i, as HostRng(seed · 4096 + k) draws it, in chunks of whole blocks
      const words = new Uint32Array(Math.min(CHUNK, Math.ceil(n / 4) * 4));
      for (let start = 0; start < n; start += words.length) {
        fillStream(seed * 4096 + k, start / 4, words);
        const m = Math.min(words.length, n - start);
        for (let j = 0; j < m; j++) {
          put(
            start + j,
            kind === "normal"
              ? a + b * blockNormal(words, j & 3, j & ~3)
              : a + (b - a) * wordToUnit(words[j]),
          );
        }
      }
    }
    const w: HostWeight = f
      ? { dtype: "F32", shape: [...shape], data: new Uint8Array(f.buffer) }
      : { dtype: "F16", shape: [...shape], data: new Uint8Array(h!.buffer) };
    sd.set(name, w);
    onTensor?.(name, k, shapes.length);
  });
  return sd;
}
