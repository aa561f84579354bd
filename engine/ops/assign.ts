/**
 * In-place writes into a view: the primitive under slice-assign, concat and stack, and the
 * gradient of slice. No tape entry: the differentiable ops built on it record their own.
 */
import { EngineError, fmtShape } from "../errors.ts";
import type { Tensor } from "../tensor.ts";
import { launchMap } from "./elementwise.ts";

/** Writes `src` (broadcast to dst's shape) into the view `dst`, converting dtype as needed. */
export function assignInto(dst: Tensor, src: Tensor): void {
  dst.buf("assign");
  if (dst.requiresGrad && !dst.node) {
    // writing into a trainable leaf under autograd would corrupt saved values silently
    throw new EngineError(
      "assign",
      `cannot write into trainable leaf ${fmtShape(dst.shape)}; use sliceAssign`,
    );
  }
  if (src.storage === dst.storage) {
    const tmp = launchMap("copy", [src], [], src.dtype);
    launchMap("copy", [tmp], [], dst.dtype, dst);
    tmp.dispose();
    return;
  }
  launchMap("copy", [src], [], dst.dtype, dst);
}
