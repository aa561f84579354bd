/**
 * What every `deno task` command shares: how it ends. The files beside this one are the commands'
 * entry points (deno.json names them), the only files that call `Deno.exit`.
 *
 * Exit codes: 0 done (and `--help`), 2 a usage error (an unknown flag, a bad value: the command's
 * `main` returns 2 after printing its usage), 1 anything else. A user's mistake — a missing or
 * unreadable file, a checkpoint of another backbone, a vocabulary that is not there, a bad
 * dataset — is printed as one short message, `error: ...`, without a stack: the toolkit raises
 * those as plain `Error`s or as its typed errors (`USER_ERRORS`), each naming the file, flag or
 * value and what to do. Anything else (`TypeError`, `RangeError`, an op's shape check) is a bug,
 * and is printed with its stack so that it can be reported; `CLIPKIT_DEBUG=1` prints every
 * error's stack.
 */

import { parseArgs, type ParseArgsConfig } from "node:util";

/** The typed errors that describe a user's input, by name (their classes live in model/ and
 * pipeline/; naming them keeps this file free of imports). */
const USER_ERRORS = new Set([
  "VocabNotFoundError",
  "ModelNotFoundError",
  "DownloadError",
  "WeightsError",
  "PickleError",
  "ImageDecodeError",
  "DataError",
  "TestSplitError",
  "WorldError",
]);
/** Engine errors that are about the machine or the input's size, not a bug: no adapter, a buffer
 * larger than the adapter allows, out of memory. */
const USER_ENGINE_OPS = /^(device|alloc|memory)\b/;
/** Deno's file-system errors carry the path in their message. */
const FS_ERRORS = [
  "NotFound",
  "PermissionDenied",
  "AlreadyExists",
  "IsADirectory",
  "NotADirectory",
  "NotCapable",
  "FilesystemLoop",
] as const;

/** True for an error that a user's input caused (printed without a stack); see the top. */
export function isUserError(e: unknown): e is Error {
  if (!(e instanceof Error)) return false;
  if (e.constructor === Error) return true;
  if (USER_ERRORS.has(e.name)) return true;
  if (e.name === "EngineError") return USER_ENGINE_OPS.test(e.message);
  return FS_ERRORS.some((k) =>
    k in Deno.errors && e instanceof (Deno.errors[k] as ErrorConstructor)
  );
}

/** The text a failed command prints. */
export function describeFailure(e: unknown, debug = false): string {
  if (!debug && isUserError(e)) return `error: ${e.message}`;
  if (e instanceof Error) return `error: ${e.stack ?? e.message}`;
  return `error: ${String(e)}`;
}

function debugOn(): boolean {
  try {
    return !!Deno.env.get("CLIPKIT_DEBUG");
  } catch {
    return false;
  }
}

/** Runs a command's `main(Deno.args)` and exits with its code; see the top for failures. */
export async function runCommand(main: (args: string[]) => number | Promise<number>) {
  let code: number;
  try {
    code = await main(Deno.args);
  } catch (e) {
    console.error(describeFailure(e, debugOn()));
    code = 1;
  }
  Deno.exit(code);
}

type Options = NonNullable<ParseArgsConfig["options"]>;
type Parsed<O extends Options, P extends boolean> = ReturnType<
  typeof parseArgs<
    { args: string[]; options: O & { help: { type: "boolean" } }; allowPositionals: P }
  >
>;

/**
 * A command's flags, with `--help`/`-h` added: the parsed values, or the exit code when there is
 * nothing more to do (0 after printing `usage` for --help, 2 after printing the parser's complaint
 * and `usage` for an unknown flag or a missing value).
 */
export function parseCommand<O extends Options, P extends boolean = false>(
  args: string[],
  usage: string,
  options: O,
  allowPositionals?: P,
): Parsed<O, P> | 0 | 2 {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      options: { ...options, help: { type: "boolean", short: "h" } },
      allowPositionals: !!allowPositionals,
    });
  } catch (err) {
    console.error(`${(err as Error).message}\n${usage}`);
    return 2;
  }
  if ((parsed.values as { help?: boolean }).help) {
    console.log(usage);
    return 0;
  }
  return parsed as unknown as Parsed<O, P>;
}
