/**
 * ProtoCLIP: prototypical contrastive language-image pretraining (Chen et al., 2022).
 * Specification: shared/methods/PROTOCLIP.md. The building blocks a CLIP pretraining loop calls,
 * named as the paper names them; every loss is a pure function of tensors with a float64 CPU twin
 * (cpu* below).
 *
 * Episodic training. Each episode samples N pairs and:
 *   1. extracts the projected, normalised image and text features of the whole episode
 *      (`ProtoHeads.project`, without gradients);
 *   2. `buildEpisode`: K-means (k-means++ starts, 20 iterations, a few restarts; engine/ops/kmeans.ts)
 *      separately on the image features and on the text features → cluster labels and centroids
 *      per modality (`episodeClusters`); Prototypical Back Translation (`backTranslate`) rebuilds
 *      each modality's prototypes in the other's space: image-space prototypes = means of the
 *      image features grouped by the *text* clusters, and vice versa; and the teacher tables
 *      (`teacherTargets`): for a sample in teacher cluster k, softmax_j(c_k · c_j / τ) over the
 *      teacher centroids c, τ = 0.01;
 *   3. trains one pass over the episode with
 *        L = InfoNCE(CLIP embeddings) + L_proto(projected features) (+ L_external),
 *      all weights 1, the first epoch InfoNCE only (`protoclipWeights`).
 *
 * L_proto (`protoLoss`): the image student scores s = logit_scale_proto · f_img · P_imgᵀ against the
 * image-space prototypes of the text clusters, cross-entropy with the text teacher's soft target;
 * the text student likewise against the text-space prototypes of the image clusters with the image
 * teacher's target; the two directions averaged. Without PBT the students score against the other
 * modality's centroids directly. The optional external teacher (`externalPrototypes`,
 * `externalLoss`): features of a stronger frozen text model clustered the same way, back-translated
 * into both spaces, used with hard labels.
 *
 * As in the authors' code: centroids and prototypes are not normalised (only the features are);
 * both projection heads start from the same weights (their image head is a deep copy of the text
 * head); `logit_scale_proto` is a log-scale initialised at ln(1/0.07) and clamped to [0, ln 100]
 * after every optimiser step (`clampLogitScale`). The losses also cap exp(scale) at 100 in the
 * forward, so an unclamped value can never exceed it (the gradient is zero beyond the cap).
 */
import { noGrad, param } from "../engine/autograd.ts";
import { EngineError, fmtShape } from "../engine/errors.ts";
import { full, own, scope, type Tensor, tensor } from "../engine/mod.ts";
import { add, affine, clamp, exp, launchMap, mul, relu } from "../engine/ops/elementwise.ts";
import { linear, matmul } from "../engine/ops/matmul.ts";
import { transpose } from "../engine/ops/views.ts";
import { indexSelect } from "../engine/ops/indexing.ts";
import { crossEntropy, normalize, softmax } from "../engine/ops/nn.ts";
import { randomUniform } from "../engine/ops/random.ts";
import { BatchNorm1d } from "../engine/ops/batchnorm.ts";
import { kmeans, type KmeansMetric, type KmeansResult, segmentMean } from "../engine/ops/kmeans.ts";
import type { HostTensor } from "../kernels/elementwise.ts";

/** The paper's settings. */
export const PROTOCLIP = {
  projectionDim: 128,
  teacherTemperature: 0.01,
  logitScaleInit: Math.log(1 / 0.07),
  logitScaleMax: Math.log(100),
  kmeansIters: 20,
  kmeansRestarts: 3,
  warmupEpochs: 1,
} as const;

// ---------------------------------------------------------------------------------------------
// Projection heads and temperatures

export interface ProjectionHeadOptions {
  /** Output size (default 128). */
  outDim?: number;
  /** Hidden Linear → BatchNorm1d → ReLU layers before the output Linear (default 0: a Linear). */
  hiddenLayers?: number;
  /** Width of the hidden layers (default 2048). */
  hiddenDim?: number;
  /** Seed of the initial weights (PyTorch's Linear default, U(±1/√in)). */
  seed: number;
}

/** A projection head: Linear(embed → 128), or an MLP when hiddenLayers > 0. Parameters are named
 * as in nn.Sequential ("0.weight", "1.weight" for the first BatchNorm, …). */
export class ProjectionHead {
  readonly params = new Map<string, Tensor>();
  private layers: ({ weight: Tensor; bias: Tensor } | BatchNorm1d)[] = [];

