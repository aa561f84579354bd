/**
 * Datasets as plain values: `{ root, source, prefix?, classnames, domains?, items }`, item paths
 * relative to the root (a folder, or a prefix inside a zip archive), with "/" separators.
 *
 * Readers (all synchronous, all deterministic):
 * - class folders `root/<class>/**` and domain folders `root/<domain>/<class>/**` (PACS, VLCS,
 *   Office-Home, DomainNet). Auto-detection: with two or more top folders, each holding only
 *   folders, whose names all repeat across top folders, it is the domain layout; otherwise class
 *   folders. `layout` forces either.
 * - zip archives of either layout, through their central directory: nothing is unpacked, an
 *   entry is read and inflated (fflate) when asked for, and a single wrapping folder
 *   (`PACS/...`) is stripped as the prefix.
 * - CSV (header row) or JSON manifests of path,label[,domain][,split]; labels are class names
 *   or indices; paths relative to the manifest's folder.
 *
 * Images are files ending in .jpg/.jpeg/.png (any case); names starting with "." and
 * `__MACOSX` are skipped. Everything is sorted in the byte order of the names' UTF-8 (code point
 * order), never locale order, so a listing is the same on every machine. Names are not
 * Unicode-normalised: a folder copied between NFC and NFD file systems lists differently.
 * Class names are folder names with "_" → " " unless a names file is given.
 */
import { createHash } from "node:crypto";
import { decodeImage, type RGBImage } from "../model/image.ts";
import { crc32, zipEntries, type ZipEntry, zipEntryBytes } from "../model/zip.ts";

export { crc32 };

export interface Item {
  path: string;
  label: number;
  domain?: string;
  /** An official split from a manifest's `split` column. */
  split?: "train" | "val" | "test";
}

export interface Dataset {
  /** The dataset folder, or the zip file. */
  root: string;
  source: "folder" | "zip";
  /** zip only: the entry-name prefix of the dataset root inside the archive ("" or "PACS/"). */
  prefix?: string;
  classnames: string[];
  /** Domain names (sorted), when the items carry domains. */
  domains?: string[];
  /** Sorted by path (byte order). */
  items: Item[];
}

export type Layout = "auto" | "classes" | "domains";

/** A data error; `path` is the file or folder it concerns. */
export class DataError extends Error {
  constructor(readonly path: string, message: string) {
    super(message);
    this.name = "DataError";
  }
}

// ------------------------------------------------------------------------------------------------
// Ordering and names
// ------------------------------------------------------------------------------------------------

/** Byte order of the strings' UTF-8 (= code point order), not UTF-16 or locale order. */
export function byteCompare(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i), y = b.charCodeAt(i);
    if (x === y) continue;
    // UTF-16 order differs from code point order only between surrogates and U+E000..U+FFFF.
    if (x >= 0xd800 && y >= 0xd800) {
      x = x >= 0xe000 ? x - 0x800 : x + 0x2000;
      y = y >= 0xe000 ? y - 0x800 : y + 0x2000;
    }
    return x - y;
  }
  return a.length - b.length;
}

const byteSort = (a: string[]) => a.sort(byteCompare);

const IMAGE_EXT = /\.(jpe?g|png)$/i;
export const isImageName = (name: string) => IMAGE_EXT.test(name);
const skipName = (name: string) => name.startsWith(".") || name === "__MACOSX";

/** "golden_retriever" → "golden retriever". */
export const folderClassName = (folder: string) => folder.replace(/_/g, " ").trim();

/**
 * Class names for the sorted class folders from a names file (or its lines): either one name
 * per line in folder order, or `<folder> <name>` lines (space or tab) covering every folder.
 */
