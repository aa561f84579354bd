/**
 * The trainer: runs a method's graph (load → views → encode → prompt → loss → step) over a split,
 * with a progress bar per epoch, a checkpoint per epoch (trained parameters, optimiser state, and
 * everything needed to rebuild the prompts), `--resume`, and model selection on validation or the
 * last epoch. The test split stays sealed throughout: only `deno task eval` reads it.
 */
import { DEFAULT_TEXT_BUDGET_GIB, textTape } from "./prompts.ts";
import { backward } from "../engine/autograd.ts";
import { E, initEngine } from "../engine/device.ts";
import { scope, type Tensor, tensor } from "../engine/tensor.ts";
import { indexSelect } from "../engine/ops/indexing.ts";
import { narrow, squeeze } from "../engine/ops/views.ts";
import {
  AdamW,
  coopSchedule,
  type Optimizer,
  type OptimizerStateDict,
  SGD,
} from "../engine/optim.ts";
import type { CLIP } from "../model/clip.ts";
import type { RGBImage } from "../model/image.ts";
import { loadClip } from "../model/load.ts";
import { sha256File } from "../model/fetch.ts";
import type { Tokenizer } from "../model/tokenizer.ts";
import { readSafetensors, saveSafetensors } from "../model/safetensors.ts";
import { fromFloat32, type StateDict, toFloat32 } from "../model/weights.ts";
import type { ViewKind, ViewOptions } from "./augment.ts";
import {
  countParams,
  type FeatureSet,
  type Method,
  type MethodInstance,
  resolveOptions,
} from "./method.ts";
import { getMethod } from "./methods/index.ts";
import { predictLogits } from "./metrics.ts";
import { hostRng } from "../engine/ops/random.ts";
import {
  type DataSpec,
  disposeFeatureSet,
  featureSet,
  imageSource,
  loadData,
  viewsStage,
} from "./stages.ts";
import { loadSplit, saveSplit, type Split, type SplitItem } from "./splits.ts";
import type { Dataset } from "./data.ts";

export interface TrainConfig extends DataSpec {
  method: string;
  options?: Record<string, unknown>;
  model: string;
  vocab?: string;
  out: string;
  epochs?: number;
  batch?: number;
  /** The training views' RandomResizedCrop area range (default (0.08, 1); see ViewOptions). */
  cropScale?: [number, number];
  lr?: number;
  /** "last" (the papers' protocol) or "val" (keep the epoch with the best validation accuracy). */
  select?: "last" | "val";
  /** Augmented passes whose frozen features are cached (methods with frozen image features). */
  cachePasses?: number;
  /** GiB of the text tower's tape one pass may hold (default 4; see prompts.ts `textTape`). */
  textBudget?: number;
  resume?: boolean;
  /** Print the graph and trained parameter counts, then stop. */
  dryRun?: boolean;
  /** Stop after this many epochs (the schedule stays that of `epochs`; resume continues). */
  stopAfter?: number;
  quiet?: boolean;
}

export interface EpochRecord {
  epoch: number;
  lr: number;
  loss: number;
  terms: Record<string, number>;
  valAccuracy: number;
  seconds: number;
  imagesPerSecond: number;
}

export interface RunInfo {
  format: "clipkit-run/1";
  config: TrainConfig;
  method: string;
  options: Record<string, unknown>;
  classnames: string[];
  backbone: { file: string; sha256: string };
  split: { file: string; checksum: string };
  epochs: number;
  history: EpochRecord[];
  selectedEpoch: number;
  /** Accuracy of the final model on the validation split (held-out images of the training domains). */
  valAccuracy: number | null;
  methodState: Record<string, number>;
  device: string;
}

const CKPT = "checkpoint.safetensors";
const BEST = "best.safetensors";

/** Everything a run needs, built and validated before any training step. */
export interface Session {
  config: TrainConfig;
  method: Method;
  options: Record<string, unknown>;
  model: CLIP;
  tokenizer: Tokenizer;
  dataset: Dataset;
  split: Split;
  backbone: { file: string; sha256: string };
  instance: MethodInstance;
}

