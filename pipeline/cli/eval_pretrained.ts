/** `deno task eval-pretrained`: a pretrained CLIP's zero-shot, linear probe and retrieval (pipeline/evaluate_pretrained.ts). */
import { main } from "../evaluate_pretrained.ts";
import { runCommand } from "./args.ts";

await runCommand(main);
