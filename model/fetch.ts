/**
 * OpenAI's released CLIP checkpoints and the BPE vocabulary: where they come from, where they are
 * cached, and a downloader.
 *
 *   deno task fetch-model ViT-B/16 [--cache DIR] [--force]
 *   deno task fetch-model vocab
 *
 * The cache folder is the tokenizer's (`$CLIPKIT_CACHE`, else `~/.cache/clipkit`; see
 * model/tokenizer.ts). A download streams into a temporary file beside the target while a sha256
 * is computed over the same bytes (the files are up to ~900 MB and never held in memory), and is
 * renamed into place only when the hash matches the published one. The sha256 of each model is the
 * path segment before the file name in the URLs of openai/CLIP's `clip/clip.py`; the vocabulary's
 * was computed from the copy that the golden tokenizer cases were generated with.
 *
 * Nothing else in the toolkit downloads: `resolveModel` only says what to fetch and where to put
 * it, and every command also takes explicit --model / --vocab paths.
 */
import { parseArgs } from "node:util";
import { createHash } from "node:crypto";
import { defaultVocabPath, VOCAB_FILE, VOCAB_URL } from "./tokenizer.ts";

export interface KnownFile {
  /** Canonical name: "ViT-B/32", "ViT-B/16", "ViT-L/14" or "vocab". */
  name: string;
  /** File name in the cache folder (as OpenAI names it). */
  file: string;
  url: string;
  /** Lower-case hex sha256 of the complete file. */
  sha256: string;
}

const OPENAI_MODELS = "https://openaipublic.azureedge.net/clip/models";
const model = (name: string, sha256: string): KnownFile => {
  const file = `${name.replace("/", "-")}.pt`;
  return { name, file, sha256, url: `${OPENAI_MODELS}/${sha256}/${file}` };
};

/** The files `fetch-model` knows, by canonical name. */
export const KNOWN_FILES: Readonly<Record<string, KnownFile>> = Object.freeze({
  "ViT-B/32": model("ViT-B/32", "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af"),
  "ViT-B/16": model("ViT-B/16", "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f"),
  "ViT-L/14": model("ViT-L/14", "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836"),
  vocab: {
    name: "vocab",
    file: VOCAB_FILE,
    url: VOCAB_URL,
    sha256: "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a",
  },
});

/** The model names (without "vocab"). */
export const MODEL_NAMES: readonly string[] = Object.keys(KNOWN_FILES).filter((n) => n !== "vocab");

const squash = (s: string) => s.toLowerCase().replace(/\.pt$/, "").replace(/[\s/_-]+/g, "");

/**
 * The canonical name for a spelling ("ViT-B/16", "ViT-B-16", "vit_b_16", "ViT-B-16.pt", "vitb16";
 * "vocab" or the vocabulary's file name), or undefined when it names nothing known.
 */
export function normalizeName(name: string): string | undefined {
  const s = squash(name);
  if (s === "") return undefined;
  if (name === VOCAB_FILE || s === "bpe") return "vocab";
  return Object.keys(KNOWN_FILES).find((k) => squash(k) === s);
}

function lookup(name: string): KnownFile {
  const canon = normalizeName(name);
  if (!canon) {
    throw new Error(
      `unknown model "${name}" (known: ${Object.keys(KNOWN_FILES).join(", ")})`,
    );
  }
  return KNOWN_FILES[canon];
}

/** The cache folder: `dir` when given, else the tokenizer's ($CLIPKIT_CACHE or ~/.cache/clipkit). */
export function cacheDir(dir?: string): string {
  if (dir !== undefined && dir !== "") return dir.replace(/(.)\/+$/, "$1");
  const vocab = defaultVocabPath();
  return vocab.slice(0, vocab.length - VOCAB_FILE.length - 1);
}

/** Where a known file lives in the cache (whether or not it is there). */
export function modelPath(name: string, dir?: string): string {
  return `${cacheDir(dir)}/${lookup(name).file}`;
}

export class ModelNotFoundError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ModelNotFoundError";
  }
}

export class DownloadError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DownloadError";
  }
}

/** What to do by hand: the URL, the exact place for the file, and the flags that avoid the cache. */
export function howToGet(entry: KnownFile, target: string): string {
  return `Download\n  ${entry.url}\n(sha256 ${entry.sha256})\nand save it as\n  ${target}\n` +
    `(on a machine with internet: deno task fetch-model ${entry.name}; the folder can be ` +
    `changed with $CLIPKIT_CACHE or --cache). Every command also accepts --model FILE and ` +
    `--vocab FILE to use copies stored anywhere else.`;
}

async function exists(path: string): Promise<Deno.FileInfo | null> {
  try {
    return await Deno.stat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory) return null;
    throw e;
  }
}

