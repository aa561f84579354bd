/**
 * `deno task report runs/* [--out report]`: the results of many runs side by side.
 *
 * Reads each run folder's run.json and metrics.json (written by `deno task eval`; a run without
 * one is listed as not evaluated), groups runs by (method, protocol, dataset, target, shots) and
 * aggregates over seeds: mean ± sample standard deviation (n − 1) of top-1, macro-F1 and ECE,
 * and of base, new and HM for base-to-new. Writes
 * - report.md: one table per protocol (rows = methods; columns = target domains and their
 *   average for domain generalisation, datasets otherwise), cells "mean ± std (n seeds)", the
 *   best mean of a column in bold; then every group with all its metrics;
 * - report.json: every run and every aggregate (fractions in [0, 1], not percent);
 * - report.svg: grouped bars of top-1 per method and column with ±std error bars.
 *
 * A method run with non-default options is its own row, e.g. `coop (nCtx=4)`. No GPU is used.
 */
import { parseArgs } from "node:util";
import { METHODS } from "./methods/index.ts";
import type { EvalResult } from "./evaluate.ts";
import type { RunInfo } from "./train.ts";

export type Protocol = "fewshot" | "base2new" | "dg";

/** One run folder as the report sees it. */
export interface RunSummary {
  dir: string;
  /** Row label: the method name, with its non-default options in parentheses. */
  method: string;
  baseMethod: string;
  /** Options that differ from the method's defaults. */
  variant: Record<string, unknown>;
  protocol: Protocol;
  dataset: string;
  target: string | null;
  /** Shots per class; null: all training data (domain generalisation's default). */
  shots: number | null;
  seed: number;
  training: { epochs: number | null; lr: number | null; batch: number | null; select: string };
  evaluated: boolean;
  /**
   * Fractions: top1, macroF1, ece (one test set); base, new, hm, baseMacroF1, newMacroF1,
   * baseEce, newEce (base-to-new). Null when not evaluated.
   */
  metrics: Record<string, number> | null;
}

export interface Stat {
  mean: number;
  /** Sample standard deviation over seeds (n − 1); null with one seed. */
  std: number | null;
  n: number;
}

/** Runs of one method on one (protocol, dataset, target, shots), aggregated over seeds. */
export interface Group {
  method: string;
  protocol: Protocol;
  dataset: string;
  target: string | null;
  shots: number | null;
  seeds: number[];
  runs: string[];
  metrics: Record<string, Stat>;
  /** Base-to-new: the harmonic mean of the mean base and mean new accuracies (the papers'). */
  hmOfMeans?: number;
  /** Metric values per seed (runs sharing a seed are averaged). */
  perSeed: Record<string, Record<string, number>>;
}

export interface Cell {
  mean: number;
  std: number | null;
  n: number;
  seeds: number[];
}

export interface Column {
  id: string;
  label: string;
  dataset: string | null;
  target: string | null;
  /** Which metric the column shows (top1, base, new, hm). */
  metric: string;
  kind: "value" | "average" | "hm";
  /** Chart labels in two levels (base-to-new): `short` under the bars, `group` below it. */
  short?: string;
  group?: string;
}

/** One Markdown table (and one chart panel). */
export interface Section {
  title: string;
  protocol: Protocol;
  dataset: string | null;
  shots: number | null;
  /** What the columns are, for the chart's x axis. */
  axis: string;
  columns: Column[];
  methods: string[];
  cells: Record<string, Record<string, Cell | null>>;
  notes: string[];
}

export interface Report {
  format: "clipkit-report/1";
  runs: RunSummary[];
  notEvaluated: string[];
  skipped: { dir: string; reason: string }[];
  groups: Group[];
  sections: Section[];
  warnings: string[];
}

/** Tables in the papers' order: CoOp's few-shot, CoCoOp's base-to-new, then domains. */
const PROTOCOL_ORDER: Protocol[] = ["fewshot", "base2new", "dg"];

const PROTOCOL_TITLE: Record<Protocol, string> = {
  dg: "Domain generalisation (leave one domain out)",
  fewshot: "Few-shot classification",
  base2new: "Base-to-new generalisation",
};

// ----- reading -----------------------------------------------------------------------------------

