/** `deno task pretrain`: pretrains a small CLIP (pipeline/pretrain.ts). */
import { main } from "../pretrain.ts";
import { runCommand } from "./args.ts";

await runCommand(main);