/** load stage + model + method; throws a clear error for any bad flag before training starts. */
export async function openSession(config: TrainConfig): Promise<Session> {
  const method = getMethod(config.method);
  const options = resolveOptions(method, config.options ?? {});
  const { dataset, split: drawn } = loadData(config);
  for (const [i, c] of drawn.classnames.entries()) {
    if (!drawn.train.some((it) => it.label === i)) {
      throw new Error(`class "${c}" has no training images in ${config.data} (${drawn.protocol})`);
    }
  }
  await Deno.mkdir(config.out, { recursive: true });
  const splitFile = `${config.out}/split.json`;
  let split = drawn;
  if (config.resume && (await exists(splitFile))) {
    split = await loadSplit(splitFile);
    if (split.checksum !== drawn.checksum) {
      throw new Error(
        `${splitFile}: the saved split differs from the one these flags draw (${split.checksum} vs ${drawn.checksum})`,
      );
    }
  } else await saveSplit(splitFile, drawn);
  split.seal();
  const { model, tokenizer, file } = await loadClip(config.model, config.vocab);
  const backbone = { file, sha256: await sha256File(file) };
  const instance = method.create({
    model,
    tokenizer,
    classnames: [...split.classnames],
    options,
    seed: config.seed,
  });
  return { config, method, options, model, tokenizer, dataset, split, backbone, instance };
}

export function describe(s: Session): string {
  const lines = [
    `method ${s.method.name} (${s.method.paper})`,
    `options ${JSON.stringify(s.options)}`,
    "graph:",
  ];
  for (const st of s.method.graph(s.options)) {
    lines.push(`  ${st.stage.padEnd(7)} ${st.what}${st.with ? ` ${JSON.stringify(st.with)}` : ""}`);
  }
  const counts = countParams(s.instance.params);
  const total = Object.values(counts).reduce((a, b) => a + b, 0);
  lines.push(`trained parameters: ${total.toLocaleString("en")}`);
  for (const [part, n] of Object.entries(counts)) {
    lines.push(`  ${part.padEnd(20)} ${n.toLocaleString("en")}`);
  }
  lines.push(
    `data ${s.config.data}: ${s.split.protocol}, ${s.split.classnames.length} classes, ` +
      `${s.split.train.length} train / ${s.split.val.length} val, test sealed`,
  );
  return lines.join("\n");
}

function makeOptimizer(m: Method, params: Tensor[], lr: number): Optimizer | null {
  const d = m.defaults;
  if (d.optimizer === "none" || !params.length) return null;
  if (d.optimizer === "adamw") {
    return new AdamW(params, { lr, weightDecay: d.weightDecay ?? 0.01, eps: d.eps ?? 1e-8 });
  }
  return new SGD(params, { lr, momentum: d.momentum ?? 0, weightDecay: d.weightDecay ?? 0 });
}

// ----- checkpoints -----------------------------------------------------------------------------

async function saveCheckpoint(
  path: string,
  s: Session,
  opt: Optimizer | null,
  epoch: number,
  history: EpochRecord[],
) {
  const dict: StateDict = new Map();
  const reads: Promise<unknown>[] = [];
  for (const [name, t] of s.instance.params) {
    reads.push(
      t.data().then((d) => dict.set(`param.${name}`, fromFloat32(d as Float32Array, t.shape))),
    );
  }
  await Promise.all(reads);
  let optMeta:
    | Omit<OptimizerStateDict, "state"> & { state: ({ shape: number[]; step: number } | null)[] }
    | null = null;
  if (opt) {
    const sd = await opt.stateDict();
    sd.state.forEach((st, i) => {
      if (st) {
        for (const [k, v] of Object.entries(st.tensors)) {
          dict.set(`optim.${i}.${k}`, fromFloat32(v, st.shape));
        }
      }
    });
    optMeta = {
      ...sd,
      state: sd.state.map((st) => (st ? { shape: st.shape, step: st.step } : null)),
    };
  }
  const meta = {
    format: "clipkit-checkpoint/1",
    method: s.method.name,
    options: s.options,
    classnames: s.split.classnames,
    backbone: s.backbone,
    split: s.split.checksum,
    epoch,
    optimizer: optMeta,
    methodState: s.instance.state?.() ?? {},
    history,
  };
  await saveSafetensors(path, dict, { clipkit: JSON.stringify(meta) });
}

export interface Checkpoint {
  meta: {
    method: string;
    options: Record<string, unknown>;
    classnames: string[];
    backbone: { file: string; sha256: string };
    split: string;
    epoch: number;
    optimizer:
      | (Omit<OptimizerStateDict, "state"> & {
        state: ({ shape: number[]; step: number } | null)[];
      })
      | null;
    methodState: Record<string, number>;
    history: EpochRecord[];
  };
  params: Map<string, Float32Array>;
  optimizerState: OptimizerStateDict | null;
}

