/** `deno task report`: mean ± std over runs as Markdown, SVG and JSON (pipeline/report.ts). */
import { main } from "../report.ts";
import { runCommand } from "./args.ts";

await runCommand(main);