/**
 * A checkpoint to load: an existing path is returned as it is; a known name ("ViT-B/16", ...)
 * gives its cached file, or a ModelNotFoundError saying what to download and where to put it.
 * Never downloads.
 */
export async function resolveModel(nameOrPath: string, opts: { cacheDir?: string } = {}) {
  if (await exists(nameOrPath)) return nameOrPath;
  const canon = normalizeName(nameOrPath);
  if (!canon) {
    throw new ModelNotFoundError(
      `${nameOrPath}: no such file, and not a known model name ` +
        `(known: ${MODEL_NAMES.join(", ")}).`,
    );
  }
  const path = modelPath(canon, opts.cacheDir);
  if ((await exists(path))?.isFile) return path;
  throw new ModelNotFoundError(
    `${canon} is not in the cache (${path}).\n` + howToGet(KNOWN_FILES[canon], path),
  );
}

/** sha256 of a file, streamed. */
export async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  using f = await Deno.open(path, { read: true });
  for await (const chunk of f.readable) hash.update(chunk);
  return hash.digest("hex");
}

// ---------------------------------------------------------------------------------------------
// Progress

/** Where progress goes: a terminal gets one redrawn line, anything else a line every 10%. */
export interface ProgressSink {
  write(text: string): void;
  tty: boolean;
}

const enc = new TextEncoder();
export const stderrSink: ProgressSink = {
  write(text) {
    let b = enc.encode(text);
    while (b.length) b = b.subarray(Deno.stderr.writeSync(b));
  },
  get tty() {
    try {
      return Deno.stderr.isTerminal();
    } catch {
      return false;
    }
  },
};

const mb = (n: number) => (n / 1e6).toFixed(1);

/** "123.4 / 338.0 MB  36.5%  12.3 MB/s" (no total: "123.4 MB  12.3 MB/s"). */
export function formatProgress(done: number, total: number | undefined, seconds: number): string {
  const rate = seconds > 0 ? `${mb(done / seconds)} MB/s` : "-- MB/s";
  if (total === undefined || !(total > 0)) return `${mb(done)} MB  ${rate}`;
  const pct = Math.min(100, (100 * done) / total).toFixed(1);
  return `${mb(done)} / ${mb(total)} MB  ${pct.padStart(5)}%  ${rate}`;
}

class Progress {
  private start = performance.now();
  private lastDraw = 0;
  private nextStep = 0.1;
  private nextBytes = 100e6;

  constructor(private sink: ProgressSink, private label: string, private total?: number) {}

  private line(done: number): string {
    const secs = (performance.now() - this.start) / 1000;
    let bar = "";
    if (this.total && this.sink.tty) {
      const filled = Math.round(24 * Math.min(1, done / this.total));
      bar = `[${"#".repeat(filled)}${".".repeat(24 - filled)}] `;
    }
    return `${this.label} ${bar}${formatProgress(done, this.total, secs)}`;
  }

  update(done: number) {
    if (this.sink.tty) {
      const now = performance.now();
      if (now - this.lastDraw < 100) return;
      this.lastDraw = now;
      this.sink.write(`\r${this.line(done)}\x1b[K`);
    } else if (this.total ? done / this.total >= this.nextStep : done >= this.nextBytes) {
      while (this.total ? done / this.total >= this.nextStep : done >= this.nextBytes) {
        this.nextStep += 0.1;
        this.nextBytes += 100e6;
      }
      if (!this.total || done < this.total) this.sink.write(`${this.line(done)}\n`);
    }
  }

  finish(done: number) {
    this.sink.write(this.sink.tty ? `\r${this.line(done)}\x1b[K\n` : `${this.line(done)}\n`);
  }
}

// ---------------------------------------------------------------------------------------------
// Download

export interface DownloadOptions {
  /** The cache folder (default: `cacheDir()`). */
  cacheDir?: string;
  /** Download even when a file with the right sha256 is already there. */
  force?: boolean;
  /** The fetch to use (tests inject one). */
  fetch?: typeof fetch;
  /** Progress output (default: stderr). */
  progress?: ProgressSink;
  /** Give up when no bytes arrive for this long (default 60 s). */
  stallTimeoutMs?: number;
}

async function writeAll(f: Deno.FsFile, b: Uint8Array) {
  while (b.length) b = b.subarray(await f.write(b));
}

/**
 * Downloads `entry` into the cache folder, verifying its sha256; returns the file's path. A file
 * already there with the right hash is kept. On any failure nothing is left behind and the error
 * says how to get the file by hand.
 */
