/**
 * Checkpoint loading: one entry point for the formats CLIP weights come in.
 *
 *   - safetensors (Hugging Face, and what this toolkit writes): model/safetensors.ts
 *   - torch.save zip state dicts (OpenCLIP, most training code): model/torch_zip.ts
 *   - TorchScript zip archives (OpenAI's released ViT-B-32.pt, ...): model/torch_zip.ts
 *
 * The format is sniffed from the bytes, not the file name. Every reader returns the same
 * StateDict of HostWeights (raw little-endian bytes + dtype + shape); convert with toFloat32.
 */
import { looksLikeSafetensors, parseSafetensors } from "./safetensors.ts";
import { looksLikeZip, parseTorchZip } from "./torch_zip.ts";
import { type StateDict, WeightsError } from "./dtypes.ts";

export * from "./dtypes.ts";
export {
  parseSafetensors,
  readSafetensors,
  type Safetensors,
  saveSafetensors,
  serializeSafetensors,
} from "./safetensors.ts";
export { parseTorchZip, readTorchZip, type TorchCheckpoint } from "./torch_zip.ts";
export { PickleError } from "./pickle.ts";

export type CheckpointFormat = "safetensors" | "torch" | "torchscript";

/** Decodes checkpoint bytes; `file` names the source in errors. */
export function parseStateDict(
  bytes: Uint8Array,
  file = "<checkpoint>",
): { format: CheckpointFormat; tensors: StateDict } {
  if (looksLikeZip(bytes)) {
    const ck = parseTorchZip(bytes, file);
    return { format: ck.kind === "torchscript" ? "torchscript" : "torch", tensors: ck.tensors };
  }
  if (looksLikeSafetensors(bytes)) {
    return { format: "safetensors", tensors: parseSafetensors(bytes, file).tensors };
  }
  if (bytes.length >= 2 && bytes[0] === 0x80 && bytes[1] <= 5) {
    throw new WeightsError(
      file,
      "a bare pickle: the legacy (pre-1.6) torch.save format is not supported; re-save it with " +
        "torch.save(..., _use_new_zipfile_serialization=True) or as safetensors",
    );
  }
  if (bytes.length >= 8) {
    // may still be a safetensors file with a damaged header: let the parser say what is wrong
    const n = new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
    if (n > 0n && n < 1n << 40n) {
      return { format: "safetensors", tensors: parseSafetensors(bytes, file).tensors };
    }
  }
  throw new WeightsError(
    file,
    "unrecognised checkpoint format (expected safetensors or a PyTorch zip)",
  );
}

/** Loads a checkpoint (safetensors, torch.save zip or TorchScript zip) as a StateDict. */
export async function loadStateDict(path: string): Promise<StateDict> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (e) {
    throw new WeightsError(path, `cannot read the file (${(e as Error).message})`);
  }
  return parseStateDict(bytes, path).tensors;
}
