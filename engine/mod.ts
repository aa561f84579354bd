/** The engine's public surface: device, tensors, memory, autograd and every op. */
export { E, type Engine, f32Bits, initEngine } from "./device.ts";
export { EngineError } from "./errors.ts";
export {
  type DType,
  empty,
  keep,
  memory,
  own,
  scalar,
  scope,
  scopeAsync,
  sizeOf,
  Tensor,
  tensor,
  trim,
  writeTensor,
} from "./tensor.ts";
export { backward, isGradEnabled, noGrad, param, withGrad } from "./autograd.ts";
export { chunked } from "./chunked.ts";
export * from "./ops/elementwise.ts";
export * from "./ops/reduce.ts";
export * from "./ops/views.ts";
export { assignInto } from "./ops/assign.ts";

export * from "./ops/matmul.ts";
export * from "./ops/indexing.ts";
export * from "./ops/random.ts";
export * from "./optim.ts";
export * from "./ops/nn.ts";
export * from "./ops/conv.ts";
export * from "./ops/kmeans.ts";
export * from "./ops/batchnorm.ts";
