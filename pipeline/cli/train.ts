/** `deno task train`: trains a method, or runs the offline default comparison (pipeline/train_cli.ts). */
import { main } from "../train_cli.ts";
import { runCommand } from "./args.ts";

await runCommand(main);
