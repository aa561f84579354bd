/** `deno task eval`: the final evaluation of a run (pipeline/evaluate.ts). */
import { main } from "../evaluate.ts";
import { runCommand } from "./args.ts";

await runCommand(main);
