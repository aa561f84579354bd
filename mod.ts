/**
 * clipkit: CLIP prompt learning on a WebGPU autograd engine, for Deno.
 *
 * ```ts
 * import * as ck from "./mod.ts";
 * await ck.initEngine();
 * const w = ck.param(ck.tensor([0.5, -1], [2]));
 * const loss = ck.scope(() => ck.sum(ck.square(w)));
 * ck.backward(loss);
 * console.log(await w.grad!.data());
 * ```
 */
export * from "./engine/mod.ts";