export function readNames(names: string | string[], folders: string[]): string[] {
  const where = typeof names === "string" ? names : "classnames";
  let lines: string[];
  if (typeof names === "string") {
    let text: string;
    try {
      text = Deno.readTextFileSync(names);
    } catch (e) {
      throw new DataError(names, `cannot read names file ${names}: ${(e as Error).message}`);
    }
    lines = text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l.length > 0);
  } else lines = names.map((l) => l.trim());
  const known = new Set(folders);
  const mapped = new Map<string, string>();
  for (const l of lines) {
    const m = /^(\S+)[ \t]+(.+)$/.exec(l);
    if (!m || !known.has(m[1]) || mapped.has(m[1])) {
      mapped.clear();
      break;
    }
    mapped.set(m[1], m[2].trim());
  }
  if (mapped.size === folders.length && lines.length === folders.length) {
    return folders.map((f) => mapped.get(f)!);
  }
  if (lines.length !== folders.length) {
    throw new DataError(
      where,
      `${where} has ${lines.length} class names for ${folders.length} classes (${
        folders.slice(0, 5).join(", ")
      }${folders.length > 5 ? ", …" : ""})`,
    );
  }
  if (lines.some((l) => !l)) throw new DataError(where, `${where} has an empty class name`);
  return lines;
}

// ------------------------------------------------------------------------------------------------
// Listing trees (folder or zip), and the two layouts over them
// ------------------------------------------------------------------------------------------------

interface Dir {
  dirs: Map<string, Dir>;
  /** Image file names directly inside. */
  files: string[];
}

const newDir = (): Dir => ({ dirs: new Map(), files: [] });

function walkFolder(path: string, depth = 0): Dir {
  if (depth > 32) {
    throw new DataError(path, `folder nesting deeper than 32 (a link loop?): ${path}`);
  }
  const d = newDir();
  for (const e of Deno.readDirSync(path)) {
    if (skipName(e.name)) continue;
    let isDir = e.isDirectory, isFile = e.isFile;
    if (e.isSymlink) {
      try {
        const s = Deno.statSync(`${path}/${e.name}`);
        isDir = s.isDirectory;
        isFile = s.isFile;
      } catch {
        continue; // dangling link
      }
    }
    if (isDir) d.dirs.set(e.name, walkFolder(`${path}/${e.name}`, depth + 1));
    else if (isFile && isImageName(e.name)) d.files.push(e.name);
  }
  return d;
}

/** The tree of an archive's entry names; folders are kept even when they hold no images. */
function treeFromNames(names: Iterable<string>): Dir {
  const root = newDir();
  for (const name of names) {
    const parts = name.split("/");
    const isFolder = parts[parts.length - 1] === "";
    if (isFolder) parts.pop();
    if (parts.some((p) => p === "" || skipName(p))) continue;
    let d = root;
    for (const p of isFolder ? parts : parts.slice(0, -1)) {
      let c = d.dirs.get(p);
      if (!c) d.dirs.set(p, c = newDir());
      d = c;
    }
    if (!isFolder && isImageName(parts[parts.length - 1])) d.files.push(parts[parts.length - 1]);
  }
  return root;
}

function collect(d: Dir, prefix: string, out: string[]) {
  for (const f of d.files) out.push(prefix + f);
  for (const [name, c] of d.dirs) collect(c, `${prefix}${name}/`, out);
}

/** Domain layout: ≥ 2 top folders, each with only folders, every folder name seen twice or more. */
export function detectLayout(tree: Dir): "classes" | "domains" {
  if (tree.dirs.size < 2 || tree.files.length) return "classes";
  const seen = new Map<string, number>();
  for (const d of tree.dirs.values()) {
    if (d.files.length || d.dirs.size === 0) return "classes";
    for (const c of d.dirs.keys()) seen.set(c, (seen.get(c) ?? 0) + 1);
  }
  return [...seen.values()].every((n) => n >= 2) ? "domains" : "classes";
}

interface LayoutOptions {
  layout?: Layout;
  /** A names file (path) or the names themselves, in sorted-folder order. */
  names?: string | string[];
  /** Domain layout: read only these domains. */
  domains?: string[];
}

