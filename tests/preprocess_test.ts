/**
 * Host-side image decoding and OpenAI CLIP preprocessing against PIL / torchvision.
 *
 * - golden `rgb0..3` (PIL-decoded 227×227) → clipPreprocess vs golden `pixels` (micro: 32²,
 *   b16lite: 224²), in float and as 8-bit levels;
 * - the PACS files themselves → decodeImage (vs the golden rgb) → clipPreprocess vs `pixels`;
 * - small JPEGs of every decoder path (progressive, restarts, 4:2:2, 4:4:0, 4:1:1, gray, CMYK,
 *   YCCK, RGB, extreme coefficients) and resize / full-pipeline cases, embedded with the MD5 of
 *   what Pillow 12.3 (libjpeg-turbo) and torchvision 0.28 produced for them;
 * - PNGs of every colour type / bit depth / interlace / filter built here (fast-png's encoder and
 *   a tiny writer), checked against Pillow's convert("RGB") rules;
 * - corrupt, truncated and unknown files, which must throw naming the file.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { encode as encodePng } from "fast-png";
import { zlibSync } from "fflate";
import { decodeImage, ImageDecodeError, loadImage, type RGBImage } from "../model/image.ts";
import {
  centerCrop,
  CLIP_MEAN,
  CLIP_STD,
  clipPreprocess,
  resizeBicubic,
  resizeShortSide,
} from "../model/preprocess.ts";
import { sharedDir } from "./util.ts";

// ---------------------------------------------------------------------------------------------
// helpers

interface STensor {
  dtype: string;
  shape: number[];
  bytes: Uint8Array;
}

/** Minimal safetensors reader: header JSON + raw little-endian tensors. */
function readSafetensors(path: string): { meta: Record<string, string>; t: Map<string, STensor> } {
  const buf = Deno.readFileSync(path);
  const n = Number(new DataView(buf.buffer, buf.byteOffset).getBigUint64(0, true));
  const hdr = JSON.parse(new TextDecoder().decode(buf.subarray(8, 8 + n)));
  const t = new Map<string, STensor>();
  for (const [k, v] of Object.entries(hdr)) {
    if (k === "__metadata__") continue;
    const { dtype, shape, data_offsets: [a, b] } = v as {
      dtype: string;
      shape: number[];
      data_offsets: [number, number];
    };
    t.set(k, { dtype, shape, bytes: buf.slice(8 + n + a, 8 + n + b) });
  }
  return { meta: hdr.__metadata__ ?? {}, t };
}

const f32 = (t: STensor) => {
  assert.equal(t.dtype, "F32");
  return new Float32Array(t.bytes.buffer, t.bytes.byteOffset, t.bytes.byteLength / 4);
};

function absErr(a: ArrayLike<number>, b: ArrayLike<number>) {
  assert.equal(a.length, b.length, "length");
  let max = 0, sum = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    sum += d;
    if (d > max) max = d;
  }
  return { max, mean: sum / a.length };
}

/** Normalised CHW floats back to the 8-bit levels they came from. */
function toLevels(x: Float32Array, size: number): Uint8Array {
  const n = size * size, out = new Uint8Array(3 * n);
  for (let c = 0; c < 3; c++) {
    for (let i = 0; i < n; i++) {
      out[c * n + i] = Math.round((x[c * n + i] * CLIP_STD[c] + CLIP_MEAN[c]) * 255);
    }
  }
  return out;
}

const md5 = (b: Uint8Array) => createHash("md5").update(b).digest("hex");
const fromB64 = (s: string) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));

/** The deterministic test pattern the embedded Pillow hashes were computed on. */
function synth(w: number, h: number): RGBImage {
  const data = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      for (let c = 0; c < 3; c++) {
        data[(y * w + x) * 3 + c] = (x * 7 + y * 13 + c * 29 + ((x * y) % 17) * 11 +
          ((Math.floor(x / 5) + Math.floor(y / 3)) % 2) * 90) & 255;
      }
    }
  }
  return { width: w, height: h, data };
}

const SHARED = sharedDir();
const PACS = `${SHARED}data/PACS/`;
const GOLDENS = [
  { name: "micro", size: 32 },
  { name: "b16lite", size: 224 },
] as const;

function golden(name: string) {
  const { meta, t } = readSafetensors(`${SHARED}golden/${name}/cases.safetensors`);
  const images: string[] = JSON.parse(meta.images);
  const pixels = t.get("pixels")!;
  const rgb = images.map((_, i) => {
    const r = t.get(`rgb${i}`)!;
    assert.equal(r.dtype, "U8");
    return { width: r.shape[1], height: r.shape[0], data: r.bytes } as RGBImage;
  });
  return { images, pixels: f32(pixels), pixelShape: pixels.shape, rgb };
}

// ---------------------------------------------------------------------------------------------
// golden cases