  constructor(readonly inDim: number, opts: ProjectionHeadOptions) {
    const { outDim = PROTOCLIP.projectionDim, hiddenLayers = 0, hiddenDim = 2048 } = opts;
    for (const [name, v] of [["inDim", inDim], ["outDim", outDim], ["hiddenDim", hiddenDim]]) {
      if (!Number.isInteger(v) || (v as number) < 1) {
        throw new EngineError("ProjectionHead", `${name} must be a positive integer, got ${v}`);
      }
    }
    if (!Number.isInteger(hiddenLayers) || hiddenLayers < 0) {
      throw new EngineError("ProjectionHead", `hiddenLayers must be ≥ 0, got ${hiddenLayers}`);
    }
    let seed = opts.seed * 64;
    let idx = 0;
    const lin = (out: number, inp: number) => {
      const k = 1 / Math.sqrt(inp);
      const l = {
        weight: own(param(randomUniform([out, inp], seed++, -k, k))),
        bias: own(param(randomUniform([out], seed++, -k, k))),
      };
      this.params.set(`${idx}.weight`, l.weight);
      this.params.set(`${idx}.bias`, l.bias);
      this.layers.push(l);
      idx++;
    };
    let width = inDim;
    for (let h = 0; h < hiddenLayers; h++) {
      lin(hiddenDim, width);
      const bn = new BatchNorm1d(hiddenDim);
      this.params.set(`${idx}.weight`, bn.weight);
      this.params.set(`${idx}.bias`, bn.bias);
      this.layers.push(bn);
      idx += 2; // BatchNorm1d, ReLU
      width = hiddenDim;
    }
    lin(outDim, width);
  }

  get outDim(): number {
    const last = this.layers[this.layers.length - 1] as { weight: Tensor };
    return last.weight.shape[0];
  }

  /** BatchNorm mode of an MLP head (no effect on a Linear head). */
  set training(on: boolean) {
    for (const l of this.layers) if (l instanceof BatchNorm1d) l.training = on;
  }

  /** x [B, embed] → [B, outDim] (not normalised). */
  forward(x: Tensor): Tensor {
    if (x.rank !== 2 || x.shape[1] !== this.inDim) {
      throw new EngineError(
        "ProjectionHead",
        `expects [B, ${this.inDim}] features, got ${fmtShape(x.shape)}`,
      );
    }
    let h = x;
    for (const l of this.layers) {
      h = l instanceof BatchNorm1d ? relu(l.forward(h)) : linear(h, l.weight, l.bias);
    }
    return h;
  }

  dispose() {
    for (const l of this.layers) {
      if (l instanceof BatchNorm1d) l.dispose();
      else {
        l.weight.dispose();
        l.bias.dispose();
      }
    }
  }
}

/** Both projection heads and `logit_scale_proto`. */
export class ProtoHeads {
  readonly image: ProjectionHead;
  readonly text: ProjectionHead;
  /** The log of the prototype-level temperature's inverse, shape [] (trainable). */
  readonly logitScaleProto: Tensor;

  constructor(embedDim: number, opts: ProjectionHeadOptions) {
    // the authors' image head is a deep copy of the text head: same seed, same weights
    this.text = new ProjectionHead(embedDim, opts);
    this.image = new ProjectionHead(embedDim, opts);
    this.logitScaleProto = own(param(full([], PROTOCLIP.logitScaleInit)));
  }

  /** Projected, normalised features of CLIP embeddings [B, embed] → [B, outDim] each. */
  project(img: Tensor, txt: Tensor): { img: Tensor; txt: Tensor } {
    return {
      img: normalize(this.image.forward(img)),
      txt: normalize(this.text.forward(txt)),
    };
  }

  /** Trainable tensors by name, as the authors' state dict names them. */
  params(): Map<string, Tensor> {
    const out = new Map<string, Tensor>();
    for (const [n, t] of this.image.params) out.set(`image_projection_head.${n}`, t);
    for (const [n, t] of this.text.params) out.set(`text_projection_head.${n}`, t);
    out.set("logit_scale_proto", this.logitScaleProto);
    return out;
  }

  set training(on: boolean) {
    this.image.training = on;
    this.text.training = on;
  }

  /** After each optimiser step: logit_scale_proto into [0, ln 100]. */
  clamp() {
    clampLogitScale(this.logitScaleProto);
  }

  dispose() {
    this.image.dispose();
    this.text.dispose();
    this.logitScaleProto.dispose();
  }
}

function oneElement(op: string, t: Tensor, name: string) {
  t.buf(op);
  if (t.size !== 1 || t.dtype !== "f32") {
    throw new EngineError(op, `${name} must be one f32 value, got ${t.dtype} ${fmtShape(t.shape)}`);
  }
}

/** exp(min(s, ln 100)): the multiplier of a log-scale parameter, capped at 100. */
export function logitScaleValue(s: Tensor): Tensor {
  oneElement("logitScaleValue", s, "logit scale");
  return exp(clamp(s, -Infinity, PROTOCLIP.logitScaleMax));
}