/** Items of a listing tree; `at(rel)` names a location in errors. */
function itemsOf(
  tree: Dir,
  at: (rel: string) => string,
  opts: LayoutOptions,
): Pick<Dataset, "classnames" | "domains" | "items"> {
  const layout = !opts.layout || opts.layout === "auto" ? detectLayout(tree) : opts.layout;
  if (layout !== "classes" && layout !== "domains") {
    throw new DataError(
      at(""),
      `unknown layout ${JSON.stringify(layout)} (auto, classes, domains)`,
    );
  }
  if (tree.files.length) {
    throw new DataError(
      at(tree.files[0]),
      `images at the dataset root belong to no class folder (${tree.files.length}, e.g. ${
        at(tree.files[0])
      })`,
    );
  }
  const items: Item[] = [];
  let folders: string[];
  let domains: string[] | undefined;
  if (layout === "classes") {
    if (opts.domains) throw new DataError(at(""), `no domains in class-folder dataset ${at("")}`);
    folders = byteSort([...tree.dirs.keys()]);
    folders.forEach((c, label) => {
      const paths: string[] = [];
      collect(tree.dirs.get(c)!, `${c}/`, paths);
      if (!paths.length) throw new DataError(at(c), `class folder has no images: ${at(c)}`);
      for (const path of paths) items.push({ path, label });
    });
  } else {
    const known = byteSort([...tree.dirs.keys()]);
    domains = known;
    if (opts.domains) {
      const bad = opts.domains.filter((d) => !tree.dirs.has(d));
      if (bad.length) {
        throw new DataError(
          at(bad[0]),
          `unknown domain ${bad.map((d) => JSON.stringify(d)).join(", ")} in ${at("")} (known: ${
            known.join(", ")
          })`,
        );
      }
      domains = byteSort([...new Set(opts.domains)]);
    }
    const classSet = new Set<string>();
    for (const d of domains) {
      const dd = tree.dirs.get(d)!;
      if (dd.files.length) {
        throw new DataError(
          at(`${d}/${dd.files[0]}`),
          `images directly in domain folder ${at(d)} belong to no class folder`,
        );
      }
      for (const c of dd.dirs.keys()) classSet.add(c);
    }
    folders = byteSort([...classSet]);
    const labelOf = new Map(folders.map((c, i) => [c, i]));
    for (const d of domains) {
      for (const [c, cd] of tree.dirs.get(d)!.dirs) {
        const paths: string[] = [];
        collect(cd, `${d}/${c}/`, paths);
        if (!paths.length) {
          throw new DataError(at(`${d}/${c}`), `class folder has no images: ${at(`${d}/${c}`)}`);
        }
        for (const path of paths) items.push({ path, label: labelOf.get(c)!, domain: d });
      }
    }
  }
  if (!items.length) throw new DataError(at(""), `no images found under ${at("")}`);
  items.sort((a, b) => byteCompare(a.path, b.path));
  const classnames = opts.names ? readNames(opts.names, folders) : folders.map(folderClassName);
  classnames.forEach((n, i) => {
    if (!n) throw new DataError(at(folders[i]), `empty class name for folder ${at(folders[i])}`);
  });
  return { classnames, ...(domains ? { domains } : {}), items };
}

const trimSlash = (p: string) => p.length > 1 ? p.replace(/\/+$/, "") : p;

