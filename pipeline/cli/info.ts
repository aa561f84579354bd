/** `deno task info [--json]`: the adapter, its features and the limits the engine requested. */
import { initEngine } from "../../engine/device.ts";
import { parseCommand, runCommand } from "./args.ts";

const USAGE = `usage: deno task info [--json]
  prints the WebGPU adapter, its features and the limits the engine requested (--json: also as JSON)`;

export async function main(args: string[]): Promise<number> {
  const p = parseCommand(args, USAGE, { json: { type: "boolean" } });
  if (typeof p === "number") return p;
  const { values } = p;
  const e = await initEngine();
  const i = e.info;
  console.log(`adapter      ${i.adapter}${i.isFallbackAdapter ? " (software fallback)" : ""}`);
  console.log(`vendor       ${i.vendor || "-"}  architecture ${i.architecture || "-"}`);
  console.log(`backend      ${i.backend}`);
  console.log(`features     ${i.features.sort().join(", ")}`);
  console.log(`f16 storage  ${e.f16 ? "yes (shader-f16)" : "no (frozen weights stay f32)"}`);
  for (const [k, v] of Object.entries(i.limits)) console.log(`${k.padEnd(34)} ${v}`);
  if (values.json) console.log(JSON.stringify(i, null, 2));
  return 0;
}

if (import.meta.main) await runCommand(main);
