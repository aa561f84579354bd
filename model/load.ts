/**
 * What every command does first: resolve a model name or path, read any supported checkpoint
 * format (OpenAI or Hugging Face names), build CLIP on the device, and find the vocabulary.
 * Images are decoded and preprocessed in batches; unreadable ones are skipped and counted.
 */
import { initEngine } from "../engine/device.ts";
import { CLIP } from "./clip.ts";
import { resolveModel, sha256File } from "./fetch.ts";
import { loadClipStateDict } from "./hf.ts";
import { findVocab, Tokenizer } from "./tokenizer.ts";
import { loadImage } from "./image.ts";
import { clipPreprocess } from "./preprocess.ts";

export interface Loaded {
  model: CLIP;
  tokenizer: Tokenizer;
  file: string;
}

export async function loadClip(modelSpec: string, vocab?: string): Promise<Loaded> {
  await initEngine();
  const file = await resolveModel(modelSpec);
  const sd = await loadClipStateDict(file);
  const model = CLIP.fromStateDict(sd, { file });
  const tokenizer = await Tokenizer.load(findVocab(vocab));
  return { model, tokenizer, file };
}

/** The sha256 of a checkpoint file, which runs record to refuse another backbone later. */
export const backboneHash = sha256File;

export interface ImageBatch {
  /** Float32Array [n, 3, R, R] of the readable images */
  pixels: Float32Array;
  paths: string[];
  skipped: { path: string; reason: string }[];
}

/** Decodes and preprocesses images; an unreadable file is skipped with a warning naming it. */
export async function loadImages(paths: string[], size: number, warn = true): Promise<ImageBatch> {
  const per = 3 * size * size;
  const buf = new Float32Array(paths.length * per);
  const ok: string[] = [];
  const skipped: { path: string; reason: string }[] = [];
  for (const p of paths) {
    try {
      const img = await loadImage(p);
      clipPreprocess(img, size, buf, ok.length * per);
      ok.push(p);
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      skipped.push({ path: p, reason });
      if (warn) console.error(`warning: skipping ${p}: ${reason}`);
    }
  }
  return { pixels: buf.subarray(0, ok.length * per), paths: ok, skipped };
}

const IMAGE_EXT = /\.(jpe?g|png)$/i;

/** Files named directly, and the images inside named folders (recursively, sorted). */
export async function expandImagePaths(args: string[]): Promise<string[]> {
  const out: string[] = [];
  const walk = async (dir: string) => {
    const entries = [];
    for await (const e of Deno.readDir(dir)) entries.push(e);
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const e of entries) {
      const p = `${dir.replace(/\/$/, "")}/${e.name}`;
      if (e.isDirectory) await walk(p);
      else if (IMAGE_EXT.test(e.name)) out.push(p);
    }
  };
  for (const a of args) {
    const st = await Deno.stat(a).catch(() => null);
    if (st?.isDirectory) await walk(a);
    else out.push(a); // a missing or unreadable file is reported when it is loaded
  }
  return out;
}

/** One image's top labels as the commands print them: the path, then "  xx.xx%  label" lines. */
export function formatTop(path: string, top: { label: string; probability: number }[]): string {
  return `${path}\n${
    top.map((t) => `  ${(100 * t.probability).toFixed(2).padStart(6)}%  ${t.label}`).join("\n")
  }`;
}
