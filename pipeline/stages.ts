/**
 * The trainer's stages as functions over plain values: load (dataset → split), views (images →
 * pixel tensors), encode (pixels → frozen features), step (loss → parameter update). A method's
 * graph (pipeline/method.ts) says which of them run and with what.
 */
import { noGrad } from "../engine/autograd.ts";
import { E } from "../engine/device.ts";
import { own, scope, type Tensor, tensor } from "../engine/tensor.ts";
import { concat, stack } from "../engine/ops/indexing.ts";
import type { CLIP } from "../model/clip.ts";
import type { RGBImage } from "../model/image.ts";
import { clipPreprocess } from "../model/preprocess.ts";
import { makeViews, type ViewKind, type ViewOptions } from "./augment.ts";
import { DataError, type Dataset, ImageCache, readDataset } from "./data.ts";
import { base2new, fewShot, leaveOneDomainOut, type Split, type SplitItem } from "./splits.ts";
import type { FeatureSet } from "./method.ts";

export type ProtocolFlag = "fewshot" | "base2new" | "dg";
export const PROTOCOL_FLAGS: ProtocolFlag[] = ["fewshot", "base2new", "dg"];

export interface DataSpec {
  data: string;
  protocol: ProtocolFlag;
  seed: number;
  shots?: number;
  target?: string;
  /** dg: the fraction of each source domain's class held out for validation (default 0.1). */
  valFraction?: number;
}

/** load: the dataset and its split, with every bad flag caught before any work. */
export function loadData(spec: DataSpec): { dataset: Dataset; split: Split } {
  if (!PROTOCOL_FLAGS.includes(spec.protocol)) {
    throw new Error(
      `--protocol: unknown protocol "${spec.protocol}" (known: ${PROTOCOL_FLAGS.join(", ")})`,
    );
  }
  const dataset = readDataset(spec.data);
  if (spec.protocol === "dg") {
    if (!spec.target) {
      throw new Error(
        `--protocol dg needs --target (one of: ${(dataset.domains ?? []).join(", ")})`,
      );
    }
    if (!dataset.domains?.includes(spec.target)) {
      throw new DataError(
        spec.data,
        `--target: no domain "${spec.target}" in ${spec.data} (domains: ${
          (dataset.domains ?? []).join(", ") || "none"
        })`,
      );
    }
    return {
      dataset,
      split: leaveOneDomainOut(dataset, {
        target: spec.target,
        seed: spec.seed,
        shots: spec.shots,
        valFraction: spec.valFraction,
      }),
    };
  }
  if (spec.protocol === "base2new") {
    return { dataset, split: base2new(dataset, { seed: spec.seed, shots: spec.shots ?? 16 }) };
  }
  return { dataset, split: fewShot(dataset, { seed: spec.seed, shots: spec.shots ?? 16 }) };
}

/** Decoded training images, cached as uint8 (decoding stays off the hot path). */
export function imageSource(dataset: Dataset) {
  const cache = new ImageCache(dataset);
  return (item: SplitItem): RGBImage => cache.get(item);
}

/** views: the named views of a batch of images, uploaded as [B, 3, R, R] tensors. */
export function viewsStage(
  images: RGBImage[],
  views: ViewKind[],
  size: number,
  seed: number,
  step: number,
  ids: number[],
  opts?: ViewOptions,
): Record<string, Tensor> {
  const arrays = makeViews(images, views, size, seed, step, ids, opts);
  const out: Record<string, Tensor> = {};
  views.forEach((v, k) => (out[v] = tensor(arrays[k], [images.length, 3, size, size])));
  return out;
}

/**
 * encode: frozen image features of many images, in batches (one batch's activations held at a
 * time); returns an owned [N, embed] tensor. `onBatch(n)` is told after each batch has finished
 * on the device (for progress).
 */
export async function encodeStage(
  model: CLIP,
  count: number,
  fill: (i: number, out: Float32Array, offset: number) => void,
  batch = 32,
  onBatch?: (n: number) => void,
): Promise<Tensor> {
  const R = model.config.imageResolution, per = 3 * R * R;
  const parts: Tensor[] = [];
  for (let i = 0; i < count; i += batch) {
    const n = Math.min(batch, count - i);
    const buf = new Float32Array(n * per);
    for (let j = 0; j < n; j++) fill(i + j, buf, j * per);
    parts.push(
      own(scope(() => noGrad(() => model.encodeImage(tensor(buf, [n, 3, R, R])).features))),
    );
    if (onBatch) {
      await E().sync();
      onBatch(n);
    }
  }
  if (!parts.length) return own(tensor(new Float32Array(0), [0, model.config.embedDim]));
  const all = parts.length === 1 ? parts[0] : own(scope(() => concat(parts, 0)));
  if (all !== parts[0]) parts.forEach((p) => p.dispose());
  return all;
}

/**
 * Frozen features of a labelled set: the test transform, plus `passes` augmented passes.
 * `onProgress(done, total)` counts encoded images over all passes.
 */
export async function featureSet(
  model: CLIP,
  items: readonly SplitItem[],
  image: (item: SplitItem) => RGBImage,
  classes: number,
  {
    passes = 0,
    seed = 0,
    views = {} as ViewOptions,
    onProgress = undefined as
      | ((done: number, total: number) => void)
      | undefined,
  } = {},
): Promise<FeatureSet> {
  const R = model.config.imageResolution;
  const total = items.length * (1 + passes);
  let done = 0;
  const onBatch = onProgress && ((n: number) => onProgress(done += n, total));
  const features = await encodeStage(
    model,
    items.length,
    (i, out, off) => clipPreprocess(image(items[i]), R, out, off),
    32,
    onBatch,
  );
  let augmented: Tensor | undefined;
  if (passes > 0) {
    const per: Tensor[] = [];
    for (let p = 0; p < passes; p++) {
      per.push(
        await encodeStage(
          model,
          items.length,
          (i, out, off) => {
            const [v] = makeViews([image(items[i])], ["orig"], R, seed, 1_000_000 + p, [i], views);
            out.set(v, off);
          },
          32,
          onBatch,
        ),
      );
    }
    augmented = own(scope(() => stack(per, 0)));
    per.forEach((t) => t.dispose());
  }
  const hostLabels = Int32Array.from(items, (it) => it.label);
  return {
    features,
    augmented,
    labels: own(tensor(hostLabels, [items.length], "i32")),
    hostLabels,
    classes,
  };
}

export function disposeFeatureSet(f: FeatureSet) {
  f.features.dispose();
  f.augmented?.dispose();
  f.labels.dispose();
}
