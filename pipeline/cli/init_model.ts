/**
 * `deno task init-model --arch NAME --out FILE [--seed S]`: a random-weight CLIP checkpoint with
 * OpenAI's shapes, dtypes and initialisation (model/archs.ts), as safetensors. Tests and
 * benchmarks use it where the released weights cannot be downloaded; any command that takes a
 * model file reads it. The model uses OpenAI's vocabulary (pass --vocab or keep the BPE file
 * where commands look for it).
 */
import { initStateDict, OPENAI_ARCHS, parameterCount } from "../../model/archs.ts";
import { saveSafetensors } from "../../model/safetensors.ts";
import { parseCommand, runCommand } from "./args.ts";

const USAGE = `usage: deno task init-model --arch NAME --out FILE [--seed S]
  writes a random-weight CLIP with OpenAI's shapes and initialisation (f16 as OpenAI ships them)
  --arch   ${Object.keys(OPENAI_ARCHS).join(", ")}
  --out    the .safetensors file to write (refused if it exists)
  --seed   an integer in [0, 2^28), default 0: the same seed writes the same bytes`;

export async function main(args: string[]): Promise<number> {
  const p = parseCommand(args, USAGE, {
    arch: { type: "string" },
    out: { type: "string" },
    seed: { type: "string", default: "0" },
  });
  if (typeof p === "number") return p;
  const { arch, out, seed } = p.values;
  const config = arch ? OPENAI_ARCHS[arch] : undefined;
  if (!config) {
    console.error(
      `${arch ? `--arch ${arch} is not an OpenAI architecture` : "--arch is required"}\n${USAGE}`,
    );
    return 2;
  }
  if (!out) {
    console.error(`--out is required\n${USAGE}`);
    return 2;
  }
  const s = Number(seed);
  if (!/^\d+$/.test(seed) || s >= 2 ** 28) {
    console.error(`--seed must be an integer in [0, 2^28), got ${seed}\n${USAGE}`);
    return 2;
  }
  const exists = await Deno.stat(out).then(() => true, () => false);
  if (exists) throw new Error(`${out} exists: delete it or choose another --out`);
  const n = parameterCount(config);
  console.log(`${arch}: ${n.toLocaleString("en-US")} parameters, seed ${s}`);
  const t0 = performance.now();
  let last = t0;
  const sd = initStateDict(config, s, (_name, k, count) => {
    const now = performance.now();
    if (now - last > 2000 || k === count - 1) {
      last = now;
      const done = (k + 1) / count;
      const eta = ((now - t0) / done) * (1 - done) / 1000;
      console.log(`  drawn ${k + 1}/${count} tensors, about ${eta.toFixed(0)} s left`);
    }
  });
  await saveSafetensors(out, sd, {
    "clipkit.arch": arch!,
    "clipkit.seed": String(s),
    "clipkit.init": "random (OpenAI's initialisation)",
  });
  const bytes = (await Deno.stat(out)).size;
  console.log(
    `wrote ${out} (${(bytes / 2 ** 20).toFixed(0)} MiB) in ${
      ((performance.now() - t0) / 1000).toFixed(1)
    } s`,
  );
  return 0;
}

if (import.meta.main) await runCommand(main);
