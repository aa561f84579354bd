/** `deno task world`: writes the synthetic domain-shift world (pipeline/world.ts). */
import { main } from "../world.ts";
import { runCommand } from "./args.ts";

await runCommand(main);