for (const { name, size } of GOLDENS) {
  Deno.test(`clipPreprocess of golden rgb matches golden pixels (${name}, ${size}²)`, () => {
    const g = golden(name);
    assert.deepEqual(g.pixelShape, [4, 3, size, size]);
    const per = 3 * size * size;
    for (let i = 0; i < 4; i++) {
      const ref = g.pixels.subarray(i * per, (i + 1) * per);
      const got = clipPreprocess(g.rgb[i], size);
      assert.equal(got.length, per);
      const e = absErr(got, ref);
      // 8-bit levels of the resized image: Pillow's fixed-point resampler reproduced exactly
      const lv = absErr(toLevels(got, size), toLevels(ref, size));
      console.log(
        `  ${name} rgb${i}: max ${e.max.toExponential(2)}, mean ${e.mean.toExponential(2)}, ` +
          `8-bit levels max ${lv.max}`,
      );
      assert.ok(e.max <= 0.02 && e.mean <= 0.002, `${name} image ${i}: ${JSON.stringify(e)}`);
      assert.equal(lv.max, 0, `${name} image ${i}: resized 8-bit values differ from Pillow's`);
    }
  });

  Deno.test(`PACS files → decodeImage → clipPreprocess match golden (${name})`, async () => {
    const g = golden(name);
    const per = 3 * size * size;
    for (let i = 0; i < 4; i++) {
      const img = await loadImage(PACS + g.images[i]);
      assert.equal(img.width, g.rgb[i].width);
      assert.equal(img.height, g.rgb[i].height);
      const dec = absErr(img.data, g.rgb[i].data);
      const e = absErr(clipPreprocess(img, size), g.pixels.subarray(i * per, (i + 1) * per));
      console.log(
        `  ${name} ${g.images[i]}: decode vs PIL max ${dec.max} levels; pixels max ` +
          `${e.max.toExponential(2)}, mean ${e.mean.toExponential(2)}`,
      );
      assert.ok(e.mean <= 0.01, `${g.images[i]}: mean abs ${e.mean}`);
      assert.equal(dec.max, 0, `${g.images[i]}: decoded pixels differ from PIL's`);
    }
  });
}

Deno.test("grayscale PNG sketch decodes to RGB with equal channels", () => {
  const g = golden("micro");
  const path = g.images.find((p) => p.endsWith(".png"))!;
  const bytes = Deno.readFileSync(PACS + path);
  assert.equal(bytes[25], 0, "the sketch should be a gray PNG (colour type 0)");
  const img = decodeImage(bytes, path);
  let unequal = 0;
  for (let i = 0; i < img.width * img.height; i++) {
    const d = img.data;
    if (d[3 * i] !== d[3 * i + 1] || d[3 * i] !== d[3 * i + 2]) unequal++;
  }
  assert.equal(unequal, 0);
  assert.deepEqual(img.data, g.rgb[g.images.indexOf(path)].data);
});

// ---------------------------------------------------------------------------------------------
// JPEG decoder paths, against Pillow 12.3 / libjpeg-turbo (19×13 crops; MD5 of convert("RGB"))

