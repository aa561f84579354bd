/**
 * The GPU check's rehearsal: bench/gpu/run.sh runs end to end on the software adapter in its
 * --rehearsal mode (a tiny model; the same groups, processes and files as on a GPU), without a
 * registry to reach; and its table puts PyTorch's rows beside clipkit's by name.
 */
import { assert } from "./util.ts";
import { checkedConfig, loadCases, table } from "../bench/gpu/check.ts";

const root = new URL("..", import.meta.url).pathname;

Deno.test("bench/gpu/run.sh --rehearsal: every group measured, results.json and results.md written", async () => {
  for (const script of ["run.sh", "prepare.sh"]) {
    const syntax = await new Deno.Command("bash", { args: ["-n", `${root}bench/gpu/${script}`] })
      .output();
    assert.equal(syntax.code, 0, `${script}: ${new TextDecoder().decode(syntax.stderr)}`);
  }
  const out = await Deno.makeTempDir({ prefix: "gpu-check-" });
  const bin = Deno.execPath().replace(/\/[^/]+$/, "");
  const r = await new Deno.Command("bash", {
    args: [`${root}bench/gpu/run.sh`, out, "--rehearsal", "--no-peer"],
    env: { PATH: `${bin}:${Deno.env.get("PATH")}`, NPM_CONFIG_REGISTRY: "http://127.0.0.1:9/" },
  }).output();
  const log = new TextDecoder().decode(r.stdout) + new TextDecoder().decode(r.stderr);
  assert.equal(r.code, 0, log);
  const res = JSON.parse(await Deno.readTextFile(`${out}/results.json`));
  assert.equal(res.rehearsal, true);
  const names: string[] = res.rows.map((x: { name: string }) => x.name);
  const failed = res.rows.filter((x: { error?: string }) => x.error);
  assert.deepEqual(failed, [], "failed groups");
  for (const want of [/^matmul .* tiled$/, /^image encode batch 4$/, /^text encode 20 prompts$/]) {
    assert.ok(names.some((n) => want.test(n)), `${want} in ${names.join(", ")}`);
  }
  for (const m of ["coop", "cocoop", "maple", "gopro"]) {
    for (const c of [3, 7]) {
      const row = res.rows.find((x: { name: string }) =>
        x.name.startsWith(`${m} step ${c} classes`)
      );
      assert.ok(
        row && row.ms > 0 && row.peakMiB > 0,
        `${m} at ${c} classes: ${JSON.stringify(row)}`,
      );
    }
  }
  const md = await Deno.readTextFile(`${out}/results.md`);
  assert.match(md, new RegExp(`clipkit on \\*\\*${res.adapter.replace(/[()]/g, ".")}\\*\\*`));
  assert.match(await Deno.readTextFile(`${out}/info.txt`), /maxStorageBufferBindingSize/);
  assert.doesNotMatch(log, /Download http/, "tried to reach a registry");
  await Deno.remove(out, { recursive: true });
});

Deno.test("the GPU check's table: PyTorch beside clipkit by case name, ratios as speed", () => {
  const md = table(
    "Some GPU",
    [
      { group: "matmul", name: "matmul 8x8x8 (tiled)", ms: 2, value: 1, unit: "GFLOP/s" },
      { group: "step", name: "gopro step 100 classes batch 4", error: "out of | memory" },
    ],
    [
      { group: "", name: "matmul 8x8x8", ms: 1, mode: "fp32" },
      { group: "", name: "matmul 8x8x8", ms: 0.5, mode: "fp16" },
    ],
    "PyTorch on a GPU",
  );
  assert.match(
    md,
    /\| matmul 8x8x8 \(tiled\) \| 2\.0 \| — \| 1\.0 GFLOP\/s \| 1\.0 \| 0\.500× \| 0\.5 \| 0\.250× \|/,
  );
  assert.match(md, /\| gopro step 100 classes batch 4 \| failed: out of \/ memory \|/);
});

Deno.test("the GPU check's case sets: each names its architecture's exact configuration", () => {
  for (const mode of ["full", "cpu", "rehearsal"]) {
    const cases = loadCases(mode);
    assert.ok(mode === "rehearsal" || cases.arch, mode);
    checkedConfig(cases);
  }
  const wrong = { ...loadCases("full"), config: { ...loadCases("full").config, visionLayers: 11 } };
  assert.throws(() => checkedConfig(wrong), /not ViT-B\/16's \(visionLayers\)/);
});

Deno.test("the scaling table of a given checkpoint: its configuration, not the case set's", async () => {
  const { checkMain } = await import("../bench/gpu/check.ts");
  const { initStateDict } = await import("../model/archs.ts");
  const { saveSafetensors } = await import("../model/safetensors.ts");
  const out = await Deno.makeTempDir({ prefix: "bench-model-" });
  const config = { ...loadCases("rehearsal").config, visionLayers: 1, transformerLayers: 1 };
  const file = `${out}/one-layer.safetensors`;
  // deno-lint-ignore no-explicit-any
  await saveSafetensors(file, initStateDict(config as any, 5));
  const code = await checkMain(["--mode", "rehearsal", "--out", out, "--model", file, "--no-peer"]);
  assert.equal(code, 0);
  const res = JSON.parse(await Deno.readTextFile(`${out}/results.json`));
  assert.deepEqual(res.rows.filter((r: { error?: string }) => r.error), []);
  const cases = JSON.parse(await Deno.readTextFile(`${out}/cases.json`)).rehearsal;
  assert.equal(cases.config.visionLayers, 1);
  assert.equal(cases.arch, null);
  await Deno.remove(out, { recursive: true });
});
