/** `deno task zeroshot`: zero-shot classification of images (model/zeroshot.ts). */
import { main } from "../../model/zeroshot.ts";
import { runCommand } from "./args.ts";

await runCommand(main);