function statOrFail(path: string, what: string): Deno.FileInfo {
  try {
    return Deno.statSync(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new DataError(path, `${what} not found: ${path}`);
    throw new DataError(path, `cannot read ${what} ${path}: ${(e as Error).message}`);
  }
}

/** A folder of class folders or domain folders. */
export function readFolder(root: string, opts: LayoutOptions = {}): Dataset {
  root = trimSlash(root);
  const st = statOrFail(root, "dataset root");
  if (!st.isDirectory) throw new DataError(root, `dataset root is not a folder: ${root}`);
  const tree = walkFolder(root);
  const at = (rel: string) => rel ? `${root}/${rel}` : root;
  return { root, source: "folder", ...itemsOf(tree, at, opts) };
}

// ------------------------------------------------------------------------------------------------
// Zip archives (central directory, entries read and inflated on demand)
// ------------------------------------------------------------------------------------------------

interface ZipIndex {
  path: string;
  size: number;
  mtime: number;
  entries: Map<string, ZipEntry>;
}

/** Reads `len` bytes at `pos` of an open file (model/zip.ts's readAt). */
function readAt(f: Deno.FsFile, pos: number, len: number, path: string): Uint8Array {
  const buf = new Uint8Array(len);
  f.seekSync(pos, Deno.SeekMode.Start);
  let got = 0;
  while (got < len) {
    const n = f.readSync(buf.subarray(got));
    if (!n) throw new DataError(path, `zip archive ${path} is truncated (at byte ${pos + got})`);
    got += n;
  }
  return buf;
}

const zipCache = new Map<string, ZipIndex>();

/** Parses (and caches, keyed by path, size and mtime) an archive's central directory. */
export function zipIndex(path: string): ZipIndex {
  const st = statOrFail(path, "zip archive");
  const mtime = st.mtime?.getTime() ?? 0;
  const hit = zipCache.get(path);
  if (hit && hit.size === st.size && hit.mtime === mtime) return hit;
  const f = Deno.openSync(path, { read: true });
  try {
    const entries = zipEntries(st.size, (pos, len) => readAt(f, pos, len, path));
    const idx = { path, size: st.size, mtime, entries };
    zipCache.set(path, idx);
    return idx;
  } catch (err) {
    if (err instanceof DataError) throw err;
    throw new DataError(path, `not a readable zip archive ${path}: ${(err as Error).message}`);
  } finally {
    f.close();
  }
}

/** Reads and inflates one entry of a zip archive (CRC-checked). */
export function readZipEntry(path: string, name: string): Uint8Array {
  const idx = zipIndex(path);
  const e = idx.entries.get(name);
  const where = `${path}!/${name}`;
  if (!e) throw new DataError(where, `no entry ${name} in zip archive ${path}`);
  const f = Deno.openSync(path, { read: true });
  try {
    return zipEntryBytes(e, (pos, len) => readAt(f, pos, len, path), idx.size);
  } catch (err) {
    if (err instanceof DataError) throw err;
    throw new DataError(where, `zip entry ${where}: ${(err as Error).message}`);
  } finally {
    f.close();
  }
}

/**
 * A zip archive of class folders or domain folders. Without `prefix`, single wrapping folders
 * that hold no images themselves (`PACS/`) are stripped.
 */
export function readZip(path: string, opts: LayoutOptions & { prefix?: string } = {}): Dataset {
  const idx = zipIndex(path);
  let tree = treeFromNames(idx.entries.keys());
  let prefix = "";
  if (opts.prefix !== undefined) {
    prefix = opts.prefix && !opts.prefix.endsWith("/") ? opts.prefix + "/" : opts.prefix;
    for (const p of prefix.split("/").filter((s) => s)) {
      const c = tree.dirs.get(p);
      if (!c) {
        throw new DataError(`${path}!/${prefix}`, `no folder ${prefix} in zip archive ${path}`);
      }
      tree = c;
    }
  } else {
    while (tree.dirs.size === 1 && !tree.files.length) {
      const [name, c] = [...tree.dirs][0];
      if (c.files.length || !c.dirs.size) break;
      prefix += name + "/";
      tree = c;
    }
  }
  const at = (rel: string) => `${path}!/${prefix}${rel}`;
  return { root: path, source: "zip", prefix, ...itemsOf(tree, at, opts) };
}

// ------------------------------------------------------------------------------------------------
// Manifests
// ------------------------------------------------------------------------------------------------

/** RFC 4180 CSV (quoted fields, doubled quotes, CRLF or LF); blank lines dropped. */
export function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [], field = "", quoted = false, i = 0, any = false;
  if (text.charCodeAt(0) === 0xfeff) i = 1;
  const endRow = () => {
    row.push(field);
    if (row.length > 1 || row[0] !== "" || any) rows.push(row);
    row = [];
    field = "";
    any = false;
  };
  for (; i < text.length; i++) {
    const ch = text[i];
    if (quoted) {
      if (ch === '"') {
        if (text[i + 1] === '"') field += '"', i++;
        else quoted = false;
      } else field += ch;
    } else if (ch === '"') quoted = any = true;
    else if (ch === ",") row.push(field), field = "", any = true;
    else if (ch === "\n" || ch === "\r") {
      if (ch === "\r" && text[i + 1] === "\n") i++;
      endRow();
    } else field += ch;
  }
  if (quoted) throw new Error("unterminated quoted field");
  if (field !== "" || row.length || any) endRow();
  return rows;
}

const PATH_COLS = ["path", "file", "filename", "image", "impath"];
const LABEL_COLS = ["label", "class", "classname", "target"];

interface RawRow {
  path: string;
  label: string | number;
  domain?: string;
  split?: string;
  where: string;
}

