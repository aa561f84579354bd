/**
 * A map over chunks whose tape is rebuilt in backward (gradient checkpointing across a batch
 * axis): `chunked(inputs, n, size, fn)` is concat(fn(inputs, s, c) for chunks [s, s + c) of
 * [0, n)) along `axis`, computed without a tape; its backward re-runs one chunk at a time with
 * the tape and back-propagates the chunk's slice of the gradient, so a step holds one chunk's
 * saved activations instead of all of them. The prompt learners push their class prompts
 * through the text tower this way when all classes at once would not fit.
 *
 * `fn` must read the tensors that need gradients through `inputs` only (leaves included): the
 * re-run sees them as fresh leaves, and their gradients are handed back to the outer tape.
 * The result and gradients equal the unchunked computation's (up to float rounding in kernels
 * that pick another tiling for another shape); tests/chunked_test.ts checks it.
 */
import { EngineError } from "./errors.ts";
import { backward, noGrad, param, record, withGrad } from "./autograd.ts";
import { scope, type Tensor } from "./tensor.ts";
import { concat } from "./ops/indexing.ts";
import { narrow } from "./ops/views.ts";

export function chunked(
  inputs: Tensor[],
  n: number,
  size: number,
  fn: (inputs: Tensor[], start: number, count: number) => Tensor,
  axis = 0,
): Tensor {
  if (!Number.isInteger(size) || size < 1) {
    throw new EngineError("chunked", `chunk size must be a positive integer, got ${size}`);
  }
  if (size >= n) return fn(inputs, 0, n); // one chunk: the plain tape
  const parts: Tensor[] = [];
  for (let s = 0; s < n; s += size) {
    const c = Math.min(size, n - s);
    parts.push(noGrad(() => scope(() => fn(inputs, s, c))));
  }
  const out = concat(parts, axis);
  parts.forEach((p) => p.dispose());
  return record("chunked", out, inputs, [], (g, _saved, needs) => {
    // fresh leaves standing for the inputs that need gradients
    const leaf = (t: Tensor) => param(t.view(t.shape, t.strides, t.offset));
    const leaves = inputs.map((t, i) => (needs[i] ? leaf(t) : t));
    for (let s = 0; s < n; s += size) {
      const c = Math.min(size, n - s);
      scope(() =>
        withGrad(() => {
          const part = fn(leaves, s, c);
          if (part.node) backward(part, narrow(g, axis, s, c));
        })
      );
    }
    return leaves.map((l, i) => {
      if (!needs[i]) return null;
      const grad = l.grad;
      l.grad = null;
      l.dispose();
      return grad;
    });
  });
}
