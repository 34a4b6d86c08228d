/**
 * multimodel: a tensor and autograd engine on WebGPU with hand-written WGSL kernels, Hugging
 * Face-compatible BERT, GPT-2 and RoBERTa models, and a multi-model AdamW optimizer with gradient
 * sharing, soft parameter sync, convergence-aware learning rates and model weights.
 *
 * This module is the core and runs in Deno and in browsers alike: it reads and writes no file and starts
 * no process, and reads `MM_DEBUG`, `MM_KERNELS` and `MM_TIMING` through `globalThis.Deno?.env` where
 * there is one (`dist/multimodel.js` is its bundle). What reads and writes files - Hugging Face folders,
 * checkpoints, the data sets' npm packages, `train()` with its run folder - is exported by
 * `@multimodel/multimodel/deno` (`deno.ts`), which re-exports this module too.
 *
 * ```ts
 * import { gelu, initGpu, matmul, sum, tensor } from "@multimodel/multimodel";
 * await initGpu();
 * const x = tensor([[1, 2], [3, 4]], { requiresGrad: true });
 * const loss = sum(gelu(matmul(x, x)));
 * loss.backward();
 * console.log(await loss.item(), await x.grad!.data());
 * ```
 *
 * @module
 */
export { type DeviceProfile, type Gpu, gpu, initGpu, NoAdapterError } from "./engine/device.ts";
export {
  type BackwardOptions,
  copyInto,
  copyOf,
  type DisposalReason,
  type DType,
  emptyTensor,
  full,
  type GradNode,
  keep,
  type NestedNumbers,
  noGrad,
  readAll,
  Storage,
  Tensor,
  tensor,
  type TensorOptions,
  tidy,
  writeTensor,
  zeros,
} from "./engine/tensor.ts";
export { manualSeed, Random } from "./engine/random.ts";
export {
  formatBinary,
  memoryBudget,
  type PoolStats,
  poolStats,
  setMemoryBudget,
  trimPool,
} from "./engine/pool.ts";
export {
  type BufferRange,
  type DispatchRecord,
  flush,
  type KernelTimes,
  type RecorderStats,
  recorderStats,
  submitStep,
  synchronize,
  timeKernels,
  traceDispatches,
} from "./engine/recorder.ts";
export {
  add,
  div,
  exp,
  fused,
  gelu,
  log,
  mul,
  neg,
  type Operand,
  relu,
  scale,
  sigmoid,
  sqrt,
  sub,
  tanh,
} from "./kernels/elementwise.ts";
export {
  type Binary,
  type BinaryMethods,
  Expr,
  type ExprNode,
  type GeluForm,
  type MethodUnary,
  type Unary,
  type UnaryMethods,
} from "./kernels/elementwise_ops.ts";
export { mean, type ReduceOptions, sum } from "./kernels/reduce.ts";
export { linear, matmul, type MatmulOptions } from "./kernels/matmul.ts";
export { type TileConfig } from "./kernels/matmul_kernel.ts";
export { attention, type AttentionOptions, fusedQkvAttention } from "./kernels/attention.ts";
export { layerNorm } from "./kernels/layernorm.ts";
export { rmsNorm } from "./kernels/rmsnorm.ts";
export { logSoftmax, softmax } from "./kernels/softmax.ts";
export { type GatherOptions, gatherRows } from "./kernels/embedding.ts";
export {
  crossEntropy,
  type CrossEntropyOptions,
  softCrossEntropy,
  type SoftCrossEntropyOptions,
} from "./kernels/cross_entropy.ts";
export { dropout, type DropoutOptions } from "./kernels/dropout.ts";
export { concat, narrow, permute, transpose } from "./kernels/layout.ts";
export {
  type Activation,
  configFromHf,
  configToHf,
  type ModelConfig,
  modelConfig,
  type ModelFamily,
} from "./models/config.ts";
export { type ModelOptions, type ModelOutput, TransformerModel } from "./models/model.ts";
export type { Task } from "./models/heads.ts";
export {
  estimateMemory,
  type MemoryEstimate,
  type MemoryModel,
  type MemoryOptions,
  type ModelMemory,
} from "./models/memory.ts";
export type { Batch } from "./models/inputs.ts";
export {
  type Initializer,
  type Parameter,
  type ParameterInfo,
  type ParameterLayout,
  type ParameterRole,
  ParameterSet,
  type SlotMember,
  type SlotSpec,
} from "./models/parameters.ts";
export { Arena, type ArenaChunk, type ArenaSlot } from "./engine/arena.ts";
export {
  type CheckedWeights,
  checkWeights,
  inferTask,
  type LoadOptions,
  type LoadReport,
  loadWarnings,
  loadWeights,
  type MismatchedTensor,
} from "./models/checkpoint.ts";
export {
  type HostTensor,
  type HostTensorEntries,
  parseSafetensors,
  type SafetensorsContents,
  type SafetensorsDtype,
  SafetensorsError,
  serializeSafetensors,
} from "./models/safetensors.ts";
export {
  type Counters,
  type LoadStateOptions,
  type ModelMetrics,
  MultiModelOptimizer,
  type MultiModelOptimizerOptions,
  type OptimizableModel,
  type OptimizerMetrics,
  type OptimizerState,
  type SavedOptions,
  STATE_FORMAT,
} from "./optim/multimodel.ts";
export type {
  AdaptiveLrOptions,
  OptimizerOptions,
  ResolvedOptions,
  ScheduleOptions,
  SharingOptions,
  SyncOptions,
} from "./optim/options.ts";
export { buildGroups, type ParameterGroup } from "./optim/groups.ts";
export { type DistillationOptions, mutualDistillation } from "./kernels/distillation.ts";
export { TASKS } from "./models/heads.ts";
export type { SkipCause } from "./optim/multimodel.ts";
export {
  CLOZE_BLANK,
  type Dataset,
  describeDataset,
  type LmExample,
  type QaExample,
  type TaggedExample,
  TASK_NAMES,
  type TaskExamples,
  type TaskName,
  type TextExample,
} from "./data/datasets.ts";
export {
  type Encoding,
  type PairPiece,
  type SpecialTokens,
  Tokenizer,
  type TrainOptions as TokenizerTrainOptions,
  trainTokenizer,
} from "./data/tokenizer.ts";
export {
  encodeClassification,
  type EncodedBatch,
  encodeLm,
  encodeQa,
  encodeTagging,
  IGNORE_INDEX,
  type QaEncodeOptions,
} from "./data/encode.ts";
export {
  describeEvaluation,
  type EvaluationLine,
  formatMetrics,
  type PreparedSession,
  prepareSession,
  type SessionSources,
  type StepLine,
  type StepReport,
  TrainingSession,
} from "./train/session.ts";
export { TaskRunner } from "./train/runner.ts";
export { type DistillationPart, type Encoder, type TaskKind, taskKind } from "./train/task_kinds.ts";
export {
  buildModel,
  buildOptimizers,
  headFor,
  optimizerOptions,
  type VocabularyFacts,
} from "./train/models.ts";
export {
  defaultDocStride,
  defaultOptions,
  type ModelSpec,
  parseModels,
  type PresetName,
  PRESETS,
  type TrainOptions,
  windowRoom,
} from "./train/options.ts";
export {
  accuracy,
  argmaxRows,
  bestSpan,
  entities,
  type Entity,
  maskedLmAccuracy,
  perplexity,
  type PrecisionRecall,
  type Span,
  spanF1,
  type SpanScores,
  squadExactMatch,
  squadF1,
  type SquadScores,
  squadScores,
  tokenAccuracy,
} from "./train/metrics.ts";
export {
  bagOfWordsBaseline,
  type BagOfWordsOptions,
  type ClassificationBaseline,
  type LabelledText,
  mostFrequentTagBaseline,
  nameSpanBaseline,
  type QaBaseline,
  type QuestionWithAnswer,
  type TaggedWords,
  type TaggingBaseline,
  type UnigramBaseline,
  unigramPerplexity,
} from "./train/baseline.ts";
export type { EvaluationRecord, RunRecord, StepRecord } from "./train/report.ts";
