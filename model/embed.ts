/**
 * `deno task embed --model FILE [--vocab FILE] [--image FILE]... [--text STR]... [--out FILE]`
 *
 * Writes JSON { config, image_embeds, text_embeds, logits_per_image }: embeddings L2-normalised,
 * logits exp(logit_scale)·cos (100·cos for OpenAI's models). Flags are stable: scripts use them.
 */
import { parseArgs } from "node:util";
import { noGrad } from "../engine/autograd.ts";
import { scope, tensor } from "../engine/tensor.ts";
import { normalize } from "../engine/ops/nn.ts";
import { loadClip, loadImages } from "./load.ts";

const USAGE =
  "usage: deno task embed --model FILE|NAME [--vocab FILE] [--image FILE]... [--text STR]... [--out FILE]";

async function rows(t: { data(): Promise<Float32Array | Int32Array>; shape: number[] }) {
  const d = await t.data();
  const [n, k] = t.shape;
  return Array.from({ length: n }, (_, i) => Array.from(d.subarray(i * k, (i + 1) * k)));
}

export async function main(args: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        model: { type: "string" },
        vocab: { type: "string" },
        image: { type: "string", multiple: true, default: [] },
        text: { type: "string", multiple: true, default: [] },
        out: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    }));
  } catch (err) {
    console.error(`${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  if (!values.model) {
    console.error(`--model is required\n${USAGE}`);
    return 2;
  }
  const texts = values.text as string[];
  const empty = texts.findIndex((t) => !t.trim());
  if (empty >= 0) {
    console.error(`--text #${empty + 1} is empty: give each --text some words`);
    return 2;
  }
  const { model, tokenizer } = await loadClip(values.model, values.vocab);
  const c = model.config;
  const imgs = await loadImages(values.image as string[], c.imageResolution);
  const R = c.imageResolution;
  const { img, txt, logits } = scope(() =>
    noGrad(() => {
      const B = imgs.paths.length;
      const img = B ? model.encodeImage(tensor(imgs.pixels, [B, 3, R, R])).features : null;
      const txt = texts.length
        ? model.encodeText(tokenizer.tokenize(texts, c.contextLength))
        : null;
      return {
        img: img && normalize(img),
        txt: txt && normalize(txt),
        logits: img && txt ? model.logits(img, txt) : null,
      };
    })
  );
  const result = {
    config: c,
    images: imgs.paths,
    texts,
    image_embeds: img ? await rows(img) : [],
    text_embeds: txt ? await rows(txt) : [],
    logits_per_image: logits ? await rows(logits) : [],
    skipped: imgs.skipped,
  };
  [img, txt, logits].forEach((t) => t?.dispose());
  const json = JSON.stringify(result);
  if (values.out) await Deno.writeTextFile(values.out, json);
  else console.log(json);
  if (imgs.skipped.length) {
    console.error(`${imgs.skipped.length} image(s) could not be read and were skipped`);
  }
  model.dispose();
  return 0;
}