/** Joins a relative manifest path onto `base`-relative form, resolving "." and "..". */
function normRel(p: string, where: string): string {
  const s = p.replace(/\\/g, "/");
  if (s.startsWith("/") || /^[A-Za-z]:\//.test(s)) {
    throw new DataError(
      where,
      `${where}: path ${JSON.stringify(p)} must be relative to the manifest`,
    );
  }
  const out: string[] = [];
  for (const part of s.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === ".." && out.length && out[out.length - 1] !== "..") out.pop();
    else out.push(part);
  }
  if (!out.length) throw new DataError(where, `${where}: empty path`);
  return out.join("/");
}

export interface ManifestOptions {
  /** Class names in label order (required when labels are indices, unless `names`). */
  classnames?: string[];
  /** A names file: one class name per line, in label order. */
  names?: string;
  /** Check that every file exists (default true). */
  check?: boolean;
}

/**
 * A CSV (header row with path and label columns, optional domain and split) or JSON manifest
 * (`[{path, label, domain?, split?}]`, `[[path, label], …]` or `{classnames?, items}`). Labels
 * are class names or indices into `classnames`; without given names the class names are the
 * sorted distinct label names. Root = the manifest's folder.
 */
export function readManifest(path: string, opts: ManifestOptions = {}): Dataset {
  const st = statOrFail(path, "manifest");
  if (!st.isFile) throw new DataError(path, `manifest is not a file: ${path}`);
  const text = Deno.readTextFileSync(path);
  const slash = path.lastIndexOf("/");
  const root = slash < 0 ? "." : slash === 0 ? "/" : path.slice(0, slash);
  let rows: RawRow[] = [];
  let given = opts.classnames;
  if (/\.json$/i.test(path)) {
    let j: unknown;
    try {
      j = JSON.parse(text);
    } catch (e) {
      throw new DataError(path, `manifest ${path} is not valid JSON: ${(e as Error).message}`);
    }
    let list = j;
    if (j && typeof j === "object" && !Array.isArray(j)) {
      const o = j as { items?: unknown; classnames?: unknown };
      list = o.items;
      if (o.classnames !== undefined) {
        if (!Array.isArray(o.classnames) || o.classnames.some((c) => typeof c !== "string")) {
          throw new DataError(path, `manifest ${path}: classnames must be a list of strings`);
        }
        given ??= o.classnames as string[];
      }
    }
    if (!Array.isArray(list)) {
      throw new DataError(path, `manifest ${path}: expected a list of items or {items: [...]}`);
    }
    rows = list.map((r, i) => {
      const where = `${path} item ${i}`;
      const [p, l, d, s] = Array.isArray(r)
        ? r
        : r && typeof r === "object"
        ? [r.path, r.label, r.domain, r.split]
        : [];
      if (typeof p !== "string" || (typeof l !== "string" && typeof l !== "number")) {
        throw new DataError(path, `${where}: needs a string path and a label`);
      }
      if (
        (d !== undefined && typeof d !== "string") || (s !== undefined && typeof s !== "string")
      ) {
        throw new DataError(path, `${where}: domain and split must be strings`);
      }
      return { path: p, label: l, domain: d, split: s, where };
    });
  } else {
    let table: string[][];
    try {
      table = parseCsv(text);
    } catch (e) {
      throw new DataError(path, `manifest ${path}: ${(e as Error).message}`);
    }
    if (!table.length) throw new DataError(path, `manifest ${path} is empty`);
    const head = table[0].map((h) => h.trim().toLowerCase());
    const col = (names: string[]) => head.findIndex((h) => names.includes(h));
    const pc = col(PATH_COLS), lc = col(LABEL_COLS), dc = col(["domain"]), sc = col(["split"]);
    if (pc < 0 || lc < 0) {
      throw new DataError(
        path,
        `manifest ${path}: the header row (${table[0].join(",")}) needs a path column (${
          PATH_COLS.join("/")
        }) and a label column (${LABEL_COLS.join("/")})`,
      );
    }
    rows = table.slice(1).map((r, i) => {
      const where = `${path} line ${i + 2}`;
      if (r.length !== head.length) {
        throw new DataError(path, `${where}: ${r.length} fields, the header has ${head.length}`);
      }
      return {
        path: r[pc],
        label: r[lc].trim(),
        domain: dc >= 0 ? r[dc].trim() || undefined : undefined,
        split: sc >= 0 ? r[sc].trim() || undefined : undefined,
        where,
      };
    });
  }
  if (!rows.length) throw new DataError(path, `no images in manifest ${path}`);
  if (opts.names) {
    let t: string;
    try {
      t = Deno.readTextFileSync(opts.names);
    } catch (e) {
      throw new DataError(
        opts.names,
        `cannot read names file ${opts.names}: ${(e as Error).message}`,
      );
    }
    given = t.split(/\r?\n/).map((l) => l.trim()).filter((l) => l);
  }
  if (given && (!given.length || new Set(given).size !== given.length)) {
    throw new DataError(path, `manifest ${path}: class names must be distinct and non-empty`);
  }
  const isIndex = (l: string | number) => typeof l === "number" || /^\d+$/.test(l);
  let classnames: string[];
  if (given) classnames = [...given];
  else {
    if (rows.every((r) => isIndex(r.label))) {
      throw new DataError(
        path,
        `manifest ${path} gives labels as indices: pass classnames or a names file`,
      );
    }
    classnames = byteSort([...new Set(rows.map((r) => String(r.label)))]);
  }
  const byName = new Map(classnames.map((c, i) => [c, i]));
  const seen = new Set<string>();
  const items: Item[] = rows.map((r) => {
    const p = normRel(r.path, r.where);
    if (!isImageName(p)) {
      throw new DataError(path, `${r.where}: ${p} is not a .jpg/.jpeg/.png image`);
    }
    if (seen.has(p)) throw new DataError(path, `${r.where}: duplicate path ${p}`);
    seen.add(p);
    let label = byName.get(String(r.label));
    if (label === undefined && isIndex(r.label)) label = Number(r.label);
    if (label === undefined || !(label >= 0 && label < classnames.length)) {
      throw new DataError(path, `${r.where}: unknown label ${JSON.stringify(r.label)}`);
    }
    const it: Item = { path: p, label };
    if (r.domain) it.domain = r.domain;
    if (r.split) {
      if (r.split !== "train" && r.split !== "val" && r.split !== "test") {
        throw new DataError(path, `${r.where}: split must be train, val or test, got ${r.split}`);
      }
      it.split = r.split;
    }
    return it;
  });
  if (opts.check !== false) {
    for (const it of items) {
      const f = `${root}/${it.path}`;
      try {
        Deno.statSync(f);
      } catch {
        throw new DataError(f, `manifest ${path} lists a missing file: ${f}`);
      }
    }
  }
  items.sort((a, b) => byteCompare(a.path, b.path));
  const withDomain = items.filter((i) => i.domain !== undefined).length;
  if (withDomain && withDomain !== items.length) {
    throw new DataError(path, `manifest ${path}: give a domain for every item or for none`);
  }
  const ds: Dataset = { root, source: "folder", classnames, items };
  if (withDomain) ds.domains = byteSort([...new Set(items.map((i) => i.domain!))]);
  return ds;
}