/** Clamps a log-scale parameter in place to [0, ln 100] (CLIP's rule, after each step). */
export function clampLogitScale(s: Tensor) {
  oneElement("clampLogitScale", s, "logit scale");
  noGrad(() => {
    const c = launchMap("clamp", [s], [0, PROTOCLIP.logitScaleMax]);
    launchMap("copy", [c], [], "f32", s);
    c.dispose();
  });
}

// ---------------------------------------------------------------------------------------------
// InfoNCE

function pairOf(op: string, a: Tensor, b: Tensor, an: string, bn: string) {
  a.buf(op);
  b.buf(op);
  if (
    a.rank !== 2 || b.rank !== 2 || a.shape[1] !== b.shape[1] || a.dtype === "i32" ||
    b.dtype === "i32"
  ) {
    throw new EngineError(
      op,
      `${an} and ${bn} must be float [B, D] / [*, D] matrices, got ${a.dtype} ${
        fmtShape(a.shape)
      } and ${b.dtype} ${fmtShape(b.shape)}`,
    );
  }
}

/**
 * CLIP's loss: symmetric cross-entropy of exp(logitScale)·cos(img_i, txt_j) over the batch, the
 * matching pair the target, image→text and text→image averaged. logitScale is the log-scale
 * parameter (shape [] or [1]), capped at ln 100. `normalize: false` when the features already are.
 *
 * `positives`: a group id per pair (a class label, say); pairs of one group are positives of each
 * other, the target of row i uniform over its group (UniCL's image-text-label target). All ids
 * distinct is plain InfoNCE.
 */
export function infoNCE(
  img: Tensor,
  txt: Tensor,
  logitScale: Tensor,
  { normalize: norm = true, positives }: { normalize?: boolean; positives?: ArrayLike<number> } =
    {},
): Tensor {
  const op = "infoNCE";
  pairOf(op, img, txt, "img", "txt");
  if (img.shape[0] !== txt.shape[0]) {
    throw new EngineError(
      op,
      `needs as many images as texts, got ${fmtShape(img.shape)} and ${fmtShape(txt.shape)}`,
    );
  }
  oneElement(op, logitScale, "logitScale");
  const B = img.shape[0];
  if (positives && positives.length !== B) {
    throw new EngineError(op, `positives has ${positives.length} group ids for a batch of ${B}`);
  }
  const a = norm ? normalize(img) : img, b = norm ? normalize(txt) : txt;
  const logits = mul(matmul(a, b, { transB: true }), logitScaleValue(logitScale));
  const target = positives ? groupTargets(positives) : null;
  const labels = target ?? Int32Array.from({ length: B }, (_, i) => i);
  // the group target is symmetric, so it serves both directions
  return affine(add(crossEntropy(logits, labels), crossEntropy(transpose(logits), labels)), 0.5, 0);
}

/**
 * The soft target [B, B] of group ids: row i uniform over the pairs of i's group; null when every
 * id is distinct (then the diagonal is the target).
 */
export function groupTargets(groups: ArrayLike<number>): Tensor | null {
  const B = groups.length, size = new Map<number, number>();
  for (let i = 0; i < B; i++) size.set(groups[i], (size.get(groups[i]) ?? 0) + 1);
  if (size.size === B) return null;
  const t = new Float32Array(B * B);
  for (let i = 0; i < B; i++) {
    const w = 1 / size.get(groups[i])!;
    for (let j = 0; j < B; j++) if (groups[j] === groups[i]) t[i * B + j] = w;
  }
  return tensor(t, [B, B]);
}

// ---------------------------------------------------------------------------------------------
// Episode: clusters, back translation, teacher targets

export interface EpisodeOptions {
  /** Lloyd iterations (default 20). */
  iters?: number;
  /** K-means restarts per modality (default 3). */
  restarts?: number;
  /** Normalise the features before clustering (default true; projected features already are). */
  normalize?: boolean;
  /** K-means metric (default "euclidean", as the authors' faiss K-means). */
  metric?: KmeansMetric;
  /** Teacher temperature τ (default 0.01). */
  temperature?: number;
  /** Prototypical Back Translation (default true); false scores against the other modality's
   * centroids directly. */
  pbt?: boolean;
}

export interface EpisodeClusters {
  img: KmeansResult;
  txt: KmeansResult;
}