const JPEG_FIXTURES: { name: string; md5: string; b64: string }[] = [
  {
    name: "progressive 4:2:0, restarts every 2 MCUs",
    md5: "03fd1b37a3cd39404ee25d8194784bdc",
    b64:
      "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAUDBAQEAwUEBAQFBQUGBwwIBwcHBw8LCwkMEQ8SEhEPERETFhwXExQaFR" +
      "ERGCEYGh0dHx8fExciJCIeJBweHx7/2wBDAQUFBQcGBw4ICA4eFBEUHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4e" +
      "Hh4eHh4eHh4eHh4eHh4eHh4eHh4eHh7/wgARCAANABMDASIAAhEBAxEB/8QAFwAAAwEAAAAAAAAAAAAAAAAAAAQFAv" +
      "/EABYBAQEBAAAAAAAAAAAAAAAAAAYAA//dAAQAAv/aAAwDAQACEAMQAAABy+owcYSigWf/xAAYEAADAQEAAAAAAAAA" +
      "AAAAAAABAgMEI//aAAgBAQABBQLHZy9C4j//0FSIEFCy/9HF1a+dRX//xAAYEQEAAwEAAAAAAAAAAAAAAAABAAIDEf" +
      "/aAAgBAwEBPwHatXrBzn//xAAZEQEAAgMAAAAAAAAAAAAAAAABAAIDERP/2gAIAQIBAT8ByrR3OzP/xAAfEAACAQQC" +
      "AwAAAAAAAAAAAAABAgAREhMhA0FRcaH/2gAIAQEABj8CJ5Nr1GVlyqfk/9CmRYydT//Rt2PUNtAPFJ//xAAaEAEAAw" +
      "EBAQAAAAAAAAAAAAABABEhMVFB/9oACAEBAAE/IauXzWkF4137H//QFoKlcCyhnKJ//9EiPxVdgD5ek//aAAwDAQAC" +
      "AAMAAAAQnA//xAAXEQEBAQEAAAAAAAAAAAAAAAABABEx/9oACAEDAQE/EERMLGdv/8QAFREBAQAAAAAAAAAAAAAAAA" +
      "AAAQD/2gAIAQIBAT8QECK//8QAHBABAAIDAQEBAAAAAAAAAAAAAREhADFBcVFh/9oACAEBAAE/EGgZkYW7Tk4L9QEX" +
      "aJNEdz//0E2QsVEflYaGogUL9c//0Ufh1RERPv7iXiTgUdnP/9k=",
  },
  {
    name: "baseline 4:2:2 (h2v1 fancy)",
    md5: "f1ebdf66b9a579f474084d9720efd433",
    b64:
      "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAYEBQYFBAYGBQYHBwYIChAKCgkJChQODwwQFxQYGBcUFhYaHSUfGhsjHB" +
      "YWICwgIyYnKSopGR8tMC0oMCUoKSj/2wBDAQcHBwoIChMKChMoGhYaKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgo" +
      "KCgoKCgoKCgoKCgoKCgoKCgoKCgoKCj/wAARCAANABMDASEAAhEBAxEB/8QAHwAAAQUBAQEBAQEAAAAAAAAAAAECAw" +
      "QFBgcICQoL/8QAtRAAAgEDAwIEAwUFBAQAAAF9AQIDAAQRBRIhMUEGE1FhByJxFDKBkaEII0KxwRVS0fAkM2JyggkK" +
      "FhcYGRolJicoKSo0NTY3ODk6Q0RFRkdISUpTVFVWV1hZWmNkZWZnaGlqc3R1dnd4eXqDhIWGh4iJipKTlJWWl5iZmq" +
      "KjpKWmp6ipqrKztLW2t7i5usLDxMXGx8jJytLT1NXW19jZ2uHi4+Tl5ufo6erx8vP09fb3+Pn6/8QAHwEAAwEBAQEB" +
      "AQEBAQAAAAAAAAECAwQFBgcICQoL/8QAtREAAgECBAQDBAcFBAQAAQJ3AAECAxEEBSExBhJBUQdhcRMiMoEIFEKRob" +
      "HBCSMzUvAVYnLRChYkNOEl8RcYGRomJygpKjU2Nzg5OkNERUZHSElKU1RVVldYWVpjZGVmZ2hpanN0dXZ3eHl6goOE" +
      "hYaHiImKkpOUlZaXmJmaoqOkpaanqKmqsrO0tba3uLm6wsPExcbHyMnK0tPU1dbX2Nna4uPk5ebn6Onq8vP09fb3+P" +
      "n6/9oADAMBAAIRAxEAPwBnhnU7qW6ke/KyWzHCEnDL/wDrrZvJriHS7m3uIRqEMrNg8bkz0H0r5CU+SabP0PGUYxk1" +
      "DQ5eG006GJYzdQAqOQSRg0Vr7ZErCza3NXR7aOCwntwqlGYqOMbcL1+tX/CwGoztbsXix8hZDgkf41zYxbM2qu8ZTZ" +
      "V1XRoU1CZbfZFECNqbM449c0VzpuxyrEysf//Z",
  },
  {
    name: "baseline 4:4:0 (h1v2 fancy)",
    md5: "6ef163833b93fcc217c283096eefc2f6",
    b64:
      "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAYEBQYFBAYGBQYHBwYIChAKCgkJChQODwwQFxQYGBcUFhYaHSUfGhsjHB" +
      "YWICwgIyYnKSopGR8tMC0oMCUoKSj/2wBDAQcHBwoIChMKChMoGhYaKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgo" +
      "KCgoKCgoKCgoKCgoKCgoKCgoKCgoKCj/wAARCAANABMDARIAAhEBAxEB/8QAHwAAAQUBAQEBAQEAAAAAAAAAAAECAw" +
      "QFBgcICQoL/8QAtRAAAgEDAwIEAwUFBAQAAAF9AQIDAAQRBRIhMUEGE1FhByJxFDKBkaEII0KxwRVS0fAkM2JyggkK" +
      "FhcYGRolJicoKSo0NTY3ODk6Q0RFRkdISUpTVFVWV1hZWmNkZWZnaGlqc3R1dnd4eXqDhIWGh4iJipKTlJWWl5iZmq" +
      "KjpKWmp6ipqrKztLW2t7i5usLDxMXGx8jJytLT1NXW19jZ2uHi4+Tl5ufo6erx8vP09fb3+Pn6/8QAHwEAAwEBAQEB" +
      "AQEBAQAAAAAAAAECAwQFBgcICQoL/8QAtREAAgECBAQDBAcFBAQAAQJ3AAECAxEEBSExBhJBUQdhcRMiMoEIFEKRob" +
      "HBCSMzUvAVYnLRChYkNOEl8RcYGRomJygpKjU2Nzg5OkNERUZHSElKU1RVVldYWVpjZGVmZ2hpanN0dXZ3eHl6goOE" +
      "hYaHiImKkpOUlZaXmJmaoqOkpaanqKmqsrO0tba3uLm6wsPExcbHyMnK0tPU1dbX2Nna4uPk5ebn6Onq8vP09fb3+P" +
      "n6/9oADAMBAAIRAxEAPwBnhnU7qW6ke/KyWzHCEnDL/wDrqbR7aOCwntwqlGYqOMbcL1+tfK1I+60j9MxHJOdoRNO8" +
      "muIdLube4hGoQys2DxuTPQfSo/CwGoztbsXix8hZDgkf41w+3lTdjirUox1ZzcNpp0MSxm6gBUcgkjBra1XRoU1CZb" +
      "fZFECNqbM449c1ssVJijKjbW5//9k=",
  },
  {
    name: "baseline 4:1:1 (box upsampling), restart each row",
    md5: "2b1acc420253deaf564f252d17d29036",
    b64:
      "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAYEBQYFBAYGBQYHBwYIChAKCgkJChQODwwQFxQYGBcUFhYaHSUfGhsjHB" +
      "YWICwgIyYnKSopGR8tMC0oMCUoKSj/2wBDAQcHBwoIChMKChMoGhYaKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgo" +
      "KCgoKCgoKCgoKCgoKCgoKCgoKCgoKCj/wAARCAANABMDAUEAAhEBAxEB/8QAHwAAAQUBAQEBAQEAAAAAAAAAAAECAw" +
      "QFBgcICQoL/8QAtRAAAgEDAwIEAwUFBAQAAAF9AQIDAAQRBRIhMUEGE1FhByJxFDKBkaEII0KxwRVS0fAkM2JyggkK" +
      "FhcYGRolJicoKSo0NTY3ODk6Q0RFRkdISUpTVFVWV1hZWmNkZWZnaGlqc3R1dnd4eXqDhIWGh4iJipKTlJWWl5iZmq" +
      "KjpKWmp6ipqrKztLW2t7i5usLDxMXGx8jJytLT1NXW19jZ2uHi4+Tl5ufo6erx8vP09fb3+Pn6/8QAHwEAAwEBAQEB" +
      "AQEBAQAAAAAAAAECAwQFBgcICQoL/8QAtREAAgECBAQDBAcFBAQAAQJ3AAECAxEEBSExBhJBUQdhcRMiMoEIFEKRob" +
      "HBCSMzUvAVYnLRChYkNOEl8RcYGRomJygpKjU2Nzg5OkNERUZHSElKU1RVVldYWVpjZGVmZ2hpanN0dXZ3eHl6goOE" +
      "hYaHiImKkpOUlZaXmJmaoqOkpaanqKmqsrO0tba3uLm6wsPExcbHyMnK0tPU1dbX2Nna4uPk5ebn6Onq8vP09fb3+P" +
      "n6/90ABAAB/9oADAMBAAIRAxEAPwBnhnU7qW6ke/KyWzHCEnDL/wDrrZvJriHS7m3uIRqEMrNg8bkz0H0rl4bTToYl" +
      "jN1ACo5BJGDRXycanK2mfoU8O3Vko7H/0H6PbRwWE9uFUozFRxjbhev1q/4WA1Gdrdi8WPkLIcEj/Gquq6NCmoTLb7" +
      "IogRtTZnHHrmiviK2lRn6FWquEtOp//9k=",
  },
  {
    name: "grayscale, progressive",
    md5: "3b05d7f574d4e447e17b70a5269ea339",
    b64:
      "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAYEBQYFBAYGBQYHBwYIChAKCgkJChQODwwQFxQYGBcUFhYaHSUfGhsjHB" +
      "YWICwgIyYnKSopGR8tMC0oMCUoKSj/wgALCAANABMBAREA/8QAFwABAAMAAAAAAAAAAAAAAAAABAIDBf/aAAgBAQAA" +
      "AAGLctSKv//EABkQAAMBAQEAAAAAAAAAAAAAAAECAwQTI//aAAgBAQABBQLNRizlhILMCKgJl9DWI6f/xAAbEAACAg" +
      "MBAAAAAAAAAAAAAAAAAQISERMhMf/aAAgBAQAGPwJ37ElGS2JmLIcSvg68R//EABsQAAMAAwEBAAAAAAAAAAAAAAAB" +
      "ESExQXFR/9oACAEBAAE/IX1LNfUVQp+oWtMg5RueYMlrxUIpjgof/9oACAEBAAAAEJP/xAAcEAEAAwACAwAAAAAAAA" +
      "AAAAABABEhMXFR0fH/2gAIAQEAAT8QVNKmtfSAIojmvB1FoKNFSmC5GDKxy7hHFe1pT3K0OnLrPNz/2Q==",
  },
  {
    name: "Adobe CMYK",
    md5: "eba974be8b54516462c35b25752c5176",
    b64:
      "/9j/7gAOQWRvYmUAZAAAAAAA/9sAQwAFAwQEBAMFBAQEBQUFBgcMCAcHBwcPCwsJDBEPEhIRDxERExYcFxMUGhURER" +
      "ghGBodHR8fHxMXIiQiHiQcHh8e/8AAFAgADQATBEMRAE0RAFkRAEsRAP/EAB8AAAEFAQEBAQEBAAAAAAAAAAABAgME" +
      "BQYHCAkKC//EALUQAAIBAwMCBAMFBQQEAAABfQECAwAEEQUSITFBBhNRYQcicRQygZGhCCNCscEVUtHwJDNicoIJCh" +
      "YXGBkaJSYnKCkqNDU2Nzg5OkNERUZHSElKU1RVVldYWVpjZGVmZ2hpanN0dXZ3eHl6g4SFhoeIiYqSk5SVlpeYmZqi" +
      "o6Slpqeoqaqys7S1tre4ubrCw8TFxsfIycrS09TV1tfY2drh4uPk5ebn6Onq8fLz9PX29/j5+v/aAA4EQwBNAFkASw" +
      "AAPwD6TsZfL1SQalGk0LHbGxfDJ7kds1wnw28RareXsk+pSLLZudse5sMnPU+ma8M8OavqrrcNqbJNZuQqEthk56kd" +
      "s19l1X16PULfRrq0MI1OCd2AYY3x56DPpjvXZ3lzdRaHeWl9arrNvOzANxvjyOBkdBg1pJrVzp+i3dldQLq0E7MA3H" +
      "mR56DI6DB60Vzen+G7GOyiSTVrcOF+YEkEH04rhUh0K2RYPtlspQYKkkEHuOKw7eXQ4oERtQtFIHIJIIP4UV2GmwI6" +
      "z2rqpRnZVwoG3Cjn6mr3hazg0/RbiyjjQxszKvygbdqjn6mt3TrGCDQbux2KY3ZlX5QNu1Qc/U0U/Rtl+72mHgK/IZ" +
      "I3wWGMZ6dfeuj+GyDWrp7SRpIAPkZ42wWGMZ+vvXMeHUGo6m9mWkg2nYXibBYYxn6+9FYmq2ohv5YrTy4IFI2Jszjg" +
      "d81H4h8J2KazcLa+XBCGG2Py92OB3zTNW0OGPUJUtWSCEEbY/L3Y4HfNFf/Z",
  },
  {
    name: "Adobe YCCK",
    md5: "c839d4245da57bdf4371eea1c28717ff",
    b64:
      "/9j/7gAOQWRvYmUAZAAAAAAC/9sAQwAFAwQEBAMFBAQEBQUFBgcMCAcHBwcPCwsJDBEPEhIRDxERExYcFxMUGhURER" +
      "ghGBodHR8fHxMXIiQiHiQcHh8e/8AAFAgADQATBEMRAE0RAFkRAEsRAP/EAB8AAAEFAQEBAQEBAAAAAAAAAAABAgME" +
      "BQYHCAkKC//EALUQAAIBAwMCBAMFBQQEAAABfQECAwAEEQUSITFBBhNRYQcicRQygZGhCCNCscEVUtHwJDNicoIJCh" +
      "YXGBkaJSYnKCkqNDU2Nzg5OkNERUZHSElKU1RVVldYWVpjZGVmZ2hpanN0dXZ3eHl6g4SFhoeIiYqSk5SVlpeYmZqi" +
      "o6Slpqeoqaqys7S1tre4ubrCw8TFxsfIycrS09TV1tfY2drh4uPk5ebn6Onq8fLz9PX29/j5+v/aAA4EQwBNAFkASw" +
      "AAPwD6TsZfL1SQalGk0LHbGxfDJ7kds1wnw28RareXsk+pSLLZudse5sMnPU+ma8M8OavqrrcNqbJNZuQqEthk56kd" +
      "s19l1X16PULfRrq0MI1OCd2AYY3x56DPpjvXZ3lzdRaHeWl9arrNvOzANxvjyOBkdBg1pJrVzp+i3dldQLq0E7MA3H" +
      "mR56DI6DB60Vzen+G7GOyiSTVrcOF+YEkEH04rhUh0K2RYPtlspQYKkkEHuOKw7eXQ4oERtQtFIHIJIIP4UV2GmwI6" +
      "z2rqpRnZVwoG3Cjn6mr3hazg0/RbiyjjQxszKvygbdqjn6mt3TrGCDQbux2KY3ZlX5QNu1Qc/U0U/Rtl+72mHgK/IZ" +
      "I3wWGMZ6dfeuj+GyDWrp7SRpIAPkZ42wWGMZ+vvXMeHUGo6m9mWkg2nYXibBYYxn6+9FYmq2ohv5YrTy4IFI2Jszjg" +
      "d81H4h8J2KazcLa+XBCGG2Py92OB3zTNW0OGPUJUtWSCEEbY/L3Y4HfNFf/Z",
  },
  {
    name: "RGB colour space (Adobe transform 0)",
    md5: "28fc8cbf1eca10d9943571a2d076741e",
    b64:
      "/9j/7gAOQWRvYmUAZAAAAAAA/9sAQwAGBAUGBQQGBgUGBwcGCAoQCgoJCQoUDg8MEBcUGBgXFBYWGh0lHxobIxwWFi" +
      "AsICMmJykqKRkfLTAtKDAlKCko/8AAEQgADQATA1IRAEcRAEIRAP/EAB8AAAEFAQEBAQEBAAAAAAAAAAABAgMEBQYH" +
      "CAkKC//EALUQAAIBAwMCBAMFBQQEAAABfQECAwAEEQUSITFBBhNRYQcicRQygZGhCCNCscEVUtHwJDNicoIJChYXGB" +
      "kaJSYnKCkqNDU2Nzg5OkNERUZHSElKU1RVVldYWVpjZGVmZ2hpanN0dXZ3eHl6g4SFhoeIiYqSk5SVlpeYmZqio6Sl" +
      "pqeoqaqys7S1tre4ubrCw8TFxsfIycrS09TV1tfY2drh4uPk5ebn6Onq8fLz9PX29/j5+v/aAAwDUgBHAEIAAD8A97" +
      "tJNl+/25FkiY7UYthl/D3rjvBGt311dPLfuslqxwuThl//AF14/oup3zLOdQKyWrEBSThl5/rUGrR3UGm3MBjF9DKz" +
      "AHjcmeg+ldXczzx6VdW93ANSglZsHjemeg+lX11Waz0y5triIahDKzYPG9M9B9KwbPQrVLWNXvoQwHIJIwa45YtLgU" +
      "RfaIFKjBBJGKyIZNMjiVTd24IHIJIwa6iyiVlmhcKULMo4+7hev1q5oFrFZaXNbIilGYqOMbcKOfrWxZWkUOkXNrtU" +
      "xsxUcAbcL1+tP0zbeM0GGix8pdGwT/8AXrd8EqNUuGt3LxY+Qsh5I/xrntFUX181uWeLB2Fozgkf41kX9v5V5Iltsi" +
      "hB+VNucceuaj1jw5bLqU4t9kUWRtTZnHA75puoaTGl5ItuViiBG1Nmcceua//Z",
  },
  {
    name: "noise at quality 100, 4:4:4 (IDCT range limiting)",
    md5: "18c54b10d0e745ca6b3997f94f4ac1c4",
    b64:
      "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQ" +
      "EBAQEBAQEBAQEBAQEBAQEBAQEBAQH/2wBDAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEB" +
      "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQH/wAARCAANABMDAREAAhEBAxEB/8QAHwAAAQUBAQEBAQEAAAAAAAAAAAECAw" +
      "QFBgcICQoL/8QAtRAAAgEDAwIEAwUFBAQAAAF9AQIDAAQRBRIhMUEGE1FhByJxFDKBkaEII0KxwRVS0fAkM2JyggkK" +
      "FhcYGRolJicoKSo0NTY3ODk6Q0RFRkdISUpTVFVWV1hZWmNkZWZnaGlqc3R1dnd4eXqDhIWGh4iJipKTlJWWl5iZmq" +
      "KjpKWmp6ipqrKztLW2t7i5usLDxMXGx8jJytLT1NXW19jZ2uHi4+Tl5ufo6erx8vP09fb3+Pn6/8QAHwEAAwEBAQEB" +
      "AQEBAQAAAAAAAAECAwQFBgcICQoL/8QAtREAAgECBAQDBAcFBAQAAQJ3AAECAxEEBSExBhJBUQdhcRMiMoEIFEKRob" +
      "HBCSMzUvAVYnLRChYkNOEl8RcYGRomJygpKjU2Nzg5OkNERUZHSElKU1RVVldYWVpjZGVmZ2hpanN0dXZ3eHl6goOE" +
      "hYaHiImKkpOUlZaXmJmaoqOkpaanqKmqsrO0tba3uLm6wsPExcbHyMnK0tPU1dbX2Nna4uPk5ebn6Onq8vP09fb3+P" +
      "n6/9oADAMBAAIRAxEAPwCx8bPgnqHxA0DQNV+Pms2Ph74d+INW8J3ur+Lrv4j+Jm+InjbUbnwr8LrLxD8U/AvgS/8A" +
      "izo9npmofFjSNCv/ABl8S5dJ8K3Xgjw1YeA9C1n4f/Gbxt8F/iR8TpNF/avDbxqnw5ja2S+CPDHA3AXifneSeJ+UeF" +
      "lDjCl4i8OZHlOR8F+I2ccQ8McIeMuW5F4U5hxznE6mc+MWPwPAPBfF/iDkvifxz4ncWZxxrxTwlxL4r8S+E2Bwfz/h" +
      "DlnGvEnEz8O+Jcbn3F3iNmceJeCcj8S6XGD8SafhR4aYjjDKqHAdLLeE+Oc0z3xc4Q4K4i4/4ZzfG8Zce8MYmlnXFO" +
      "WeJmJ4n4jp5R4F8IcNVMXyXg/4GNL8S/A3gTxR4W8J+IfGdjqeiafDc/DPwC/g3w78H/GXh66+M9p4C8Tzf8Ip4G+C" +
      "XjSw8GwWM/hrxF8A/FHiVddvPh38LZvjl4K0rxrdeLJPEFxqf858R1cHwphqXiVn+VcNYvJc2zPxZ4E8WavFc89zvO" +
      "eLMS3wNUxOQcEeJfGuf8Q4LIvpCUMr4L8TMoxXhXmnizXwnGPFOG8BM4l4Y+HWQ8deHMsr8LxNw/hdneRZt4i8aeJf" +
      "CHDebcSPMcloZDl/FeIyDN4ZbkeX8B5b4Z4Dj/w84q8QfpA16HElbwlyxcL5PwJW8N8t44wOLyHG8eeJuKwOTcH5L4" +
      "qZN9ZeDvhknxA0m98Y6D8ILTxVb674s8eXWq+JBZfFVrTXfF0fjjxFa+OtU0h/Cvxp8N6C/h+88aQa/P4bex0+736A" +
      "+mvdeIvF161x4r1rwvCzgHLsDwLk+Ez3NfoYZVi6NfO44PJ+If8AiG2Y55keQPP80lwrkOaVcX9H2vjsLjMi4YllGU" +
      "VsozGhk+ZZDLB/2JmXDPCeOy/EcMZR+u47xN8W6mIceGsFxZ4nZBhqOFwGUeImScf/AEQ8owHG2By3C0cvocTvh3xS" +
      "8avD7jfg/HZzDDLHZtwNmnCGUYLgXNq2N4P4dWP4ayTJ8zxvlXxQ+Kusr8aPil4D0Ww0XRviv8Dvj9pfw1u/jvD4f8" +
      "Kvrfxk8J+Efh9Y+IdP0341+Dbfw5Y+GviHBd+Bfjl8TfhzfprpujAni7V/FmgtoetjR00b9j4EwmK8eOD+B/Euln/F" +
      "eR1OP/CTwlzvNeEeJOLuKON+CcfhPG36RVD6NmLyrNuGaGccI5PgsLklfhvG+I08B4a4Lwx4ZzTOOLeK8nocMZNhc5" +
      "xeOq/zhj83fhTkPiBwvwDLMcg4N+jt4B+HP0o+GeF8FisuyyHEfGPAGe8IZhjsn4q4n4fyXI+O62U4rOsRwlxFwdWy" +
      "firJ8fwXnXCmKjmFfjLIOK87yCXlvxutNY+Bnj3xpNps3gmPV/EXwM0T48ate+BvhL8Ofh9bWfiPxtJ4/wDC/iDS9A" +
      "jTQvEmty6Hpni34R/C/wCLvgTQ/iF4i+I/hjwz8T/BeleJ9U8O+Kb+3tJrPg8JPD3K+L8/434Fq5jnuW5V4FZ9wfkH" +
      "B+eZfnGYZfxzVXiZXr4DIsjxfF+T4nKMbg/DbgzBeM3iLl1fgjIKOTZpxVk+Y5Vk+K40yzAZbjaOcfoEOJcbT4R8Au" +
      "MMBUzHNuLM1znws8LMJn3H3EHEHEFPK8x+kHgcD4d47ibD8EcIZl4c+FGHy7gLhbgTJOHeBeEco8O8mwuTcN5Tw/gs" +
      "PmtHPMqxvEudeJftDftH/FD4B/Gbx18KRd+CfF914cv7C81jxVffBL9ny2uPEXiTxXoum+MfFGtG01L4R+Ir+zi1Lx" +
      "Fr+qXdtZXmv61cWdtLFay6pfPEbmT894e8b+C8r4d4d/1q4f8AHvP87znh7IuL8Rj+GPpWcaeGuR0sLxzlOD4zyrKM" +
      "FwZwxwm+HMpfD2UZ9geH8XWyLC5TlOcY3LMTnmA4e4bw2ZU8gy39z4E+grwj4u5Xn/HuY1OAoyzLxM8Ysqy3DZ7wTx" +
      "3xHmuW8OcI+LXG3B/CmS4vPqfjTkcc2eR8MZDlGT0cfLKsFWxGHwNKpXpyrupUn//Z",
  },
];

