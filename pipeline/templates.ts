/**
 * Hand-written prompt templates for CLIP's zero-shot classifier and the feature-level methods
 * built on it (linear probe init, CLIP-Adapter, Tip-Adapter). `{}` marks where the class name
 * goes. The lists were written from general knowledge of the templates commonly used in the CLIP
 * literature (CLIP's single "a photo of a {}.", the seven-template ImageNet ensemble that
 * Tip-Adapter and CLIP-Adapter evaluate with, CoOp-style per-dataset templates), not copied from
 * any file.
 */
import { EngineError } from "../engine/errors.ts";

/** CLIP's default single template. */
export const SINGLE = ["a photo of a {}."];

/** The seven-template ensemble used for ImageNet-style evaluation (Tip-Adapter, CLIP-Adapter). */
export const IMAGENET_7 = [
  "itap of a {}.",
  "a bad photo of the {}.",
  "a origami {}.",
  "a photo of the large {}.",
  "a {} in a video game.",
  "art of the {}.",
  "a photo of the small {}.",
];

/** Named template lists: the ensembles, per-dataset templates and domain-flavoured lists. */
export const TEMPLATE_LISTS: Record<string, string[]> = {
  single: SINGLE,
  ensemble: IMAGENET_7,
  imagenet7: IMAGENET_7,
  // one template per dataset, in the style CoOp / CLIP-Adapter / Tip-Adapter evaluate with
  imagenet: SINGLE,
  caltech101: SINGLE,
  sun397: SINGLE,
  stanford_cars: SINGLE,
  oxford_pets: ["a photo of a {}, a type of pet."],
  oxford_flowers: ["a photo of a {}, a type of flower."],
  fgvc_aircraft: ["a photo of a {}, a type of aircraft."],
  food101: ["a photo of {}, a type of food."],
  dtd: ["{} texture."],
  eurosat: ["a centered satellite photo of {}."],
  ucf101: ["a photo of a person doing {}."],
  // domain-flavoured ensembles for the domain-generalisation benchmarks: one template per
  // rendering style, so the class embedding is not tied to photographs
  pacs: [
    "a photo of a {}.",
    "an art painting of a {}.",
    "a cartoon of a {}.",
    "a sketch of a {}.",
  ],
  office_home: [
    "a photo of a {}.",
    "an artistic rendering of a {}.",
    "a clipart image of a {}.",
    "a product photo of a {}.",
  ],
  domainnet: [
    "a photo of a {}.",
    "a painting of a {}.",
    "a clipart image of a {}.",
    "an infographic of a {}.",
    "a quick drawing of a {}.",
    "a sketch of a {}.",
  ],
  vlcs: ["a photo of a {}.", "a blurry photo of a {}.", "a cropped photo of a {}."],
  // generic style variations, for datasets without a list of their own
  styles: [
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a close-up photo of a {}.",
    "a bright photo of a {}.",
    "a dark photo of a {}.",
    "a drawing of a {}.",
    "a painting of a {}.",
  ],
};

/**
 * The template list an option names: a list name above (case-insensitive), one template with
 * `{}`, or an array of either. Refuses templates without `{}` and unknown names, naming `op`.
 */
export function resolveTemplates(spec: unknown, op = "templates"): string[] {
  const items = Array.isArray(spec) ? spec : [spec];
  const out: string[] = [];
  for (const item of items) {
    if (typeof item !== "string" || !item.trim()) {
      throw new EngineError(
        op,
        `a template must be a non-empty string, got ${JSON.stringify(item)}`,
      );
    }
    if (item.includes("{}")) {
      out.push(item);
      continue;
    }
    const list = TEMPLATE_LISTS[item.trim().toLowerCase()];
    if (!list) {
      throw new EngineError(
        op,
        `"${item}" is neither a template with {} nor a list (${
          Object.keys(TEMPLATE_LISTS).join(", ")
        })`,
      );
    }
    out.push(...list);
  }
  if (!out.length) throw new EngineError(op, "no templates given");
  return out;
}