function episodeFeatures(op: string, img: Tensor, txt: Tensor, k: number) {
  pairOf(op, img, txt, "image features", "text features");
  if (img.shape[0] !== txt.shape[0]) {
    throw new EngineError(
      op,
      `image features ${fmtShape(img.shape)} and text features ${fmtShape(txt.shape)} must pair up`,
    );
  }
  if (!Number.isInteger(k) || k < 1 || k > img.shape[0]) {
    throw new EngineError(op, `k must be in [1, ${img.shape[0]}] for the episode, got ${k}`);
  }
}

/**
 * K-means separately on the image features and on the text features of an episode [N, D]
 * (normalised first unless told otherwise): image with `seed`, text with `seed + 1`.
 */
export async function episodeClusters(
  imgFeats: Tensor,
  txtFeats: Tensor,
  k: number,
  seed: number,
  opts: EpisodeOptions = {},
): Promise<EpisodeClusters> {
  episodeFeatures("episodeClusters", imgFeats, txtFeats, k);
  return {
    img: await clusterFeatures(imgFeats, k, seed, opts),
    txt: await clusterFeatures(txtFeats, k, seed + 1, opts),
  };
}

async function clusterFeatures(
  x: Tensor,
  k: number,
  seed: number,
  opts: EpisodeOptions,
): Promise<KmeansResult> {
  const { normalize: norm = true, metric = "euclidean" } = opts;
  const xs = norm ? noGrad(() => scope(() => normalize(x))) : x;
  try {
    return await kmeans(xs, k, {
      seed,
      iters: opts.iters ?? PROTOCLIP.kmeansIters,
      restarts: opts.restarts ?? PROTOCLIP.kmeansRestarts,
      metric,
    });
  } finally {
    if (xs !== x) xs.dispose();
  }
}

/**
 * Prototypical Back Translation: the teacher's clusters rebuilt in the student's space, the mean
 * of the student features [N, D] of each teacher cluster (labels i32 [N]) → [k, D]; a cluster
 * without members gives zeros. Deterministic (engine/ops/kmeans.ts segmentMean).
 */
export function backTranslate(studentFeats: Tensor, teacherLabels: Tensor, k: number): Tensor {
  return segmentMean(studentFeats, teacherLabels, k);
}

/** The teacher's soft targets by cluster: row k = softmax_j(c_k · c_j / τ) over the teacher
 * centroids c [k, D] → [k, k]. */
export function teacherTargets(
  teacherCentroids: Tensor,
  temperature: number = PROTOCLIP.teacherTemperature,
): Tensor {
  const op = "teacherTargets";
  teacherCentroids.buf(op);
  if (teacherCentroids.rank !== 2 || teacherCentroids.dtype === "i32") {
    throw new EngineError(
      op,
      `centroids must be a float [k, D] matrix, got ${teacherCentroids.dtype} ${
        fmtShape(teacherCentroids.shape)
      }`,
    );
  }
  if (!(temperature > 0)) throw new EngineError(op, `temperature must be > 0, got ${temperature}`);
  const c = teacherCentroids;
  return softmax(affine(matmul(c, c, { transB: true }), 1 / temperature, 0));
}

/** The soft target of each sample: the teacher table's row of its cluster (labels i32 [B]). */
export function softTargets(
  teacherCentroids: Tensor,
  labels: Tensor,
  temperature: number = PROTOCLIP.teacherTemperature,
): Tensor {
  return indexSelect(teacherTargets(teacherCentroids, temperature), 0, labels);
}

/** Everything the training pass over one episode needs; constants (no gradient). */
export interface Episode {
  k: number;
  clusters: EpisodeClusters;
  /** Prototypes the image student scores against [k, D]: image-space prototypes of the text
   * clusters (PBT), or the text centroids. */
  imgPrototypes: Tensor;
  /** Prototypes the text student scores against [k, D]. */
  txtPrototypes: Tensor;
  /** Soft targets of the image student by text cluster [k, k] (the text teacher). */
  imgTargetTable: Tensor;
  /** Soft targets of the text student by image cluster [k, k] (the image teacher). */
  txtTargetTable: Tensor;
  dispose(): void;
}

/**
 * Steps 2 of an episode: clusters of both modalities, back-translated prototypes and the teacher
 * tables, from the projected features of the whole episode [N, D] (gradients are not taken).
 */
