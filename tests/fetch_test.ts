/**
 * model/fetch.ts without the internet: name spellings, cache paths, the offline message, and real
 * downloads from a local Deno.serve (hash refused → nothing left behind; hash right → the file at
 * its cache path), with progress both to a terminal-like and a plain sink.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { sharedDir } from "./util.ts";
import {
  cacheDir,
  download,
  DownloadError,
  fetchModel,
  formatProgress,
  KNOWN_FILES,
  type KnownFile,
  MODEL_NAMES,
  ModelNotFoundError,
  modelPath,
  normalizeName,
  type ProgressSink,
  resolveModel,
  sha256File,
} from "../model/fetch.ts";
import { defaultVocabPath, VOCAB_FILE } from "../model/tokenizer.ts";

const VOCAB = sharedDir() + "clip/" + VOCAB_FILE;

/** A deterministic payload of n bytes and its sha256. */
function payload(n: number): { bytes: Uint8Array<ArrayBuffer>; sha256: string } {
  const bytes = new Uint8Array(n);
  let s = 12345;
  for (let i = 0; i < n; i++) bytes[i] = (s = (s * 1103515245 + 12345) >>> 0) >>> 24;
  return { bytes, sha256: createHash("sha256").update(bytes).digest("hex") };
}

function capture(tty: boolean): ProgressSink & { text: () => string } {
  const parts: string[] = [];
  return { tty, write: (s) => void parts.push(s), text: () => parts.join("") };
}

