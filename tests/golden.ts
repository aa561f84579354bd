/** The golden CLIPs and their reference tensors (../shared/golden), for the model and method tests. */
import { assert, relErr, sharedDir } from "./util.ts";
import { readSafetensors } from "../model/safetensors.ts";
import { loadStateDict, type StateDict, toFloat32, toInt32 } from "../model/weights.ts";
import { CLIP } from "../model/clip.ts";
import { Tokenizer } from "../model/tokenizer.ts";

export interface Golden {
  model: CLIP;
  /** float32 values of a reference tensor */
  f: (name: string) => Float32Array;
  /** int32 values of a reference tensor */
  i: (name: string) => Int32Array;
  shape: (name: string) => number[];
  metadata: Record<string, string>;
}

async function table(path: string) {
  const st = await readSafetensors(path);
  const get = (k: string) => {
    const w = st.tensors.get(k);
    if (!w) throw new Error(`${path}: no tensor ${k}`);
    return w;
  };
  return {
    f: (k: string) => toFloat32(get(k)),
    i: (k: string) => toInt32(get(k)),
    shape: (k: string) => get(k).shape,
    metadata: st.metadata,
    names: [...st.tensors.keys()],
  };
}

/** A golden model with its `cases.safetensors` (or, with file, another reference file). */
export async function golden(
  name: string,
  file = "cases.safetensors",
): Promise<Golden & { names: string[] }> {
  const dir = `${sharedDir()}golden/${name}/`;
  const t = await table(dir + file);
  const model = CLIP.fromStateDict(await loadStateDict(dir + "model.safetensors"), { file: name });
  return { model, ...t };
}

export async function goldenStateDict(name: string): Promise<StateDict> {
  return await loadStateDict(`${sharedDir()}golden/${name}/model.safetensors`);
}

export async function tokenizer(): Promise<Tokenizer> {
  return await Tokenizer.load(`${sharedDir()}clip/bpe_simple_vocab_16e6.txt.gz`);
}

/** Asserts ‖ours − ref‖ / ‖ref‖ ≤ tol and logs the error. */
export function within(ours: ArrayLike<number>, ref: ArrayLike<number>, tol: number, what: string) {
  assert.equal(ours.length, ref.length, `${what}: ${ours.length} values, expected ${ref.length}`);
  const e = relErr(ours, ref);
  assert.ok(e <= tol, `${what}: relative error ${e.toExponential(2)} > ${tol}`);
  console.log(`  ${what}: relative error ${e.toExponential(2)} (bound ${tol})`);
  return e;
}

/** Asserts max |ours − ref| ≤ tol (for values that are zero in exact arithmetic). */
export function withinAbs(
  ours: ArrayLike<number>,
  ref: ArrayLike<number>,
  tol: number,
  what: string,
) {
  let m = 0;
  for (let k = 0; k < ref.length; k++) m = Math.max(m, Math.abs(ours[k] - ref[k]));
  assert.ok(m <= tol, `${what}: max abs error ${m.toExponential(2)} > ${tol}`);
  console.log(`  ${what}: max abs error ${m.toExponential(2)} (bound ${tol})`);
}
