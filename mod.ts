/**
 * clipkit: CLIP prompt learning on a WebGPU autograd engine, for Deno.
 *
 * ```ts
 * import * as ck from "./mod.ts";
 * await ck.initEngine();
 * const w = ck.param(ck.tensor([0.5, -1], [2]));
 * const loss = ck.scope(() => ck.sum(ck.square(w)));
 * ck.backward(loss);
 * console.log(await w.grad!.data());
 * ```
 */
// the engine: tensors, memory, autograd, ops, optimisers
export * from "./engine/mod.ts";

// the model: CLIP, checkpoints, tokenizer, images
export { CLIP, type ClipConfig, eotPositions, expectedShapes, inferConfig } from "./model/clip.ts";
export { loadStateDict, parseStateDict, type StateDict, toFloat32 } from "./model/weights.ts";
export { readSafetensors, saveSafetensors } from "./model/safetensors.ts";
export { hfToOpenAI, loadClipStateDict } from "./model/hf.ts";
export { fetchModel, resolveModel } from "./model/fetch.ts";
export { findVocab, Tokenizer } from "./model/tokenizer.ts";
export { decodeImage, loadImage, type RGBImage } from "./model/image.ts";
export { clipPreprocess, resizeBicubic } from "./model/preprocess.ts";
export { loadClip } from "./model/load.ts";

// the pipeline: data, splits, augmentations, methods, trainer, evaluation
export { readDataset } from "./pipeline/data.ts";
export {
  base2new,
  fewShot,
  leaveOneDomainOut,
  loadSplit,
  saveSplit,
  Split,
} from "./pipeline/splits.ts";
export { makeViews } from "./pipeline/augment.ts";
export type { Method, MethodInstance } from "./pipeline/method.ts";
export { getMethod, METHODS } from "./pipeline/methods/index.ts";
export { train, type TrainConfig } from "./pipeline/train.ts";
export { evaluateRun } from "./pipeline/evaluate.ts";
export { metrics } from "./pipeline/metrics.ts";
export { writeReport } from "./pipeline/report.ts";
export { generateWorld, type WorldOptions, writeWorld } from "./pipeline/world.ts";
export { loadPairs, pretrain, type PretrainOptions } from "./pipeline/pretrain.ts";
export { type EvalReport, evaluatePretrained } from "./pipeline/evaluate_pretrained.ts";
export { defaultRun, type DefaultRunOptions } from "./pipeline/default_run.ts";