Deno.test("JPEG variants decode exactly as PIL does", () => {
  for (const f of JPEG_FIXTURES) {
    const img = decodeImage(fromB64(f.b64), f.name);
    assert.equal(img.width, 19, f.name);
    assert.equal(img.height, 13, f.name);
    assert.equal(md5(img.data), f.md5, `${f.name}: RGB differs from PIL's`);
  }
});

// ---------------------------------------------------------------------------------------------
// PNG

/** PNG with a chosen filter type per row (0–4 cycling), written here with fflate. */
function pngAllFilters(w: number, h: number, rgb: Uint8Array): Uint8Array {
  const bpp = 3, stride = w * 3;
  const raw = new Uint8Array(h * (stride + 1));
  for (let y = 0; y < h; y++) {
    const ft = y % 5;
    raw[y * (stride + 1)] = ft;
    for (let i = 0; i < stride; i++) {
      const x = rgb[y * stride + i];
      const a = i >= bpp ? rgb[y * stride + i - bpp] : 0;
      const b = y > 0 ? rgb[(y - 1) * stride + i] : 0;
      const c = i >= bpp && y > 0 ? rgb[(y - 1) * stride + i - bpp] : 0;
      const p = a + b - c, pa = Math.abs(p - a), pb = Math.abs(p - b), pc = Math.abs(p - c);
      const pred = [0, a, b, (a + b) >> 1, pa <= pb && pa <= pc ? a : pb <= pc ? b : c][ft];
      raw[y * (stride + 1) + 1 + i] = (x - pred) & 255;
    }
  }
  const chunk = (type: string, data: Uint8Array) => {
    const out = new Uint8Array(12 + data.length);
    const dv = new DataView(out.buffer);
    dv.setUint32(0, data.length);
    for (let i = 0; i < 4; i++) out[4 + i] = type.charCodeAt(i);
    out.set(data, 8);
    let crc = 0xffffffff;
    for (let i = 4; i < 8 + data.length; i++) {
      crc ^= out[i];
      for (let k = 0; k < 8; k++) crc = crc & 1 ? 0xedb88320 ^ (crc >>> 1) : crc >>> 1;
    }
    dv.setUint32(8 + data.length, (crc ^ 0xffffffff) >>> 0);
    return out;
  };
  const ihdr = new Uint8Array(13);
  new DataView(ihdr.buffer).setUint32(0, w);
  new DataView(ihdr.buffer).setUint32(4, h);
  ihdr.set([8, 2, 0, 0, 0], 8);
  const z = zlibSync(raw);
  const parts = [
    new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", ihdr),
    chunk("IDAT", z.subarray(0, z.length >> 1)),
    chunk("IDAT", z.subarray(z.length >> 1)),
    chunk("IEND", new Uint8Array(0)),
  ];
  const out = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
  let o = 0;
  for (const p of parts) out.set(p, o), o += p.length;
  return out;
}

