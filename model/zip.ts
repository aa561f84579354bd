/**
 * The one zip reader: the central directory (zip64 included) and entries, read through a
 * `readAt(position, length)` the caller provides, so that a dataset archive is read from its file
 * a piece at a time (pipeline/data.ts) and a PyTorch checkpoint from its bytes without a copy
 * (model/torch_zip.ts: a stored entry is a view of the file's bytes). Errors are plain `Error`s
 * saying what is wrong; callers wrap them in their own typed errors naming the file.
 */
import { inflateSync } from "fflate";

export interface ZipEntry {
  name: string;
  method: number;
  flags: number;
  crc: number;
  csize: number;
  usize: number;
  /** Offset of the local file header. */
  offset: number;
}

export type ReadAt = (position: number, length: number) => Uint8Array;

const u64 = (v: DataView, o: number) => {
  const x = v.getBigUint64(o, true);
  if (x > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error("zip64 value too large");
  return Number(x);
};

const view = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);

/** Every entry of an archive of `size` bytes, by name. */
export function zipEntries(size: number, readAt: ReadAt): Map<string, ZipEntry> {
  const tailLen = Math.min(size, 22 + 65535 + 20);
  const tv = view(readAt(size - tailLen, tailLen));
  let e = -1;
  for (let i = tailLen - 22; i >= 0; i--) {
    if (tv.getUint32(i, true) === 0x06054b50) {
      e = i;
      break;
    }
  }
  if (e < 0) throw new Error("no end of central directory record");
  let count = tv.getUint16(e + 10, true);
  let cdSize = tv.getUint32(e + 12, true);
  let cdOff = tv.getUint32(e + 16, true);
  if (count === 0xffff || cdSize === 0xffffffff || cdOff === 0xffffffff) {
    // zip64: the locator sits just before the end record.
    if (e < 20 || tv.getUint32(e - 20, true) !== 0x07064b50) {
      throw new Error("zip64 locator missing");
    }
    const rec = u64(tv, e - 20 + 8);
    if (rec + 56 > size) throw new Error("zip64 end record past the end of the file");
    const r = view(readAt(rec, 56));
    if (r.getUint32(0, true) !== 0x06064b50) throw new Error("bad zip64 end record");
    count = u64(r, 32);
    cdSize = u64(r, 40);
    cdOff = u64(r, 48);
  }
  if (cdOff + cdSize > size) throw new Error("central directory past the end of the file");
  const cd = readAt(cdOff, cdSize);
  const v = view(cd);
  const dec = new TextDecoder();
  const entries = new Map<string, ZipEntry>();
  let p = 0;
  for (let k = 0; k < count; k++) {
    if (p + 46 > cdSize || v.getUint32(p, true) !== 0x02014b50) {
      throw new Error(`bad central entry ${k}`);
    }
    const nameLen = v.getUint16(p + 28, true), extraLen = v.getUint16(p + 30, true);
    const commentLen = v.getUint16(p + 32, true);
    if (p + 46 + nameLen + extraLen > cdSize) throw new Error(`central entry ${k} is truncated`);
    let csize = v.getUint32(p + 20, true), usize = v.getUint32(p + 24, true);
    let offset = v.getUint32(p + 42, true);
    const name = dec.decode(cd.subarray(p + 46, p + 46 + nameLen));
    // zip64 extra field: the 64-bit values of the fields saturated at 0xffffffff, in order.
    for (let x = p + 46 + nameLen; x + 4 <= p + 46 + nameLen + extraLen;) {
      const id = v.getUint16(x, true), len = v.getUint16(x + 2, true);
      if (id === 0x0001) {
        let q = x + 4;
        if (usize === 0xffffffff) usize = u64(v, q), q += 8;
        if (csize === 0xffffffff) csize = u64(v, q), q += 8;
        if (offset === 0xffffffff) offset = u64(v, q);
      }
      x += 4 + len;
    }
    entries.set(name, {
      name,
      flags: v.getUint16(p + 8, true),
      method: v.getUint16(p + 10, true),
      crc: v.getUint32(p + 16, true),
      csize,
      usize,
      offset,
    });
    p += 46 + nameLen + extraLen + commentLen;
  }
  return entries;
}

/**
 * An entry's bytes: stored ones as `readAt` returns them (a view when it returns views),
 * deflated ones inflated. `checkCrc` also checks the size and CRC-32 of what comes out.
 */
export function zipEntryBytes(
  e: ZipEntry,
  readAt: ReadAt,
  size: number,
  checkCrc = true,
): Uint8Array {
  if (e.flags & 1) throw new Error(`entry ${e.name} is encrypted`);
  if (e.method !== 0 && e.method !== 8) {
    throw new Error(
      `entry ${e.name} uses compression method ${e.method} (stored and deflate are read)`,
    );
  }
  if (e.offset + 30 > size) throw new Error(`entry ${e.name} starts past the end of the file`);
  const h = view(readAt(e.offset, 30));
  if (h.getUint32(0, true) !== 0x04034b50) throw new Error(`bad local header for ${e.name}`);
  const start = e.offset + 30 + h.getUint16(26, true) + h.getUint16(28, true);
  if (start + e.csize > size) throw new Error(`entry ${e.name} runs past the end of the file`);
  const raw = readAt(start, e.csize);
  let out: Uint8Array;
  try {
    out = e.method === 0 ? raw : inflateSync(raw, { out: new Uint8Array(e.usize) });
  } catch (err) {
    throw new Error(`cannot inflate ${e.name}: ${(err as Error).message}`);
  }
  if (out.length !== e.usize || (checkCrc && crc32(out) !== e.crc)) {
    throw new Error(`entry ${e.name} is corrupt (size or CRC mismatch)`);
  }
  return out;
}

let CRC_TABLE: Uint32Array | null = null;
/** CRC-32 (zip, PNG). */
export function crc32(b: Uint8Array): number {
  if (!CRC_TABLE) {
    CRC_TABLE = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      CRC_TABLE[n] = c >>> 0;
    }
  }
  let c = 0xffffffff;
  for (let i = 0; i < b.length; i++) c = CRC_TABLE[(c ^ b[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