/** A folder, a .zip archive, or a .csv/.json manifest. */
export function readDataset(
  path: string,
  opts: LayoutOptions & ManifestOptions & { prefix?: string } = {},
): Dataset {
  path = trimSlash(path);
  const st = statOrFail(path, "dataset root");
  if (st.isDirectory) return readFolder(path, opts);
  if (/\.zip$/i.test(path)) return readZip(path, opts);
  if (/\.(csv|json)$/i.test(path)) {
    return readManifest(path, {
      classnames: opts.classnames ?? (Array.isArray(opts.names) ? opts.names : undefined),
      names: typeof opts.names === "string" ? opts.names : undefined,
      check: opts.check,
    });
  }
  throw new DataError(path, `not a dataset (folder, .zip, .csv or .json): ${path}`);
}

// ------------------------------------------------------------------------------------------------
// Reading images
// ------------------------------------------------------------------------------------------------

/** Where an item lives, for messages: `root/path` or `archive.zip!/prefix/path`. */
export const itemLocation = (ds: Dataset, item: Item) =>
  ds.source === "zip" ? `${ds.root}!/${ds.prefix ?? ""}${item.path}` : `${ds.root}/${item.path}`;

/** The encoded bytes of an item (file or zip entry). */
export function readImageBytesSync(ds: Dataset, item: Item): Uint8Array {
  if (ds.source === "zip") return readZipEntry(ds.root, (ds.prefix ?? "") + item.path);
  const f = `${ds.root}/${item.path}`;
  try {
    return Deno.readFileSync(f);
  } catch (e) {
    throw new DataError(f, `cannot read image ${f}: ${(e as Error).message}`);
  }
}