Deno.test("PNG colour types, bit depths, filters and interlacing convert as PIL does", () => {
  const W = 13, H = 11, n = W * H;
  const rnd = (seed: number) => () => (seed = (seed * 1103515245 + 12345) >>> 0) >>> 8;
  const r = rnd(7);
  const check = (name: string, png: Uint8Array, expect: (i: number, c: number) => number) => {
    const img = decodeImage(png, name);
    assert.equal(img.width, W, name);
    assert.equal(img.height, H, name);
    for (let i = 0; i < n; i++) {
      for (let c = 0; c < 3; c++) {
        assert.equal(img.data[3 * i + c], expect(i, c), `${name}: pixel ${i} channel ${c}`);
      }
    }
  };
  // RGBA: alpha is dropped, not composited
  const rgba = Uint8Array.from({ length: 4 * n }, () => r() & 255);
  check(
    "rgba8",
    encodePng({ width: W, height: H, data: rgba, channels: 4, depth: 8 }),
    (i, c) => rgba[4 * i + c],
  );
  // gray + alpha
  const la = Uint8Array.from({ length: 2 * n }, () => r() & 255);
  check(
    "la8",
    encodePng({ width: W, height: H, data: la, channels: 2, depth: 8 }),
    (i) => la[2 * i],
  );
  // palette, 8-bit indices, with a tRNS (alpha ignored by convert("RGB"))
  const pal = Array.from({ length: 40 }, () => [r() & 255, r() & 255, r() & 255, r() & 255]);
  const idx = Uint8Array.from({ length: n }, () => r() % 40);
  check(
    "palette8",
    encodePng({ width: W, height: H, data: idx, channels: 1, depth: 8, palette: pal }),
    (i, c) => pal[idx[i]][c],
  );
  // palette, 2-bit packed indices
  const pal2 = Array.from({ length: 4 }, () => [r() & 255, r() & 255, r() & 255]);
  const idx2 = Uint8Array.from({ length: n }, () => r() & 3);
  const rowBytes = Math.ceil(W / 4), packed = new Uint8Array(rowBytes * H);
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      packed[y * rowBytes + (x >> 2)] |= idx2[y * W + x] << (6 - 2 * (x & 3));
    }
  }
  check(
    "palette2",
    encodePng({ width: W, height: H, data: packed, channels: 1, depth: 2, palette: pal2 }),
    (i, c) => pal2[idx2[i]][c],
  );
  // 16-bit colour keeps the high byte; 16-bit gray saturates at 255 (Pillow's I;16 → 8 bits)
  const rgb16 = Uint16Array.from({ length: 3 * n }, () => r() & 0xffff);
  check(
    "rgb16",
    encodePng({ width: W, height: H, data: rgb16, channels: 3, depth: 16 }),
    (i, c) => rgb16[3 * i + c] >> 8,
  );
  const g16 = Uint16Array.from({ length: n }, () => r() % 600);
  check(
    "gray16",
    encodePng({ width: W, height: H, data: g16, channels: 1, depth: 16 }),
    (i) => Math.min(g16[i], 255),
  );
  // 1-bit gray: 0 / 255
  const bits = Uint8Array.from({ length: n }, () => r() & 1);
  const rb = Math.ceil(W / 8), p1 = new Uint8Array(rb * H);
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) p1[y * rb + (x >> 3)] |= bits[y * W + x] << (7 - (x & 7));
  }
  check(
    "gray1",
    encodePng({ width: W, height: H, data: p1, channels: 1, depth: 1 }),
    (i) => bits[i] * 255,
  );
  // Adam7 interlacing and every filter type
  const rgb = Uint8Array.from({ length: 3 * n }, () => r() & 255);
  check(
    "rgb8 Adam7",
    encodePng({ width: W, height: H, data: rgb, channels: 3, depth: 8 }, { interlace: "Adam7" }),
    (i, c) => rgb[3 * i + c],
  );
  check("rgb8 all filters", pngAllFilters(W, H, rgb), (i, c) => rgb[3 * i + c]);
});