async function listDir(dir: string): Promise<string[]> {
  const names: string[] = [];
  try {
    for await (const e of Deno.readDir(dir)) names.push(e.name);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  return names.sort();
}

async function withTmp(fn: (dir: string) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "clipkit-fetch-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Serves `routes` on 127.0.0.1 (a free port) for the duration of fn. */
async function withServer(
  routes: Record<string, () => Response>,
  fn: (base: string) => Promise<void>,
) {
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    (req) => routes[new URL(req.url).pathname]?.() ?? new Response("no", { status: 404 }),
  );
  try {
    await fn(`http://127.0.0.1:${server.addr.port}`);
  } finally {
    await server.shutdown();
  }
}

const entry = (url: string, sha256: string, file = "test-model.pt"): KnownFile => ({
  name: "test-model",
  file,
  url,
  sha256,
});

/** assert.rejects matcher: a DownloadError containing every fragment. */
const says = (...fragments: string[]) => (e: unknown) => {
  assert.ok(e instanceof DownloadError || e instanceof ModelNotFoundError, `got ${e}`);
  for (const f of fragments) {
    assert.ok((e as Error).message.includes(f), `"${f}" not in:\n${(e as Error).message}`);
  }
  return true;
};

// --------------------------------------------------------------------------------------------------

Deno.test("name spellings normalise to the canonical names", () => {
  const cases: [string, string | undefined][] = [
    ["ViT-B/32", "ViT-B/32"],
    ["ViT-B-32", "ViT-B/32"],
    ["vit-b-32", "ViT-B/32"],
    ["ViT-B-32.pt", "ViT-B/32"],
    ["ViT_B_16", "ViT-B/16"],
    ["vitb16", "ViT-B/16"],
    ["ViT-L/14", "ViT-L/14"],
    ["ViT-L-14", "ViT-L/14"],
    ["vocab", "vocab"],
    [VOCAB_FILE, "vocab"],
    ["ViT-L/14@336px", undefined],
    ["ViT-H-14", undefined],
    ["RN50", undefined],
    ["", undefined],
    ["/", undefined],
  ];
  for (const [spelling, want] of cases) assert.equal(normalizeName(spelling), want, spelling);
  assert.deepEqual([...MODEL_NAMES], ["ViT-B/32", "ViT-B/16", "ViT-L/14"]);
});

Deno.test("the table: OpenAI's URLs carry the sha256, the vocabulary's hash is the shared copy's", async () => {
  for (const name of MODEL_NAMES) {
    const e = KNOWN_FILES[name];
    assert.match(e.sha256, /^[0-9a-f]{64}$/);
    assert.equal(e.file, name.replace("/", "-") + ".pt");
    assert.equal(
      e.url,
      `https://openaipublic.azureedge.net/clip/models/${e.sha256}/${e.file}`,
    );
    assert.equal(e.url.split("/").at(-2), e.sha256);
  }
  // as published in openai/CLIP's clip/clip.py (_MODELS)
  const base = "https://openaipublic.azureedge.net/clip/models/";
  assert.equal(
    KNOWN_FILES["ViT-B/32"].url,
    base + "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
  );
  assert.equal(
    KNOWN_FILES["ViT-B/16"].url,
    base + "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt",
  );
  assert.equal(
    KNOWN_FILES["ViT-L/14"].url,
    base + "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt",
  );
  assert.equal(
    KNOWN_FILES.vocab.url,
    "https://github.com/openai/CLIP/raw/main/clip/bpe_simple_vocab_16e6.txt.gz",
  );
  assert.equal(KNOWN_FILES.vocab.file, VOCAB_FILE);
  assert.equal(await sha256File(VOCAB), KNOWN_FILES.vocab.sha256);
});

Deno.test("cache paths follow the tokenizer's folder ($CLIPKIT_CACHE), or --cache", () => {
  const before = Deno.env.get("CLIPKIT_CACHE");
  try {
    Deno.env.set("CLIPKIT_CACHE", "/some/cache/");
    assert.equal(cacheDir(), "/some/cache");
    assert.equal(modelPath("ViT-B-16"), "/some/cache/ViT-B-16.pt");
    assert.equal(modelPath("vocab"), defaultVocabPath());
    assert.equal(modelPath("ViT-L/14", "/elsewhere/"), "/elsewhere/ViT-L-14.pt");
    assert.throws(() => modelPath("RN50"), /unknown model "RN50".*ViT-B\/32/);
  } finally {
    if (before === undefined) Deno.env.delete("CLIPKIT_CACHE");
    else Deno.env.set("CLIPKIT_CACHE", before);
  }
});

Deno.test("resolveModel: paths as they are, cached names, and what to do when missing", async () => {
  await withTmp(async (dir) => {
    assert.equal(await resolveModel(VOCAB), VOCAB);
    const target = `${dir}/ViT-B-16.pt`;
    await assert.rejects(
      () => resolveModel("ViT-B-16", { cacheDir: dir }),
      says(
        "ViT-B/16 is not in the cache",
        KNOWN_FILES["ViT-B/16"].url,
        `save it as\n  ${target}`,
        "--model FILE",
        "--vocab FILE",
      ),
    );
    await Deno.writeFile(target, new Uint8Array(1));
    assert.equal(await resolveModel("vit_b_16", { cacheDir: dir }), target);
    await assert.rejects(
      () => resolveModel(`${dir}/nope.safetensors`, { cacheDir: dir }),
      says(`${dir}/nope.safetensors: no such file`, "ViT-B/32, ViT-B/16, ViT-L/14"),
    );
  });
});

Deno.test("offline: the error names the URL and the exact path, and nothing is left", async () => {
  await withTmp(async (dir) => {
    const cache = `${dir}/cache`;
    const sink = capture(false);
    // the real table entry, with every request sent to a port nothing listens on
    const unreachable: typeof fetch = (_url, init) => fetch("http://127.0.0.1:9/", init);
    const b16 = KNOWN_FILES["ViT-B/16"];
    await assert.rejects(
      () => fetchModel("ViT-B-16", { cacheDir: cache, fetch: unreachable, progress: sink }),
      says(`cannot reach ${b16.url}`, `save it as\n  ${cache}/ViT-B-16.pt`, "--model", "--vocab"),
    );
    // a refused connection through the real fetch
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (listener.addr as Deno.NetAddr).port;
    listener.close();
    const url = `http://127.0.0.1:${port}/x.pt`;
    await assert.rejects(
      () => download(entry(url, "0".repeat(64)), { cacheDir: cache, progress: sink }),
      says(`cannot reach ${url}`, `${cache}/test-model.pt`),
    );
    assert.deepEqual(await listDir(cache), []);
  });
});

Deno.test("a download with the wrong sha256 is refused and leaves no file", async () => {
  const { bytes, sha256 } = payload(300_000);
  await withServer({ "/m.pt": () => new Response(bytes) }, async (base) => {
    await withTmp(async (dir) => {
      const wrong = sha256.replace(/^./, (c) => (c === "0" ? "1" : "0"));
      await assert.rejects(
        () => download(entry(`${base}/m.pt`, wrong), { cacheDir: dir, progress: capture(false) }),
        says(`sha256 is ${sha256}, not the published ${wrong}`, "discarded"),
      );
      assert.deepEqual(await listDir(dir), []);
    });
  });
});

Deno.test("a verified download lands at its cache path; progress works with and without a TTY", async () => {
  const { bytes, sha256 } = payload(700_000);
  let requests = 0;
  // streamed in pieces, so the client sees several chunks
  const stream = () => {
    requests++;
    let at = 0;
    return new Response(
      new ReadableStream<Uint8Array>({
        pull(c) {
          if (at >= bytes.length) return c.close();
          c.enqueue(bytes.slice(at, at += 50_000));
        },
      }),
      { headers: { "content-length": String(bytes.length) } },
    );
  };
  await withServer({ "/m.pt": stream }, async (base) => {
    await withTmp(async (dir) => {
      const e = entry(`${base}/m.pt`, sha256);
      const plain = capture(false);
      const path = await download(e, { cacheDir: `${dir}/a/b`, progress: plain });
      assert.equal(path, `${dir}/a/b/test-model.pt`);
      assert.deepEqual(await Deno.readFile(path), bytes);
      assert.deepEqual(await listDir(`${dir}/a/b`), ["test-model.pt"]);
      assert.match(plain.text(), /test-model\.pt 0\.7 \/ 0\.7 MB {2}100\.0% {2}[\d.]+ MB\/s\n$/);
      assert.ok(!plain.text().includes("\r"));

      const tty = capture(true);
      await download(e, { cacheDir: `${dir}/c`, progress: tty });
      assert.match(tty.text(), /^\r/);
      assert.match(tty.text(), /\[#{24}\] 0\.7 \/ 0\.7 MB {2}100\.0%.*\n$/);

      // the default sink (stderr, a TTY or not) must not throw either
      assert.equal(await download(e, { cacheDir: `${dir}/d` }), `${dir}/d/test-model.pt`);

      // present and verified: no request; damaged: fetched again
      const n = requests;
      const again = capture(false);
      assert.equal(await download(e, { cacheDir: `${dir}/a/b`, progress: again }), path);
      assert.equal(requests, n);
      assert.match(again.text(), /already there \(sha256 verified\)/);
      await Deno.writeFile(path, bytes.subarray(1));
      await download(e, { cacheDir: `${dir}/a/b`, progress: again });
      assert.equal(requests, n + 1);
      assert.deepEqual(await Deno.readFile(path), bytes);
      assert.match(again.text(), /wrong sha256; downloading it again/);
    });
  });
});

Deno.test("HTTP errors, cut and stalled transfers leave nothing behind", async () => {
  const { bytes, sha256 } = payload(10_000);
  const routes = {
    "/stall": () =>
      new Response(
        new ReadableStream<Uint8Array>({
          start(c) {
            c.enqueue(bytes.slice(0, 5000));
          },
          pull: () => new Promise<void>(() => {}), // never sends more
        }),
      ),
  };
  await withServer(routes, async (base) => {
    await withTmp(async (dir) => {
      const opts = { cacheDir: dir, progress: capture(false), stallTimeoutMs: 300 };
      await assert.rejects(
        () => download(entry(`${base}/missing.pt`, sha256), opts),
        says(`${base}/missing.pt answered HTTP 404`, `${dir}/test-model.pt`),
      );
      // a server that announces 10000 bytes, sends 5000 and hangs up
      const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const served = (async () => {
        const conn = await listener.accept();
        const head = `HTTP/1.1 200 OK\r\ncontent-length: ${bytes.length}\r\n\r\n`;
        await conn.read(new Uint8Array(4096)); // the request
        await conn.write(new TextEncoder().encode(head));
        await conn.write(bytes.slice(0, 5000));
        conn.close();
      })();
      const port = (listener.addr as Deno.NetAddr).port;
      await assert.rejects(
        () => download(entry(`http://127.0.0.1:${port}/cut.pt`, sha256), opts),
        (e: unknown) => {
          says(`http://127.0.0.1:${port}/cut.pt`)(e);
          assert.match((e as Error).message, /broke off after|sent 5000 bytes of the 10000/);
          return true;
        },
      );
      await served;
      listener.close();
      await assert.rejects(
        () => download(entry(`${base}/stall`, sha256), opts),
        says("stalled", "after 5000 bytes"),
      );
      assert.deepEqual(await listDir(dir), []);
    });
  });
});

Deno.test("formatProgress never prints NaN or Infinity", () => {
  assert.equal(formatProgress(0, undefined, 0), "0.0 MB  -- MB/s");
  assert.equal(formatProgress(0, 0, 0), "0.0 MB  -- MB/s");
  assert.equal(formatProgress(5e6, 10e6, 2), "5.0 / 10.0 MB   50.0%  2.5 MB/s");
  assert.equal(formatProgress(12e6, 10e6, 1), "12.0 / 10.0 MB  100.0%  12.0 MB/s");
});

Deno.test("the command line: help, unknown names, a verified cached file", async () => {
  const run = async (...args: string[]) => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        new URL("../pipeline/cli/fetch_model.ts", import.meta.url).pathname,
        ...args,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const dec = new TextDecoder();
    return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
  };
  const help = await run("--help");
  assert.equal(help.code, 0);
  assert.match(help.stdout, /fetch-model NAME/);
  const bad = await run("RN50");
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /unknown name: RN50[\s\S]*ViT-B\/32, ViT-B\/16, ViT-L\/14, vocab/);
  assert.equal((await run("--nope", "vocab")).code, 2);
  await withTmp(async (dir) => {
    await Deno.copyFile(VOCAB, `${dir}/${VOCAB_FILE}`);
    const ok = await run("vocab", "--cache", dir);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.stdout.trim(), `${dir}/${VOCAB_FILE}`);
    assert.match(ok.stderr, /sha256 verified/);
  });
});