export async function buildEpisode(
  imgFeats: Tensor,
  txtFeats: Tensor,
  k: number,
  seed: number,
  opts: EpisodeOptions = {},
): Promise<Episode> {
  episodeFeatures("buildEpisode", imgFeats, txtFeats, k);
  const clusters = await episodeClusters(imgFeats, txtFeats, k, seed, opts);
  const { pbt = true, temperature = PROTOCLIP.teacherTemperature } = opts;
  const norm = opts.normalize ?? true;
  const parts = noGrad(() =>
    scope(() => {
      const fi = norm ? normalize(imgFeats) : imgFeats, ft = norm ? normalize(txtFeats) : txtFeats;
      const out = {
        imgPrototypes: pbt
          ? backTranslate(fi, clusters.txt.labels, k)
          : launchMap("copy", [clusters.txt.centroids]),
        txtPrototypes: pbt
          ? backTranslate(ft, clusters.img.labels, k)
          : launchMap("copy", [clusters.img.centroids]),
        imgTargetTable: teacherTargets(clusters.txt.centroids, temperature),
        txtTargetTable: teacherTargets(clusters.img.centroids, temperature),
      };
      return out;
    })
  );
  const all = [
    clusters.img.centroids,
    clusters.img.labels,
    clusters.img.initIndices,
    clusters.txt.centroids,
    clusters.txt.labels,
    clusters.txt.initIndices,
    ...Object.values(parts),
  ];
  for (const t of all) if (t) own(t);
  return {
    k,
    clusters,
    ...parts,
    dispose: () => all.forEach((t) => t?.dispose()),
  };
}

export interface ProtoTargets {
  /** Target of the image student: soft [B, k] (or i32 [B] hard labels). */
  img: Tensor;
  /** Target of the text student: soft [B, k] (or i32 [B] hard labels). */
  txt: Tensor;
}

/** The soft targets of a batch, given each sample's position in the episode (i32 [B]). */
export function episodeTargets(ep: Episode, index: Tensor): ProtoTargets {
  return noGrad(() =>
    scope(() => ({
      img: indexSelect(ep.imgTargetTable, 0, indexSelect(ep.clusters.txt.labels, 0, index)),
      txt: indexSelect(ep.txtTargetTable, 0, indexSelect(ep.clusters.img.labels, 0, index)),
    }))
  );
}

// ---------------------------------------------------------------------------------------------
// Prototype-level losses

/**
 * L_proto: cross-entropy of logit_scale_proto · f · Pᵀ with the teacher's target, image→text and
 * text→image averaged. img, txt [B, D] projected features (normalised here unless
 * `normalize: false`); prototypes {img [kT, D], txt [kI, D]}; targets soft [B, k] or i32 [B];
 * logitScaleProto the log-scale, capped at ln 100.
 */
export function protoLoss(
  img: Tensor,
  txt: Tensor,
  prototypes: { img: Tensor; txt: Tensor },
  targets: ProtoTargets,
  logitScaleProto: Tensor,
  { normalize: norm = true }: { normalize?: boolean } = {},
): Tensor {
  const op = "protoLoss";
  pairOf(op, img, prototypes.img, "image features", "image-space prototypes");
  pairOf(op, txt, prototypes.txt, "text features", "text-space prototypes");
  oneElement(op, logitScaleProto, "logit_scale_proto");
  const scale = logitScaleValue(logitScaleProto);
  const direction = (f: Tensor, p: Tensor, t: Tensor) =>
    crossEntropy(mul(matmul(norm ? normalize(f) : f, p, { transB: true }), scale), t);
  return affine(
    add(direction(img, prototypes.img, targets.img), direction(txt, prototypes.txt, targets.txt)),
    0.5,
    0,
  );
}

/** The prototypes of ProtoCLIP's episode as protoLoss takes them. */
export const episodePrototypes = (ep: Episode) => ({
  img: ep.imgPrototypes,
  txt: ep.txtPrototypes,
});

export interface ExternalTeacher {
  k: number;
  clusters: KmeansResult;
  /** The external clusters back-translated into image space and into text space [k, D]. */
  img: Tensor;
  txt: Tensor;
  dispose(): void;
}

/**
 * The external teacher of an episode: K-means on the teacher's features [N, E] (seed), its
 * clusters back-translated into the image and the text space of the projected features [N, D].
 */
export async function externalPrototypes(
  imgFeats: Tensor,
  txtFeats: Tensor,
  teacherFeats: Tensor,
  k: number,
  seed: number,
  opts: EpisodeOptions = {},
): Promise<ExternalTeacher> {
  episodeFeatures("externalPrototypes", imgFeats, txtFeats, k);
  if (teacherFeats.rank !== 2 || teacherFeats.shape[0] !== imgFeats.shape[0]) {
    throw new EngineError(
      "externalPrototypes",
      `teacher features ${fmtShape(teacherFeats.shape)} must be [${imgFeats.shape[0]}, E]`,
    );
  }
  const clusters = await clusterFeatures(teacherFeats, k, seed, opts);
  const norm = opts.normalize ?? true;
  const protos = noGrad(() =>
    scope(() => {
      const fi = norm ? normalize(imgFeats) : imgFeats, ft = norm ? normalize(txtFeats) : txtFeats;
      const out = {
        img: backTranslate(fi, clusters.labels, k),
        txt: backTranslate(ft, clusters.labels, k),
      };
      return out;
    })
  );
  const all = [clusters.centroids, clusters.labels, clusters.initIndices, protos.img, protos.txt];
  for (const t of all) if (t) own(t);
  return { k, clusters, ...protos, dispose: () => all.forEach((t) => t?.dispose()) };
}

