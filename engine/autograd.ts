/**
 * Reverse-mode autograd. An op that produced `out` from inputs needing gradients records a node
 * with a backward rule written in other ops; `backward(loss)` walks the nodes in reverse
 * topological order, asking each rule only for the gradients its inputs need (a frozen weight
 * therefore costs no weight-gradient matmul), accumulating them, and freeing every saved tensor
 * right after its node ran.
 */
import { EngineError, fmtShape } from "./errors.ts";
import { type Node, own, releaseNode, scope, type Tensor, trackNode } from "./tensor.ts";
// A cycle (the ops import record() from here) that is safe: both sides only call at run time.
import { add, onesLike } from "./ops/elementwise.ts";
import { contiguous } from "./ops/views.ts";

let gradEnabled = true;
let seq = 0;

export function isGradEnabled() {
  return gradEnabled;
}

function gradMode<T>(on: boolean, fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = on;
  try {
    return fn();
  } finally {
    gradEnabled = prev;
  }
}

/** Runs fn without recording anything on the tape. */
export const noGrad = <T>(fn: () => T): T => gradMode(false, fn);

/** Runs fn with the tape on (a backward rule that rebuilds a tape, see chunked.ts). */
export const withGrad = <T>(fn: () => T): T => gradMode(true, fn);

/** Marks a tensor as a trainable leaf. */
export function param<T extends Tensor>(t: T): T {
  if (t.dtype !== "f32") {
    throw new EngineError("param", `trainable tensors must be f32, got ${t.dtype}`);
  }
  t.requiresGrad = true;
  return t;
}

/**
 * Records `out = op(inputs)` when any input needs a gradient. `save` lists tensors the rule
 * reads (each kept alive as a private view until the node has run); the rule receives them back
 * in the same order.
 */
export function record(
  op: string,
  out: Tensor,
  inputs: Tensor[],
  save: Tensor[],
  rule: (g: Tensor, saved: Tensor[], needs: boolean[]) => (Tensor | null)[],
): Tensor {
  if (!gradEnabled || !inputs.some((t) => t.requiresGrad)) return out;
  const saved = save.map((t) => t.view(t.shape, t.strides, t.offset, false));
  const node: Node = {
    op,
    out,
    inputs,
    saved,
    released: false,
    seq: seq++,
    backward: (g, needs) => rule(g, node.saved, needs),
  };
  out.requiresGrad = true;
  out.node = node;
  trackNode(node);
  return out;
}

function topo(root: Node): Node[] {
  const order: Node[] = [];
  const seen = new Set<Node>();
  const stack: [Node, number][] = [[root, 0]];
  while (stack.length) {
    const top = stack[stack.length - 1];
    const [n, i] = top;
    if (i === 0 && seen.has(n)) {
      stack.pop();
      continue;
    }
    seen.add(n);
    if (i < n.inputs.length) {
      top[1]++;
      const c = n.inputs[i].node;
      if (c && !seen.has(c)) stack.push([c, 0]);
    } else {
      stack.pop();
      order.push(n);
    }
  }
  return order; // inputs before outputs
}

/**
 * Accumulates d loss / d leaf into `leaf.grad` for every leaf with requiresGrad.
 * `grad` defaults to ones for a one-element loss.
 */
export function backward(loss: Tensor, grad?: Tensor) {
  if (!loss.node) {
    throw new EngineError(
      "backward",
      `tensor ${fmtShape(loss.shape)} is not the result of ops on tensors that require grad`,
    );
  }
  if (!grad && loss.size !== 1) {
    throw new EngineError(
      "backward",
      `loss must have one element, got ${fmtShape(loss.shape)}; pass grad`,
    );
  }
  const order = topo(loss.node);
  for (const n of order) {
    if (n.released) {
      throw new EngineError(
        "backward",
        `the tape of ${n.op} was already released (backward ran twice, or its scope ended)`,
      );
    }
  }
  noGrad(() => {
    // grads held per tensor object
    const grads = new Map<Tensor, Tensor>();
    scope(() => {
      grads.set(loss, grad ? grad.view(grad.shape, grad.strides, grad.offset) : onesLike(loss));
      for (let k = order.length - 1; k >= 0; k--) {
        const n = order[k];
        const g = grads.get(n.out);
        if (!g) {
          releaseNode(n);
          continue;
        }
        grads.delete(n.out);
        const needs = n.inputs.map((t) => t.requiresGrad);
        const gi = n.backward(g, needs);
        n.inputs.forEach((inp, i) => {
          const r = gi[i];
          if (!r || !needs[i]) return;
          if (r.shape.length !== inp.shape.length || r.shape.some((s, j) => s !== inp.shape[j])) {
            throw new EngineError(
              `backward of ${n.op}`,
              `gradient ${fmtShape(r.shape)} does not match input ${fmtShape(inp.shape)}`,
            );
          }
          // each input gets its own reference: a rule may hand one tensor (often g) to several
          const d = r.view(r.shape, r.strides, r.offset);
          const prev = inp.node ? grads.get(inp) : inp.grad;
          const acc = prev ? add(prev, d) : inp.node ? d : contiguous(d, true);
          if (acc !== d) d.dispose();
          prev?.dispose();
          if (inp.node) grads.set(inp, acc);
          else inp.grad = own(acc); // a leaf's .grad outlives this scope
        });
        releaseNode(n);
        for (const t of gi) t?.dispose();
        g.dispose();
      }
    });
  });
}
