/** Every method the trainer knows, by its command-line name. */
import type { Method } from "../method.ts";
import { coop } from "./coop.ts";
import { cocoop } from "./cocoop.ts";
import { maple } from "./maple.ts";
import { gopro } from "./gopro.ts";
import { zeroshot } from "./zeroshot.ts";
import { linearProbe } from "./linear_probe.ts";
import { clipAdapter } from "./clip_adapter.ts";
import { tipAdapter, tipAdapterF } from "./tip_adapter.ts";

export const METHODS: Record<string, Method> = Object.fromEntries(
  [zeroshot, linearProbe, coop, cocoop, maple, gopro, clipAdapter, tipAdapter, tipAdapterF].map((
    m,
  ) => [m.name, m]),
);

export function getMethod(name: string): Method {
  const m = METHODS[name];
  if (!m) {
    throw new Error(
      `--method: unknown method "${name}" (known: ${Object.keys(METHODS).join(", ")})`,
    );
  }
  return m;
}