/** L_external: protoLoss against the external prototypes with the hard labels of the batch
 * (i32 [B]), both directions averaged. */
export function externalLoss(
  img: Tensor,
  txt: Tensor,
  teacher: { img: Tensor; txt: Tensor },
  labels: Tensor,
  logitScaleProto: Tensor,
  opts: { normalize?: boolean } = {},
): Tensor {
  return protoLoss(img, txt, teacher, { img: labels, txt: labels }, logitScaleProto, opts);
}

// ---------------------------------------------------------------------------------------------
// Schedule and total

export interface ProtoclipWeights {
  infoNCE: number;
  proto: number;
  external: number;
}

/** The loss weights of an epoch (0-based): InfoNCE only for the first `warmupEpochs` (default 1),
 * then all terms with weight 1 (or the given ones). */
export function protoclipWeights(
  epoch: number,
  { warmupEpochs = PROTOCLIP.warmupEpochs, infoNCE = 1, proto = 1, external = 1 }:
    & Partial<ProtoclipWeights>
    & { warmupEpochs?: number } = {},
): ProtoclipWeights {
  if (!Number.isInteger(epoch) || epoch < 0) {
    throw new EngineError("protoclipWeights", `epoch must be an integer ≥ 0, got ${epoch}`);
  }
  const warm = epoch < warmupEpochs;
  return { infoNCE, proto: warm ? 0 : proto, external: warm ? 0 : external };
}

export interface ProtoclipBatch {
  /** CLIP embeddings [B, E] of the images and texts (InfoNCE). */
  img: Tensor;
  txt: Tensor;
  /** CLIP's log-scale parameter. */
  logitScale: Tensor;
  /** Projected, normalised features [B, D] (`ProtoHeads.project`). */
  imgProj?: Tensor;
  txtProj?: Tensor;
  logitScaleProto?: Tensor;
  /** The episode and the batch's positions in it (i32 [B]). */
  episode?: Episode;
  index?: Tensor;
  external?: ExternalTeacher;
}

/** The total loss of a batch, Σ weight · term, and the unweighted terms; a term with weight 0 is
 * not computed (L_external only with an external teacher). */
export function protoclipLoss(
  b: ProtoclipBatch,
  w: ProtoclipWeights,
): { loss: Tensor; terms: Record<string, Tensor> } {
  const need = (term: string, fields: (keyof ProtoclipBatch)[]) => {
    const missing = fields.filter((f) => !b[f]);
    if (missing.length) {
      throw new EngineError("protoclipLoss", `${term} needs ${missing.join(", ")} in the batch`);
    }
  };
  const terms: Record<string, Tensor> = {};
  terms.infoNCE = infoNCE(b.img, b.txt, b.logitScale);
  let loss = w.infoNCE === 1 ? terms.infoNCE : affine(terms.infoNCE, w.infoNCE, 0);
  const proj = ["imgProj", "txtProj", "logitScaleProto", "index"] as const;
  if (w.proto !== 0) {
    need("L_proto", [...proj, "episode"]);
    const t = episodeTargets(b.episode!, b.index!);
    terms.proto = protoLoss(
      b.imgProj!,
      b.txtProj!,
      episodePrototypes(b.episode!),
      t,
      b.logitScaleProto!,
      {
        normalize: false,
      },
    );
    loss = add(loss, affine(terms.proto, w.proto, 0));
  }
  if (w.external !== 0 && b.external) {
    need("L_external", [...proj]);
    const labels = noGrad(() => indexSelect(b.external!.clusters.labels, 0, b.index!));
    terms.external = externalLoss(b.imgProj!, b.txtProj!, b.external, labels, b.logitScaleProto!, {
      normalize: false,
    });
    loss = add(loss, affine(terms.external, w.external, 0));
  }
  return { loss, terms };
}

// ---------------------------------------------------------------------------------------------
// The pretraining loop's extension (pipeline/pretrain.ts loads it for --proto)

