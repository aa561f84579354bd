/** Every method the trainer knows, by its command-line name. */
import type { Method } from "../method.ts";
import { coop } from "./coop.ts";
import { cocoop } from "./cocoop.ts";
import { maple } from "./maple.ts";
import { gopro } from "./gopro.ts";

export const METHODS: Record<string, Method> = { coop, cocoop, maple, gopro };

/** Registers a method (the adapters and zero-shot files add themselves here). */
export function registerMethod(m: Method) {
  METHODS[m.name] = m;
}

export function getMethod(name: string): Method {
  const m = METHODS[name];
  if (!m) {
    throw new Error(
      `--method: unknown method "${name}" (known: ${Object.keys(METHODS).join(", ")})`,
    );
  }
  return m;
}