export async function download(entry: KnownFile, opts: DownloadOptions = {}): Promise<string> {
  const dir = cacheDir(opts.cacheDir);
  const target = `${dir}/${entry.file}`;
  const sink = opts.progress ?? stderrSink;
  const info = await exists(target);
  if (info && !info.isFile) throw new DownloadError(`${target} exists and is not a file`);
  if (info && !opts.force) {
    if ((await sha256File(target)) === entry.sha256) {
      sink.write(`${entry.name}: ${target} is already there (sha256 verified)\n`);
      return target;
    }
    sink.write(`${entry.name}: ${target} has the wrong sha256; downloading it again\n`);
  }
  const fail = (why: string): never => {
    throw new DownloadError(`${entry.name}: ${why}.\n` + howToGet(entry, target));
  };
  const stallMs = opts.stallTimeoutMs ?? 60_000;
  const ctl = new AbortController();
  let timer = setTimeout(() => ctl.abort(), stallMs);
  const tmp = `${target}.part-${Deno.pid}-${Date.now()}`;
  let file: Deno.FsFile | undefined;
  let done = 0;
  try {
    let res: Response;
    try {
      res = await (opts.fetch ?? fetch)(entry.url, { signal: ctl.signal });
    } catch (e) {
      return fail(
        ctl.signal.aborted
          ? `no answer from ${entry.url} within ${stallMs / 1000} s`
          : `cannot reach ${entry.url} (${(e as Error).message}; is this machine offline?)`,
      );
    }
    if (!res.ok || !res.body) {
      await res.body?.cancel();
      return fail(`${entry.url} answered HTTP ${res.status} ${res.statusText}`);
    }
    const len = res.headers.get("content-length");
    const total = len !== null && /^\d+$/.test(len) ? Number(len) : undefined;
    const hash = createHash("sha256");
    try {
      await Deno.mkdir(dir, { recursive: true });
      file = await Deno.open(tmp, { write: true, createNew: true });
    } catch (e) {
      await res.body.cancel();
      throw new DownloadError(`cannot write into ${dir} (${(e as Error).message})`);
    }
    const bar = new Progress(sink, entry.file, total);
    try {
      for await (const chunk of res.body) {
        clearTimeout(timer);
        timer = setTimeout(() => ctl.abort(), stallMs);
        hash.update(chunk);
        await writeAll(file, chunk);
        done += chunk.length;
        bar.update(done);
      }
    } catch (e) {
      if (sink.tty) sink.write("\n");
      return fail(
        ctl.signal.aborted
          ? `the download of ${entry.url} stalled (no data for ${stallMs / 1000} s) after ` +
            `${done} bytes`
          : `the download of ${entry.url} broke off after ${done} bytes (${(e as Error).message})`,
      );
    }
    bar.finish(done);
    file.close();
    file = undefined;
    if (total !== undefined && done !== total) {
      return fail(`${entry.url} sent ${done} bytes of the ${total} announced`);
    }
    const got = hash.digest("hex");
    if (got !== entry.sha256) {
      return fail(
        `the downloaded file's sha256 is ${got}, not the published ${entry.sha256}; ` +
          `it was discarded`,
      );
    }
    await Deno.rename(tmp, target);
    return target;
  } finally {
    clearTimeout(timer);
    try {
      file?.close();
    } catch { /* already closed */ }
    await Deno.remove(tmp).catch(() => {});
  }
}

/** Downloads a known file by name (any spelling `normalizeName` accepts). */
export function fetchModel(name: string, opts: DownloadOptions = {}): Promise<string> {
  return download(lookup(name), opts);
}

// ---------------------------------------------------------------------------------------------
// CLI

const USAGE = `usage: deno task fetch-model NAME... [--cache DIR] [--force]

Downloads OpenAI's CLIP checkpoints or the BPE vocabulary into the cache folder
(--cache, else $CLIPKIT_CACHE, else ~/.cache/clipkit), verifying their sha256.
NAME: ${Object.keys(KNOWN_FILES).join(", ")} (also spelt ViT-B-16, vit_b_16, ...)
Prints the path of each file on stdout.
`;

/** Runs the command line; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      options: {
        cache: { type: "string" },
        force: { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
      allowPositionals: true,
    });
  } catch (e) {
    stderrSink.write(`${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  if (!positionals.length) {
    stderrSink.write(USAGE);
    return 2;
  }
  const unknown = positionals.filter((n) => !normalizeName(n));
  if (unknown.length) {
    stderrSink.write(
      `unknown name${unknown.length > 1 ? "s" : ""}: ${unknown.join(", ")}\n${USAGE}`,
    );
    return 2;
  }
  for (const name of positionals) {
    try {
      console.log(await fetchModel(name, { cacheDir: values.cache, force: values.force }));
    } catch (e) {
      stderrSink.write(`${(e as Error).message}\n`);
      return 1;
    }
  }
  return 0;
}
