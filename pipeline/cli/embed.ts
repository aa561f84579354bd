/** `deno task embed`: image and text embeddings as JSON (model/embed.ts). */
import { main } from "../../model/embed.ts";
import { runCommand } from "./args.ts";

await runCommand(main);
