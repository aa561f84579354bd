/**
 * conv2d with kernel = stride = patch and no padding or bias: the patch embedding of a ViT.
 * It is an im2col through views (reshape, permute, one contiguous copy) and one matmul, so its
 * gradients, with respect to the pixels as well as the weight, come from those ops' rules.
 */
import { EngineError, fmtShape } from "../errors.ts";
import { contiguous, permute, reshape } from "./views.ts";
import { matmul } from "./matmul.ts";
import type { Tensor } from "../tensor.ts";

/**
 * x [B, C, H, W], w [O, C, p, p] → [B, O, H/p, W/p]. The result is a view whose memory is
 * channels-last ([B, H/p, W/p, O]), which is what the token sequence that follows wants:
 * `permute(reshape(y, [B, O, -1]), [0, 2, 1])` is then contiguous without a copy.
 */
export function conv2dPatch(x: Tensor, w: Tensor): Tensor {
  const op = "conv2dPatch";
  if (x.rank !== 4 || w.rank !== 4) {
    throw new EngineError(
      op,
      `expects x [B, C, H, W] and w [O, C, p, p], got ${fmtShape(x.shape)} and ${
        fmtShape(w.shape)
      }`,
    );
  }
  const [B, C, H, W] = x.shape;
  const [O, Cw, p, q] = w.shape;
  if (p !== q || p < 1) {
    throw new EngineError(op, `the kernel must be square, got w ${fmtShape(w.shape)}`);
  }
  if (Cw !== C) {
    throw new EngineError(
      op,
      `channels differ: x ${fmtShape(x.shape)} has ${C}, w ${fmtShape(w.shape)} has ${Cw}`,
    );
  }
  if (H % p || W % p) {
    throw new EngineError(
      op,
      `H and W of x ${fmtShape(x.shape)} must be divisible by the patch ${p} (w ${
        fmtShape(w.shape)
      })`,
    );
  }
  const [Hp, Wp] = [H / p, W / p];
  // [B, C, Hp, p, Wp, p] → [B, Hp, Wp, C, p, p]: one row of C·p·p pixels per patch
  const patches = reshape(
    contiguous(permute(reshape(x, [B, C, Hp, p, Wp, p]), [0, 2, 4, 1, 3, 5])),
    [B * Hp * Wp, C * p * p],
  );
  const y = matmul(patches, reshape(w, [O, C * p * p]), { transB: true }); // [B·Hp·Wp, O]
  return permute(reshape(y, [B, Hp, Wp, O]), [0, 3, 1, 2]);
}