/** The encoded bytes of an item (file or zip entry). */
export async function readImageBytes(ds: Dataset, item: Item): Promise<Uint8Array> {
  if (ds.source === "zip") return readImageBytesSync(ds, item);
  const f = `${ds.root}/${item.path}`;
  try {
    return await Deno.readFile(f);
  } catch (e) {
    throw new DataError(f, `cannot read image ${f}: ${(e as Error).message}`);
  }
}

/** Reads and decodes an item to 8-bit RGB. */
export function loadItemImage(ds: Dataset, item: Item): RGBImage {
  return decodeImage(readImageBytesSync(ds, item), itemLocation(ds, item));
}

/**
 * Decoded images (uint8 RGB) of one dataset, keyed by item path, within a byte budget; least
 * recently used images are evicted first. `warm(items)` decodes a few-shot set before training so
 * the training loop only copies pixels.
 */
export class ImageCache {
  readonly budget: number;
  private map = new Map<string, RGBImage>();
  /** Bytes of pixels held. */
  bytes = 0;
  hits = 0;
  misses = 0;

  constructor(readonly ds: Dataset, { budgetBytes = 1 << 30 } = {}) {
    if (!(budgetBytes >= 0)) throw new DataError(ds.root, `bad cache budget ${budgetBytes}`);
    this.budget = budgetBytes;
  }

  get size(): number {
    return this.map.size;
  }

  has(item: Item | string): boolean {
    return this.map.has(typeof item === "string" ? item : item.path);
  }

  get(item: Item): RGBImage {
    const hit = this.map.get(item.path);
    if (hit) {
      this.hits++;
      this.map.delete(item.path);
      this.map.set(item.path, hit);
      return hit;
    }
    this.misses++;
    const img = loadItemImage(this.ds, item);
    this.put(item.path, img);
    return img;
  }

  private put(path: string, img: RGBImage) {
    const n = img.data.byteLength;
    if (n > this.budget) return;
    while (this.bytes + n > this.budget) {
      const [k, v] = this.map.entries().next().value!;
      this.map.delete(k);
      this.bytes -= v.data.byteLength;
    }
    this.map.set(path, img);
    this.bytes += n;
  }

  /**
   * Decodes `items` not yet held, in order, yielding to the event loop between images, and stops
   * (without evicting) when the next image would exceed the budget; returns how many are held.
   */
  async warm(items: readonly Item[]): Promise<number> {
    for (const it of items) {
      if (this.map.has(it.path)) continue;
      const img = decodeImage(await readImageBytes(this.ds, it), itemLocation(this.ds, it));
      if (this.bytes + img.data.byteLength > this.budget) break;
      this.put(it.path, img);
      await new Promise((r) => setTimeout(r, 0));
    }
    return items.filter((it) => this.map.has(it.path)).length;
  }

  clear() {
    this.map.clear();
    this.bytes = 0;
  }
}

// ------------------------------------------------------------------------------------------------
// Canonical hashing
// ------------------------------------------------------------------------------------------------

/** JSON with object keys sorted, no whitespace, undefined members dropped. */
export function canonicalJson(v: unknown): string {
  if (v === null || typeof v !== "object") return JSON.stringify(v);
  if (Array.isArray(v)) {
    return `[${v.map((x) => x === undefined ? "null" : canonicalJson(x)).join(",")}]`;
  }
  const o = v as Record<string, unknown>;
  const keys = Object.keys(o).filter((k) => o[k] !== undefined).sort(byteCompare);
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`).join(",")}}`;
}

export const sha256 = (s: string) => createHash("sha256").update(s).digest("hex");

/**
 * sha256 of a dataset's listing (class names, domains, item paths, labels, domains and official
 * splits, in path order), independent of where it lives: a folder and its zip give the same
 * digest.
 */
export function datasetDigest(ds: Dataset): string {
  return "sha256:" + sha256(canonicalJson({
    classnames: ds.classnames,
    domains: ds.domains ?? null,
    items: [...ds.items].sort((a, b) => byteCompare(a.path, b.path))
      .map((i) => [i.path, i.label, i.domain ?? null, i.split ?? null]),
  }));
}
