/**
 * `deno task zeroshot --model FILE --labels a,b,c [--template "a photo of a {}."] IMAGE|DIR...`
 *
 * Zero-shot classification: prints the top-5 labels with probabilities for each image. Folders
 * are searched for JPEG and PNG files; unreadable images are skipped, named and counted.
 */
import { parseArgs } from "node:util";
import { noGrad } from "../engine/autograd.ts";
import { scope, tensor } from "../engine/tensor.ts";
import { softmax } from "../engine/ops/nn.ts";
import { expandImagePaths, formatTop, loadClip, loadImages } from "./load.ts";

const USAGE =
  'usage: deno task zeroshot --model FILE|NAME [--vocab FILE] --labels a,b,c [--template "a photo of a {}."] [--batch 32] IMAGE|DIR...';

export async function main(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      options: {
        model: { type: "string" },
        vocab: { type: "string" },
        labels: { type: "string" },
        template: { type: "string", default: "a photo of a {}." },
        batch: { type: "string", default: "32" },
        top: { type: "string", default: "5" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (err) {
    console.error(`${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const labels = (values.labels ?? "").split(",").map((s) => s.trim()).filter(Boolean);
  const problem = !values.model
    ? "--model is required"
    : labels.length < 2
    ? "--labels needs at least two comma-separated labels"
    : !values.template!.includes("{}")
    ? `--template must contain {} where the label goes (got ${JSON.stringify(values.template)})`
    : !positionals.length
    ? "give at least one IMAGE or DIR"
    : null;
  if (problem) {
    console.error(`${problem}\n${USAGE}`);
    return 2;
  }
  const batch = Math.max(1, Number(values.batch) | 0);
  const top = Math.min(labels.length, Math.max(1, Number(values.top) | 0));
  const { model, tokenizer } = await loadClip(values.model!, values.vocab);
  const c = model.config;
  const R = c.imageResolution;
  const prompts = labels.map((l) => values.template!.replaceAll("{}", l));
  const text = noGrad(() => model.encodeText(tokenizer.tokenize(prompts, c.contextLength)));
  const paths = await expandImagePaths(positionals);
  let done = 0, skipped = 0;
  for (let i = 0; i < paths.length; i += batch) {
    const imgs = await loadImages(paths.slice(i, i + batch), R);
    skipped += imgs.skipped.length;
    if (!imgs.paths.length) continue;
    const probs = scope(() =>
      noGrad(() =>
        softmax(
          model.logits(
            model.encodeImage(tensor(imgs.pixels, [imgs.paths.length, 3, R, R])).features,
            text,
          ),
        )
      )
    );
    const p = await probs.data();
    probs.dispose();
    imgs.paths.forEach((path, b) => {
      const row = Array.from(p.subarray(b * labels.length, (b + 1) * labels.length));
      const order = row.map((probability, k) => ({ label: labels[k], probability }))
        .sort((x, y) => y.probability - x.probability).slice(0, top);
      console.log(formatTop(path, order));
    });
    done += imgs.paths.length;
  }
  text.dispose();
  model.dispose();
  console.log(`${done} image(s) classified${skipped ? `, ${skipped} skipped (unreadable)` : ""}`);
  return done || !paths.length ? 0 : 1;
}