export interface ProtoclipExtensionOptions {
  seed?: number;
  /** Clusters per modality (default 32, at most the episode's pairs). */
  k?: number;
  /** Pairs per episode (default: the whole epoch). */
  episodeSize?: number;
  /** Projection size (default 128) and MLP depth / width (default 0: a Linear). */
  projectionDim?: number;
  hiddenLayers?: number;
  hiddenDim?: number;
  /** InfoNCE-only epochs at the start (default 1). */
  warmupEpochs?: number;
  /** Weight of L_proto (default 1). */
  protoWeight?: number;
  /** Teacher temperature, PBT switch, K-means iterations and restarts (EpisodeOptions). */
  temperature?: number;
  pbt?: boolean;
  iters?: number;
  restarts?: number;
}

/** What the extension reads of pretrain.ts's episode context (structurally its EpisodeContext). */
export interface ProtoclipEpisodeContext {
  epoch: number;
  episode: number;
  /** Pair indices of the episode. */
  indices: Int32Array;
  /** CLIP features [n, embed] of the given pairs, without tape; the caller disposes them. */
  encode(indices: Int32Array): { image: Tensor; text: Tensor };
}

/** What the extension reads of a batch (structurally pretrain.ts's BatchContext). */
export interface ProtoclipBatchContext {
  /** CLIP features [B, embed], before normalisation, on the tape. */
  image: Tensor;
  text: Tensor;
  /** Pair indices of the batch. */
  indices: Int32Array;
  epoch: number;
}

/**
 * ProtoCLIP as an extension of the CLIP pretraining loop (pipeline/pretrain.ts's
 * PretrainExtension): the heads and logit_scale_proto as extra parameters; before each episode
 * (from the second epoch) the episode's features are projected with the heads in eval mode and
 * clustered (buildEpisode); each batch adds the weighted L_proto term; logit_scale_proto is
 * clamped after every step. The loop computes InfoNCE itself. Episode seeds derive from
 * (seed, epoch, episode).
 */
export function protoclipExtension(
  config: { embedDim: number },
  options: ProtoclipExtensionOptions = {},
) {
  const {
    seed = 0,
    k = 32,
    projectionDim = PROTOCLIP.projectionDim,
    hiddenLayers = 0,
    hiddenDim = 2048,
    warmupEpochs = PROTOCLIP.warmupEpochs,
    protoWeight = 1,
    temperature = PROTOCLIP.teacherTemperature,
    pbt = true,
    iters = PROTOCLIP.kmeansIters,
    restarts = PROTOCLIP.kmeansRestarts,
  } = options;
  const heads = new ProtoHeads(config.embedDim, {
    outDim: projectionDim,
    hiddenLayers,
    hiddenDim,
    seed,
  });
  let episode: Episode | null = null;
  let position = new Map<number, number>();
  const drop = () => {
    episode?.dispose();
    episode = null;
  };
  const weights = (epoch: number) => protoclipWeights(epoch, { warmupEpochs, proto: protoWeight });
  return {
    name: "protoclip",
    params: heads.params(),
    episodeSize: options.episodeSize,
    async episode(ctx: ProtoclipEpisodeContext) {
      drop();
      if (weights(ctx.epoch).proto === 0) return;
      const f = ctx.encode(ctx.indices);
      heads.training = false;
      const p = noGrad(() => scope(() => heads.project(f.image, f.text)));
      heads.training = true;
      f.image.dispose();
      f.text.dispose();
      try {
        const n = ctx.indices.length;
        episode = await buildEpisode(
          p.img,
          p.txt,
          Math.min(k, n),
          (seed * 4096 + ctx.epoch) * 4096 + ctx.episode,
          {
            temperature,
            pbt,
            iters,
            restarts,
          },
        );
      } finally {
        p.img.dispose();
        p.txt.dispose();
      }
      position = new Map(Array.from(ctx.indices, (pair, i) => [pair, i]));
    },
    loss(ctx: ProtoclipBatchContext): Record<string, Tensor> {
      const w = weights(ctx.epoch).proto;
      if (w === 0 || !episode) return {};
      const at = Int32Array.from(ctx.indices, (pair) => {
        const i = position.get(pair);
        if (i === undefined) {
          throw new EngineError("protoclip", `pair ${pair} of the batch is not in the episode`);
        }
        return i;
      });
      const p = heads.project(ctx.image, ctx.text);
      const targets = episodeTargets(episode, tensor(at, [at.length], "i32"));
      const l = protoLoss(
        p.img,
        p.txt,
        episodePrototypes(episode),
        targets,
        heads.logitScaleProto,
        {
          normalize: false,
        },
      );
      return { proto: w === 1 ? l : affine(l, w, 0) };
    },
    afterStep() {
      heads.clamp();
    },
    describe(): Record<string, unknown> {
      return {
        k,
        episodeSize: options.episodeSize ?? null,
        projectionDim,
        hiddenLayers,
        warmupEpochs,
        protoWeight,
        temperature,
        pbt,
        kmeans: { iters, restarts, init: "kmeans++" },
      };
    },
    dispose() {
      drop();
      heads.dispose();
    },
  };
}

