/** `deno task predict`: a run's learned prompts on any images and labels (pipeline/predict.ts). */
import { main } from "../predict.ts";
import { runCommand } from "./args.ts";

await runCommand(main);
