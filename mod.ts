/**
 * multimodel: a tensor and autograd engine on Deno's WebGPU with hand-written WGSL kernels,
 * Hugging Face-compatible BERT, GPT-2 and RoBERTa models, and a multi-model AdamW optimizer.
 *
 * ```ts
 * import { initGpu, matmul, sum, tensor } from "@multimodel/multimodel";
 * await initGpu();
 * const x = tensor([[1, 2], [3, 4]], { requiresGrad: true });
 * const loss = sum(matmul(x, x));
 * loss.backward();
 * console.log(await loss.item(), await x.grad!.data());
 * ```
 *
 * @module
 */
export { type DeviceProfile, type Gpu, gpu, initGpu, NoAdapterError } from "./engine/device.ts";
export {
  copyOf,
  type DType,
  emptyTensor,
  full,
  keep,
  type NestedNumbers,
  noGrad,
  readAll,
  Tensor,
  tensor,
  type TensorOptions,
  tidy,
  writeTensor,
  zeros,
} from "./engine/tensor.ts";
export { Random } from "./engine/random.ts";
export { type PoolStats, poolStats, trimPool } from "./engine/pool.ts";
export {
  type DispatchRecord,
  flush,
  type RecorderStats,
  recorderStats,
  synchronize,
  traceDispatches,
} from "./engine/recorder.ts";
export {
  add,
  div,
  exp,
  Expr,
  fused,
  gelu,
  type GeluForm,
  log,
  mul,
  neg,
  relu,
  scale,
  sigmoid,
  sqrt,
  sub,
  tanh,
} from "./kernels/elementwise.ts";
export { mean, type ReduceOptions, sum } from "./kernels/reduce.ts";
