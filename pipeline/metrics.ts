/**
 * Predictions of a method over labelled items and the field's metrics: top-1, macro-F1,
 * per-class accuracy, expected calibration error, confusion matrix, harmonic mean.
 */
import { noGrad } from "../engine/autograd.ts";
import { scope, tensor } from "../engine/tensor.ts";
import { indexSelect } from "../engine/ops/indexing.ts";
import { softmax } from "../engine/ops/nn.ts";
import type { CLIP } from "../model/clip.ts";
import type { RGBImage } from "../model/image.ts";
import { clipPreprocess } from "../model/preprocess.ts";
import type { FeatureSet, MethodInstance } from "./method.ts";
import type { SplitItem } from "./splits.ts";

/** Predicted classes and class probabilities [N, C] of a method over items, in batches. */
export async function predictLogits(
  inst: MethodInstance,
  model: CLIP,
  items: readonly SplitItem[],
  image: (it: SplitItem) => RGBImage,
  feats?: FeatureSet,
  batch = 32,
): Promise<{ predictions: Int32Array; probs: Float32Array; classes: number }> {
  const R = model.config.imageResolution, per = 3 * R * R;
  const chunks: Float32Array[] = [];
  let C = 0;
  for (let i = 0; i < items.length; i += batch) {
    const n = Math.min(batch, items.length - i);
    const probs = scope(() =>
      noGrad(() => {
        let logits;
        if (feats) {
          const idx = tensor(Int32Array.from({ length: n }, (_, j) => i + j), [n], "i32");
          logits = inst.predict(null as never, indexSelect(feats.features, 0, idx));
        } else {
          const buf = new Float32Array(n * per);
          for (let j = 0; j < n; j++) clipPreprocess(image(items[i + j]), R, buf, j * per);
          logits = inst.predict(tensor(buf, [n, 3, R, R]));
        }
        return softmax(logits);
      })
    );
    C = probs.shape[1];
    chunks.push((await probs.data()) as Float32Array);
    probs.dispose();
  }
  const all = new Float32Array(items.length * C);
  let o = 0;
  for (const c of chunks) {
    all.set(c, o);
    o += c.length;
  }
  const predictions = new Int32Array(items.length);
  for (let i = 0; i < items.length; i++) {
    let best = 0;
    for (let c = 1; c < C; c++) if (all[i * C + c] > all[i * C + best]) best = c;
    predictions[i] = best;
  }
  return { predictions, probs: all, classes: C };
}

export interface Metrics {
  top1: number;
  macroF1: number;
  perClassAccuracy: Record<string, number>;
  /** Expected calibration error, 15 equal-width confidence bins. */
  ece: number;
  confusion: number[][];
  count: number;
}

export function metrics(
  labels: ArrayLike<number>,
  predictions: ArrayLike<number>,
  probs: Float32Array,
  classnames: string[],
): Metrics {
  const C = classnames.length, N = labels.length;
  const confusion = Array.from({ length: C }, () => new Array(C).fill(0));
  for (let i = 0; i < N; i++) confusion[labels[i]][predictions[i]]++;
  let correct = 0, f1 = 0, present = 0;
  const perClassAccuracy: Record<string, number> = {};
  for (let c = 0; c < C; c++) {
    correct += confusion[c][c];
    const support = confusion[c].reduce((a, b) => a + b, 0);
    const predicted = confusion.reduce((a, row) => a + row[c], 0);
    if (support) perClassAccuracy[classnames[c]] = confusion[c][c] / support;
    if (support || predicted) {
      present++;
      f1 += (2 * confusion[c][c]) / (support + predicted);
    }
  }
  // calibration: |accuracy − confidence| per bin, weighted by the bin's share
  const bins = 15,
    acc = new Array(bins).fill(0),
    conf = new Array(bins).fill(0),
    cnt = new Array(bins).fill(0);
  for (let i = 0; i < N; i++) {
    const p = probs[i * C + predictions[i]];
    const k = Math.min(bins - 1, Math.floor(p * bins));
    cnt[k]++;
    conf[k] += p;
    acc[k] += +(predictions[i] === labels[i]);
  }
  let ece = 0;
  for (let k = 0; k < bins; k++) {
    if (cnt[k]) ece += (cnt[k] / N) * Math.abs(acc[k] / cnt[k] - conf[k] / cnt[k]);
  }
  return {
    top1: N ? correct / N : NaN,
    macroF1: present ? f1 / present : NaN,
    perClassAccuracy,
    ece,
    confusion,
    count: N,
  };
}

export const harmonicMean = (a: number, b: number) => (a + b > 0 ? (2 * a * b) / (a + b) : 0);
