/**
 * Every `deno task` command as a user runs it, in a process of its own: `--help` prints its usage
 * and exits 0; a user's mistake prints a short message naming the file, flag or value, with no
 * stack frame, and exits non-zero (2 for usage errors).
 */
import { assert, runTask, sharedDir } from "./util.ts";

const root = new URL("..", import.meta.url).pathname;
const tasks: Record<string, string> = JSON.parse(Deno.readTextFileSync(`${root}deno.json`)).tasks;
const tmp = Deno.makeTempDirSync({ prefix: "commands_" });
const emptyCache = `${tmp}/cache`;
Deno.mkdirSync(emptyCache);

/** `deno task NAME ARGS...` from a folder without ../shared, with an empty vocabulary cache. */
const task = (name: string, args: string[]) =>
  runTask(name, args, { cwd: tmp, env: { NO_COLOR: "1", CLIPKIT_CACHE: emptyCache } });

const COMMANDS = Object.keys(tasks).filter((t) => tasks[t].startsWith("deno run"));
const STACK = /^\s+at .+:\d+:\d+\)?$/m;

Deno.test("every command: --help prints its usage and exits 0", async () => {
  assert.ok(COMMANDS.length >= 12, `only ${COMMANDS.join(", ")}`);
  for (const name of COMMANDS) {
    const r = await task(name, ["--help"]);
    assert.equal(r.code, 0, `${name} --help: ${r.err}`);
    assert.match(r.out, /usage: deno task /, `${name} --help prints no usage`);
    assert.doesNotMatch(r.err, STACK, name);
  }
});

Deno.test("every command: a user's mistake is one message naming what to fix, no stack", async () => {
  const garbage = `${tmp}/broken.safetensors`;
  Deno.writeFileSync(garbage, new TextEncoder().encode("this is not a checkpoint"));
  const S = sharedDir();
  const cases: [string, string[], number, RegExp][] = [
    ["train", ["--bogus"], 2, /bogus/],
    ["train", ["--seeds", "1,x"], 2, /--seeds/],
    ["train", ["--method", "nosuch", "--model", "m", "--data", "d", "--out", "o"], 2, /nosuch/],
    ["train", ["--method", "coop", "--model", "m", "--data", "d"], 2, /--out is required/],
    ...[
      "--crop-scale 0.5",
      "--crop-scale 0,1",
      "--batch 0",
      "--epochs 0",
      "--shots 0",
      "--lr 0",
      "--lr -1",
      "--val-fraction 1",
      "--seed 1.5",
      "--text-budget 0",
    ]
      .map((f): [string, string[], number, RegExp] => [
        "train",
        ["--method", "coop", "--model", "m", "--data", "d", "--out", "o", ...f.split(" ")],
        2,
        new RegExp(f.split(" ")[0]),
      ]),
    [
      "train",
      ["--method", "coop", "--model", garbage, "--data", `${tmp}/nodata`, "--out", `${tmp}/r`],
      1,
      /broken\.safetensors|nodata/,
    ],
    [
      "train",
      [
        "--method",
        "coop",
        "--model",
        `${S}golden/micro/model.safetensors`,
        "--data",
        `${S}data/PACS`,
        "--protocol",
        "dg",
        "--target",
        "sketch",
        "--shots",
        "1",
        "--out",
        `${tmp}/novocab`,
      ],
      1,
      /bpe_simple_vocab_16e6\.txt\.gz.*\n.*--vocab FILE|--vocab FILE/s,
    ],
    ["eval", ["--run", `${tmp}/none`], 2, /--run .*none: no run\.json/],
    ["eval", ["--bogus"], 2, /bogus/],
    ["predict", ["--run", `${tmp}/none`, "x.jpg"], 1, /none/],
    ["report", [`${tmp}/none`], 1, /none/],
    ["embed", ["--model", garbage, "--text", "a dog"], 1, /broken\.safetensors/],
    ["embed", ["--model", `${tmp}/missing.pt`, "--text", "a dog"], 1, /missing\.pt/],
    [
      "embed",
      ["--model", `${S}golden/micro/model.safetensors`, "--text", "a dog"],
      1,
      /vocabulary .*not found.*\n?.*--vocab FILE/s,
    ],
    ["zeroshot", ["--model", garbage, "--labels", "a,b", "x.jpg"], 1, /broken\.safetensors/],
    ["fetch-model", ["ViT-Q/99"], 2, /ViT-Q\/99/],
    ["pretrain", ["--data", `${tmp}/nodata`, "--out", `${tmp}/m.safetensors`], 1, /nodata/],
    ["pretrain", ["--data", "d", "--out", "o", "--epochs", "two"], 2, /--epochs two/],
    ["world", ["--out", `${tmp}/w`, "--per", "abc"], 2, /--per/],
    [
      "eval-pretrained",
      ["--model", garbage, "--data", `${tmp}/nodata`],
      1,
      /broken\.safetensors|nodata/,
    ],
    ["init-model", ["--arch", "ViT-Q/99", "--out", `${tmp}/q.safetensors`], 2, /ViT-Q\/99/],
    ["init-model", ["--arch", "ViT-B/32"], 2, /--out is required/],
    ["init-model", ["--arch", "ViT-B/32", "--out", garbage], 1, /broken\.safetensors exists/],
    ["info", ["--bogus"], 2, /bogus/],
    ["bench", ["--bogus"], 2, /bogus/],
  ];
  for (const [name, args, code, says] of cases) {
    const r = await task(name, args);
    const what = `${name} ${args.join(" ")}`;
    assert.equal(r.code, code, `${what}: exit ${r.code}\n${r.err}`);
    assert.doesNotMatch(r.err, STACK, `${what} printed a stack:\n${r.err}`);
    assert.match(r.err, says, `${what}: ${r.err}`);
    assert.ok(r.err.split("\n").length < 40, `${what}: ${r.err.split("\n").length} lines`);
  }
});

Deno.test("a bug still shows its stack; CLIPKIT_DEBUG shows every error's", async () => {
  const { describeFailure, isUserError } = await import("../pipeline/cli/args.ts");
  const bug = new TypeError("x is undefined");
  assert.equal(isUserError(bug), false);
  assert.match(describeFailure(bug), STACK);
  const mine = new Error("--foo: expected a number");
  assert.equal(isUserError(mine), true);
  assert.equal(describeFailure(mine), "error: --foo: expected a number");
  assert.match(describeFailure(mine, true), STACK);
  let nf: unknown;
  try {
    Deno.readFileSync(`${tmp}/absent`);
  } catch (e) {
    nf = e;
  }
  assert.equal(isUserError(nf), true);
  assert.match(describeFailure(nf), /absent/);
});