// ---------------------------------------------------------------------------------------------
// errors

Deno.test("corrupt, truncated and unknown files throw errors naming the file", async () => {
  const jpg = Deno.readFileSync(`${PACS}photo/dog/056_0001.jpg`);
  const png = Deno.readFileSync(`${PACS}sketch/horse/8481.png`);
  const badCrc = png.slice();
  badCrc[30] ^= 0x55; // inside IHDR
  const arith = jpg.slice();
  const sof = arith.findIndex((b, i) => b === 0xff && arith[i + 1] === 0xc0);
  arith[sof + 1] = 0xc9; // arithmetic-coded frame
  const cases: [string, Uint8Array, RegExp][] = [
    ["half.jpg", jpg.subarray(0, jpg.length >> 1), /truncated/],
    ["noeoi.jpg", jpg.subarray(0, jpg.length - 2), /truncated/],
    ["header.jpg", jpg.subarray(0, 100), /truncated/],
    ["half.png", png.subarray(0, png.length >> 1), /truncated/],
    ["crc.png", badCrc, /CRC/],
    ["arith.jpg", arith, /unsupported/],
    ["text.txt", new TextEncoder().encode("not an image"), /unknown format/],
    ["empty.bin", new Uint8Array(0), /unknown format/],
  ];
  for (const [name, bytes, why] of cases) {
    assert.throws(
      () => decodeImage(bytes, `dir/${name}`),
      (e: unknown) =>
        e instanceof ImageDecodeError && e.message.includes(`dir/${name}`) && why.test(e.message),
      name,
    );
  }
  await assert.rejects(
    loadImage("/nonexistent/cat.jpg"),
    (e: unknown) => e instanceof ImageDecodeError && e.message.includes("/nonexistent/cat.jpg"),
  );
});