export async function readCheckpoint(path: string): Promise<Checkpoint> {
  const st = await readSafetensors(path);
  const raw = st.metadata.clipkit;
  if (!raw) throw new Error(`${path}: not a clipkit checkpoint (no "clipkit" metadata)`);
  const meta = JSON.parse(raw) as Checkpoint["meta"];
  const params = new Map<string, Float32Array>();
  for (const [k, w] of st.tensors) if (k.startsWith("param.")) params.set(k.slice(6), toFloat32(w));
  let optimizerState: OptimizerStateDict | null = null;
  if (meta.optimizer) {
    optimizerState = {
      ...meta.optimizer,
      state: meta.optimizer.state.map((s, i) => {
        if (!s) return null;
        const tensors: Record<string, Float32Array> = {};
        for (const [k, w] of st.tensors) {
          const pre = `optim.${i}.`;
          if (k.startsWith(pre)) tensors[k.slice(pre.length)] = toFloat32(w);
        }
        return { shape: s.shape, step: s.step, tensors };
      }),
    };
  }
  return { meta, params, optimizerState };
}

/** Refuses a checkpoint made for another backbone, method or class list, naming the difference. */
export function checkCompatible(
  ck: Checkpoint,
  s: Pick<Session, "backbone" | "method" | "split">,
  file: string,
) {
  if (ck.meta.backbone.sha256 !== s.backbone.sha256) {
    throw new Error(
      `${file} was trained on another backbone (${ck.meta.backbone.file}, sha256 ${
        ck.meta.backbone.sha256.slice(0, 12)
      }…), ` +
        `not ${s.backbone.file} (sha256 ${s.backbone.sha256.slice(0, 12)}…)`,
    );
  }
  if (ck.meta.method !== s.method.name) {
    throw new Error(`${file} holds a ${ck.meta.method} run, not ${s.method.name}`);
  }
  if (ck.meta.split !== s.split.checksum) {
    throw new Error(`${file} was trained on another split (${ck.meta.split})`);
  }
}

// ----- progress --------------------------------------------------------------------------------

function progress(quiet: boolean) {
  const tty = !quiet && Deno.stderr.isTerminal();
  const enc = new TextEncoder();
  let last = performance.now();
  return (line: string, done: boolean) => {
    if (quiet) return;
    if (tty) Deno.stderr.writeSync(enc.encode(`\r\x1b[2K${line}${done ? "\n" : ""}`));
    else if (done || performance.now() - last > 30_000) {
      // a log file gets the finished lines, and a line every 30 s of a long stage
      last = performance.now();
      console.error(line);
    }
  };
}

/** A featureSet progress line: images encoded, rate and time left. */
function encodeLine(say: (line: string, done: boolean) => void, what: string) {
  const t0 = performance.now();
  return (done: number, total: number) => {
    const s = (performance.now() - t0) / 1000, ips = done / Math.max(s, 1e-9);
    say(
      `encoding ${what} ${bar(done / total)} ${done}/${total} images ${ips.toFixed(1)} img/s ${
        done === total ? `in ${fmtTime(s)}` : `ETA ${fmtTime((total - done) / ips)}`
      }`,
      done === total,
    );
  };
}

function bar(frac: number, width = 20) {
  const n = Math.round(frac * width);
  return `[${"#".repeat(n)}${".".repeat(width - n)}]`;
}

// ----- evaluation on validation ----------------------------------------------------------------

/** Accuracy of the method on labelled items (cached features when given). */
export async function accuracy(
  inst: MethodInstance,
  model: CLIP,
  items: readonly SplitItem[],
  image: (it: SplitItem) => RGBImage,
  feats?: FeatureSet,
): Promise<{ correct: number; total: number; predictions: Int32Array; probs: Float32Array }> {
  const r = await predictLogits(inst, model, items, image, feats);
  let correct = 0;
  items.forEach((it, i) => (correct += +(r.predictions[i] === it.label)));
  return { correct, total: items.length, predictions: r.predictions, probs: r.probs };
}

// ----- the loop --------------------------------------------------------------------------------