// ---------------------------------------------------------------------------------------------
// float64 references

function rows(h: HostTensor, normalise: boolean): number[][] {
  const [n, d] = h.shape;
  return Array.from({ length: n }, (_, i) => {
    const r = Array.from(h.data.subarray(i * d, i * d + d));
    if (!normalise) return r;
    const s = Math.max(Math.sqrt(r.reduce((a, v) => a + v * v, 0)), 1e-12);
    return r.map((v) => v / s);
  });
}

const dot = (a: number[], b: number[]) => a.reduce((s, v, i) => s + v * b[i], 0);
const cap = (s: number) => Math.exp(Math.min(s, PROTOCLIP.logitScaleMax));

/** Mean over rows of −Σ_c q_c log softmax(z)_c. */
function cpuCrossEntropy(logits: number[][], targets: number[][]): number {
  let total = 0;
  for (let i = 0; i < logits.length; i++) {
    const z = logits[i];
    const m = Math.max(...z);
    const lse = m + Math.log(z.reduce((s, v) => s + Math.exp(v - m), 0));
    total += targets[i].reduce((s, q, c) => s + q * (lse - z[c]), 0);
  }
  return total / logits.length;
}

const oneHot = (labels: ArrayLike<number>, k: number) =>
  Array.from(labels, (l) => Array.from({ length: k }, (_, c) => (c === l ? 1 : 0)));

/** float64 InfoNCE (logitScale: the log-scale value). */
export function cpuInfoNCE(
  img: HostTensor,
  txt: HostTensor,
  logitScale: number,
  normalise = true,
  positives?: ArrayLike<number>,
): number {
  const a = rows(img, normalise), b = rows(txt, normalise);
  const s = cap(logitScale);
  const L = a.map((x) => b.map((y) => s * dot(x, y)));
  const Lt = b.map((_, j) => a.map((_, i) => L[i][j]));
  // the target of row i: uniform over the pairs sharing its group (each pair its own group)
  const g = positives ?? a.map((_, i) => i);
  const I = a.map((_, i) => {
    const same = a.map((_, j): number => (g[j] === g[i] ? 1 : 0));
    const n = same.reduce((x, y) => x + y, 0);
    return same.map((v) => v / n);
  });
  return 0.5 * (cpuCrossEntropy(L, I) + cpuCrossEntropy(Lt, I));
}

/** float64 segment means [k, D] (labels outside [0, k) count nowhere; empty rows are zeros). */
export function cpuBackTranslate(x: HostTensor, labels: ArrayLike<number>, k: number): HostTensor {
  const [n, d] = x.shape;
  const out = new Float64Array(k * d), cnt = new Float64Array(k);
  for (let i = 0; i < n; i++) {
    const l = labels[i];
    if (l < 0 || l >= k) continue;
    cnt[l]++;
    for (let c = 0; c < d; c++) out[l * d + c] += x.data[i * d + c];
  }
  for (let j = 0; j < k * d; j++) out[j] /= Math.max(cnt[Math.floor(j / d)], 1);
  return { shape: [k, d], data: out };
}

/** float64 teacher table [k, k]. */
export function cpuTeacherTargets(
  centroids: HostTensor,
  temperature: number = PROTOCLIP.teacherTemperature,
): HostTensor {
  const c = rows(centroids, false);
  const data = c.flatMap((a) => {
    const z = c.map((b) => dot(a, b) / temperature);
    const m = Math.max(...z);
    const e = z.map((v) => Math.exp(v - m));
    const s = e.reduce((x, y) => x + y, 0);
    return e.map((v) => v / s);
  });
  return { shape: [c.length, c.length], data: Float64Array.from(data) };
}

/** float64 L_proto; targets soft HostTensors [B, k] or hard labels. */
export function cpuProtoLoss(
  img: HostTensor,
  txt: HostTensor,
  prototypes: { img: HostTensor; txt: HostTensor },
  targets: { img: HostTensor | ArrayLike<number>; txt: HostTensor | ArrayLike<number> },
  logitScaleProto: number,
  normalise = true,
): number {
  const s = cap(logitScaleProto);
  const direction = (f: HostTensor, p: HostTensor, t: HostTensor | ArrayLike<number>) => {
    const P = rows(p, false);
    const logits = rows(f, normalise).map((x) => P.map((y) => s * dot(x, y)));
    const q = "shape" in t ? rows(t, false) : oneHot(t, P.length);
    return cpuCrossEntropy(logits, q);
  };
  return 0.5 *
    (direction(img, prototypes.img, targets.img) + direction(txt, prototypes.txt, targets.txt));
}
