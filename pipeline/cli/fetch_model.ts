/** `deno task fetch-model`: downloads OpenAI's checkpoints and vocabulary into the cache (model/fetch.ts). */
import { main } from "../../model/fetch.ts";
import { runCommand } from "./args.ts";

await runCommand(main);
