/** `deno task info`: the adapter, its features and the limits the engine requested. */
import { initEngine } from "./device.ts";

if (import.meta.main) {
  try {
    const e = await initEngine();
    const i = e.info;
    console.log(`adapter      ${i.adapter}${i.isFallbackAdapter ? " (software fallback)" : ""}`);
    console.log(`vendor       ${i.vendor || "-"}  architecture ${i.architecture || "-"}`);
    console.log(`backend      ${i.backend}`);
    console.log(`features     ${i.features.sort().join(", ")}`);
    console.log(`f16 storage  ${e.f16 ? "yes (shader-f16)" : "no (frozen weights stay f32)"}`);
    for (const [k, v] of Object.entries(i.limits)) console.log(`${k.padEnd(34)} ${v}`);
    if (Deno.args.includes("--json")) console.log(JSON.stringify(i, null, 2));
  } catch (err) {
    console.error(String(err instanceof Error ? err.message : err));
    Deno.exit(1);
  }
}