// ---------------------------------------------------------------------------------------------
// resizing and the torchvision pipeline on non-square images

Deno.test("resizeBicubic matches Pillow's resize(BICUBIC) bit for bit", () => {
  // MD5 of Pillow 12.3's output on synth(w, h); (2, 300) → (1, 70) exercises Pillow 12's
  // vertical-first path for images over 100× taller than wide.
  const cases = [
    [37, 23, 20, 31, "b491c27ee391717235a23cb5c922c997"],
    [300, 200, 224, 149, "b9c01a7919410fbf21963a6a0b17a89d"],
    [64, 48, 640, 3, "97e9ee7b245fa01faf98ff66296438ad"],
    [2, 300, 1, 70, "406a649362790000755318f3b1c8264b"],
    [500, 1, 224, 224, "285b09a18f715d06cd195754a6b17dea"],
  ] as const;
  for (const [w, h, ow, oh, ref] of cases) {
    const out = resizeBicubic(synth(w, h), ow, oh);
    assert.equal(out.width, ow);
    assert.equal(out.height, oh);
    assert.equal(md5(out.data), ref, `${w}×${h} → ${ow}×${oh}`);
  }
  const same = synth(5, 4);
  assert.deepEqual(resizeBicubic(same, 5, 4).data, same.data);
  assert.throws(() => resizeBicubic(same, 0, 4), /bad output size/);
});