async function readJson(path: string): Promise<unknown | undefined> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return undefined;
    throw new Error(`${path}: ${(err as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new Error(`${path}: not valid JSON (${(err as Error).message})`);
  }
}

const isDir = async (p: string) => (await Deno.stat(p).catch(() => null))?.isDirectory ?? false;
const isFile = async (p: string) => (await Deno.stat(p).catch(() => null))?.isFile ?? false;

/** The dataset's name: the folder, the archive without .zip, a manifest's folder. */
export function datasetName(data: string): string {
  const parts = data.replace(/\/+$/, "").split("/");
  const last = parts.at(-1) ?? data;
  if (/\.(csv|json)$/i.test(last) && parts.length > 1) return parts.at(-2)!;
  return last.replace(/\.zip$/i, "");
}

const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

function fmtOption(k: string, v: unknown) {
  if (v === true) return k;
  return `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`;
}

/** The options of a run that differ from its method's defaults. */
export function variantOf(method: string, options: Record<string, unknown>) {
  const m = METHODS[method];
  const out: Record<string, unknown> = {};
  if (!m) return out;
  for (const [k, v] of Object.entries(options ?? {})) {
    if (!(k in m.options) || !same(m.options[k].default, v)) out[k] = v;
  }
  return out;
}

function metricsOf(info: RunInfo, ev: EvalResult, protocol: Protocol): Record<string, number> {
  const sets = ev.sets ?? {};
  if (protocol === "base2new") {
    const b = sets.base, n = sets.new;
    if (!b || !n) throw new Error(`base-to-new metrics need a "base" and a "new" set`);
    return {
      base: b.top1,
      new: n.top1,
      hm: ev.hm ?? harmonic(b.top1, n.top1),
      baseMacroF1: b.macroF1,
      newMacroF1: n.macroF1,
      baseEce: b.ece,
      newEce: n.ece,
    };
  }
  const names = Object.keys(sets);
  const s = names.length === 1 ? sets[names[0]] : sets.test ?? sets[info.config.target ?? ""];
  if (!s) throw new Error(`no test set among ${names.join(", ") || "(none)"}`);
  return { top1: s.top1, macroF1: s.macroF1, ece: s.ece };
}

const harmonic = (a: number, b: number) => (a + b > 0 ? (2 * a * b) / (a + b) : 0);

/**
 * The run folders among `paths`: a folder with run.json is a run; a folder without one is
 * searched one level down (so `report runs` works as well as `report runs/*`).
 */
export async function findRunDirs(
  paths: string[],
): Promise<{ dirs: string[]; skipped: { dir: string; reason: string }[] }> {
  const dirs: string[] = [], skipped: { dir: string; reason: string }[] = [];
  for (const raw of paths) {
    const p = raw.replace(/\/+$/, "") || "/";
    if (!(await isDir(p))) {
      skipped.push({ dir: p, reason: "not a folder" });
      continue;
    }
    if (await isFile(`${p}/run.json`)) {
      dirs.push(p);
      continue;
    }
    const inner: string[] = [];
    for await (const e of Deno.readDir(p)) {
      if (e.isDirectory && (await isFile(`${p}/${e.name}/run.json`))) inner.push(`${p}/${e.name}`);
    }
    if (inner.length) dirs.push(...inner.sort());
    else skipped.push({ dir: p, reason: "no run.json (not a training run folder)" });
  }
  return { dirs: [...new Set(dirs)], skipped };
}

/** Reads one run folder; metrics are null when it has no metrics.json. */
export async function readRun(dir: string): Promise<RunSummary> {
  const info = (await readJson(`${dir}/run.json`)) as RunInfo | undefined;
  if (!info) throw new Error("no run.json");
  if (info.format !== "clipkit-run/1") {
    throw new Error(`run.json is not a clipkit run (format ${JSON.stringify(info.format)})`);
  }
  const c = info.config;
  const protocol = c.protocol as Protocol;
  if (!(protocol in PROTOCOL_TITLE)) throw new Error(`unknown protocol "${c.protocol}"`);
  const variant = variantOf(info.method, info.options);
  const extra = Object.entries(variant).map(([k, v]) => fmtOption(k, v));
  const ev = (await readJson(`${dir}/metrics.json`)) as EvalResult | undefined;
  if (ev && ev.method !== undefined && ev.method !== info.method) {
    throw new Error(`metrics.json is for ${ev.method}, run.json for ${info.method}`);
  }
  return {
    dir,
    method: extra.length ? `${info.method} (${extra.join(", ")})` : info.method,
    baseMethod: info.method,
    variant,
    protocol,
    dataset: datasetName(c.data),
    target: protocol === "dg" ? (c.target ?? null) : null,
    shots: c.shots ?? (protocol === "dg" ? null : 16),
    seed: c.seed,
    training: {
      epochs: info.epochs ?? c.epochs ?? null,
      lr: c.lr ?? null,
      batch: c.batch ?? null,
      select: c.select ?? "last",
    },
    evaluated: !!ev,
    metrics: ev ? metricsOf(info, ev, protocol) : null,
  };
}

// ----- aggregation -------------------------------------------------------------------------------

/** Mean and sample standard deviation (null below two values). */
export function stat(xs: number[]): Stat {
  const n = xs.length;
  const mean = xs.reduce((a, b) => a + b, 0) / n;
  const std = n > 1 ? Math.sqrt(xs.reduce((a, x) => a + (x - mean) ** 2, 0) / (n - 1)) : null;
  return { mean, std, n };
}

const keyOf = (r: Pick<RunSummary, "method" | "protocol" | "dataset" | "target" | "shots">) =>
  JSON.stringify([r.method, r.protocol, r.dataset, r.target, r.shots]);

function methodOrder(a: string, b: string, base: Map<string, string>) {
  const names = Object.keys(METHODS);
  const ia = names.indexOf(base.get(a) ?? a), ib = names.indexOf(base.get(b) ?? b);
  const ra = ia < 0 ? names.length : ia, rb = ib < 0 ? names.length : ib;
  return ra - rb || (a < b ? -1 : a > b ? 1 : 0);
}

const byName = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
const shotsLabel = (s: number | null) =>
  s === null ? "all training images" : `${s} shot${s === 1 ? "" : "s"}`;

/** Groups evaluated runs, aggregates over seeds and lays out the tables. Pure. */
export function aggregate(
  runs: RunSummary[],
  skipped: { dir: string; reason: string }[] = [],
): Report {
  const warnings: string[] = [];
  const evaluated = runs.filter((r) => r.evaluated && r.metrics);
  const byKey = new Map<string, RunSummary[]>();
  for (const r of evaluated) {
    const k = keyOf(r);
    if (!byKey.has(k)) byKey.set(k, []);
    byKey.get(k)!.push(r);
  }
  const groups: Group[] = [];
  for (const rs of byKey.values()) {
    const r0 = rs[0];
    const what = `${r0.method}, ${r0.protocol} ${r0.dataset}${r0.target ? ` → ${r0.target}` : ""}`;
    const seedRuns = new Map<number, RunSummary[]>();
    for (const r of rs) {
      if (!seedRuns.has(r.seed)) seedRuns.set(r.seed, []);
      seedRuns.get(r.seed)!.push(r);
    }
    for (const [seed, list] of seedRuns) {
      if (list.length > 1) {
        warnings.push(
          `${what}: ${list.length} runs share seed ${seed} (${
            list.map((r) => r.dir).join(", ")
          }); they are averaged as one seed`,
        );
      }
    }
    if (!rs.every((r) => same(r.training, r0.training))) {
      warnings.push(
        `${what}: runs differ in training settings (${
          rs.map((r) => `${r.dir}: ${JSON.stringify(r.training)}`).join("; ")
        })`,
      );
    }
    const seeds = [...seedRuns.keys()].sort((a, b) => a - b);
    const perSeed: Record<string, Record<string, number>> = {};
    for (const s of seeds) {
      const list = seedRuns.get(s)!;
      const keys = Object.keys(list[0].metrics!);
      perSeed[s] = Object.fromEntries(
        keys.map((k) => [k, list.reduce((a, r) => a + r.metrics![k], 0) / list.length]),
      );
    }
    const keys = Object.keys(perSeed[seeds[0]]);
    const metrics = Object.fromEntries(keys.map((k) => [k, stat(seeds.map((s) => perSeed[s][k]))]));
    const g: Group = {
      method: r0.method,
      protocol: r0.protocol,
      dataset: r0.dataset,
      target: r0.target,
      shots: r0.shots,
      seeds,
      runs: rs.map((r) => r.dir),
      metrics,
      perSeed,
    };
    if (r0.protocol === "base2new") g.hmOfMeans = harmonic(metrics.base.mean, metrics.new.mean);
    groups.push(g);
  }
  const base = new Map(runs.map((r) => [r.method, r.baseMethod]));
  groups.sort((a, b) =>
    PROTOCOL_ORDER.indexOf(a.protocol) - PROTOCOL_ORDER.indexOf(b.protocol) ||
    byName(a.dataset, b.dataset) ||
    byName(String(a.shots), String(b.shots)) || byName(a.target ?? "", b.target ?? "") ||
    methodOrder(a.method, b.method, base)
  );
  const sections = layout(groups, base);
  return {
    format: "clipkit-report/1",
    runs,
    notEvaluated: runs.filter((r) => !r.evaluated).map((r) => r.dir),
    skipped,
    groups,
    sections,
    warnings,
  };
}

/** Seeds common to every cell, and the mean over cells per seed (an average column). */
function averageCell(groups: (Group | undefined)[], metric: string): Cell | null {
  if (!groups.length || groups.some((g) => !g)) return null;
  const common = groups[0]!.seeds.filter((s) => groups.every((g) => g!.seeds.includes(s)));
  if (!common.length) return null;
  const xs = common.map((s) =>
    groups.reduce((a, g) => a + g!.perSeed[s][metric], 0) / groups.length
  );
  return { ...stat(xs), seeds: common };
}

function valueCell(g: Group | undefined, metric: string): Cell | null {
  return g && g.metrics[metric] ? { ...g.metrics[metric], seeds: [...g.seeds] } : null;
}

function hmCell(b: Cell | null, n: Cell | null): Cell | null {
  if (!b || !n) return null;
  const seeds = b.seeds.filter((s) => n.seeds.includes(s));
  return { mean: harmonic(b.mean, n.mean), std: null, n: Math.min(b.n, n.n), seeds };
}

function layout(groups: Group[], base: Map<string, string>): Section[] {
  const sections: Section[] = [];
  const bySection = new Map<string, Group[]>();
  for (const g of groups) {
    const k = JSON.stringify([g.protocol, g.protocol === "dg" ? g.dataset : null, g.shots]);
    if (!bySection.has(k)) bySection.set(k, []);
    bySection.get(k)!.push(g);
  }
  for (const gs of bySection.values()) {
    const { protocol, shots } = gs[0];
    const methods = [...new Set(gs.map((g) => g.method))].sort((a, b) => methodOrder(a, b, base));
    const find = (m: string, dataset: string, target: string | null) =>
      gs.find((g) => g.method === m && g.dataset === dataset && g.target === target);
    const columns: Column[] = [];
    const cells: Record<string, Record<string, Cell | null>> = {};
    for (const m of methods) cells[m] = {};
    const notes: string[] = [];
    const datasets = [...new Set(gs.map((g) => g.dataset))].sort(byName);
    let title: string, axis: string;
    if (protocol === "dg") {
      const dataset = datasets[0];
      const targets = [...new Set(gs.map((g) => g.target ?? ""))].sort(byName);
      title = `${PROTOCOL_TITLE.dg}: ${dataset}, ${shotsLabel(shots)}`;
      axis = "Target domain";
      for (const t of targets) {
        columns.push({ id: t, label: t, dataset, target: t, metric: "top1", kind: "value" });
        for (const m of methods) cells[m][t] = valueCell(find(m, dataset, t), "top1");
      }
      columns.push({
        id: "average",
        label: "Average",
        dataset,
        target: null,
        metric: "top1",
        kind: "average",
      });
      for (const m of methods) {
        cells[m].average = averageCell(targets.map((t) => find(m, dataset, t)), "top1");
      }
      notes.push(
        "Average: the mean over target domains per seed, over the seeds run on every domain.",
      );
    } else if (protocol === "fewshot") {
      title = `${PROTOCOL_TITLE.fewshot}: ${shotsLabel(shots)}`;
      axis = "Dataset";
      for (const d of datasets) {
        columns.push({ id: d, label: d, dataset: d, target: null, metric: "top1", kind: "value" });
        for (const m of methods) cells[m][d] = valueCell(find(m, d, null), "top1");
      }
      if (datasets.length > 1) {
        columns.push({
          id: "average",
          label: "Average",
          dataset: null,
          target: null,
          metric: "top1",
          kind: "average",
        });
        for (const m of methods) {
          cells[m].average = averageCell(datasets.map((d) => find(m, d, null)), "top1");
        }
        notes.push("Average: the mean over datasets per seed, over the seeds run on every one.");
      }
    } else {
      title = `${PROTOCOL_TITLE.base2new}: ${shotsLabel(shots)}`;
      axis = "Dataset and classes";
      const sets = datasets.map((d) => ({
        d,
        label: d,
        groups: (m: string) => [find(m, d, null)],
      }));
      if (datasets.length > 1) {
        sets.push({
          d: "average",
          label: "Average",
          groups: (m) => datasets.map((d) => find(m, d, null)),
        });
      }
      for (const { d, label, groups: of } of sets) {
        const kind = d === "average" ? "average" : "value";
        const dataset = d === "average" ? null : d;
        for (const metric of ["base", "new"]) {
          columns.push({
            id: `${d}:${metric}`,
            label: `${label} ${metric}`,
            short: metric,
            group: label,
            dataset,
            target: null,
            metric,
            kind,
          });
        }
        columns.push({
          id: `${d}:hm`,
          label: `${label} HM`,
          short: "HM",
          group: label,
          dataset,
          target: null,
          metric: "hm",
          kind: "hm",
        });
        for (const m of methods) {
          const gsOf = of(m);
          const cell = (metric: string) =>
            kind === "average" ? averageCell(gsOf, metric) : valueCell(gsOf[0], metric);
          cells[m][`${d}:base`] = cell("base");
          cells[m][`${d}:new`] = cell("new");
          cells[m][`${d}:hm`] = hmCell(cells[m][`${d}:base`], cells[m][`${d}:new`]);
        }
      }
      notes.push(
        "HM: the harmonic mean of the mean base and mean new accuracies (as the papers report it).",
      );
    }
    sections.push({
      title,
      protocol,
      dataset: protocol === "dg" ? datasets[0] : null,
      shots,
      axis,
      columns,
      methods,
      cells,
      notes,
    });
  }
  return sections;
}

// ----- Markdown ----------------------------------------------------------------------------------

const pct = (x: number) => (100 * x).toFixed(2);

/** "mean ± std (n seeds)" in percent; "mean (1 seed)" without a spread. */
export function fmtCell(c: Cell | Stat | null): string {
  if (!c) return "—";
  const seeds = `(${c.n} seed${c.n === 1 ? "" : "s"})`;
  return c.std === null ? `${pct(c.mean)} ${seeds}` : `${pct(c.mean)} ± ${pct(c.std)} ${seeds}`;
}

const mdEscape = (s: string) => s.replaceAll("|", "\\|");

function mdTable(head: string[], rows: string[][], align: ("l" | "r")[]) {
  const line = (cells: string[]) => `| ${cells.map(mdEscape).join(" | ")} |`;
  return [
    line(head),
    `|${align.map((a) => (a === "r" ? "---:" : ":---")).join("|")}|`,
    ...rows.map(line),
  ].join("\n");
}

export function renderMarkdown(r: Report): string {
  const out: string[] = ["# Results", ""];
  const nEval = r.runs.filter((x) => x.evaluated).length;
  out.push(
    `${r.runs.length} run(s), ${nEval} evaluated, in ${r.groups.length} group(s). ` +
      "Accuracies are top-1 in %, as mean ± sample standard deviation over seeds (n seeds); " +
      "the best mean of a column is in bold.",
    "",
  );
  for (const s of r.sections) {
    out.push(`## ${s.title}`, "");
    const best: Record<string, number> = {};
    for (const c of s.columns) {
      const means = s.methods.map((m) => s.cells[m][c.id]?.mean).filter((x) => x !== undefined);
      if (means.length > 1) best[c.id] = Math.max(...(means as number[]));
    }
    const rows = s.methods.map((m) => [
      m,
      ...s.columns.map((c) => {
        const cell = s.cells[m][c.id];
        const text = fmtCell(cell);
        return cell && best[c.id] === cell.mean ? `**${text}**` : text;
      }),
    ]);
    out.push(
      mdTable(["Method", ...s.columns.map((c) => c.label)], rows, [
        "l",
        ...s.columns.map(() => "r" as const),
      ]),
      "",
    );
    for (const n of s.notes) out.push(`${n}`, "");
  }
  if (r.groups.length) {
    out.push("## All groups", "");
    const f = (g: Group, k: string) => fmtCell(g.metrics[k] ?? null);
    out.push(
      mdTable(
        [
          "Method",
          "Protocol",
          "Dataset",
          "Target",
          "Shots",
          "Seeds",
          "Top-1",
          "Macro-F1",
          "ECE",
          "Base",
          "New",
          "HM",
        ],
        r.groups.map((g) => [
          g.method,
          g.protocol,
          g.dataset,
          g.target ?? "—",
          g.shots === null ? "all" : String(g.shots),
          g.seeds.join(", "),
          f(g, "top1"),
          g.protocol === "base2new"
            ? `${f(g, "baseMacroF1")} / ${f(g, "newMacroF1")}`
            : f(g, "macroF1"),
          g.protocol === "base2new" ? `${f(g, "baseEce")} / ${f(g, "newEce")}` : f(g, "ece"),
          f(g, "base"),
          f(g, "new"),
          f(g, "hm"),
        ]),
        ["l", "l", "l", "l", "r", "r", "r", "r", "r", "r", "r", "r"],
      ),
      "",
    );
    if (r.groups.some((g) => g.protocol === "base2new")) {
      out.push(
        "Base-to-new rows give macro-F1 and ECE as base / new; their HM here is the mean of " +
          "each seed's HM.",
        "",
      );
    }
  }
  if (r.notEvaluated.length) {
    out.push("## Not evaluated", "");
    for (const d of r.notEvaluated) {
      const x = r.runs.find((y) => y.dir === d)!;
      out.push(
        `- \`${d}\`: ${x.method}, ${x.protocol} ${x.dataset}${
          x.target ? ` → ${x.target}` : ""
        }, seed ${x.seed}; no metrics.json (run \`deno task eval --run ${d}\`)`,
      );
    }
    out.push("");
  }
  if (r.skipped.length) {
    out.push("## Skipped", "");
    for (const s of r.skipped) out.push(`- \`${s.dir}\`: ${s.reason}`);
    out.push("");
  }
  if (r.warnings.length) {
    out.push("## Warnings", "");
    for (const w of r.warnings) out.push(`- ${w}`);
    out.push("");
  }
  return out.join("\n");
}

// ----- SVG ---------------------------------------------------------------------------------------

/** Colour-blind-friendly palette (Okabe and Ito), then a few more distinct hues. */
const PALETTE = [
  "#0072B2",
  "#E69F00",
  "#009E73",
  "#CC79A7",
  "#56B4E9",
  "#D55E00",
  "#F0E442",
  "#000000",
  "#7F7F7F",
  "#8C564B",
  "#9467BD",
  "#17BECF",
];

export const xmlEscape = (s: string) =>
  s.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;")
    .replaceAll('"', "&quot;").replaceAll("'", "&apos;");

/** Approximate width in px of sans-serif text (no font metrics without a renderer). */
const textWidth = (s: string, size: number) => s.length * size * 0.58;
const r1 = (x: number) => Math.round(x * 10) / 10;

/**
 * Grouped bars, one panel per table: per column a group of bars (one per method, the method's
 * colour from the shared legend), height = mean top-1, error bars ±std, a y axis in %.
 */
export function renderSvg(r: Report): string {
  const base = new Map(r.runs.map((x) => [x.method, x.baseMethod]));
  const methods = [...new Set(r.sections.flatMap((s) => s.methods))].sort((a, b) =>
    methodOrder(a, b, base)
  );
  const colour = (m: string) => PALETTE[methods.indexOf(m) % PALETTE.length];
  const F = 'font-family="Helvetica, Arial, sans-serif"';
  const left = 64, right = 24, plotH = 240;

  // panel geometry first: the figure is as wide as its widest panel, title or legend
  const geom = (s: Section) => {
    const bw = s.methods.length > 6 ? 12 : s.methods.length > 3 ? 16 : 22;
    const bars = s.methods.length * bw;
    const widths = s.columns.map((c) => textWidth(c.short ?? c.label, 12));
    const label = Math.max(...widths);
    // widen groups (up to a point) so that column labels fit horizontally
    let gw = Math.max(bars + 18, label <= 150 ? label + 14 : 0, 360 / s.columns.length);
    for (const c of s.columns) {
      if (c.group === undefined) continue;
      const n = s.columns.filter((d) => d.group === c.group).length;
      gw = Math.max(gw, (textWidth(c.group, 12) + 20) / n);
    }
    const rot = label + 4 > gw;
    // a long first label, rotated, reaches left of the axis: move the panel right
    const pl = rot ? Math.max(left, 0.87 * widths[0] - gw / 2 + 12) : left;
    return { bw, gw, rot, pl, plotW: s.columns.length * gw, pad: (gw - bars) / 2 };
  };
  const titleW = (s: Section) => textWidth(s.title, 13) * 1.08;
  let W = Math.max(
    520,
    ...r.sections.map((s) => {
      const g = geom(s);
      return Math.max(g.pl + g.plotW, left + titleW(s)) + right;
    }),
  );

  // legend rows
  const legendItems = methods.map((m) => ({ m, w: 18 + textWidth(m, 12) + 18 }));
  const rows: { m: string; x: number }[][] = [[]];
  let x = left;
  for (const it of legendItems) {
    if (x + it.w > W - right && rows.at(-1)!.length) {
      rows.push([]);
      x = left;
    }
    rows.at(-1)!.push({ m: it.m, x });
    x += it.w;
  }
  W = Math.max(W, ...rows.map((row) => (row.length ? row.at(-1)!.x : 0) + 120));

  const parts: string[] = [];
  let y = 28;
  parts.push(
    `<text x="${
      W / 2
    }" y="${y}" text-anchor="middle" font-size="16" font-weight="bold" ${F}>Top-1 accuracy per method (mean ± std over seeds)</text>`,
  );
  y += 18;
  parts.push(`<g class="legend">`);
  for (const row of rows) {
    for (const { m, x } of row) {
      parts.push(
        `<rect x="${r1(x)}" y="${y}" width="12" height="12" fill="${colour(m)}"/>`,
        `<text x="${r1(x + 17)}" y="${y + 10.5}" font-size="12" ${F}>${xmlEscape(m)}</text>`,
      );
    }
    y += 20;
  }
  parts.push(`</g>`);
  y += 10;

  for (const s of r.sections) {
    const { bw, gw, rot, plotW, pad, pl: left } = geom(s);
    const top = y + 26, bottom = top + plotH;
    let hi = 0;
    for (const m of s.methods) {
      for (const c of s.columns) {
        const cell = s.cells[m][c.id];
        if (cell) hi = Math.max(hi, cell.mean + (cell.std ?? 0));
      }
    }
    const yMax = Math.min(100, Math.max(10, Math.ceil((100 * hi) / 10) * 10));
    const step = yMax > 50 ? 10 : yMax > 20 ? 5 : 2;
    const Y = (v: number) => bottom - (v / yMax) * plotH;
    const plotR = left + plotW;
    parts.push(`<g class="panel">`);
    parts.push(
      `<text x="${left}" y="${y + 12}" font-size="13" font-weight="bold" ${F}>${
        xmlEscape(s.title)
      }</text>`,
    );
    for (let v = 0; v <= yMax + 1e-9; v += step) {
      parts.push(
        `<line x1="${left}" x2="${plotR}" y1="${r1(Y(v))}" y2="${r1(Y(v))}" stroke="${
          v ? "#e3e3e3" : "#333"
        }" stroke-width="1"/>`,
        `<text x="${left - 6}" y="${
          r1(Y(v) + 4)
        }" text-anchor="end" font-size="11" ${F}>${v}</text>`,
      );
    }
    parts.push(
      `<line x1="${left}" x2="${left}" y1="${top}" y2="${bottom}" stroke="#333" stroke-width="1"/>`,
      `<text transform="translate(${left - 44} ${
        (top + bottom) / 2
      }) rotate(-90)" text-anchor="middle" font-size="12" ${F}>Top-1 accuracy (%)</text>`,
    );
    s.columns.forEach((c, ci) => {
      const gx = left + ci * gw + pad;
      if (c.kind === "average" && ci > 0 && s.columns[ci - 1].kind !== "average") {
        parts.push(
          `<line x1="${r1(gx - 6)}" x2="${
            r1(gx - 6)
          }" y1="${top}" y2="${bottom}" stroke="#bbb" stroke-dasharray="3 3"/>`,
        );
      }
      s.methods.forEach((m, mi) => {
        const cell = s.cells[m][c.id];
        if (!cell) return;
        const bx = gx + mi * bw, v = 100 * cell.mean;
        const tip = `${m} · ${c.label}: ${fmtCell(cell)}`;
        parts.push(
          `<rect class="bar" data-method="${xmlEscape(m)}" data-column="${xmlEscape(c.id)}" x="${
            r1(bx)
          }" y="${r1(Y(v))}" width="${bw - 2}" height="${r1(bottom - Y(v))}" fill="${colour(m)}"${
            c.kind === "hm" ? ' fill-opacity="0.6"' : ""
          }><title>${xmlEscape(tip)}</title></rect>`,
        );
        if (cell.std !== null && cell.std > 0) {
          const cx = r1(bx + (bw - 2) / 2);
          const lo = r1(Y(Math.max(0, v - 100 * cell.std)));
          const up = r1(Y(Math.min(yMax, v + 100 * cell.std)));
          parts.push(
            `<path class="errorbar" d="M${cx} ${lo}V${up}M${r1(cx - 3)} ${lo}H${r1(cx + 3)}M${
              r1(cx - 3)
            } ${up}H${r1(cx + 3)}" stroke="#222" stroke-width="1.2" fill="none"/>`,
          );
        }
      });
      const lx = gx + (s.methods.length * bw - 2) / 2, text = xmlEscape(c.short ?? c.label);
      parts.push(
        rot
          ? `<text transform="translate(${r1(lx)} ${
            bottom + 14
          }) rotate(-30)" text-anchor="end" font-size="12" ${F}>${text}</text>`
          : `<text x="${r1(lx)}" y="${
            bottom + 18
          }" text-anchor="middle" font-size="12" ${F}>${text}</text>`,
      );
    });
    let labelDrop = rot
      ? Math.max(...s.columns.map((c) => textWidth(c.short ?? c.label, 12))) * 0.5 + 22
      : 34;
    // second level: a bracket and the group's name under its columns
    const spans: { group: string; from: number; to: number }[] = [];
    s.columns.forEach((c, ci) => {
      if (c.group === undefined) return;
      const last = spans.at(-1);
      if (last && last.group === c.group && last.to === ci - 1) last.to = ci;
      else spans.push({ group: c.group, from: ci, to: ci });
    });
    if (spans.length) {
      const by = bottom + labelDrop - 6;
      for (const sp of spans) {
        const x0 = left + sp.from * gw + 6, x1 = left + (sp.to + 1) * gw - 6;
        parts.push(
          `<path d="M${r1(x0)} ${r1(by - 4)}V${r1(by)}H${r1(x1)}V${
            r1(by - 4)
          }" stroke="#777" fill="none"/>`,
          `<text x="${r1((x0 + x1) / 2)}" y="${
            r1(by + 15)
          }" text-anchor="middle" font-size="12" ${F}>${xmlEscape(sp.group)}</text>`,
        );
      }
      labelDrop += 26;
    }
    parts.push(
      `<text x="${r1((left + plotR) / 2)}" y="${
        r1(bottom + labelDrop + 6)
      }" text-anchor="middle" font-size="12" ${F}>${xmlEscape(s.axis)}</text>`,
    );
    let extra = 0;
    if (s.columns.some((c) => c.kind === "hm")) {
      extra = 16;
      parts.push(
        `<text x="${left}" y="${
          r1(bottom + labelDrop + 24)
        }" font-size="11" fill="#555" ${F}>Lighter bars: HM of the mean base and new accuracies (no error bar)</text>`,
      );
    }
    parts.push(`</g>`);
    y = bottom + labelDrop + 28 + extra;
  }
  if (!r.sections.length) {
    parts.push(
      `<text x="${W / 2}" y="${
        y + 20
      }" text-anchor="middle" font-size="13" ${F}>No evaluated runs.</text>`,
    );
    y += 40;
  }
  const H = Math.ceil(y);
  return [
    `<?xml version="1.0" encoding="UTF-8"?>`,
    `<svg xmlns="http://www.w3.org/2000/svg" width="${Math.ceil(W)}" height="${H}" viewBox="0 0 ${
      Math.ceil(W)
    } ${H}">`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
    ...parts,
    `</svg>`,
    "",
  ].join("\n");
}

// ----- the command -------------------------------------------------------------------------------

/** Reads the runs, aggregates them, and writes report.md, report.json and report.svg in `out`. */
export async function writeReport(paths: string[], out = "report"): Promise<Report> {
  const { dirs, skipped } = await findRunDirs(paths);
  const runs: RunSummary[] = [];
  for (const d of dirs) {
    try {
      runs.push(await readRun(d));
    } catch (err) {
      skipped.push({ dir: d, reason: (err as Error).message });
    }
  }
  const report = aggregate(runs, skipped);
  await Deno.mkdir(out, { recursive: true });
  await Deno.writeTextFile(`${out}/report.md`, renderMarkdown(report));
  await Deno.writeTextFile(`${out}/report.json`, JSON.stringify(report, null, 2) + "\n");
  await Deno.writeTextFile(`${out}/report.svg`, renderSvg(report));
  return report;
}

const USAGE = "usage: deno task report RUN_DIR... [--out report]   (e.g. deno task report runs/*)";

export async function main(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      options: {
        out: { type: "string", default: "report" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (err) {
    console.error(`${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  if (parsed.values.help) {
    console.log(USAGE);
    return 0;
  }
  if (!parsed.positionals.length) {
    console.error(`give at least one run folder\n${USAGE}`);
    return 2;
  }
  const out = parsed.values.out!;
  const r = await writeReport(parsed.positionals, out);
  for (const s of r.skipped) console.error(`warning: skipping ${s.dir}: ${s.reason}`);
  for (const w of r.warnings) console.error(`warning: ${w}`);
  const nEval = r.runs.length - r.notEvaluated.length;
  console.log(
    `${r.runs.length} run(s): ${nEval} evaluated in ${r.groups.length} group(s)${
      r.notEvaluated.length ? `, ${r.notEvaluated.length} not evaluated` : ""
    }${r.skipped.length ? `, ${r.skipped.length} skipped` : ""}`,
  );
  console.log(`wrote ${out}/report.md, ${out}/report.json and ${out}/report.svg`);
  return r.runs.length ? 0 : 1;
}