export async function train(config: TrainConfig): Promise<RunInfo> {
  await initEngine();
  const s = await openSession(config);
  if (config.dryRun) {
    console.log(describe(s));
    s.instance.dispose();
    s.model.dispose();
    return runInfo(s, [], 0, 0);
  }
  const say = progress(!!config.quiet);
  textTape.budgetBytes = (config.textBudget ?? DEFAULT_TEXT_BUDGET_GIB) * 2 ** 30;
  // quiet runs take no progress, so the encoder need not wait for each batch to count it
  const encodeProgress = (what: string) => config.quiet ? undefined : encodeLine(say, what);
  const m = s.method;
  const epochs = config.epochs ?? m.defaults.epochs;
  const batchSize = config.batch ?? m.defaults.batch;
  const baseLr = config.lr ?? m.defaults.lr;
  const schedule = coopSchedule({
    baseLr,
    epochs: Math.max(epochs, 1),
    warmupEpochs: Math.min(m.defaults.warmupEpochs, Math.max(epochs - 1, 0)),
    warmupLr: m.defaults.warmupLr,
  });
  const image = imageSource(s.dataset);
  const viewOpts: ViewOptions = config.cropScale ? { cropScale: config.cropScale } : {};
  const R = s.model.config.imageResolution;
  const train = s.split.train;
  const classes = s.split.classnames.length;
  const passes = m.frozenImageFeatures
    ? Number(s.options.augmentPasses ?? config.cachePasses ?? 4)
    : 0;

  // encode: frozen features once (methods whose image tower never changes)
  const trainFeats = m.frozenImageFeatures
    ? await featureSet(s.model, train, image, classes, {
      passes,
      seed: config.seed,
      views: viewOpts,
      onProgress: encodeProgress(`training features (${1 + passes} passes)`),
    })
    : null;
  const valFeats = m.frozenImageFeatures
    ? await featureSet(s.model, s.split.val, image, classes, {
      onProgress: encodeProgress("validation features"),
    })
    : null;
  if (trainFeats && s.instance.fit) s.instance.fit(trainFeats);
  // after fit(): training-free parts may become trainable parameters (Tip-Adapter-F's keys)
  const params = [...s.instance.params.values()].filter((p) => p.requiresGrad);
  const opt = makeOptimizer(m, params, baseLr);

  let start = 0;
  let history: EpochRecord[] = [];
  const ckFile = `${config.out}/${CKPT}`;
  if (config.resume && (await exists(ckFile))) {
    const ck = await readCheckpoint(ckFile);
    checkCompatible(ck, s, ckFile);
    s.instance.load(ck.params);
    if (opt && ck.optimizerState) opt.loadStateDict(ck.optimizerState);
    start = ck.meta.epoch + 1;
    history = ck.meta.history;
    say(`resumed ${ckFile} after epoch ${ck.meta.epoch + 1}`, true);
  }

  let bestAcc = -1, selected = Math.max(start - 1, 0);
  for (const h of history) {
    if (h.valAccuracy > bestAcc) [bestAcc, selected] = [h.valAccuracy, h.epoch];
  }
  // Dassl's training loader (drop_last when the set holds a full batch): an incomplete last batch
  // is dropped, so that every step sees batchSize images (GOPro's L_vcl needs two or more); the
  // shuffle differs per epoch, so no image is always left out. A set smaller than one batch is
  // one batch.
  const steps = train.length >= batchSize ? Math.floor(train.length / batchSize) : 1;
  const perEpoch = Math.min(steps * batchSize, train.length);
  const last = Math.min(epochs, config.stopAfter ?? epochs);
  for (let epoch = start; epoch < last && opt; epoch++) {
    const lr = schedule(epoch);
    opt.setLr(lr);
    const order = hostRng(config.seed * 7919 + epoch).shuffle([...train.keys()]);
    const t0 = performance.now();
    let lossSum = 0, seen = 0;
    const termSums: Record<string, number> = {};
    const pending: { loss: Tensor; terms: Record<string, Tensor>; n: number }[] = [];
    const drain = async () => {
      for (const p of pending) {
        lossSum += (await p.loss.item()) * p.n;
        for (const [k, t] of Object.entries(p.terms)) {
          termSums[k] = (termSums[k] ?? 0) + (await t.item()) * p.n;
        }
        p.loss.dispose();
        Object.values(p.terms).forEach((t) => t.dispose());
      }
      pending.length = 0;
    };
    for (let b = 0; b < steps; b++) {
      const ids = order.slice(b * batchSize, (b + 1) * batchSize);
      const step = epoch * steps + b;
      const out = scope(() => {
        const labels = tensor(Int32Array.from(ids, (i) => train[i].label), [ids.length], "i32");
        let views: Record<string, Tensor> = {};
        let features: Tensor | undefined;
        if (trainFeats) {
          const idx = tensor(Int32Array.from(ids), [ids.length], "i32");
          const pass = trainFeats.augmented
            ? squeeze(narrow(trainFeats.augmented, 0, epoch % passes, 1), 0)
            : trainFeats.features;
          features = indexSelect(pass, 0, idx);
        } else {
          views = viewsStage(
            ids.map((i) => image(train[i])),
            m.views as ViewKind[],
            R,
            config.seed,
            step,
            ids,
            viewOpts,
          );
        }
        const r = s.instance.forward({ views, labels, features });
        backward(r.loss);
        opt.step();
        opt.zeroGrad();
        return { loss: r.loss, terms: r.terms };
      });
      pending.push({ ...out, n: ids.length });
      seen += ids.length;
      // read losses back every few steps: each readback costs a GPU round trip
      if (pending.length >= 8 || b === steps - 1) await drain();
      const secs = (performance.now() - t0) / 1000;
      const ips = seen / secs;
      const eta = ((perEpoch - seen) / ips) + (epochs - epoch - 1) * (perEpoch / ips);
      say(
        `epoch ${epoch + 1}/${epochs} ${bar(seen / perEpoch)} loss ${
          (lossSum / Math.max(seen - pending.reduce((a, p) => a + p.n, 0), 1)).toFixed(4)
        } ` +
          `lr ${lr.toExponential(2)} ${ips.toFixed(1)} img/s ETA ${fmtTime(eta)}`,
        false,
      );
    }
    await E().sync();
    const seconds = (performance.now() - t0) / 1000;
    const val = s.split.val.length
      ? await accuracy(s.instance, s.model, s.split.val, image, valFeats ?? undefined)
      : null;
    const rec: EpochRecord = {
      epoch,
      lr,
      loss: lossSum / perEpoch,
      terms: Object.fromEntries(Object.entries(termSums).map(([k, v]) => [k, v / perEpoch])),
      valAccuracy: val ? val.correct / val.total : NaN,
      seconds,
      imagesPerSecond: perEpoch / seconds,
    };
    history.push(rec);
    say(
      `epoch ${epoch + 1}/${epochs} loss ${rec.loss.toFixed(4)} lr ${lr.toExponential(2)} ` +
        `val ${val ? (100 * rec.valAccuracy).toFixed(2) + "%" : "-"} ${
          rec.imagesPerSecond.toFixed(1)
        } img/s ${seconds.toFixed(1)} s`,
      true,
    );
    await saveCheckpoint(ckFile, s, opt, epoch, history);
    if (config.select === "val" && rec.valAccuracy > bestAcc) {
      bestAcc = rec.valAccuracy;
      selected = epoch;
      await Deno.copyFile(ckFile, `${config.out}/${BEST}`);
    }
  }
  if (config.select !== "val") selected = Math.max(epochs - 1, 0);
  // training-free methods and hyperparameter searches run on validation, never on test
  if (s.instance.tune && valFeats && s.split.val.length) {
    const found = await s.instance.tune(valFeats);
    say(`tuned on validation: ${JSON.stringify(found)}`, true);
  } else if (s.instance.tune) {
    // few shots and a small validation fraction can leave no validation image at all
    say(`no validation images to tune ${m.name} on: its options' values are kept`, true);
  }
  if (!opt || s.instance.tune) {
    await saveCheckpoint(ckFile, s, opt, Math.max(epochs - 1, 0), history);
  }
  s.split.assertTestUnread("training");
  let finalVal: number | null = null;
  if (s.split.val.length) {
    if (config.select === "val" && (await exists(`${config.out}/${BEST}`))) {
      s.instance.load((await readCheckpoint(`${config.out}/${BEST}`)).params);
    }
    const v = await accuracy(s.instance, s.model, s.split.val, image, valFeats ?? undefined);
    finalVal = v.correct / v.total;
  }
  const info = runInfo(s, history, selected, epochs, finalVal);
  await Deno.writeTextFile(`${config.out}/run.json`, JSON.stringify(info, null, 2));
  if (trainFeats) disposeFeatureSet(trainFeats);
  if (valFeats) disposeFeatureSet(valFeats);
  opt?.dispose();
  s.instance.dispose();
  s.model.dispose();
  return info;
}

function runInfo(
  s: Session,
  history: EpochRecord[],
  selected: number,
  epochs: number,
  valAccuracy: number | null = null,
): RunInfo {
  return {
    format: "clipkit-run/1",
    config: s.config,
    method: s.method.name,
    options: s.options,
    classnames: [...s.split.classnames],
    backbone: s.backbone,
    split: { file: `${s.config.out}/split.json`, checksum: s.split.checksum },
    epochs,
    history,
    selectedEpoch: selected,
    valAccuracy,
    methodState: s.instance.state?.() ?? {},
    device: E().info.adapter,
  };
}

function fmtTime(s: number) {
  if (!Number.isFinite(s)) return "?";
  const m = Math.floor(s / 60);
  return m ? `${m}m${Math.round(s % 60).toString().padStart(2, "0")}s` : `${Math.round(s)}s`;
}

/** Whether a path exists (a missing file is not an error here). */
export async function exists(p: string) {
  try {
    await Deno.stat(p);
    return true;
  } catch {
    return false;
  }
}