Deno.test("clipPreprocess matches torchvision's CLIP transform on non-square images", () => {
  // MD5 of the float32 CHW tensor from Resize(n, BICUBIC), CenterCrop(n), ToTensor, Normalize
  const cases = [
    [300, 200, 224, "7b120d063ccd69837c11b5e1dc7bae1e"],
    [201, 333, 224, "75708e4147aaff25b0c49d0cae3526cc"],
    [97, 130, 32, "50ada5833195d2643ecab08cf88ac9ce"],
    [20, 15, 32, "2dce23a377bf163c386d3039196612ab"],
  ] as const;
  for (const [w, h, size, ref] of cases) {
    const x = clipPreprocess(synth(w, h), size);
    assert.equal(x.length, 3 * size * size);
    assert.equal(md5(new Uint8Array(x.buffer)), ref, `${w}×${h} at ${size}`);
  }
  // batch slot writing gives the same values
  const batch = new Float32Array(2 * 3 * 32 * 32);
  clipPreprocess(synth(97, 130), 32, batch, 3 * 32 * 32);
  assert.deepEqual(batch.subarray(3 * 32 * 32), clipPreprocess(synth(97, 130), 32));
});

Deno.test("resizeShortSide and centerCrop follow torchvision's rounding", () => {
  assert.deepEqual(resizeShortSide(300, 200, 224), [336, 224]);
  assert.deepEqual(resizeShortSide(201, 333, 224), [224, 371]); // int(224·333/201) = 371
  assert.deepEqual(resizeShortSide(224, 224, 224), [224, 224]);
  // columns numbered by value: the crop's first column is its left offset
  const ramp = (w: number, h: number): RGBImage => {
    const data = new Uint8Array(w * h * 3);
    for (let i = 0; i < w * h; i++) data.fill(i % w, 3 * i, 3 * i + 3);
    return { width: w, height: h, data };
  };
  // left = round((w − 4) / 2) with Python's half-to-even rounding
  for (const [w, left] of [[5, 0], [7, 2], [9, 2], [11, 4], [8, 2]]) {
    const c = centerCrop(ramp(w, 4), 4, 4);
    assert.equal(c.data[0], left, `width ${w}`);
    assert.equal(c.width, 4);
  }
  // a crop larger than the image pads with zeros, left/top getting the smaller half
  const p = centerCrop(ramp(2, 1), 5, 2);
  assert.deepEqual(Array.from(p.data.filter((_, i) => i % 3 === 0)), [
    0,
    0,
    1,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
  ]);
});
